//! bf16 copies of f32 parameters kept beside them on a GPU (their "shadows").
//!
//! At bf16 matmul precision on a GPU, the layers read their f32 weights and biases as bf16
//! operands. Casting them in every forward costs a launch and a pass per parameter and step (4
//! bytes read and 2 written per element). Instead the first cast is kept with the buffer,
//! stamped with the buffer's write count (`Tracked::version`, bumped by every write guard).
//! Later reads take it while the count is unchanged, and the fused optimiser and EMA steps
//! (`Tensor::adam_steps_`, `sgd_steps_`, `lars_steps_`, `ema_steps_`) write the rounded new
//! values into it in the pass that updates the parameter, so it stays current from step to
//! step without a cast. Any other write (`Tensor::assign`, a single-tensor step) leaves it
//! stale, and the next read casts again.
//!
//! The values are those of a fresh cast (round to nearest even, as `kernels/copy.cu`'s
//! `cast_f32_bf16`), bit for bit. Only leaf tensors (no autograd node) that span their whole
//! buffer keep one: parameters, frozen weights, EMA targets. The copy holds 2 bytes of device
//! memory per element for as long as the buffer lives.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use crate::error::Result;
use crate::ops::linear::gpu::bf16_copy;
use crate::{DType, Tensor};

/// A kept bf16 copy and the write count of the buffer when its values were those of the copy.
pub(crate) struct Shadow {
    version: u64,
    copy: Tensor,
}

fn slot(t: &Tensor) -> MutexGuard<'_, Option<Shadow>> {
    t.0.storage.shadow.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `t` keeps a shadow: an f32 leaf on a GPU, contiguous over its whole buffer.
fn keeps(t: &Tensor) -> bool {
    t.is_leaf()
        && t.dtype() == DType::F32
        && !t.device().is_cpu()
        && t.is_contiguous()
        && t.layout().offset() == 0
        && match &*t.read() {
            crate::storage::Storage::Cuda(c) => c.len() == t.numel(),
            _ => false,
        }
}

/// The write count of `t`'s buffer, read under its lock (no write in progress).
fn version(t: &Tensor) -> u64 {
    let _g = t.read();
    t.0.storage.version.load(Ordering::Relaxed)
}

/// The bf16 operand of the GPU parameter `t`: its shadow when that is current, else a cast,
/// kept as the shadow when `t` keeps one. Detached and contiguous, `t`'s shape.
pub(crate) fn bf16_operand(t: &Tensor) -> Result<Tensor> {
    if !keeps(t) {
        return bf16_copy(t);
    }
    let seen = version(t);
    let kept = slot(t)
        .as_ref()
        .filter(|s| s.version == seen)
        .map(|s| s.copy.clone());
    if let Some(copy) = kept {
        return copy.reshape(t.shape());
    }
    let copy = bf16_copy(t)?;
    // Kept only if no write came between the count read above and the cast's read.
    if version(t) == seen {
        *slot(t) = Some(Shadow {
            version: seen,
            copy: copy.clone(),
        });
    }
    Ok(copy)
}

/// The shadows of `params`, in order, for a fused step that writes the rounded new values
/// into them as it updates the parameters (`None` for a parameter without one). Call with the
/// parameters' write guards held, then [`mark_current`] once the step has run.
pub(crate) fn for_updates<'a>(params: impl Iterator<Item = &'a Tensor>) -> Vec<Option<Tensor>> {
    params
        .map(|p| {
            slot(p)
                .as_ref()
                .filter(|s| p.dtype() == DType::F32 && s.copy.numel() == p.numel())
                .map(|s| s.copy.clone())
        })
        .collect()
}

/// Marks the shadows of `params` as holding the parameters' values as they are now (a step
/// wrote both), with the parameters' write guards still held.
pub(crate) fn mark_current<'a>(params: impl Iterator<Item = &'a Tensor>) {
    for p in params {
        let now = p.0.storage.version.load(Ordering::Relaxed);
        if let Some(s) = slot(p).as_mut() {
            s.version = now;
        }
    }
}

impl Tensor {
    /// Whether this tensor's GPU buffer keeps a bf16 copy that holds its values as they are
    /// now: the copy a layer at bf16 matmul precision reads in place of casting this weight
    /// (kept since the first such read, written by the fused optimiser and EMA steps, stale
    /// after any other write). Always false on the CPU. For tests and memory accounting: the
    /// copy holds 2 bytes per element.
    pub fn has_current_bf16_copy(&self) -> bool {
        if self.device().is_cpu() {
            return false;
        }
        let seen = version(self);
        slot(self).as_ref().is_some_and(|s| s.version == seen)
    }
}
