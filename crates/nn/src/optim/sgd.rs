//! Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay
//! (PyTorch's `torch.optim.SGD`).

use std::collections::BTreeMap;

use selfsup_tensor::ops::optim::{SgdItem, SgdStep};
use selfsup_tensor::{no_grad, Tensor};

use super::{fusable, grad_of, slot, Optimizer, ParamGroup};
use crate::error::{config, Result};

/// Hyper-parameters of [`Sgd`].
#[derive(Clone, Debug)]
pub struct SgdConfig {
    /// Learning rate (for [`Sgd::new`]; groups carry their own).
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient (for [`Sgd::new`]).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD: `g += wd * p`; `buf = momentum * buf + (1 - dampening) * g` (`buf = g` on the first
/// step); `g = g + momentum * buf` (Nesterov) or `g = buf`; `p -= lr * g`.
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    cfg: SgdConfig,
    state: BTreeMap<String, Tensor>,
    step: u64,
}

impl Sgd {
    /// One group of parameters with `cfg.lr` and `cfg.weight_decay`.
    pub fn new(params: Vec<(String, Tensor)>, cfg: SgdConfig) -> Sgd {
        let g = ParamGroup::new(params, cfg.lr, cfg.weight_decay);
        Sgd {
            groups: vec![g],
            cfg,
            state: BTreeMap::new(),
            step: 0,
        }
    }

    /// Several groups, each with its own lr and weight decay.
    pub fn with_groups(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Sgd> {
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return config("Sgd: Nesterov momentum needs momentum > 0 and dampening 0");
        }
        Ok(Sgd {
            groups,
            cfg,
            state: BTreeMap::new(),
            step: 0,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let _g = no_grad();
        let c = &self.cfg;
        // The fusable parameters are updated together at the end: one multi-tensor step (a
        // single kernel launch per device and dtype on a GPU).
        let mut fused: Vec<(Tensor, Tensor, Option<Tensor>, f64, f64, bool)> = Vec::new();
        for group in &self.groups {
            for (name, p) in &group.params {
                let Some(g) = grad_of(p)? else { continue };
                let g = g.contiguous()?;
                let key = format!("{name}.momentum_buffer");
                let fresh = !self.state.contains_key(&key);
                let buf = (c.momentum != 0.0)
                    .then(|| slot(&mut self.state, key, p))
                    .transpose()?;
                let mut others = vec![&g];
                others.extend(buf.as_ref());
                if fusable(p, &others) {
                    fused.push((p.clone(), g, buf, group.lr, group.weight_decay, fresh));
                    continue;
                }
                let mut g = g;
                if group.weight_decay != 0.0 {
                    g = g.add(&p.mul_scalar(group.weight_decay)?)?;
                }
                if let Some(buf) = &buf {
                    let nb = if fresh {
                        g.clone()
                    } else {
                        buf.mul_scalar(c.momentum)?
                            .add(&g.mul_scalar(1.0 - c.dampening)?)?
                    };
                    buf.assign(&nb)?;
                    g = if c.nesterov {
                        g.add(&nb.mul_scalar(c.momentum)?)?
                    } else {
                        nb
                    };
                }
                p.assign(&p.sub(&g.mul_scalar(group.lr)?)?)?;
            }
        }
        let items: Vec<SgdItem> = fused
            .iter()
            .map(|(p, g, buf, lr, wd, fresh)| SgdItem {
                param: p,
                grad: g,
                momentum_buf: buf.as_ref(),
                step: SgdStep {
                    lr: *lr,
                    momentum: c.momentum,
                    dampening: c.dampening,
                    weight_decay: *wd,
                    nesterov: c.nesterov,
                    first: *fresh,
                },
            })
            .collect();
        Tensor::sgd_steps_(&items)?;
        self.step += 1;
        Ok(())
    }
    super::optimizer_accessors!();
}
