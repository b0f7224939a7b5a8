//! MAE (He et al. 2022): mask a random `mask_ratio` of each image's patches, run the ViT
//! encoder on the visible patches only, then a light decoder (its own width and depth, a
//! learned mask token and learned positions) over all patches predicts every patch's pixels;
//! the loss is the MSE on the masked patches only, against per-patch normalised pixels when
//! `norm_pix_loss` is set.

use selfsup_data::mask::{mae_mask, MaeMask};
use selfsup_nn::{init, join, Activation, LayerNorm, Linear, Module, TransformerBlock, Vit};
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::{masked_patch_mse, norm_pix_target};
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

/// The largest head count `<= want` that divides `dim` (at least 1).
pub(crate) fn heads_for(dim: usize, want: usize) -> usize {
    (1..=want.max(1)).rev().find(|h| dim % h == 0).unwrap_or(1)
}

/// Images `[B, C, H, W]` as patches `[B, (H/p)(W/p), p*p*C]`, patches row-major, pixels in
/// (row, column, channel) order within a patch.
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if x.rank() != 4 || p == 0 || x.shape()[2] % p != 0 || x.shape()[3] % p != 0 {
        return config(format!(
            "patchify: images [B, C, H, W] with H and W multiples of {p}, got {:?}",
            x.shape()
        ));
    }
    let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (gh, gw) = (h / p, w / p);
    Ok(x.reshape(&[b, c, gh, p, gw, p])?
        .permute(&[0, 2, 4, 3, 5, 1])?
        .reshape(&[b, gh * gw, p * p * c])?)
}

/// MAE's decoder: embeds the encoder's tokens to `decoder_dim`, fills the masked slots with the
/// mask token, adds positions, runs its blocks and predicts `patch * patch * channels` pixels
/// per patch.
#[derive(Debug)]
pub struct MaeDecoder {
    /// Encoder width to decoder width.
    pub embed: Linear,
    /// The learned mask token `[1, 1, decoder_dim]`.
    pub mask_token: Tensor,
    /// Learned positions `[1, patches, decoder_dim]`.
    pub pos: Tensor,
    /// The blocks.
    pub blocks: Vec<TransformerBlock>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// Decoder width to pixels per patch.
    pub pred: Linear,
}

impl MaeDecoder {
    /// Pixel predictions `[B, N, P]` from visible-token states `[B, K, D]` and the mask's
    /// `ids_restore` `[B, N]`.
    pub fn forward(&self, latent: &Tensor, ids_restore: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(latent)?;
        let (b, k, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let n = ids_restore.shape()[1];
        let masked = self.mask_token.broadcast_to(&[b, n - k, d])?;
        let full = Tensor::concat(&[&x, &masked], 1)?;
        let idx = ids_restore
            .unsqueeze(-1)?
            .broadcast_to(&[b, n, d])?
            .contiguous()?;
        let mut h = full.gather(1, &idx)?.add(&self.pos)?;
        for blk in &self.blocks {
            h = blk.forward(&h, false, None)?;
        }
        Ok(self.pred.forward(&self.norm.forward(&h)?)?)
    }
}

impl Module for MaeDecoder {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.embed.visit_params(&join(prefix, "embed"), f);
        f(join(prefix, "mask_token"), &self.mask_token);
        f(join(prefix, "pos"), &self.pos);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit_params(&join(prefix, "norm"), f);
        self.pred.visit_params(&join(prefix, "pred"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.embed.visit_params_mut(&join(prefix, "embed"), f);
        f(join(prefix, "mask_token"), &mut self.mask_token);
        f(join(prefix, "pos"), &mut self.pos);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params_mut(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit_params_mut(&join(prefix, "norm"), f);
        self.pred.visit_params_mut(&join(prefix, "pred"), f);
    }
    fn set_train(&mut self, train: bool) {
        for b in &mut self.blocks {
            b.set_train(train);
        }
    }
}

/// What one MAE pass computed (for tests and inspection).
#[derive(Debug)]
pub struct MaeOutput {
    /// Encoder states of the visible patches `[B, K, D]`.
    pub latent: Tensor,
    /// Pixel predictions of every patch `[B, N, P]`.
    pub pred: Tensor,
    /// The targets `[B, N, P]` (normalised per patch with `norm_pix_loss`).
    pub target: Tensor,
    /// `[B, N]`: 1 for masked patches.
    pub mask: Tensor,
    /// The loss.
    pub loss: Tensor,
}

/// MAE: a ViT encoder and a [`MaeDecoder`].
#[derive(Debug)]
pub struct Mae {
    /// The ViT encoder.
    pub encoder: Encoder,
    /// The decoder.
    pub decoder: MaeDecoder,
    mask_ratio: f64,
    norm_pix: bool,
}

impl Mae {
    /// Builds MAE from `cfg` (a ViT backbone, `mask_ratio`, `norm_pix_loss`, `decoder_dim`,
    /// `decoder_depth`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let vit = encoder.as_vit().ok_or_else(|| {
            crate::SslError::Config("mae needs a vit backbone (--backbone vit)".into())
        })?;
        if cfg.decoder_dim == 0 {
            return config("mae: decoder_dim must be positive");
        }
        let (n, d) = (vit.num_patches(), vit.config.dim);
        let pix = vit.config.patch * vit.config.patch * vit.config.channels;
        let dd = cfg.decoder_dim;
        let dt = DType::F32;
        let heads = heads_for(dd, cfg.backbone.heads);
        let mut blocks = Vec::with_capacity(cfg.decoder_depth);
        for _ in 0..cfg.decoder_depth {
            blocks.push(TransformerBlock::new(
                dd,
                heads,
                4,
                Activation::Gelu,
                dt,
                g,
            )?);
        }
        let decoder = MaeDecoder {
            embed: Linear::new(d, dd, true, dt, g)?,
            mask_token: init::trunc_normal(&[1, 1, dd], 0.0, 0.02, -0.04, 0.04, dt, g)?
                .requires_grad_(),
            pos: init::trunc_normal(&[1, n, dd], 0.0, 0.02, -0.04, 0.04, dt, g)?.requires_grad_(),
            blocks,
            norm: LayerNorm::new(dd, dt),
            pred: Linear::new(dd, pix, true, dt, g)?,
        };
        Ok(Mae {
            encoder,
            decoder,
            mask_ratio: cfg.mask_ratio,
            norm_pix: cfg.norm_pix_loss,
        })
    }

    fn vit(&self) -> Result<&Vit> {
        self.encoder
            .as_vit()
            .ok_or_else(|| crate::SslError::Config("mae needs a vit backbone".into()))
    }

    /// Draws this step's masks for `batch` images from `g`.
    pub fn draw_mask(&self, batch: usize, g: &mut Generator) -> Result<MaeMask> {
        let seed = g.fork().next_u64();
        Ok(mae_mask(
            batch,
            self.vit()?.num_patches(),
            self.mask_ratio,
            seed,
            0,
        )?)
    }

    /// The MAE pass on images `x` `[B, C, H, W]` with a given mask.
    pub fn forward_with_mask(&self, x: &Tensor, m: &MaeMask) -> Result<MaeOutput> {
        let vit = self.vit()?;
        let b = x.shape().first().copied().unwrap_or(0);
        if m.batch != b || m.patches != vit.num_patches() || m.keep == 0 {
            return config(format!(
                "mae: mask for {} x {} patches (keeping {}) does not fit {b} images of {} patches",
                m.batch,
                m.patches,
                m.keep,
                vit.num_patches()
            ));
        }
        let keep = Tensor::from_vec(m.ids_keep.clone(), &[b, m.keep])?;
        let restore = Tensor::from_vec(m.ids_restore.clone(), &[b, m.patches])?;
        let mask = Tensor::from_vec(m.mask.clone(), &[b, m.patches])?
            .to_dtype(x.dtype())?
            .to_device(x.device())?;
        let latent = vit.forward_tokens(x, Some(&keep))?;
        let pred = self.decoder.forward(&latent, &restore)?;
        let raw = patchify(&x.detach(), vit.config.patch)?;
        let target = if self.norm_pix {
            norm_pix_target(&raw)?
        } else {
            raw
        };
        let loss = masked_patch_mse(&pred, &target, &mask)?;
        Ok(MaeOutput {
            latent,
            pred,
            target,
            mask,
            loss,
        })
    }
}

impl_module!(Mae { encoder, decoder });

impl SslMethod for Mae {
    fn name(&self) -> MethodName {
        MethodName::Mae
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, g: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("mae", 1)?[0];
        let m = self.draw_mask(x.shape()[0], g)?;
        let out = self.forward_with_mask(x, &m)?;
        let feats = out.latent.detach().mean(&[1], false)?;
        Ok(StepOutput {
            loss: out.loss,
            embeddings: Some((feats, None)),
            metrics: vec![(
                "visible_patches".into(),
                Tensor::full(m.keep as f64, &[], DType::F32),
            )],
        })
    }
}
