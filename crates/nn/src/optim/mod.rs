//! Optimisers: [`Sgd`] (momentum, Nesterov, weight decay), [`Adam`] / AdamW, [`Lars`], with
//! parameter groups, freezing by name prefix and gradient clipping by global norm.
//!
//! Optimisers hold the parameter tensors (clones share storage with the model's) and their own
//! state tensors; a step computes new values with tensor ops under `no_grad` and writes them in
//! place with `assign`. Parameters without a gradient are skipped. State is exposed by name
//! (`"{param}.{slot}"`, e.g. `encoder.fc.weight.exp_avg`) for checkpoints.

mod adam;
mod lars;
mod sgd;

use std::collections::BTreeMap;

use selfsup_tensor::{no_grad, DType, Tensor};

use crate::error::{config, Result};

pub use adam::{Adam, AdamConfig};
pub use lars::{Lars, LarsConfig};
pub use sgd::{Sgd, SgdConfig};

/// Parameters sharing a learning rate and weight decay.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// Named parameters (leaf tensors).
    pub params: Vec<(String, Tensor)>,
    /// Learning rate of this group.
    pub lr: f64,
    /// Weight decay of this group.
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with its own learning rate and weight decay.
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Self {
        ParamGroup {
            params,
            lr,
            weight_decay,
        }
    }
}

/// Splits parameters into a group with weight decay (rank >= 2: weights) and one without
/// (rank <= 1: biases and norm parameters), the usual recipe for AdamW on transformers.
pub fn decay_groups(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Vec<ParamGroup> {
    let (decay, no_decay): (Vec<_>, Vec<_>) = params.into_iter().partition(|(_, t)| t.rank() >= 2);
    vec![
        ParamGroup::new(decay, lr, weight_decay),
        ParamGroup::new(no_decay, lr, 0.0),
    ]
}

/// Parameters whose names start with none of `prefixes` (for freezing part of a model).
pub fn trainable(params: Vec<(String, Tensor)>, frozen_prefixes: &[&str]) -> Vec<(String, Tensor)> {
    params
        .into_iter()
        .filter(|(n, _)| !frozen_prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// The common interface of the optimisers.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;

    /// The parameter groups.
    fn groups(&self) -> &[ParamGroup];

    /// The parameter groups, to change learning rates or weight decays.
    fn groups_mut(&mut self) -> &mut Vec<ParamGroup>;

    /// Number of steps taken.
    fn step_count(&self) -> u64;

    /// Sets the step count (when resuming).
    fn set_step_count(&mut self, step: u64);

    /// The state tensors by name (`"{param}.{slot}"`).
    fn state(&self) -> &BTreeMap<String, Tensor>;

    /// The state tensors, mutably (used when loading).
    fn state_mut(&mut self) -> &mut BTreeMap<String, Tensor>;

    /// Replaces the state with copies of `state` (from a checkpoint). Every entry must be named
    /// `{param}.{slot}` for a parameter of this optimiser and have that parameter's shape (the
    /// `step` slot is a scalar); otherwise nothing changes and the error lists every problem.
    fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        let shapes: BTreeMap<String, (Vec<usize>, selfsup_tensor::Device)> = self
            .groups()
            .iter()
            .flat_map(|g| {
                g.params
                    .iter()
                    .map(|(n, t)| (n.clone(), (t.shape().to_vec(), t.device())))
            })
            .collect();
        let mut map = BTreeMap::new();
        let mut problems = Vec::new();
        for (k, t) in state {
            let Some((param, slot)) = k.rsplit_once('.') else {
                problems.push(format!("{k}: not a `param.slot` name"));
                continue;
            };
            match shapes.get(param) {
                None => problems.push(format!("{k}: no parameter {param} in the optimizer")),
                Some((s, _)) if slot != "step" && t.shape() != s.as_slice() => problems.push(
                    format!("{k}: shape {:?}, the parameter has {s:?}", t.shape()),
                ),
                Some((_, device)) => {
                    // Moment buffers live with their parameter; step counts stay on the host.
                    let c = t.detach().copy()?;
                    let c = if slot == "step" {
                        c
                    } else {
                        c.to_device(*device)?
                    };
                    map.insert(k, c);
                }
            }
        }
        if !problems.is_empty() {
            return config(format!("optimizer state: {}", problems.join("; ")));
        }
        *self.state_mut() = map;
        Ok(())
    }

    /// Drops the gradients of every parameter.
    fn zero_grad(&self) {
        for g in self.groups() {
            for (_, p) in &g.params {
                p.zero_grad();
            }
        }
    }

    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f64) {
        for g in self.groups_mut() {
            g.lr = lr;
        }
    }

    /// Stops updating every parameter whose name starts with `prefix` (removes it, and its
    /// state, from the optimiser). Returns how many parameters were frozen.
    fn freeze(&mut self, prefix: &str) -> usize {
        let mut n = 0;
        for g in self.groups_mut().iter_mut() {
            let before = g.params.len();
            g.params.retain(|(name, _)| !name.starts_with(prefix));
            n += before - g.params.len();
        }
        self.state_mut().retain(|k, _| !k.starts_with(prefix));
        n
    }
}

/// The [`Optimizer`] accessors for a struct with `groups`, `step` and `state` fields (every
/// optimiser here keeps its state that way).
macro_rules! optimizer_accessors {
    () => {
        fn groups(&self) -> &[$crate::optim::ParamGroup] {
            &self.groups
        }
        fn groups_mut(&mut self) -> &mut Vec<$crate::optim::ParamGroup> {
            &mut self.groups
        }
        fn step_count(&self) -> u64 {
            self.step
        }
        fn set_step_count(&mut self, step: u64) {
            self.step = step;
        }
        fn state(&self) -> &std::collections::BTreeMap<String, selfsup_tensor::Tensor> {
            &self.state
        }
        fn state_mut(&mut self) -> &mut std::collections::BTreeMap<String, selfsup_tensor::Tensor> {
            &mut self.state
        }
    };
}
pub(crate) use optimizer_accessors;

/// The state slot `key`, created as zeros like `like` on first use.
pub(crate) fn slot(
    state: &mut BTreeMap<String, Tensor>,
    key: String,
    like: &Tensor,
) -> selfsup_tensor::Result<Tensor> {
    if let Some(t) = state.get(&key) {
        return Ok(t.clone());
    }
    let t = like.zeros_like()?;
    state.insert(key, t.clone());
    Ok(t)
}

/// Whether the fused in-place updates of `selfsup_tensor` (`adam_step_`, `sgd_step_`) take these
/// buffers: f32 or f64, the parameter's shape and dtype, contiguous from offset 0, and distinct
/// storages. Otherwise the optimisers run the same update as composed ops.
pub(crate) fn fusable(p: &Tensor, others: &[&Tensor]) -> bool {
    let plain = |t: &Tensor| {
        t.shape() == p.shape()
            && t.dtype() == p.dtype()
            && t.is_contiguous()
            && t.layout().offset() == 0
    };
    matches!(p.dtype(), DType::F32 | DType::F64)
        && plain(p)
        && others.iter().all(|t| plain(t))
        && others
            .iter()
            .enumerate()
            .all(|(i, a)| !a.same_storage(p) && others[i + 1..].iter().all(|b| !b.same_storage(a)))
}

/// The gradient of `p` in `p`'s dtype, or `None` when it has none.
pub(crate) fn grad_of(p: &Tensor) -> Result<Option<Tensor>> {
    match p.grad() {
        Some(g) if g.dtype() != p.dtype() => Ok(Some(g.to_dtype(p.dtype())?)),
        g => Ok(g),
    }
}

/// The L2 norm of a tensor as a 0-d f64 tensor on its device.
pub(crate) fn l2_norm(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F64)?.sqr()?.sum_all()?.sqrt()?)
}

/// Scales gradients so that their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1). Returns the norm before
/// clipping.
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: f64) -> Result<f64> {
    match clip_grad_norm_on_device(params, max_norm)? {
        Some(total) => Ok(total.item()?),
        None => Ok(0.0),
    }
}

/// [`clip_grad_norm`] without reading anything back: the norm and the factor
/// `min(1, max_norm / (norm + 1e-6))` stay on the gradients' device (every gradient is scaled,
/// by 1 when under the bound), so a training step on a GPU does not wait for it. Returns the
/// norm before clipping as a 0-d f64 tensor, or `None` when no parameter has a gradient.
pub fn clip_grad_norm_on_device(
    params: &[(String, Tensor)],
    max_norm: f64,
) -> Result<Option<Tensor>> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return config(format!(
            "clip_grad_norm: max_norm {max_norm} must be positive"
        ));
    }
    let _g = no_grad();
    let mut sq: Option<Tensor> = None;
    for (_, p) in params {
        if let Some(g) = p.grad() {
            let s = l2_norm(&g)?.sqr()?;
            sq = Some(match sq {
                Some(t) => t.add(&s.to_device(t.device())?)?,
                None => s,
            });
        }
    }
    let Some(sq) = sq else { return Ok(None) };
    let total = sq.sqrt()?;
    let coef = total
        .add_scalar(1e-6)?
        .rdiv_scalar(max_norm)?
        .clamp(f64::NEG_INFINITY, 1.0)?;
    for (_, p) in params {
        if let Some(g) = p.grad() {
            let c = coef.to_device(g.device())?.to_dtype(g.dtype())?;
            p.set_grad(Some(g.mul(&c)?));
        }
    }
    Ok(Some(total))
}
