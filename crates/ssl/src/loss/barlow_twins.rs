//! Barlow Twins (Zbontar et al. 2021): standardise each dimension of the two views'
//! embeddings over the batch, `ẑ = (z - mean) / sqrt(var + eps)` (biased variance, as
//! BatchNorm without affine), take the cross-correlation `C = ẑ1^T ẑ2 / N` `[D, D]` and pull it
//! to the identity: `sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`.

use selfsup_tensor::{Error, Result, Tensor};

use super::common::same_2d;

/// The `eps` added to the per-dimension variance before standardising.
pub const BARLOW_EPS: f64 = 1e-5;

/// `(z - mean) / sqrt(var + eps)` per column of `z` `[N, D]` (biased variance).
pub(crate) fn standardize(z: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = z.mean(&[0], true)?;
    let var = z.var(&[0], false, true)?;
    z.sub(&mean)?.div(&var.add_scalar(eps)?.sqrt()?)
}

/// The Barlow Twins loss of two views' embeddings `z1`, `z2` `[N, D]` (`N >= 2`) with weight
/// `lambda` on the off-diagonal terms.
pub fn barlow_twins(z1: &Tensor, z2: &Tensor, lambda: f64) -> Result<Tensor> {
    same_2d("barlow_twins", z1, z2, 2)?;
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(Error::Invalid {
            op: "barlow_twins",
            msg: format!("lambda must be >= 0 and finite, got {lambda}"),
        });
    }
    let n = z1.shape()[0] as f64;
    let c = standardize(z1, BARLOW_EPS)?
        .t()?
        .matmul(&standardize(z2, BARLOW_EPS)?)?
        .mul_scalar(1.0 / n)?;
    let eye = Tensor::eye_on(c.shape()[0], c.dtype(), c.device())?;
    let off_mask = eye.neg()?.add_scalar(1.0)?;
    let on = c.sub(&eye)?.mul(&eye)?.sqr()?.sum_all()?;
    let off = c.mul(&off_mask)?.sqr()?.sum_all()?;
    on.add(&off.mul_scalar(lambda)?)
}
