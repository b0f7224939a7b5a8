//! View pipelines: which transforms, with which probabilities and parameters, turn one image into
//! one augmented view; and view generators (two views for SimCLR/BYOL, multi-crop for DINO, a
//! plain eval transform).
//!
//! A [`ViewConfig`] is a plain struct; its transforms run in a fixed order: random resized crop
//! (or a plain resize) fused with the horizontal flip, rotation by 90-degree multiples, small-angle
//! rotation, colour jitter, random grayscale, gaussian blur, solarize, gaussian noise,
//! normalisation, random erasing. `Default` is the benchmark's SimCLR recipe for Fashion-MNIST
//! (shared/README.md): crop to 28x28 with scale 0.5-1 and ratio 3/4-4/3, flip with p 0.5,
//! normalise with mean 0.2860 and std 0.3530.

use selfsup_tensor::rng::Philox;

use crate::augment::blur::{gaussian_blur, gaussian_kernel};
use crate::augment::color::{solarize, to_grayscale, ColorJitter};
use crate::augment::crop::{resized_crop_into, CropBox, CropScratch, RandomResizedCrop};
use crate::augment::erase::{gaussian_noise, RandomErasing};
use crate::augment::geometry::rotate_into;
use crate::augment::normalize::Normalize;
use crate::dataset::{Image, ImageRef};
use crate::error::{DataError, Result};

/// Random rotation by a small angle, uniform in `[-max_degrees, max_degrees]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rotation {
    /// Probability of rotating.
    pub p: f64,
    /// Largest angle in degrees.
    pub max_degrees: f32,
    /// Value for pixels rotated in from outside the image.
    pub fill: f32,
}

/// Gaussian blur with a random standard deviation (torchvision `GaussianBlur`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blur {
    /// Probability of blurring.
    pub p: f64,
    /// Odd kernel size in pixels.
    pub kernel_size: usize,
    /// Range the standard deviation is drawn from uniformly (torchvision default `(0.1, 2.0)`).
    pub sigma: (f32, f32),
}

/// Solarisation with a probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solarization {
    /// Probability of solarising.
    pub p: f64,
    /// Values at or above it are inverted (0.5 in BYOL).
    pub threshold: f32,
}

/// Additive gaussian noise with a probability (values clamped to `[0, 1]` afterwards).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    /// Probability of adding noise.
    pub p: f64,
    /// Standard deviation of the noise.
    pub std: f32,
}

/// One view's pipeline. See the module docs for the order in which the transforms run.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewConfig {
    /// Output `(height, width)`.
    pub size: (usize, usize),
    /// Random resized crop; `None` resizes the whole image (bilinear) to `size`.
    pub crop: Option<RandomResizedCrop>,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Probability of rotating by a random non-zero multiple of 90 degrees (on non-square
    /// outputs only 180 degrees is drawn, so the shape is kept).
    pub rot90: f64,
    /// Small-angle rotation.
    pub rotation: Option<Rotation>,
    /// Colour jitter and the probability of applying it.
    pub jitter: Option<(f64, ColorJitter)>,
    /// Probability of converting to grayscale (no-op on 1-channel images).
    pub grayscale: f64,
    /// Gaussian blur.
    pub blur: Option<Blur>,
    /// Solarisation.
    pub solarize: Option<Solarization>,
    /// Gaussian noise.
    pub noise: Option<Noise>,
    /// Per-channel normalisation.
    pub normalize: Option<Normalize>,
    /// Random erasing (after normalisation, as in torchvision recipes).
    pub erasing: Option<RandomErasing>,
}

impl Default for ViewConfig {
    /// The benchmark's SimCLR view for Fashion-MNIST (see the module docs).
    fn default() -> Self {
        ViewConfig {
            size: (28, 28),
            crop: Some(RandomResizedCrop {
                scale: (0.5, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            }),
            hflip: 0.5,
            rot90: 0.0,
            rotation: None,
            jitter: None,
            grayscale: 0.0,
            blur: None,
            solarize: None,
            noise: None,
            normalize: Some(Normalize::fashion_mnist()),
            erasing: None,
        }
    }
}

impl ViewConfig {
    /// The plain evaluation transform: resize to `size`, then normalise.
    pub fn eval(size: (usize, usize), normalize: Option<Normalize>) -> Self {
        ViewConfig {
            size,
            crop: None,
            hflip: 0.0,
            rot90: 0.0,
            rotation: None,
            jitter: None,
            grayscale: 0.0,
            blur: None,
            solarize: None,
            noise: None,
            normalize,
            erasing: None,
        }
    }

    /// shared/README.md's stronger SimCLR recipe for Fashion-MNIST: crop scale 0.3-1, flip,
    /// brightness and contrast jitter 0.6-1.4 with probability 0.8, normalise.
    pub fn simclr_fashion_mnist_jitter() -> Self {
        ViewConfig {
            crop: Some(RandomResizedCrop {
                scale: (0.3, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            }),
            jitter: Some((0.8, ColorJitter::new(0.4, 0.4, 0.0, 0.0))),
            ..ViewConfig::default()
        }
    }

    /// The SimCLR paper's RGB recipe at `size`: crop scale 0.08-1, flip, jitter (0.4, 0.4, 0.4,
    /// 0.1) with p 0.8, grayscale p 0.2, blur (kernel ~10% of the size) p 0.5, ImageNet
    /// normalisation.
    pub fn simclr_rgb(size: usize) -> Self {
        ViewConfig {
            size: (size, size),
            crop: Some(RandomResizedCrop::default()),
            jitter: Some((0.8, ColorJitter::new(0.4, 0.4, 0.4, 0.1))),
            grayscale: 0.2,
            blur: Some(Blur {
                p: 0.5,
                kernel_size: (size / 10) | 1,
                sigma: (0.1, 2.0),
            }),
            normalize: Some(Normalize::imagenet()),
            ..ViewConfig::default()
        }
    }

    /// Checks the parameters against an input with `channels` channels.
    #[allow(clippy::nonminimal_bool)] // the negated comparisons also reject NaN
    pub fn validate(&self, channels: usize) -> Result<()> {
        let bad = |d: String| Err(DataError::invalid("view config", d));
        if self.size.0 == 0 || self.size.1 == 0 {
            return bad(format!("output size {:?} must be positive", self.size));
        }
        if let Some(c) = &self.crop {
            if !(c.scale.0 > 0.0 && c.scale.0 <= c.scale.1)
                || !(c.ratio.0 > 0.0 && c.ratio.0 <= c.ratio.1)
            {
                return bad(format!(
                    "crop scale {:?} and ratio {:?} must be positive, increasing ranges",
                    c.scale, c.ratio
                ));
            }
        }
        if let Some(b) = &self.blur {
            if b.kernel_size % 2 == 0 || !(b.sigma.0 > 0.0 && b.sigma.0 <= b.sigma.1) {
                return bad(format!(
                    "blur kernel size {} must be odd and sigma {:?} a positive range",
                    b.kernel_size, b.sigma
                ));
            }
        }
        if let Some(n) = &self.normalize {
            let ok = |v: &Vec<f32>| v.len() == 1 || v.len() == channels;
            if !ok(&n.mean) || !ok(&n.std) || n.std.iter().any(|&s| s <= 0.0) {
                return bad(format!(
                    "normalisation mean {:?} / std {:?} need 1 or {channels} values and positive std",
                    n.mean, n.std
                ));
            }
        }
        Ok(())
    }

    /// Produces one view of `img` (`u8` pixels) into `out` (`channels * size.0 * size.1`).
    pub(crate) fn apply_u8(
        &self,
        img: ImageRef<'_>,
        rng: &mut Philox,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        self.apply_generic(
            img.pixels,
            img.channels,
            img.height,
            img.width,
            1.0 / 255.0,
            rng,
            scratch,
            out,
        )
    }

    /// Produces one view of an `f32` image in `[0, 1]`.
    pub fn apply(&self, img: &Image, rng: &mut Philox) -> Image {
        let (oh, ow) = self.size;
        let mut out = Image::zeros(img.channels, oh, ow);
        let mut s = Scratch::default();
        self.apply_generic(
            &img.data,
            img.channels,
            img.height,
            img.width,
            1.0,
            rng,
            &mut s,
            &mut out.data,
        );
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_generic<T: Copy + Into<f32>>(
        &self,
        src: &[T],
        c: usize,
        h: usize,
        w: usize,
        scale: f32,
        rng: &mut Philox,
        scratch: &mut Scratch,
        out: &mut [f32],
    ) {
        let (oh, ow) = self.size;
        let bx = match &self.crop {
            Some(rrc) => rrc.sample(h, w, rng),
            None => CropBox::full(h, w),
        };
        let flip = self.hflip > 0.0 && rng.bernoulli(self.hflip);
        resized_crop_into(
            src,
            c,
            h,
            w,
            bx,
            flip,
            oh,
            ow,
            scale,
            &mut scratch.crop,
            out,
        );
        if self.rot90 > 0.0 && rng.bernoulli(self.rot90) {
            let k = if oh == ow {
                1 + rng.below(3) as usize
            } else {
                2
            };
            rot90_in_place(out, c, oh, k, &mut scratch.tmp);
        }
        if let Some(r) = &self.rotation {
            if rng.bernoulli(r.p) {
                let deg = rng.uniform_range(-r.max_degrees as f64, r.max_degrees as f64) as f32;
                scratch.tmp.clear();
                scratch.tmp.extend_from_slice(out);
                rotate_into(&scratch.tmp, c, oh, ow, deg, r.fill, out);
            }
        }
        if let Some((p, j)) = &self.jitter {
            if rng.bernoulli(*p) {
                j.apply(out, c, rng);
            }
        }
        if self.grayscale > 0.0 && rng.bernoulli(self.grayscale) {
            to_grayscale(out, c);
        }
        if let Some(b) = &self.blur {
            if rng.bernoulli(b.p) {
                let sigma = rng.uniform_range(b.sigma.0 as f64, b.sigma.1 as f64) as f32;
                gaussian_blur(out, oh, ow, &gaussian_kernel(b.kernel_size, sigma));
            }
        }
        if let Some(s) = &self.solarize {
            if rng.bernoulli(s.p) {
                solarize(out, s.threshold);
            }
        }
        if let Some(n) = &self.noise {
            if rng.bernoulli(n.p) {
                gaussian_noise(out, n.std, true, rng);
            }
        }
        if let Some(n) = &self.normalize {
            n.apply(out, c);
        }
        if let Some(e) = &self.erasing {
            e.apply(out, oh, ow, rng);
        }
    }
}

/// Per-thread buffers reused across samples.
#[derive(Default, Debug)]
pub(crate) struct Scratch {
    crop: CropScratch,
    tmp: Vec<f32>,
}

/// Rotates square planes (`n x n`) by `k * 90` degrees counter-clockwise, in place; `k = 2` also
/// works on non-square planes (pass any `n` dividing the plane; it reverses each plane).
fn rot90_in_place(data: &mut [f32], channels: usize, n: usize, k: usize, tmp: &mut Vec<f32>) {
    let plane = data.len() / channels;
    for p in data.chunks_exact_mut(plane) {
        if k == 2 {
            p.reverse();
            continue;
        }
        tmp.clear();
        tmp.extend_from_slice(p);
        for i in 0..n {
            for j in 0..n {
                p[i * n + j] = if k == 1 {
                    tmp[j * n + (n - 1 - i)]
                } else {
                    tmp[(n - 1 - j) * n + i]
                };
            }
        }
    }
}

/// A view generator: the list of view pipelines applied to every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Views {
    /// One pipeline per view, in output order.
    pub views: Vec<ViewConfig>,
}

impl Views {
    /// Two views from the same pipeline (SimCLR, VICReg).
    pub fn two(config: ViewConfig) -> Self {
        Views {
            views: vec![config.clone(), config],
        }
    }

    /// Two asymmetric views (BYOL): the first always blurred and never solarised, the second
    /// blurred with p 0.1 and solarised with p 0.2; `base` gives everything else.
    pub fn byol(base: ViewConfig) -> Self {
        let k = ((base.size.0.min(base.size.1) / 10) | 1).max(3);
        let mut a = base.clone();
        a.blur = Some(Blur {
            p: 1.0,
            kernel_size: k,
            sigma: (0.1, 2.0),
        });
        a.solarize = None;
        let mut b = base;
        b.blur = Some(Blur {
            p: 0.1,
            kernel_size: k,
            sigma: (0.1, 2.0),
        });
        b.solarize = Some(Solarization {
            p: 0.2,
            threshold: 0.5,
        });
        Views { views: vec![a, b] }
    }

    /// DINO-style multi-crop: two global views then `n_local` local views.
    pub fn multi_crop(global: ViewConfig, local: ViewConfig, n_local: usize) -> Self {
        let mut views = vec![global.clone(), global];
        views.extend(std::iter::repeat_n(local, n_local));
        Views { views }
    }

    /// DINO's defaults scaled to an image side `global_size`: global crops with scale 0.4-1 at
    /// `global_size`, `n_local` local crops with scale 0.05-0.4 at `local_size`; `base` gives
    /// the other transforms.
    pub fn dino(base: ViewConfig, global_size: usize, local_size: usize, n_local: usize) -> Self {
        let ratio = (3.0 / 4.0, 4.0 / 3.0);
        let global = ViewConfig {
            size: (global_size, global_size),
            crop: Some(RandomResizedCrop {
                scale: (0.4, 1.0),
                ratio,
            }),
            ..base.clone()
        };
        let local = ViewConfig {
            size: (local_size, local_size),
            crop: Some(RandomResizedCrop {
                scale: (0.05, 0.4),
                ratio,
            }),
            ..base
        };
        Views::multi_crop(global, local, n_local)
    }

    /// One deterministic view: resize and normalise.
    pub fn eval(size: (usize, usize), normalize: Option<Normalize>) -> Self {
        Views {
            views: vec![ViewConfig::eval(size, normalize)],
        }
    }

    /// Checks every pipeline (see [`ViewConfig::validate`]); there must be at least one view.
    pub fn validate(&self, channels: usize) -> Result<()> {
        if self.views.is_empty() || self.views.len() > 256 {
            return Err(DataError::invalid(
                "views",
                format!("{} views; use 1 to 256", self.views.len()),
            ));
        }
        self.views.iter().try_for_each(|v| v.validate(channels))
    }

    /// The random stream of view `view` of sample `index` in epoch `epoch`: distinct for every
    /// `(epoch < 2^24, view < 256, index < 2^32)`.
    pub fn stream(epoch: u64, view: usize, index: usize) -> u64 {
        (epoch << 40) | ((view as u64) << 32) | (index as u64 & 0xFFFF_FFFF)
    }

    /// All views of one `u8` image, with the randomness the loader would use for sample `index`
    /// of `epoch` under `seed`.
    pub fn apply(&self, img: ImageRef<'_>, seed: u64, epoch: u64, index: usize) -> Vec<Image> {
        let mut scratch = Scratch::default();
        self.views
            .iter()
            .enumerate()
            .map(|(v, cfg)| {
                let mut rng = Philox::new(seed, Views::stream(epoch, v, index));
                let mut out = Image::zeros(img.channels, cfg.size.0, cfg.size.1);
                cfg.apply_u8(img, &mut rng, &mut scratch, &mut out.data);
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<u8> {
        (0..16).map(|x| (x * 10) as u8).collect()
    }

    #[test]
    fn eval_view_is_scale_and_normalise() {
        let px = ramp();
        let img = ImageRef {
            pixels: &px,
            channels: 1,
            height: 4,
            width: 4,
        };
        let v = Views::eval(
            (4, 4),
            Some(Normalize {
                mean: vec![0.5],
                std: vec![0.5],
            }),
        );
        let out = v.apply(img, 0, 0, 0);
        for (o, p) in out[0].data.iter().zip(&px) {
            assert!((o - (*p as f32 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        }
    }

    #[test]
    fn views_are_reproducible_and_differ_between_views() {
        let px: Vec<u8> = (0..784).map(|i| (i * 7 % 256) as u8).collect();
        let img = ImageRef {
            pixels: &px,
            channels: 1,
            height: 28,
            width: 28,
        };
        let v = Views::two(ViewConfig::default());
        let a = v.apply(img, 1, 0, 5);
        let b = v.apply(img, 1, 0, 5);
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_ne!(a, v.apply(img, 1, 1, 5));
    }

    #[test]
    fn full_pipeline_runs_on_rgb_and_keeps_shapes() {
        let px: Vec<u8> = (0..3 * 40 * 30).map(|i| (i % 251) as u8).collect();
        let img = ImageRef {
            pixels: &px,
            channels: 3,
            height: 40,
            width: 30,
        };
        let mut cfg = ViewConfig::simclr_rgb(24);
        cfg.rot90 = 1.0;
        cfg.rotation = Some(Rotation {
            p: 1.0,
            max_degrees: 10.0,
            fill: 0.0,
        });
        cfg.solarize = Some(Solarization {
            p: 1.0,
            threshold: 0.5,
        });
        cfg.noise = Some(Noise { p: 1.0, std: 0.05 });
        cfg.erasing = Some(RandomErasing {
            p: 1.0,
            ..RandomErasing::default()
        });
        cfg.validate(3).unwrap();
        let views = Views::dino(cfg, 24, 12, 4);
        let out = views.apply(img, 9, 2, 3);
        assert_eq!(out.len(), 6);
        assert!(out[..2]
            .iter()
            .all(|i| (i.channels, i.height, i.width) == (3, 24, 24)));
        assert!(out[2..]
            .iter()
            .all(|i| (i.channels, i.height, i.width) == (3, 12, 12)));
        assert!(out.iter().all(|i| i.data.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        let c = ViewConfig {
            blur: Some(Blur {
                p: 1.0,
                kernel_size: 4,
                sigma: (0.1, 2.0),
            }),
            ..ViewConfig::default()
        };
        assert!(c.validate(1).is_err());
        let c = ViewConfig {
            normalize: Some(Normalize::imagenet()),
            ..ViewConfig::default()
        };
        assert!(c.validate(1).is_err());
        assert!(ViewConfig::default().validate(1).is_ok());
    }

    #[test]
    fn flip_probability_is_about_half() {
        // a left-right ramp: a flipped view has its larger values on the left
        let px: Vec<u8> = (0..64).map(|i| (i % 8 * 30) as u8).collect();
        let img = ImageRef {
            pixels: &px,
            channels: 1,
            height: 8,
            width: 8,
        };
        let cfg = ViewConfig {
            size: (8, 8),
            crop: None,
            normalize: None,
            ..ViewConfig::default()
        };
        let v = Views { views: vec![cfg] };
        let flipped = (0..2000).filter(|&i| {
            let o = &v.apply(img, 4, 0, i)[0];
            o.at(0, 0, 0) > o.at(0, 0, 7)
        });
        let n = flipped.count();
        assert!((n as f64 - 1000.0).abs() < 100.0, "{n}");
    }
}
