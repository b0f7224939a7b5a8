//! Adam (L2 weight decay in the gradient) and AdamW (decoupled weight decay), as PyTorch's
//! `torch.optim.Adam` / `AdamW`.

use std::collections::BTreeMap;

use selfsup_tensor::ops::optim::{AdamItem, AdamStep};
use selfsup_tensor::{no_grad, Tensor};

use super::{fusable, grad_of, slot, Optimizer, ParamGroup};
use crate::error::{config, Result};

/// Hyper-parameters of [`Adam`].
#[derive(Clone, Debug)]
pub struct AdamConfig {
    /// Learning rate (for the single-group constructors).
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay (for the single-group constructors).
    pub weight_decay: f64,
    /// AdamW: decay the weights directly (`p *= 1 - lr * wd`) instead of adding `wd * p` to the
    /// gradient.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl AdamConfig {
    /// AdamW defaults: lr 1e-3, weight decay 0.01, decoupled.
    pub fn adamw() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..Default::default()
        }
    }
}

/// Adam / AdamW: `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`,
/// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, with `t` counted per
/// parameter (state slot `{param}.step`, an i64 scalar).
#[derive(Debug)]
pub struct Adam {
    groups: Vec<ParamGroup>,
    cfg: AdamConfig,
    state: BTreeMap<String, Tensor>,
    step: u64,
}

impl Adam {
    /// One group with `cfg.lr` and `cfg.weight_decay`.
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamConfig) -> Adam {
        let g = ParamGroup::new(params, cfg.lr, cfg.weight_decay);
        Adam {
            groups: vec![g],
            cfg,
            state: BTreeMap::new(),
            step: 0,
        }
    }

    /// AdamW over one group (`cfg.decoupled` is forced on).
    pub fn adamw(params: Vec<(String, Tensor)>, cfg: AdamConfig) -> Adam {
        Adam::new(
            params,
            AdamConfig {
                decoupled: true,
                ..cfg
            },
        )
    }

    /// Several groups with their own lr and weight decay.
    pub fn with_groups(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Adam> {
        let (b1, b2) = cfg.betas;
        if !(0.0..1.0).contains(&b1) || !(0.0..1.0).contains(&b2) {
            return config(format!("Adam: betas ({b1}, {b2}) must be in [0, 1)"));
        }
        Ok(Adam {
            groups,
            cfg,
            state: BTreeMap::new(),
            step: 0,
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let _g = no_grad();
        self.step += 1;
        let (b1, b2) = self.cfg.betas;
        // The fusable parameters are updated together at the end: one multi-tensor step (a
        // single kernel launch per device and dtype on a GPU).
        let mut fused: Vec<(Tensor, Tensor, Tensor, Tensor, AdamStep)> = Vec::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                let Some(g) = grad_of(p)? else { continue };
                // Per-parameter step count (as PyTorch): a parameter that received no gradient
                // on some steps keeps its own bias correction.
                let step_key = format!("{name}.step");
                let t = match self.state.get(&step_key) {
                    Some(s) => s.to_vec::<i64>()?.first().copied().unwrap_or(0) + 1,
                    None => 1,
                };
                self.state.insert(step_key, Tensor::from_vec(vec![t], &[])?);
                let t = t.min(i32::MAX as i64) as i32;
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                let wd = group.weight_decay;
                let m = slot(&mut self.state, format!("{name}.exp_avg"), p)?;
                let v = slot(&mut self.state, format!("{name}.exp_avg_sq"), p)?;
                let g = g.contiguous()?;
                if fusable(p, &[&g, &m, &v]) {
                    // One pass over the four buffers, no temporaries.
                    let h = AdamStep {
                        lr: group.lr,
                        beta1: b1,
                        beta2: b2,
                        eps: self.cfg.eps,
                        weight_decay: wd,
                        decoupled: self.cfg.decoupled,
                        step: t as u64,
                    };
                    fused.push((p.clone(), g, m, v, h));
                    continue;
                }
                let mut g = g;
                if wd != 0.0 {
                    if self.cfg.decoupled {
                        p.assign(&p.mul_scalar(1.0 - group.lr * wd)?)?;
                    } else {
                        g = g.add(&p.mul_scalar(wd)?)?;
                    }
                }
                m.assign(&m.mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?)?;
                v.assign(&v.mul_scalar(b2)?.add(&g.sqr()?.mul_scalar(1.0 - b2)?)?)?;
                let denom = v.sqrt()?.div_scalar(bc2.sqrt())?.add_scalar(self.cfg.eps)?;
                p.assign(&p.sub(&m.div(&denom)?.mul_scalar(group.lr / bc1)?)?)?;
            }
        }
        let items: Vec<AdamItem> = fused
            .iter()
            .map(|(p, g, m, v, h)| AdamItem {
                param: p,
                grad: g,
                m,
                v,
                step: *h,
            })
            .collect();
        Tensor::adam_steps_(&items)?;
        Ok(())
    }
    super::optimizer_accessors!();
}
