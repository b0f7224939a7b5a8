//! Learning-rate schedules, the EMA momentum schedule and the EMA update of a target network.

use selfsup_tensor::ops::ema::EmaItem;
use selfsup_tensor::{no_grad, Tensor};

use crate::error::{config, Result};

/// A learning rate as a function of the step.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// Always `lr`.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// `lr * gamma^(step / step_size)`.
    Step {
        /// Initial learning rate.
        lr: f64,
        /// Steps between decays.
        step_size: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// Linear warm-up from 0 to `lr` over `warmup` steps (`lr * (step + 1) / warmup`), then
    /// cosine decay to `final_lr` at `total` steps (held there afterwards).
    WarmupCosine {
        /// Peak learning rate.
        lr: f64,
        /// Warm-up steps.
        warmup: u64,
        /// Total steps.
        total: u64,
        /// Learning rate at the end.
        final_lr: f64,
    },
}

impl LrSchedule {
    /// The learning rate at `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Step {
                lr,
                step_size,
                gamma,
            } => lr * gamma.powi((step / step_size.max(1)) as i32),
            LrSchedule::WarmupCosine {
                lr,
                warmup,
                total,
                final_lr,
            } => {
                if step < warmup {
                    lr * (step + 1) as f64 / warmup as f64
                } else if step >= total {
                    final_lr
                } else {
                    let span = (total - warmup).max(1) as f64;
                    let progress = (step - warmup) as f64 / span;
                    final_lr
                        + 0.5 * (lr - final_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// BYOL's EMA momentum: `1 - (1 - base) * (cos(pi * step / total) + 1) / 2`, from `base`
/// (e.g. 0.996) at step 0 to 1 at `total`.
pub fn cosine_momentum(base: f64, step: u64, total: u64) -> f64 {
    let p = (step.min(total) as f64) / total.max(1) as f64;
    1.0 - (1.0 - base) * ((std::f64::consts::PI * p).cos() + 1.0) / 2.0
}

/// `target = momentum * target + (1 - momentum) * online`, in place under `no_grad`. The two
/// lists must name the same parameters in the same order with the same shapes.
pub fn ema_update(
    target: &[(String, Tensor)],
    online: &[(String, Tensor)],
    momentum: f64,
) -> Result<()> {
    if target.len() != online.len() {
        return config(format!(
            "ema_update: target has {} parameters, online {}",
            target.len(),
            online.len()
        ));
    }
    let _g = no_grad();
    let mut items = Vec::with_capacity(target.len());
    for ((tn, t), (on, o)) in target.iter().zip(online) {
        if tn != on {
            return config(format!(
                "ema_update: parameter {tn} of the target faces {on} of the online network"
            ));
        }
        items.push(EmaItem {
            target: t,
            source: o,
            keep: momentum,
            scale: 1.0 - momentum,
        });
    }
    // Every parameter in one in-place update (one launch on a GPU).
    Tensor::ema_steps_(&items)?;
    Ok(())
}
