//! LARS (You et al., 2017) as used for SimCLR/BYOL/Barlow Twins: layer-wise trust ratio on top
//! of SGD with momentum; 1-D parameters (biases, norm scales) get neither weight decay nor the
//! trust ratio.

use std::collections::BTreeMap;

use selfsup_tensor::ops::optim::{LarsItem, LarsStep};
use selfsup_tensor::{no_grad, Tensor};

use super::{fusable, grad_of, l2_norm, slot, Optimizer, ParamGroup};
use crate::error::Result;

/// Hyper-parameters of [`Lars`].
#[derive(Clone, Debug)]
pub struct LarsConfig {
    /// Learning rate (for [`Lars::new`]).
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Weight decay (for [`Lars::new`]).
    pub weight_decay: f64,
    /// Trust coefficient.
    pub eta: f64,
    /// Exclude 1-D parameters from weight decay and adaptation.
    pub exclude_1d: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        LarsConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-6,
            eta: 0.001,
            exclude_1d: true,
        }
    }
}

/// LARS: for adapted parameters `d = g + wd p`, `d *= eta ||p|| / ||d||` (when both norms are
/// positive); then `mu = momentum mu + d`, `p -= lr mu`.
#[derive(Debug)]
pub struct Lars {
    groups: Vec<ParamGroup>,
    cfg: LarsConfig,
    state: BTreeMap<String, Tensor>,
    step: u64,
}

impl Lars {
    /// One group with `cfg.lr` and `cfg.weight_decay`.
    pub fn new(params: Vec<(String, Tensor)>, cfg: LarsConfig) -> Lars {
        let g = ParamGroup::new(params, cfg.lr, cfg.weight_decay);
        Lars {
            groups: vec![g],
            cfg,
            state: BTreeMap::new(),
            step: 0,
        }
    }

    /// Several groups with their own lr and weight decay.
    pub fn with_groups(groups: Vec<ParamGroup>, cfg: LarsConfig) -> Lars {
        Lars {
            groups,
            cfg,
            state: BTreeMap::new(),
            step: 0,
        }
    }
}

impl Optimizer for Lars {
    fn step(&mut self) -> Result<()> {
        let _g = no_grad();
        let c = &self.cfg;
        // The fusable parameters are updated together at the end (`Tensor::lars_steps_`: on a
        // GPU two launches per device and dtype for all of them); the others (strided or
        // half-precision buffers) as composed ops, the same update.
        let mut fused: Vec<(Tensor, Tensor, Tensor, LarsStep)> = Vec::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                let Some(g) = grad_of(p)? else { continue };
                let adapt = !(c.exclude_1d && p.rank() <= 1);
                let mu = slot(&mut self.state, format!("{name}.mu"), p)?;
                let g = g.contiguous()?;
                if fusable(p, &[&g, &mu]) {
                    let h = LarsStep {
                        lr: group.lr,
                        momentum: c.momentum,
                        weight_decay: group.weight_decay,
                        eta: c.eta,
                        adapt,
                    };
                    fused.push((p.clone(), g, mu, h));
                    continue;
                }
                let mut d = g;
                if adapt {
                    if group.weight_decay != 0.0 {
                        d = d.add(&p.mul_scalar(group.weight_decay)?)?;
                    }
                    // The trust ratio eta * |p| / |d| (1 when either norm is 0), computed on
                    // the parameter's device: nothing is read back.
                    let (pn, dn) = (l2_norm(p)?, l2_norm(&d)?);
                    let both = pn.gt_scalar(0.0)?.mul(&dn.gt_scalar(0.0)?)?;
                    let ratio = pn
                        .mul_scalar(c.eta)?
                        .div(&dn.clamp(f64::MIN_POSITIVE, f64::INFINITY)?)?;
                    let one = Tensor::ones_like(&pn)?;
                    let factor = ratio.where_(&both, &one)?.to_dtype(d.dtype())?;
                    d = d.mul(&factor)?;
                }
                mu.assign(&mu.mul_scalar(c.momentum)?.add(&d)?)?;
                p.assign(&p.sub(&mu.mul_scalar(group.lr)?)?)?;
            }
        }
        let items: Vec<LarsItem> = fused
            .iter()
            .map(|(p, g, mu, h)| LarsItem {
                param: p,
                grad: g,
                momentum_buf: mu,
                step: *h,
            })
            .collect();
        Tensor::lars_steps_(&items)?;
        self.step += 1;
        Ok(())
    }
    super::optimizer_accessors!();
}
