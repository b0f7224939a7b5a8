//! Bilinear resampling with PyTorch's `align_corners=False` convention (half-pixel centres,
//! source coordinates clamped at 0), used by the resized crop and by image-folder loading.
//!
//! Downscaling is plain bilinear (no antialiasing filter), like `F.interpolate(mode="bilinear")`
//! and torchvision's `antialias=False`.

use crate::dataset::Image;

/// One output coordinate's two source indices and the weight of the second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub w1: f32,
}

/// The taps mapping `out` output positions onto the source span `[start, start + len)` of an axis.
pub(crate) fn taps(start: usize, len: usize, out: usize, taps: &mut Vec<Tap>) {
    taps.clear();
    let scale = len as f32 / out as f32;
    for o in 0..out {
        let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let mut i0 = src as usize;
        if i0 > len - 1 {
            i0 = len - 1;
        }
        let i1 = if i0 < len - 1 { i0 + 1 } else { i0 };
        let w1 = src - i0 as f32;
        taps.push(Tap {
            i0: start + i0,
            i1: start + i1,
            w1,
        });
    }
}

/// Resamples the window `rows x cols` (given as taps) of every channel of a CHW source into
/// `out` (CHW, `channels * rows.len() * cols.len()`), multiplying values by `scale`.
/// `T` is `u8` (pass `scale = 1/255`) or `f32`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resample<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    src_h: usize,
    src_w: usize,
    rows: &[Tap],
    cols: &[Tap],
    scale: f32,
    out: &mut [f32],
) {
    let (oh, ow) = (rows.len(), cols.len());
    debug_assert_eq!(out.len(), channels * oh * ow);
    for c in 0..channels {
        let plane = &src[c * src_h * src_w..(c + 1) * src_h * src_w];
        let dst = &mut out[c * oh * ow..(c + 1) * oh * ow];
        for (y, r) in rows.iter().enumerate() {
            let row0 = &plane[r.i0 * src_w..(r.i0 + 1) * src_w];
            let row1 = &plane[r.i1 * src_w..(r.i1 + 1) * src_w];
            let (wy1, wy0) = (r.w1 * scale, (1.0 - r.w1) * scale);
            let drow = &mut dst[y * ow..(y + 1) * ow];
            for (d, t) in drow.iter_mut().zip(cols) {
                let top = row0[t.i0].into() + (row0[t.i1].into() - row0[t.i0].into()) * t.w1;
                let bot = row1[t.i0].into() + (row1[t.i1].into() - row1[t.i0].into()) * t.w1;
                *d = top * wy0 + bot * wy1;
            }
        }
    }
}

/// Resizes an image to `height x width` (bilinear, half-pixel centres).
pub fn resize_bilinear(img: &Image, height: usize, width: usize) -> Image {
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    taps(0, img.height, height, &mut rows);
    taps(0, img.width, width, &mut cols);
    let mut out = Image::zeros(img.channels, height, width);
    resample(
        &img.data,
        img.channels,
        img.height,
        img.width,
        &rows,
        &cols,
        1.0,
        &mut out.data,
    );
    out
}

/// Resizes `u8` CHW pixels to `height x width`, rounding to the nearest byte.
pub fn resize_u8(
    src: &[u8],
    channels: usize,
    src_h: usize,
    src_w: usize,
    height: usize,
    width: usize,
) -> Vec<u8> {
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    taps(0, src_h, height, &mut rows);
    taps(0, src_w, width, &mut cols);
    let mut out = vec![0.0f32; channels * height * width];
    resample(src, channels, src_h, src_w, &rows, &cols, 1.0, &mut out);
    out.iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_is_exact() {
        let img = Image::new((0..9).map(|x| x as f32).collect(), 1, 3, 3);
        assert_eq!(resize_bilinear(&img, 3, 3), img);
    }

    #[test]
    fn upsample_2x2_to_4x4_matches_pytorch() {
        // F.interpolate(torch.tensor([[[[0.,1.],[2.,3.]]]]), size=4, mode="bilinear", align_corners=False)
        let img = Image::new(vec![0.0, 1.0, 2.0, 3.0], 1, 2, 2);
        let out = resize_bilinear(&img, 4, 4);
        let expect = [
            0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in out.data.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{:?}", out.data);
        }
    }

    #[test]
    fn downsample_4x4_to_2x2_averages_centre_pairs() {
        // src = (y*4+x); output (0,0) samples at source (0.5, 0.5): mean of 0,1,4,5 = 2.5
        let img = Image::new((0..16).map(|x| x as f32).collect(), 1, 4, 4);
        let out = resize_bilinear(&img, 2, 2);
        assert_eq!(out.data, vec![2.5, 4.5, 10.5, 12.5]);
    }
}
