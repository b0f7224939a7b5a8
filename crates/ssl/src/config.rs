//! Method names and the configuration every method is built from.
//!
//! [`MethodConfig`] is one flat, serde-(de)serialisable struct: the CLI reads it from the
//! `[method]` table of a TOML file over the defaults of [`MethodConfig::for_method`], so the
//! resolved configuration saved with a run names every hyperparameter. Fields a method does not
//! use are ignored by it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{config, Result};

/// The SSL methods, by the names used in configs and on the command line (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    /// SimCLR: NT-Xent over two views.
    Simclr,
    /// MoCo v2: momentum key encoder and a queue of negatives.
    MocoV2,
    /// MoCo v3: momentum encoder, predictor, symmetric in-batch InfoNCE.
    MocoV3,
    /// BYOL: online predictor regressing an EMA target.
    Byol,
    /// SimSiam: predictor and stop-gradient, no EMA.
    Simsiam,
    /// Barlow Twins: cross-correlation towards the identity.
    BarlowTwins,
    /// VICReg: variance, invariance, covariance.
    Vicreg,
    /// DINO: self-distillation with a centred, sharpened EMA teacher and multi-crop.
    Dino,
    /// CPC: InfoNCE over predicted future steps of a sequence.
    Cpc,
    /// MAE: masked autoencoder on a ViT.
    Mae,
    /// SimMIM-style masked image modelling (works with a CNN).
    Simmim,
    /// BERT-style masked language modelling.
    Mlm,
    /// GPT-style next-token prediction.
    Gpt,
    /// 4-way rotation prediction.
    Rotation,
    /// 8-way relative patch position.
    RelativePosition,
    /// Jigsaw puzzles over a fixed permutation set.
    Jigsaw,
    /// Colorization: chroma from luma.
    Colorization,
}

impl MethodName {
    /// Every method, in the order of issue 5.
    pub const ALL: [MethodName; 17] = [
        MethodName::Simclr,
        MethodName::MocoV2,
        MethodName::MocoV3,
        MethodName::Byol,
        MethodName::Simsiam,
        MethodName::BarlowTwins,
        MethodName::Vicreg,
        MethodName::Dino,
        MethodName::Cpc,
        MethodName::Mae,
        MethodName::Simmim,
        MethodName::Mlm,
        MethodName::Gpt,
        MethodName::Rotation,
        MethodName::RelativePosition,
        MethodName::Jigsaw,
        MethodName::Colorization,
    ];

    /// The name as written in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodName::Simclr => "simclr",
            MethodName::MocoV2 => "moco-v2",
            MethodName::MocoV3 => "moco-v3",
            MethodName::Byol => "byol",
            MethodName::Simsiam => "simsiam",
            MethodName::BarlowTwins => "barlow-twins",
            MethodName::Vicreg => "vicreg",
            MethodName::Dino => "dino",
            MethodName::Cpc => "cpc",
            MethodName::Mae => "mae",
            MethodName::Simmim => "simmim",
            MethodName::Mlm => "mlm",
            MethodName::Gpt => "gpt",
            MethodName::Rotation => "rotation",
            MethodName::RelativePosition => "relative-position",
            MethodName::Jigsaw => "jigsaw",
            MethodName::Colorization => "colorization",
        }
    }

    /// Whether the method trains on text (token ids) rather than images.
    pub fn is_text(self) -> bool {
        matches!(self, MethodName::Mlm | MethodName::Gpt)
    }

    /// Whether the method compares embeddings of views (and so gets collapse diagnostics).
    pub fn is_joint_embedding(self) -> bool {
        matches!(
            self,
            MethodName::Simclr
                | MethodName::MocoV2
                | MethodName::MocoV3
                | MethodName::Byol
                | MethodName::Simsiam
                | MethodName::BarlowTwins
                | MethodName::Vicreg
                | MethodName::Dino
        )
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MethodName {
    type Err = crate::SslError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        for m in MethodName::ALL {
            if m.as_str() == s {
                return Ok(m);
            }
        }
        let names: Vec<&str> = MethodName::ALL.iter().map(|m| m.as_str()).collect();
        match did_you_mean(&s, &names) {
            Some(n) => config(format!("unknown method `{s}`: did you mean `{n}`?")),
            None => config(format!(
                "unknown method `{s}`: use one of {}",
                names.join(", ")
            )),
        }
    }
}

/// The closest of `candidates` to `word` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The encoder architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneKind {
    /// The reference three-block CNN ([`selfsup_nn::SmallCnn`]), widths and number of blocks
    /// configurable.
    SmallCnn,
    /// CIFAR-style ResNet-18.
    Resnet18,
    /// A Vision Transformer (patch size, width, depth, heads configurable).
    Vit,
    /// A transformer over token ids (causal for GPT, bidirectional for MLM).
    Text,
}

impl BackboneKind {
    /// The name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            BackboneKind::SmallCnn => "small-cnn",
            BackboneKind::Resnet18 => "resnet18",
            BackboneKind::Vit => "vit",
            BackboneKind::Text => "text",
        }
    }
}

impl FromStr for BackboneKind {
    type Err = crate::SslError;
    fn from_str(s: &str) -> Result<Self> {
        let names = ["small-cnn", "resnet18", "vit", "text"];
        let kinds = [
            BackboneKind::SmallCnn,
            BackboneKind::Resnet18,
            BackboneKind::Vit,
            BackboneKind::Text,
        ];
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        if let Some(i) = names.iter().position(|n| *n == s) {
            return Ok(kinds[i]);
        }
        match did_you_mean(&s, &names) {
            Some(n) => config(format!("unknown backbone `{s}`: did you mean `{n}`?")),
            None => config(format!(
                "unknown backbone `{s}`: use one of {}",
                names.join(", ")
            )),
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The encoder: its kind and sizes. Image fields are ignored by text backbones and vice versa.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneConfig {
    /// Which architecture.
    pub kind: BackboneKind,
    /// Input channels (images).
    pub in_channels: usize,
    /// Square input side (images).
    pub image_size: usize,
    /// SmallCnn channel widths, one block each (the reference: `[32, 64, 128]`).
    pub widths: Vec<usize>,
    /// ViT patch side.
    pub patch: usize,
    /// ViT / text width.
    pub dim: usize,
    /// ViT / text number of blocks.
    pub depth: usize,
    /// ViT / text attention heads.
    pub heads: usize,
    /// Text vocabulary size (set from the data by the trainer).
    pub vocab: usize,
    /// Text context length.
    pub context: usize,
    /// Dropout in text transformers.
    pub dropout: f64,
}

impl Default for BackboneConfig {
    /// The reference SmallCnn on 1x28x28 images.
    fn default() -> Self {
        BackboneConfig {
            kind: BackboneKind::SmallCnn,
            in_channels: 1,
            image_size: 28,
            widths: vec![32, 64, 128],
            patch: 4,
            dim: 128,
            depth: 4,
            heads: 4,
            vocab: 96,
            context: 128,
            dropout: 0.0,
        }
    }
}

impl BackboneConfig {
    /// The reference SmallCnn for `in_channels` x `image_size`² images.
    pub fn small_cnn(in_channels: usize, image_size: usize) -> Self {
        BackboneConfig {
            in_channels,
            image_size,
            ..Default::default()
        }
    }

    /// A small ViT (width 128, 4 blocks, 4 heads) with `patch`-pixel patches.
    pub fn vit(in_channels: usize, image_size: usize, patch: usize) -> Self {
        BackboneConfig {
            kind: BackboneKind::Vit,
            in_channels,
            image_size,
            patch,
            ..Default::default()
        }
    }

    /// The reference char-level transformer (4 blocks, 4 heads, width 128) over `vocab` tokens
    /// with `context` positions.
    pub fn text(vocab: usize, context: usize) -> Self {
        BackboneConfig {
            kind: BackboneKind::Text,
            vocab,
            context,
            ..Default::default()
        }
    }
}

/// Every hyperparameter of every method (see the module docs). Start from
/// [`MethodConfig::for_method`], which sets the published defaults of that method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    /// Which method.
    pub method: MethodName,
    /// The encoder.
    pub backbone: BackboneConfig,
    /// Softmax temperature (SimCLR, MoCo, CPC; DINO's student temperature).
    pub temperature: f64,
    /// Hidden width of the projection (or expander) MLP.
    pub proj_hidden: usize,
    /// Output width of the projection MLP.
    pub proj_dim: usize,
    /// Number of linear layers in the projection MLP.
    pub proj_layers: usize,
    /// Hidden width of the predictor MLP (BYOL, SimSiam, MoCo v3, CPC).
    pub pred_hidden: usize,
    /// Negatives kept in MoCo v2's queue.
    pub queue_size: usize,
    /// Base EMA momentum of a target network (cosine schedule to 1 for BYOL, MoCo v3, DINO).
    pub momentum: f64,
    /// Barlow Twins' weight on the off-diagonal terms.
    pub lambda: f64,
    /// VICReg invariance weight.
    pub sim_weight: f64,
    /// VICReg variance weight.
    pub var_weight: f64,
    /// VICReg covariance weight.
    pub cov_weight: f64,
    /// DINO: output dimension of the head (prototypes).
    pub dino_out_dim: usize,
    /// DINO: teacher temperature.
    pub teacher_temp: f64,
    /// DINO: EMA rate of the teacher centre.
    pub center_momentum: f64,
    /// DINO: number of local crops.
    pub local_crops: usize,
    /// Fraction of patches or tokens masked (MAE, SimMIM, MLM).
    pub mask_ratio: f64,
    /// MAE: normalise each target patch by its own mean and variance.
    pub norm_pix_loss: bool,
    /// MAE: decoder width; colorization: width of the chroma decoder.
    pub decoder_dim: usize,
    /// MAE: decoder blocks.
    pub decoder_depth: usize,
    /// MLM: add a next-sentence-prediction head.
    pub nsp: bool,
    /// CPC: number of future steps predicted.
    pub cpc_steps: usize,
    /// Jigsaw / relative position: grid side (3 for 3x3 tiles). Relative position needs an
    /// odd grid (a centre cell and its 8 neighbours).
    pub grid: usize,
    /// Jigsaw: number of permutations in the fixed set.
    pub permutations: usize,
    /// Jigsaw / relative position: gap between tiles in pixels (tile side is
    /// `image_size / grid - gap`).
    pub gap: usize,
    /// Jigsaw / relative position: maximum random shift of each tile in pixels.
    pub jitter: usize,
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig::for_method(MethodName::Simclr)
    }
}

impl MethodConfig {
    /// The published defaults of `method`, scaled to the small models this workspace trains
    /// on two cores, with the reference SmallCnn (or the reference text model).
    pub fn for_method(method: MethodName) -> Self {
        let mut c = MethodConfig {
            method,
            backbone: BackboneConfig::default(),
            temperature: 0.5,
            proj_hidden: 128,
            proj_dim: 64,
            proj_layers: 2,
            pred_hidden: 128,
            queue_size: 4096,
            momentum: 0.996,
            lambda: 5e-3,
            sim_weight: 25.0,
            var_weight: 25.0,
            cov_weight: 1.0,
            dino_out_dim: 1024,
            teacher_temp: 0.04,
            center_momentum: 0.9,
            local_crops: 4,
            mask_ratio: 0.75,
            norm_pix_loss: true,
            decoder_dim: 64,
            decoder_depth: 2,
            nsp: false,
            cpc_steps: 4,
            grid: 3,
            permutations: 100,
            gap: 2,
            jitter: 1,
        };
        match method {
            MethodName::MocoV2 => {
                c.temperature = 0.2;
                c.momentum = 0.99;
            }
            MethodName::MocoV3 => {
                c.temperature = 0.2;
                c.momentum = 0.99;
            }
            MethodName::Byol | MethodName::Simsiam => {
                c.proj_hidden = 512;
                c.proj_dim = 128;
                c.pred_hidden = 128;
            }
            MethodName::BarlowTwins | MethodName::Vicreg => {
                c.proj_hidden = 512;
                c.proj_dim = 512;
                c.proj_layers = 3;
            }
            MethodName::Dino => {
                // The paper's 0.996 is for 100+ epochs; over a few hundred steps its teacher
                // barely moves and the loss stalls (300 steps on Fashion-MNIST: loss 6.43 ->
                // 6.33 at 0.996, 6.36 -> 5.79 at 0.99, docs/methods.md).
                c.momentum = 0.99;
                c.temperature = 0.1;
                c.proj_hidden = 256;
                c.proj_dim = 64;
                c.proj_layers = 3;
            }
            MethodName::Cpc => {
                // A 6 x 6 grid of half-overlapping 8-pixel patches on 28x28 images, three rows
                // predicted ahead.
                c.temperature = 0.1;
                c.grid = 6;
                c.cpc_steps = 3;
            }
            MethodName::Mae => c.backbone = BackboneConfig::vit(1, 28, 4),
            MethodName::Simmim => c.mask_ratio = 0.6,
            MethodName::Mlm => {
                c.mask_ratio = 0.15;
                c.backbone = BackboneConfig::text(96, 128);
            }
            MethodName::Gpt => c.backbone = BackboneConfig::text(96, 128),
            MethodName::Colorization => {
                c.backbone.in_channels = 3;
                c.decoder_dim = 32;
            }
            _ => {}
        }
        c
    }

    /// Checks ranges and combinations (e.g. MAE needs a ViT, text methods a text backbone).
    pub fn validate(&self) -> Result<()> {
        let m = self.method;
        let b = &self.backbone;
        if m.is_text() != (b.kind == BackboneKind::Text) {
            return config(if m.is_text() {
                format!("method {m} trains on text: set backbone.kind = \"text\"")
            } else {
                format!(
                    "method {m} trains on images, not with the text backbone: use small-cnn, resnet18 or vit"
                )
            });
        }
        if m == MethodName::Mae && b.kind != BackboneKind::Vit {
            return config(format!(
                "method mae needs a vit backbone (it feeds the encoder only the visible patches), not {}; use --backbone vit or method simmim for a CNN",
                b.kind
            ));
        }
        if matches!(m, MethodName::Cpc | MethodName::Simmim) && b.kind == BackboneKind::Vit {
            return config(format!(
                "method {m} needs a CNN backbone (small-cnn or resnet18), not vit{}",
                if m == MethodName::Simmim {
                    "; use method mae for a vit"
                } else {
                    ""
                }
            ));
        }
        if m == MethodName::Cpc
            && (self.grid < 2 || self.cpc_steps == 0 || self.cpc_steps >= self.grid)
        {
            return config(format!(
                "cpc needs grid >= 2 and 1 <= cpc_steps < grid, got grid = {} and cpc_steps = {}",
                self.grid, self.cpc_steps
            ));
        }
        if b.kind == BackboneKind::Vit && (b.patch == 0 || b.image_size % b.patch != 0) {
            return config(format!(
                "backbone.patch = {} must divide backbone.image_size = {}",
                b.patch, b.image_size
            ));
        }
        if matches!(b.kind, BackboneKind::Vit | BackboneKind::Text)
            && (b.heads == 0 || b.dim % b.heads != 0)
        {
            return config(format!(
                "backbone.dim = {} must be a multiple of backbone.heads = {}",
                b.dim, b.heads
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return config(format!(
                "temperature = {} must be positive",
                self.temperature
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return config(format!("momentum = {} must be in [0, 1)", self.momentum));
        }
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return config(format!(
                "mask_ratio = {} must be strictly between 0 and 1",
                self.mask_ratio
            ));
        }
        if self.proj_layers == 0 || self.proj_dim == 0 || self.proj_hidden == 0 {
            return config("proj_layers, proj_dim and proj_hidden must be at least 1");
        }
        self.validate_pretext()
    }

    /// The checks of the patch-based and colour pretext tasks.
    fn validate_pretext(&self) -> Result<()> {
        use crate::pretext::{patches::GridGeometry, permutations::MAX_PERMUTATIONS};
        let m = self.method;
        let b = &self.backbone;
        let cnn = matches!(b.kind, BackboneKind::SmallCnn | BackboneKind::Resnet18);
        match m {
            MethodName::RelativePosition | MethodName::Jigsaw => {
                if !cnn {
                    return config(format!(
                        "method {m} feeds the encoder patches smaller than the image: it needs a \
                         CNN backbone (small-cnn or resnet18), not {}",
                        b.kind
                    ));
                }
                if m == MethodName::RelativePosition && (self.grid < 3 || self.grid % 2 == 0) {
                    return config(format!(
                        "relative-position needs an odd grid >= 3 (a centre cell with 8 neighbours), got grid = {}",
                        self.grid
                    ));
                }
                if self.grid < 2 {
                    return config(format!("jigsaw needs grid >= 2, got {}", self.grid));
                }
                GridGeometry::new(b.image_size, self.grid, self.gap, self.jitter)?;
                if m == MethodName::Jigsaw {
                    let tiles = self.grid * self.grid;
                    let limit = (1..=tiles)
                        .try_fold(1usize, |a, k| a.checked_mul(k))
                        .unwrap_or(usize::MAX)
                        .min(MAX_PERMUTATIONS);
                    if self.permutations < 2 || self.permutations > limit {
                        return config(format!(
                            "permutations = {} must be between 2 and {limit} for a {}x{} jigsaw",
                            self.permutations, self.grid, self.grid
                        ));
                    }
                }
            }
            MethodName::Colorization => {
                if b.in_channels != 3 {
                    return config(format!(
                        "colorization needs RGB images (in_channels 3), got in_channels = {}",
                        b.in_channels
                    ));
                }
                if !cnn {
                    return config(format!(
                        "colorization decodes chroma from the encoder's feature map: it needs a \
                         CNN backbone (small-cnn or resnet18), not {}",
                        b.kind
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
