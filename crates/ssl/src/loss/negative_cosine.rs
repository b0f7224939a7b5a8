//! SimSiam's loss term (Chen & He 2021): the negative cosine similarity `-cos(p, z)` of a
//! prediction and the other view's projection, averaged over rows. The caller detaches `z`
//! (the stop-gradient).

use selfsup_tensor::{Result, Tensor};

use super::common::same_2d;

/// `-mean_i cos(p_i, z_i)` over `[N, D]` predictions `p` and targets `z`.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    same_2d("negative_cosine", p, z, 1)?;
    p.cosine_similarity(z, -1, 1e-12)?.mean_all()?.neg()
}
