//! Random resized crop with torchvision's semantics: up to 10 attempts to draw a box whose area
//! fraction lies in `scale` and whose log aspect ratio is uniform in `log(ratio)`, then a central
//! fallback; the box is resampled bilinearly to the output size.

use selfsup_tensor::rng::Philox;

use super::resize::{resample, taps, Tap};
use crate::dataset::Image;

/// An integer crop window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl CropBox {
    /// The whole `height x width` image.
    pub fn full(height: usize, width: usize) -> Self {
        CropBox {
            top: 0,
            left: 0,
            height,
            width,
        }
    }
}

/// Parameters of the random resized crop (torchvision `RandomResizedCrop`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// Range of the crop's area as a fraction of the image's (torchvision default `(0.08, 1.0)`).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio width/height, sampled log-uniformly (default `(3/4, 4/3)`).
    pub ratio: (f64, f64),
}

impl Default for RandomResizedCrop {
    fn default() -> Self {
        RandomResizedCrop {
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }
}

impl RandomResizedCrop {
    /// Draws a crop box for an `height x width` image (torchvision's `get_params`).
    pub fn sample(&self, height: usize, width: usize, rng: &mut Philox) -> CropBox {
        let area = (height * width) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.uniform_range(self.scale.0, self.scale.1);
            let aspect = rng.uniform_range(lr0, lr1).exp();
            let w = (target * aspect).sqrt().round_ties_even() as usize;
            let h = (target / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.below((height - h + 1) as u64) as usize;
                let left = rng.below((width - w + 1) as u64) as usize;
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        // Fallback: the central crop with the aspect ratio clamped into range.
        let in_ratio = width as f64 / height as f64;
        let (w, h) = if in_ratio < self.ratio.0.min(self.ratio.1) {
            (
                width,
                ((width as f64 / self.ratio.0.min(self.ratio.1)).round_ties_even() as usize).max(1),
            )
        } else if in_ratio > self.ratio.0.max(self.ratio.1) {
            (
                ((height as f64 * self.ratio.0.max(self.ratio.1)).round_ties_even() as usize)
                    .max(1),
                height,
            )
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h.min(height)) / 2,
            left: (width - w.min(width)) / 2,
            height: h,
            width: w,
        }
    }
}

/// Reusable tap tables for [`resized_crop_into`].
#[derive(Default, Debug)]
pub(crate) struct CropScratch {
    rows: Vec<Tap>,
    cols: Vec<Tap>,
}

/// Resamples `bx` of a CHW source (`u8` with `scale = 1/255`, or `f32` with `scale = 1`) to
/// `out_h x out_w`, mirrored left-right when `flip`, into `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resized_crop_into<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    src_h: usize,
    src_w: usize,
    bx: CropBox,
    flip: bool,
    out_h: usize,
    out_w: usize,
    scale: f32,
    scratch: &mut CropScratch,
    out: &mut [f32],
) {
    taps(
        bx.top,
        bx.height.clamp(1, src_h - bx.top),
        out_h,
        &mut scratch.rows,
    );
    taps(
        bx.left,
        bx.width.clamp(1, src_w - bx.left),
        out_w,
        &mut scratch.cols,
    );
    if flip {
        scratch.cols.reverse();
    }
    resample(
        src,
        channels,
        src_h,
        src_w,
        &scratch.rows,
        &scratch.cols,
        scale,
        out,
    );
}

/// Crops `bx` out of `img` and resizes it to `out_h x out_w` (bilinear), flipping if asked.
pub fn resized_crop(img: &Image, bx: CropBox, out_h: usize, out_w: usize, flip: bool) -> Image {
    let mut out = Image::zeros(img.channels, out_h, out_w);
    let mut s = CropScratch::default();
    resized_crop_into(
        &img.data,
        img.channels,
        img.height,
        img.width,
        bx,
        flip,
        out_h,
        out_w,
        1.0,
        &mut s,
        &mut out.data,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_without_resize_copies_the_window() {
        let img = Image::new((0..16).map(|x| x as f32).collect(), 1, 4, 4);
        let bx = CropBox {
            top: 1,
            left: 2,
            height: 2,
            width: 2,
        };
        assert_eq!(
            resized_crop(&img, bx, 2, 2, false).data,
            vec![6.0, 7.0, 10.0, 11.0]
        );
        assert_eq!(
            resized_crop(&img, bx, 2, 2, true).data,
            vec![7.0, 6.0, 11.0, 10.0]
        );
    }

    #[test]
    fn crop_2x2_window_to_3x3() {
        // window [[5,6],[9,10]] -> 3x3: src coords (o+0.5)*2/3-0.5 = -1/6 (clamped 0), 0.5, 7/6 (-> 1)
        let img = Image::new((0..16).map(|x| x as f32).collect(), 1, 4, 4);
        let bx = CropBox {
            top: 1,
            left: 1,
            height: 2,
            width: 2,
        };
        let out = resized_crop(&img, bx, 3, 3, false);
        assert_eq!(out.data, vec![5.0, 5.5, 6.0, 7.0, 7.5, 8.0, 9.0, 9.5, 10.0]);
    }

    #[test]
    fn boxes_stay_inside_and_areas_inside_the_range() {
        let rrc = RandomResizedCrop {
            scale: (0.5, 1.0),
            ratio: (0.75, 4.0 / 3.0),
        };
        let mut rng = Philox::new(1, 0);
        let mut sum = 0.0;
        let n = 5000;
        for _ in 0..n {
            let b = rrc.sample(28, 28, &mut rng);
            assert!(b.top + b.height <= 28 && b.left + b.width <= 28);
            let frac = (b.height * b.width) as f64 / 784.0;
            // rounding each side to an integer moves the area by at most about one row and column
            assert!(frac > 0.5 - 2.0 * 29.0 / 784.0 && frac <= 1.0, "{b:?}");
            let r = b.width as f64 / b.height as f64;
            assert!(r > 0.75 * 0.9 && r < 4.0 / 3.0 * 1.1, "{b:?}");
            sum += frac;
        }
        let mean = sum / n as f64;
        // most draws succeed on the first attempt, so the mean area is near the middle of the range
        assert!((mean - 0.75).abs() < 0.05, "mean area fraction {mean}");
    }

    #[test]
    fn impossible_scale_falls_back_to_the_central_crop() {
        let rrc = RandomResizedCrop {
            scale: (2.0, 3.0),
            ratio: (1.0, 1.0),
        };
        let b = rrc.sample(4, 6, &mut Philox::new(0, 0));
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: 1,
                height: 4,
                width: 4
            }
        );
    }
}
