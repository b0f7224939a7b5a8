//! BYOL's regression loss (Grill et al. 2020): the squared distance between L2-normalised
//! prediction and target, `||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`, averaged over rows. The
//! caller detaches `z` (the target branch).

use selfsup_tensor::{Result, Tensor};

use super::common::same_2d;

/// `mean_i (2 - 2 cos(p_i, z_i))` over `[N, D]` predictions `p` and targets `z`.
pub fn byol_loss(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    same_2d("byol_loss", p, z, 1)?;
    p.cosine_similarity(z, -1, 1e-12)?
        .mean_all()?
        .mul_scalar(-2.0)?
        .add_scalar(2.0)
}
