//! SimMIM-style masked image modelling (Xie et al. 2022) with any CNN encoder: a random
//! `mask_ratio` of each image's `patch x patch` squares is replaced by a learned per-channel
//! mask value, the encoder computes its last feature map `[B, C', h, w]`, and a linear head at
//! each feature position predicts the `s x s` pixels under it (`s = H / h`, then rearranged
//! like a pixel shuffle). The loss is the L1 error on masked pixels only.

use selfsup_data::mask::simmim_mask;
use selfsup_nn::{join, Linear, Module};
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::masked_pixel_loss;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

/// SimMIM's learned mask value and its pixel head.
#[derive(Debug)]
pub struct SimmimHead {
    /// The value masked pixels take, per channel `[1, C, 1, 1]` (starts at 0).
    pub mask_token: Tensor,
    /// Feature channels to `s * s * C` pixels.
    pub proj: Linear,
}

impl Module for SimmimHead {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "mask_token"), &self.mask_token);
        self.proj.visit_params(&join(prefix, "proj"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        f(join(prefix, "mask_token"), &mut self.mask_token);
        self.proj.visit_params_mut(&join(prefix, "proj"), f);
    }
}

/// SimMIM: a CNN encoder and a [`SimmimHead`].
#[derive(Debug)]
pub struct Simmim {
    /// The CNN encoder.
    pub encoder: Encoder,
    /// Mask value and pixel head.
    pub head: SimmimHead,
    patch: usize,
    stride: usize,
    channels: usize,
    image: usize,
    mask_ratio: f64,
}

/// What one SimMIM pass computed (for tests and inspection).
#[derive(Debug)]
pub struct SimmimOutput {
    /// The masked input the encoder saw.
    pub input: Tensor,
    /// The reconstruction `[B, C, H, W]`.
    pub pred: Tensor,
    /// The pixel mask `[B, 1, H, W]`, 1 where masked.
    pub mask: Tensor,
    /// The feature map.
    pub features: Tensor,
    /// The loss.
    pub loss: Tensor,
}

impl Simmim {
    /// Builds SimMIM from `cfg`: a CNN backbone (small-cnn or resnet18), mask squares of
    /// `backbone.patch` pixels, `mask_ratio` of them masked.
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let b = &cfg.backbone;
        let mut encoder = Encoder::new(b, false, false, g)?;
        if encoder.as_vit().is_some() || encoder.as_text().is_some() {
            return config("simmim decodes from a CNN feature map: use small-cnn or resnet18 (or mae for a vit)");
        }
        if b.patch == 0 || b.image_size % b.patch != 0 {
            return config(format!(
                "simmim: backbone.patch = {} (the mask square) must divide image_size = {}",
                b.patch, b.image_size
            ));
        }
        // The feature map's stride, from one probe image.
        let probe = Tensor::zeros(&[1, b.in_channels, b.image_size, b.image_size], DType::F32);
        encoder.set_train(false);
        let fm = selfsup_tensor::no_grad_scope(|| encoder.feature_map(&probe));
        encoder.set_train(true);
        let fm = fm?;
        let (c_feat, h) = (fm.shape()[1], fm.shape()[2]);
        if h == 0 || b.image_size % h != 0 || fm.shape()[3] != h {
            return config(format!(
                "simmim: the encoder's {h}x{} feature map does not tile the {}-pixel image",
                fm.shape()[3],
                b.image_size
            ));
        }
        let stride = b.image_size / h;
        Ok(Simmim {
            encoder,
            head: SimmimHead {
                mask_token: Tensor::zeros(&[1, b.in_channels, 1, 1], DType::F32).requires_grad_(),
                proj: Linear::new(c_feat, stride * stride * b.in_channels, true, DType::F32, g)?,
            },
            patch: b.patch,
            stride,
            channels: b.in_channels,
            image: b.image_size,
            mask_ratio: cfg.mask_ratio,
        })
    }

    /// Draws pixel masks `[B, 1, H, W]` (1 = masked) for `batch` images: per image,
    /// `ceil(mask_ratio * squares)` random `patch x patch` squares.
    pub fn draw_mask(&self, batch: usize, g: &mut Generator) -> Result<Tensor> {
        let (s, p) = (self.image, self.patch);
        let grid = s / p;
        let mut rng = g.fork();
        let mut out = vec![0.0f32; batch * s * s];
        for b in 0..batch {
            let m = simmim_mask(grid, grid, 1, self.mask_ratio, &mut rng)?;
            for y in 0..s {
                for x in 0..s {
                    if m[(y / p) * grid + x / p] {
                        out[b * s * s + y * s + x] = 1.0;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, &[batch, 1, s, s])?)
    }

    /// The SimMIM pass on images `x` `[B, C, H, W]` with pixel mask `mask` `[B, 1, H, W]`.
    pub fn forward_with_mask(&self, x: &Tensor, mask: &Tensor) -> Result<SimmimOutput> {
        let (c, s) = (self.channels, self.image);
        if x.rank() != 4 || x.shape()[1..] != [c, s, s] {
            return config(format!(
                "simmim: expected images [B, {c}, {s}, {s}], got {:?}",
                x.shape()
            ));
        }
        let b = x.shape()[0];
        if mask.shape() != [b, 1, s, s] {
            return config(format!(
                "simmim: mask must be [{b}, 1, {s}, {s}], got {:?}",
                mask.shape()
            ));
        }
        let mask = mask.to_dtype(x.dtype())?;
        let visible = mask.mul_scalar(-1.0)?.add_scalar(1.0)?;
        let token = self.head.mask_token.to_dtype(x.dtype())?;
        let input = x.mul(&visible)?.add(&mask.mul(&token)?)?;
        let features = self.encoder.feature_map(&input)?;
        let (h, w) = (features.shape()[2], features.shape()[3]);
        let st = self.stride;
        let pred = self
            .head
            .proj
            .forward(&features.permute(&[0, 2, 3, 1])?)?
            .reshape(&[b, h, w, st, st, c])?
            .permute(&[0, 5, 1, 3, 2, 4])?
            .reshape(&[b, c, h * st, w * st])?;
        let loss = masked_pixel_loss(&pred, &x.detach(), &mask, true)?;
        Ok(SimmimOutput {
            input,
            pred,
            mask,
            features,
            loss,
        })
    }
}

impl_module!(Simmim { encoder, head });

impl SslMethod for Simmim {
    fn name(&self) -> MethodName {
        MethodName::Simmim
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, g: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("simmim", 1)?[0];
        let mask = self.draw_mask(x.shape()[0], g)?.to_device(x.device())?;
        let out = self.forward_with_mask(x, &mask)?;
        let feats = out.features.detach().mean(&[2, 3], false)?;
        Ok(StepOutput {
            loss: out.loss,
            embeddings: Some((feats, None)),
            metrics: Vec::new(),
        })
    }
}
