//! Image manipulations the classic pretext tasks make their inputs and targets with: rotating
//! a batch ([`rotate`]), cutting grid patches ([`patches`]), the fixed jigsaw permutation set
//! ([`permutations`]) and the luma/chroma conversion of colorization ([`color`]).
//!
//! The inputs of these functions need no gradient (they are data), so the patch cutter reads
//! values out and builds new tensors; rotation and colour conversion are tensor ops (and so
//! differentiable, which the tests check).

pub mod color;
pub mod patches;
pub mod permutations;
pub mod rotate;

use selfsup_tensor::{DType, Tensor};

use crate::error::{Result, SslError};

/// Fraction of rows of `logits` `[n, classes]` whose arg-max is the label, read back as a
/// number ([`crate::metric::argmax_accuracy`] keeps it on the device).
pub fn accuracy(logits: &Tensor, labels: &[usize]) -> Result<f64> {
    let s = logits.shape();
    if s.len() != 2 || s[0] != labels.len() || s[1] == 0 {
        return Err(SslError::Config(format!(
            "accuracy: needs logits [n, classes] for {} labels, got {:?}",
            labels.len(),
            s
        )));
    }
    Ok(crate::metric::argmax_accuracy(logits, &label_tensor(labels)?, None)?.item()?)
}

/// Class labels as the i64 tensor `[n]` cross-entropy takes.
pub fn label_tensor(labels: &[usize]) -> Result<Tensor> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Ok(Tensor::from_vec(v, &[labels.len()])?.to_dtype(DType::I64)?)
}
