//! Relative patch position (Doersch et al. 2015): a centre patch and one of its 8 neighbours,
//! cut from a grid with gaps and jitter ([`crate::pretext::patches`]), go through the shared
//! encoder; an MLP on the two concatenated features classifies where the neighbour lies.

use selfsup_nn::{Mlp, MlpConfig};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::metric::argmax_accuracy;
use crate::pretext::label_tensor;
use crate::pretext::patches::{cut_patches, GridGeometry, PatchAt, NEIGHBOURS};

/// Relative position: encoder (shared by both patches) and an MLP (`proj_hidden` wide,
/// `proj_layers` layers) from the concatenated pair of features to 8 logits.
#[derive(Debug)]
pub struct RelativePosition {
    /// The encoder.
    pub encoder: Encoder,
    /// The 8-way classifier on `[centre features, neighbour features]`.
    pub head: Mlp,
    geometry: GridGeometry,
}

impl RelativePosition {
    /// Builds the method from `cfg` (encoder, `grid`, `gap`, `jitter`, `proj_hidden`,
    /// `proj_layers`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let geometry = GridGeometry::new(cfg.backbone.image_size, cfg.grid, cfg.gap, cfg.jitter)?;
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let head = Mlp::new(
            &MlpConfig::new(2 * encoder.out_dim(), cfg.proj_hidden, 8, cfg.proj_layers),
            DType::F32,
            g,
        )?;
        Ok(RelativePosition {
            encoder,
            head,
            geometry,
        })
    }

    /// The patch layout.
    pub fn geometry(&self) -> GridGeometry {
        self.geometry
    }
}

impl_module!(RelativePosition { encoder, head });

/// For each of `b` images, the centre patch and one random neighbour (jittered corners) and
/// the neighbour's class (index into [`NEIGHBOURS`]): `(centres, neighbours, labels)`.
pub fn sample_pairs(
    geo: &GridGeometry,
    b: usize,
    g: &mut Generator,
) -> (Vec<PatchAt>, Vec<PatchAt>, Vec<usize>) {
    let mut rng = g.fork();
    let c = geo.grid / 2;
    let mut centres = Vec::with_capacity(b);
    let mut others = Vec::with_capacity(b);
    let mut labels = Vec::with_capacity(b);
    for image in 0..b {
        let label = rng.below(8) as usize;
        let (dr, dc) = NEIGHBOURS[label];
        let (y, x) = geo.jittered(c, c, &mut rng);
        centres.push(PatchAt { image, y, x });
        let (y, x) = geo.jittered(
            (c as isize + dr) as usize,
            (c as isize + dc) as usize,
            &mut rng,
        );
        others.push(PatchAt { image, y, x });
        labels.push(label);
    }
    (centres, others, labels)
}

impl SslMethod for RelativePosition {
    fn name(&self) -> MethodName {
        MethodName::RelativePosition
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, g: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("relative-position", 1)?[0];
        let b = x.shape()[0];
        let geo = self.geometry;
        let (centres, others, labels) = sample_pairs(&geo, b, g);
        let mut at = centres;
        at.extend(others);
        let patches = cut_patches(x, &at, geo.patch)?;
        let h = self.encoder.embed(&patches)?;
        let pair = Tensor::concat(&[&h.narrow(0, 0, b)?, &h.narrow(0, b, b)?], 1)?;
        let logits = self.head.forward(&pair)?;
        let labels = label_tensor(&labels)?;
        let loss = logits.cross_entropy(&labels)?;
        let acc = argmax_accuracy(&logits, &labels, None)?;
        let full = {
            let _guard = no_grad();
            self.encoder.embed(x)?.detach()
        };
        Ok(StepOutput {
            loss,
            embeddings: Some((full, None)),
            metrics: vec![("position_acc".into(), acc)],
        })
    }
}
