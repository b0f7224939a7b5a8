//! Luma/chroma conversion for colorization: full-range YCbCr (ITU-R BT.601, the JPEG
//! variant) with the chroma channels centred on 0 (no +0.5 offset), so neutral grey has
//! chroma exactly 0:
//!
//! ```text
//! Y  =  0.299 R + 0.587 G + 0.114 B
//! Cb = -0.168736 R - 0.331264 G + 0.5 B       (= 0.564 (B - Y))
//! Cr =  0.5 R - 0.418688 G - 0.081312 B       (= 0.713 (R - Y))
//! R = Y + 1.402 Cr,  G = Y - 0.344136 Cb - 0.714136 Cr,  B = Y + 1.772 Cb
//! ```
//!
//! The transform is linear, so it applies to normalised images too (channel-wise affine
//! normalisation maps to another affine change of the same three channels).

use selfsup_tensor::Tensor;

use crate::error::{config, Result};

/// RGB -> YCbCr matrix (rows Y, Cb, Cr).
pub const RGB_TO_YCBCR: [[f64; 3]; 3] = [
    [0.299, 0.587, 0.114],
    [-0.168_736, -0.331_264, 0.5],
    [0.5, -0.418_688, -0.081_312],
];

/// YCbCr -> RGB matrix (rows R, G, B).
pub const YCBCR_TO_RGB: [[f64; 3]; 3] = [
    [1.0, 0.0, 1.402],
    [1.0, -0.344_136, -0.714_136],
    [1.0, 1.772, 0.0],
];

fn mix(x: &Tensor, m: &[[f64; 3]; 3], what: &str) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || s[1] != 3 {
        return config(format!(
            "{what}: needs 3-channel images [B, 3, H, W], got {s:?}"
        ));
    }
    let ch: Vec<Tensor> = (0..3)
        .map(|c| x.narrow(1, c, 1))
        .collect::<selfsup_tensor::Result<_>>()?;
    let mut rows = Vec::with_capacity(3);
    for r in m {
        let mut acc = ch[0].mul_scalar(r[0])?;
        for c in 1..3 {
            acc = acc.add(&ch[c].mul_scalar(r[c])?)?;
        }
        rows.push(acc);
    }
    let refs: Vec<&Tensor> = rows.iter().collect();
    Ok(Tensor::concat(&refs, 1)?)
}

/// RGB images `[B, 3, H, W]` to YCbCr (channels Y, Cb, Cr; chroma centred on 0).
pub fn rgb_to_ycbcr(x: &Tensor) -> Result<Tensor> {
    mix(x, &RGB_TO_YCBCR, "rgb_to_ycbcr")
}

/// YCbCr images `[B, 3, H, W]` (chroma centred on 0) back to RGB.
pub fn ycbcr_to_rgb(x: &Tensor) -> Result<Tensor> {
    mix(x, &YCBCR_TO_RGB, "ycbcr_to_rgb")
}

/// RGB images `[B, 3, H, W]` split into luma `[B, 1, H, W]` and chroma `[B, 2, H, W]`.
pub fn luma_chroma(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let y = rgb_to_ycbcr(x)?;
    Ok((y.narrow(1, 0, 1)?, y.narrow(1, 1, 2)?))
}
