//! The [`Module`] trait: named parameters and buffers, train/eval mode.
//!
//! Each layer has its own `forward` with the arguments it needs (attention takes masks, dropout
//! uses its generator); the trait only covers what generic code needs: walking parameters and
//! buffers by dotted PyTorch-style names (`blocks.0.attn.qkv.weight`) and switching mode.
//! [`Layer`] adds a one-tensor `forward` for layers that fit in a [`crate::Sequential`].

use std::collections::HashMap;

use selfsup_tensor::Tensor;

use crate::error::{config, Result};

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A network component with named parameters and buffers.
pub trait Module {
    /// Calls `f` with the dotted name (under `prefix`) of every trained parameter.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor));

    /// Calls `f` with every trained parameter, mutably, so that it can be replaced (used to
    /// substitute fresh leaves, e.g. in gradient checks).
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor));

    /// Calls `f` with every buffer: state that is saved but not trained (BatchNorm running
    /// statistics). None by default.
    fn visit_buffers(&self, _prefix: &str, _f: &mut dyn FnMut(String, &Tensor)) {}

    /// Calls `f` with every buffer, mutably, so that it can be replaced (moved to a device).
    /// Modules with buffers implement it beside [`Module::visit_buffers`]; none by default.
    fn visit_buffers_mut(&mut self, _prefix: &str, _f: &mut dyn FnMut(String, &mut Tensor)) {}

    /// The device of the first parameter (the CPU for a module without parameters).
    fn device(&self) -> selfsup_tensor::Device {
        let mut d = None;
        self.visit_params("", &mut |_, t| {
            if d.is_none() {
                d = Some(t.device());
            }
        });
        d.unwrap_or_default()
    }

    /// Moves every parameter and buffer to `device` (parameters stay trainable leaves, their
    /// gradients are dropped). A no-op for tensors already there.
    fn to_device(&mut self, device: selfsup_tensor::Device) -> selfsup_tensor::Result<()> {
        let mut err = None;
        self.visit_params_mut("", &mut |_, t| {
            if err.is_none() && t.device() != device {
                match t.detach().to_device(device) {
                    Ok(m) => *t = m.requires_grad_(),
                    Err(e) => err = Some(e),
                }
            }
        });
        self.visit_buffers_mut("", &mut |_, t| {
            if err.is_none() && t.device() != device {
                match t.to_device(device) {
                    Ok(m) => *t = m,
                    Err(e) => err = Some(e),
                }
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Calls `f` with the `(seed, offset)` state of every random generator the module owns
    /// (dropout), so that checkpoints can resume the exact random stream. None by default.
    fn visit_rng(&self, _prefix: &str, _f: &mut dyn FnMut(String, (u64, u64))) {}

    /// Restores generator states by name, as produced by [`Module::visit_rng`]; names not found
    /// are ignored. Does nothing by default.
    fn load_rng(&self, _prefix: &str, _states: &HashMap<String, (u64, u64)>) {}

    /// Switches training (`true`) or evaluation (`false`) behaviour. Does nothing by default.
    fn set_train(&mut self, _train: bool) {}

    /// Every parameter with its dotted name, in a fixed order.
    fn params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |n, t| out.push((n, t.clone())));
        out
    }

    /// Every buffer with its dotted name.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_buffers("", &mut |n, t| out.push((n, t.clone())));
        out
    }

    /// Total number of trained scalars.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, t| n += t.numel());
        n
    }

    /// Drops the accumulated gradient of every parameter.
    fn zero_grad(&self) {
        self.visit_params("", &mut |_, t| t.zero_grad());
    }

    /// Evaluation mode (`set_train(false)`).
    fn eval(&mut self) {
        self.set_train(false);
    }

    /// Copies the values of every parameter and buffer of `src` into the same-named tensors of
    /// `self`, in place under `no_grad` (e.g. to initialise an EMA target network from the
    /// online one). Both modules must have the same names and shapes.
    fn copy_from(&self, src: &dyn Module) -> Result<()> {
        let _g = selfsup_tensor::no_grad();
        let mut theirs: HashMap<String, Tensor> = src.params().into_iter().collect();
        theirs.extend(src.buffers());
        let mut mine = self.params();
        mine.extend(self.buffers());
        let mut problems = Vec::new();
        for (n, t) in &mine {
            match theirs.remove(n) {
                Some(s) if s.shape() == t.shape() => {}
                Some(s) => problems.push(format!("{n}: shape {:?} vs {:?}", s.shape(), t.shape())),
                None => problems.push(format!("{n}: missing in the source")),
            }
        }
        problems.extend(
            theirs
                .keys()
                .map(|n| format!("{n}: not in the destination")),
        );
        if !problems.is_empty() {
            problems.sort();
            return config(format!("copy_from: {}", problems.join("; ")));
        }
        let src_all: HashMap<String, Tensor> =
            src.params().into_iter().chain(src.buffers()).collect();
        for (n, t) in &mine {
            if let Some(s) = src_all.get(n) {
                t.assign(&s.detach())?;
            }
        }
        Ok(())
    }

    /// Replaces parameters by name with the given tensors (the tensors themselves, not copies:
    /// gradients then flow to them). Every name must exist and keep its shape.
    fn replace_params(&mut self, new: &[(String, Tensor)]) -> Result<()> {
        let mut map: HashMap<&str, &Tensor> = new.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut problems = Vec::new();
        self.visit_params_mut("", &mut |n, t| {
            if let Some(src) = map.remove(n.as_str()) {
                if src.shape() == t.shape() {
                    *t = src.clone();
                } else {
                    problems.push(format!(
                        "{n}: shape {:?} given, the parameter has {:?}",
                        src.shape(),
                        t.shape()
                    ));
                }
            }
        });
        problems.extend(map.keys().map(|n| format!("{n}: no such parameter")));
        if problems.is_empty() {
            Ok(())
        } else {
            problems.sort();
            config(format!("replace_params: {}", problems.join("; ")))
        }
    }
}

/// A module with a single-tensor forward, usable in a [`crate::Sequential`].
pub trait Layer: Module + Send + Sync {
    /// Applies the layer.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// Visits a parameter `name` of `t` under `prefix`.
pub(crate) fn visit_one(prefix: &str, name: &str, t: &Tensor, f: &mut dyn FnMut(String, &Tensor)) {
    f(join(prefix, name), t);
}

/// Visits a parameter `name` of `t` under `prefix`, mutably.
pub(crate) fn visit_one_mut(
    prefix: &str,
    name: &str,
    t: &mut Tensor,
    f: &mut dyn FnMut(String, &mut Tensor),
) {
    f(join(prefix, name), t);
}
