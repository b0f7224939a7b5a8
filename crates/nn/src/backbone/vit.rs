//! ViT encoder for small images (Dosovitskiy et al. 2021; ViT-Tiny is dim 192, depth 12, 3
//! heads): a patch embedding (a `patch x patch` convolution with stride `patch`), learned
//! positions, an optional class token, pre-LayerNorm blocks and a final LayerNorm. It can run
//! on a subset of patches (MAE's encoder sees only the visible ones). Names: `patch_embed.…`,
//! `cls_token`, `pos_embed`, `blocks.{i}.…`, `norm.…`.

use selfsup_tensor::{Conv2dParams, DType, Generator, Tensor};

use crate::activation::Activation;
use crate::conv::Conv2d;
use crate::error::{config, Result};
use crate::init;
use crate::module::{join, visit_one, visit_one_mut, Module};
use crate::norm::LayerNorm;
use crate::transformer::TransformerBlock;

/// Sizes of a [`Vit`].
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Square input side in pixels.
    pub image: usize,
    /// Input channels.
    pub channels: usize,
    /// Square patch side (must divide `image`).
    pub patch: usize,
    /// Token width.
    pub dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden size as a multiple of `dim`.
    pub mlp_ratio: usize,
    /// A class token (pooled output = its final state); otherwise mean pooling.
    pub cls_token: bool,
}

impl VitConfig {
    /// ViT-Tiny on 32x32 RGB images with 4x4 patches.
    pub fn tiny(image: usize, channels: usize, patch: usize) -> VitConfig {
        VitConfig {
            image,
            channels,
            patch,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp_ratio: 4,
            cls_token: true,
        }
    }
}

/// The ViT encoder.
#[derive(Debug)]
pub struct Vit {
    /// Patch embedding.
    pub patch_embed: Conv2d,
    /// `[1, 1, dim]` class token, if used.
    pub cls_token: Option<Tensor>,
    /// `[1, cls + patches, dim]` learned positions.
    pub pos_embed: Tensor,
    /// The blocks.
    pub blocks: Vec<TransformerBlock>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// The configuration.
    pub config: VitConfig,
}

impl Vit {
    /// Builds the encoder (positions and class token from a truncated normal, std 0.02).
    pub fn new(cfg: &VitConfig, dtype: DType, g: &mut Generator) -> Result<Vit> {
        if cfg.patch == 0
            || cfg.image % cfg.patch != 0
            || cfg.depth == 0
            || cfg.heads == 0
            || cfg.dim % cfg.heads != 0
        {
            return config(format!(
                "Vit: invalid sizes {cfg:?} (patch must divide image, heads must divide dim)"
            ));
        }
        let n = (cfg.image / cfg.patch).pow(2) + cfg.cls_token as usize;
        let p = Conv2dParams {
            stride: (cfg.patch, cfg.patch),
            ..Conv2dParams::default()
        };
        let mut blocks = Vec::with_capacity(cfg.depth);
        for _ in 0..cfg.depth {
            blocks.push(TransformerBlock::new(
                cfg.dim,
                cfg.heads,
                cfg.mlp_ratio,
                Activation::Gelu,
                dtype,
                g,
            )?);
        }
        Ok(Vit {
            patch_embed: Conv2d::with_params(
                cfg.channels,
                cfg.dim,
                (cfg.patch, cfg.patch),
                p,
                true,
                dtype,
                g,
            )?,
            cls_token: if cfg.cls_token {
                Some(
                    init::trunc_normal(&[1, 1, cfg.dim], 0.0, 0.02, -0.04, 0.04, dtype, g)?
                        .requires_grad_(),
                )
            } else {
                None
            },
            pos_embed: init::trunc_normal(&[1, n, cfg.dim], 0.0, 0.02, -0.04, 0.04, dtype, g)?
                .requires_grad_(),
            blocks,
            norm: LayerNorm::new(cfg.dim, dtype),
            config: cfg.clone(),
        })
    }

    /// Number of patches per image.
    pub fn num_patches(&self) -> usize {
        (self.config.image / self.config.patch).pow(2)
    }

    /// Patch tokens with positions, `[B, patches, dim]`, before any block.
    pub fn patch_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        if x.rank() != 4 || x.shape()[1..] != [c.channels, c.image, c.image] {
            return config(format!(
                "Vit: expected images [N, {}, {}, {}], got {:?}",
                c.channels,
                c.image,
                c.image,
                x.shape()
            ));
        }
        let t = self
            .patch_embed
            .forward(x)?
            .flatten(2, 3)?
            .transpose(1, 2)?;
        let skip = c.cls_token as usize;
        Ok(t.add(&self.pos_embed.narrow(1, skip, self.num_patches())?)?)
    }

    /// Final token states `[B, cls + K, dim]`. With `keep` (`[B, K]` i64 patch indices, as an
    /// MAE mask generator returns), only those patches enter the encoder.
    pub fn forward_tokens(&self, x: &Tensor, keep: Option<&Tensor>) -> Result<Tensor> {
        let mut t = self.patch_tokens(x)?;
        if let Some(k) = keep {
            let (b, d) = (t.shape()[0], self.config.dim);
            if k.rank() != 2 || k.shape()[0] != b {
                return config(format!(
                    "Vit: keep indices must be [{b}, K], got {:?}",
                    k.shape()
                ));
            }
            let idx = k
                .unsqueeze(-1)?
                .broadcast_to(&[b, k.shape()[1], d])?
                .contiguous()?;
            t = t.gather(1, &idx)?;
        }
        if let Some(cls) = &self.cls_token {
            let c = cls.add(&self.pos_embed.narrow(1, 0, 1)?)?.broadcast_to(&[
                t.shape()[0],
                1,
                self.config.dim,
            ])?;
            t = Tensor::concat(&[&c, &t], 1)?;
        }
        for b in &self.blocks {
            t = b.forward(&t, false, None)?;
        }
        self.norm.forward(&t)
    }

    /// Forward matmul FLOPs for one image with all patches: the patch embedding, then per
    /// block `2 x 12 dim^2` per token plus `2 x 2 x tokens x dim` for attention.
    pub fn flops_per_sample(&self) -> usize {
        let c = &self.config;
        let t = self.num_patches() + c.cls_token as usize;
        let embed = self.patch_embed.flops(c.image, c.image);
        let per_block = t * (2 * (4 + 2 * c.mlp_ratio) * c.dim * c.dim) + 2 * 2 * t * t * c.dim;
        embed + c.depth * per_block
    }

    /// Pooled features `[B, dim]`: the class token's state, or the mean over tokens.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.forward_tokens(x, None)?;
        Ok(if self.cls_token.is_some() {
            t.select(1, 0)?
        } else {
            t.mean(&[1], false)?
        })
    }
}

impl Module for Vit {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.patch_embed
            .visit_params(&join(prefix, "patch_embed"), f);
        if let Some(c) = &self.cls_token {
            visit_one(prefix, "cls_token", c, f);
        }
        visit_one(prefix, "pos_embed", &self.pos_embed, f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit_params(&join(prefix, "norm"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.patch_embed
            .visit_params_mut(&join(prefix, "patch_embed"), f);
        if let Some(c) = &mut self.cls_token {
            visit_one_mut(prefix, "cls_token", c, f);
        }
        visit_one_mut(prefix, "pos_embed", &mut self.pos_embed, f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params_mut(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.norm.visit_params_mut(&join(prefix, "norm"), f);
    }
    fn set_train(&mut self, train: bool) {
        for b in &mut self.blocks {
            b.set_train(train);
        }
    }
}
