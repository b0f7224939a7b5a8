//! Colorization (Zhang et al. 2016, here as regression): RGB images are split into luma and
//! chroma (full-range YCbCr with chroma centred on 0, see [`crate::pretext::color`]); the
//! encoder sees the luma channel only (so it is built with one input channel although the data
//! has three), and a small decoder predicts the two chroma channels of every pixel from the
//! encoder's last feature map (upsampled to the image, nearest neighbour) concatenated with
//! the luma. The loss is the mean squared error on chroma (the paper classifies quantised ab
//! bins; plain MSE is the simpler baseline it compares with).

use selfsup_nn::Conv2d;
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::pretext::color::luma_chroma;

/// The chroma decoder: a 1x1 convolution (`C + 1 -> decoder_dim`, ReLU) over the upsampled
/// features and the luma, then a 3x3 convolution to the 2 chroma channels.
#[derive(Debug)]
pub struct ChromaDecoder {
    /// Mixes features and luma per pixel.
    pub mix: Conv2d,
    /// Predicts Cb and Cr.
    pub out: Conv2d,
}

impl_module!(ChromaDecoder { mix, out });

impl ChromaDecoder {
    /// Chroma `[B, 2, H, W]` from the feature map `[B, C, h, w]` and the luma `[B, 1, H, W]`.
    pub fn forward(&self, features: &Tensor, luma: &Tensor) -> Result<Tensor> {
        let s = luma.shape();
        let up = upsample_nearest(features, s[2], s[3])?;
        let z = Tensor::concat(&[&up, luma], 1)?;
        Ok(self.out.forward(&self.mix.forward(&z)?.relu()?)?)
    }
}

/// Nearest-neighbour upsampling of `x` `[B, C, h, w]` to `[B, C, height, width]`: each cell
/// is repeated `ceil(height / h)` x `ceil(width / w)` times and the result cropped (tensor
/// ops: unsqueeze, expand, reshape, narrow, so the gradient sums over each cell's copies).
pub fn upsample_nearest(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || s[2] == 0 || s[3] == 0 {
        return config(format!(
            "upsample: needs a feature map [B, C, h, w], got {s:?}"
        ));
    }
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (fy, fx) = (height.div_ceil(h), width.div_ceil(w));
    let up = x
        .reshape(&[b, c, h, 1, w, 1])?
        .expand(&[b, c, h, fy, w, fx])?
        .reshape(&[b, c, h * fy, w * fx])?;
    Ok(up.narrow(2, 0, height)?.narrow(3, 0, width)?)
}

/// Colorization: a luma-only encoder and a [`ChromaDecoder`].
#[derive(Debug)]
pub struct Colorization {
    /// The encoder (one input channel: luma).
    pub encoder: Encoder,
    /// The chroma decoder.
    pub decoder: ChromaDecoder,
}

impl Colorization {
    /// Builds the method from `cfg`: `backbone.in_channels` must be 3 (the data); the encoder
    /// itself takes 1 channel. `decoder_dim` is the decoder's width.
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        if cfg.backbone.in_channels != 3 {
            return config(format!(
                "colorization needs RGB images (in_channels 3), got in_channels = {}",
                cfg.backbone.in_channels
            ));
        }
        if cfg.decoder_dim == 0 {
            return config("colorization: decoder_dim must be at least 1");
        }
        let mut luma = cfg.backbone.clone();
        luma.in_channels = 1;
        let encoder = Encoder::new(&luma, false, false, g)?;
        let c = encoder.out_dim();
        let decoder = ChromaDecoder {
            mix: Conv2d::new(c + 1, cfg.decoder_dim, 1, 1, 0, true, DType::F32, g)?,
            out: Conv2d::new(cfg.decoder_dim, 2, 3, 1, 1, true, DType::F32, g)?,
        };
        Ok(Colorization { encoder, decoder })
    }

    /// Predicted chroma `[B, 2, H, W]` of RGB images `[B, 3, H, W]` (from their luma only).
    pub fn predict(&self, rgb: &Tensor) -> Result<Tensor> {
        let (luma, _) = luma_chroma(rgb)?;
        self.decoder
            .forward(&self.encoder.feature_map(&luma)?, &luma)
    }
}

impl_module!(Colorization { encoder, decoder });

impl SslMethod for Colorization {
    fn name(&self) -> MethodName {
        MethodName::Colorization
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("colorization", 1)?[0];
        if x.rank() != 4 || x.shape()[1] != 3 {
            return Err(crate::SslError::Batch {
                method: "colorization",
                msg: format!(
                    "colorization needs RGB images [B, 3, H, W], got {:?}",
                    x.shape()
                ),
            });
        }
        let (luma, chroma) = {
            let _guard = no_grad();
            let (l, c) = luma_chroma(x)?;
            (l.detach(), c.detach())
        };
        let fmap = self.encoder.feature_map(&luma)?;
        let pred = self.decoder.forward(&fmap, &luma)?;
        let loss = pred.mse_loss(&chroma)?;
        let zero = chroma.sqr()?.mean_all()?;
        let features = fmap.detach().global_avg_pool2d()?;
        Ok(StepOutput {
            loss,
            embeddings: Some((features, None)),
            metrics: vec![("chroma_mse_of_zero".into(), zero)],
        })
    }
}
