//! VICReg (Bardes et al. 2022) on two views' embeddings `z1`, `z2` `[N, D]`:
//!
//! - invariance: `mean((z1 - z2)^2)` over all entries;
//! - variance: per dimension the hinge `relu(1 - sqrt(var + 1e-4))` (unbiased variance over
//!   the batch), averaged over dimensions, then over the two branches;
//! - covariance: per branch the sum of squared off-diagonal entries of the covariance matrix
//!   (unbiased) divided by `D`, summed over the two branches.
//!
//! The loss is `sim * invariance + var * variance + cov * covariance`.

use selfsup_tensor::{Error, Result, Tensor};

use super::common::same_2d;

/// The `eps` under the square root of the variance hinge.
pub const VICREG_EPS: f64 = 1e-4;

/// The weights of the three VICReg terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VicregWeights {
    /// Invariance weight (25 in the paper).
    pub sim: f64,
    /// Variance weight (25).
    pub var: f64,
    /// Covariance weight (1).
    pub cov: f64,
}

impl Default for VicregWeights {
    /// The paper's weights: 25, 25, 1.
    fn default() -> Self {
        VicregWeights {
            sim: 25.0,
            var: 25.0,
            cov: 1.0,
        }
    }
}

/// The weighted loss and its three unweighted terms (scalars).
#[derive(Clone, Debug)]
pub struct VicregTerms {
    /// The weighted sum (differentiable).
    pub loss: Tensor,
    /// The invariance term.
    pub invariance: Tensor,
    /// The variance term.
    pub variance: Tensor,
    /// The covariance term.
    pub covariance: Tensor,
}

/// Mean over dimensions of `relu(1 - sqrt(var + eps))`.
fn variance_hinge(z: &Tensor) -> Result<Tensor> {
    z.var(&[0], true, false)?
        .add_scalar(VICREG_EPS)?
        .sqrt()?
        .neg()?
        .add_scalar(1.0)?
        .relu()?
        .mean_all()
}

/// Sum of the squared off-diagonal covariances, over `D`.
fn covariance_penalty(z: &Tensor) -> Result<Tensor> {
    let (n, d) = (z.shape()[0], z.shape()[1]);
    let zc = z.sub(&z.mean(&[0], true)?)?;
    let cov = zc.t()?.matmul(&zc)?.mul_scalar(1.0 / (n as f64 - 1.0))?;
    let off = Tensor::eye_on(cov.shape()[0], cov.dtype(), cov.device())?
        .neg()?
        .add_scalar(1.0)?;
    cov.mul(&off)?.sqr()?.sum_all()?.mul_scalar(1.0 / d as f64)
}

/// The VICReg loss of `z1`, `z2` `[N, D]` (`N >= 2`) with weights `w`.
pub fn vicreg(z1: &Tensor, z2: &Tensor, w: &VicregWeights) -> Result<VicregTerms> {
    same_2d("vicreg", z1, z2, 2)?;
    if [w.sim, w.var, w.cov]
        .iter()
        .any(|x| !(*x >= 0.0 && x.is_finite()))
    {
        return Err(Error::Invalid {
            op: "vicreg",
            msg: format!("weights must be >= 0 and finite, got {w:?}"),
        });
    }
    let invariance = z1.mse_loss(z2)?;
    let variance = variance_hinge(z1)?
        .add(&variance_hinge(z2)?)?
        .mul_scalar(0.5)?;
    let covariance = covariance_penalty(z1)?.add(&covariance_penalty(z2)?)?;
    let loss = invariance
        .mul_scalar(w.sim)?
        .add(&variance.mul_scalar(w.var)?)?
        .add(&covariance.mul_scalar(w.cov)?)?;
    Ok(VicregTerms {
        loss,
        invariance,
        variance,
        covariance,
    })
}
