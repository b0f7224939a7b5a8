//! Jigsaw puzzles (Noroozi & Favaro 2016): the `grid x grid` tiles of each image (gaps and
//! jitter as in [`crate::pretext::patches`]) are shuffled by one permutation of a fixed set
//! ([`crate::pretext::permutations`]); each tile goes through the shared encoder, and an MLP
//! on the concatenated tile features (in slot order) classifies which permutation was used.

use selfsup_nn::{Mlp, MlpConfig};
use selfsup_tensor::{no_grad, DType, Generator};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::metric::argmax_accuracy;
use crate::pretext::label_tensor;
use crate::pretext::patches::{cut_patches, GridGeometry, PatchAt};
use crate::pretext::permutations::{max_hamming_set, PermutationSet, PERMUTATION_SEED};

/// Jigsaw: encoder (shared by all tiles), the fixed permutation set, and an MLP
/// (`proj_hidden` wide, `proj_layers` layers) from `grid² * out_dim` features to one logit
/// per permutation.
#[derive(Debug)]
pub struct Jigsaw {
    /// The encoder.
    pub encoder: Encoder,
    /// The permutation classifier.
    pub head: Mlp,
    geometry: GridGeometry,
    set: PermutationSet,
}

impl Jigsaw {
    /// Builds the method from `cfg` (encoder, `grid`, `gap`, `jitter`, `permutations`,
    /// `proj_hidden`, `proj_layers`); the permutation set comes from [`PERMUTATION_SEED`].
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let geometry = GridGeometry::new(cfg.backbone.image_size, cfg.grid, cfg.gap, cfg.jitter)?;
        let set = max_hamming_set(cfg.grid * cfg.grid, cfg.permutations, PERMUTATION_SEED)?;
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let head = Mlp::new(
            &MlpConfig::new(
                cfg.grid * cfg.grid * encoder.out_dim(),
                cfg.proj_hidden,
                cfg.permutations,
                cfg.proj_layers,
            ),
            DType::F32,
            g,
        )?;
        Ok(Jigsaw {
            encoder,
            head,
            geometry,
            set,
        })
    }

    /// The fixed permutation set.
    pub fn permutations(&self) -> &PermutationSet {
        &self.set
    }

    /// The tile layout.
    pub fn geometry(&self) -> GridGeometry {
        self.geometry
    }
}

impl_module!(Jigsaw { encoder, head });

/// For `b` images, a random permutation index each and the tiles to cut, slot-major: entry
/// `k * b + i` is the (jittered) tile shown in slot `k` of image `i`, i.e. original tile
/// `perm[k]` of it.
pub fn sample_puzzles(
    geo: &GridGeometry,
    set: &PermutationSet,
    b: usize,
    g: &mut Generator,
) -> (Vec<PatchAt>, Vec<usize>) {
    let mut rng = g.fork();
    let n = geo.grid * geo.grid;
    let labels: Vec<usize> = (0..b)
        .map(|_| rng.below(set.perms.len() as u64) as usize)
        .collect();
    let mut at = vec![
        PatchAt {
            image: 0,
            y: 0,
            x: 0
        };
        n * b
    ];
    for (i, &p) in labels.iter().enumerate() {
        for (k, &tile) in set.perms[p].iter().enumerate() {
            let (y, x) = geo.jittered(tile / geo.grid, tile % geo.grid, &mut rng);
            at[k * b + i] = PatchAt { image: i, y, x };
        }
    }
    (at, labels)
}

impl SslMethod for Jigsaw {
    fn name(&self) -> MethodName {
        MethodName::Jigsaw
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, g: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("jigsaw", 1)?[0];
        let b = x.shape()[0];
        let geo = self.geometry;
        let n = geo.grid * geo.grid;
        let (at, labels) = sample_puzzles(&geo, &self.set, b, g);
        let tiles = cut_patches(x, &at, geo.patch)?;
        let h = self.encoder.embed(&tiles)?; // [n * b, D], slot-major
        let d = h.shape()[1];
        let feats = h
            .reshape(&[n, b, d])?
            .permute(&[1, 0, 2])?
            .reshape(&[b, n * d])?;
        let logits = self.head.forward(&feats)?;
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
            metrics: vec![("jigsaw_acc".into(), acc)],
        })
    }
}
