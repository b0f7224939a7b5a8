//! Rotating square images by multiples of 90 degrees with tensor ops (transpose and a flip by
//! `index_select`), for RotNet's 4-way rotation prediction.

use selfsup_tensor::Tensor;

use crate::error::{config, Result};

/// Reverses axis `axis` of `x` (a differentiable `index_select` with descending indices).
pub fn flip(x: &Tensor, axis: isize) -> Result<Tensor> {
    let n = x.dim(axis)?;
    let ids: Vec<i64> = (0..n as i64).rev().collect();
    Ok(x.index_select(axis, &Tensor::from_vec(ids, &[n])?)?)
}

/// Images `[B, C, H, W]` (square) rotated counter-clockwise by `k * 90` degrees (`k` taken
/// modulo 4), the convention of `numpy.rot90`: for `k = 1`, `out[i][j] = x[j][W - 1 - i]`.
pub fn rot90(x: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || s[2] != s[3] {
        return config(format!(
            "rotation needs square images [B, C, H, H], got {s:?}"
        ));
    }
    Ok(match k % 4 {
        0 => x.clone(),
        1 => flip(&x.transpose(2, 3)?, 2)?,
        2 => flip(&flip(x, 2)?, 3)?,
        _ => flip(&x.transpose(2, 3)?, 3)?,
    })
}

/// The RotNet batch: every image at 0, 90, 180 and 270 degrees, `[4B, C, H, W]` with the `B`
/// unrotated images first, and the rotation index (0..4) of each row.
pub fn rotate_all(x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let b = x.shape().first().copied().unwrap_or(0);
    let rots = (0..4).map(|k| rot90(x, k)).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = rots.iter().collect();
    let labels = (0..4).flat_map(|k| std::iter::repeat_n(k, b)).collect();
    Ok((Tensor::concat(&refs, 0)?, labels))
}
