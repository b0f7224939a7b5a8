//! BYOL (Grill et al. 2020): the online encoder, projector and predictor regress the
//! projection of the other view by an EMA target (encoder + projector under `target`),
//! `loss = (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1'))` with the target outputs `z'` detached.
//! The target momentum follows a cosine schedule from `cfg.momentum` (0.996) to 1.

use selfsup_nn::schedule::cosine_momentum;
use selfsup_nn::Mlp;
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::loss::byol_loss;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::{bn_mlp, MomentumBranch};

/// BYOL: encoder, projector, predictor, EMA `target`.
#[derive(Debug)]
pub struct Byol {
    /// The online encoder.
    pub encoder: Encoder,
    /// The online projector (`proj_layers` layers with BatchNorm).
    pub projector: Mlp,
    /// The predictor (two layers with BatchNorm).
    pub predictor: Mlp,
    /// The EMA encoder and projector.
    pub target: MomentumBranch,
    base_momentum: f64,
}

impl Byol {
    /// Builds BYOL from `cfg` (encoder, `proj_*`, `pred_hidden`, `momentum`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let proj = bn_mlp(
            encoder.out_dim(),
            cfg.proj_hidden,
            cfg.proj_dim,
            cfg.proj_layers,
            false,
        );
        let projector = Mlp::new(&proj, DType::F32, g)?;
        let pred = bn_mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, 2, false);
        let predictor = Mlp::new(&pred, DType::F32, g)?;
        let target = MomentumBranch::copy_of(cfg, &proj, &encoder, &projector)?;
        Ok(Byol {
            encoder,
            projector,
            predictor,
            target,
            base_momentum: cfg.momentum,
        })
    }

    /// The EMA momentum after step `p.step` of `p.total`.
    pub fn momentum(&self, p: Progress) -> f64 {
        cosine_momentum(self.base_momentum, p.step, p.total)
    }
}

impl_module!(Byol {
    encoder,
    projector,
    predictor,
    target
});

impl SslMethod for Byol {
    fn name(&self) -> MethodName {
        MethodName::Byol
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("byol", 2)?;
        let b = v[0].shape()[0];
        let x = Tensor::concat(&[&v[0], &v[1]], 0)?;
        let h = self.encoder.embed(&x)?;
        let p = self.predictor.forward(&self.projector.forward(&h)?)?;
        let z = self.target.forward(&x)?.detach();
        let (p1, p2) = (p.narrow(0, 0, b)?, p.narrow(0, b, b)?);
        let (z1, z2) = (z.narrow(0, 0, b)?, z.narrow(0, b, b)?);
        let loss = byol_loss(&p1, &z2)?.add(&byol_loss(&p2, &z1)?)?;
        let h = h.detach();
        Ok(StepOutput {
            loss,
            embeddings: Some((h.narrow(0, 0, b)?, Some(h.narrow(0, b, b)?))),
            metrics: Vec::new(),
        })
    }
    fn after_step(&mut self, p: Progress) -> Result<()> {
        let m = self.momentum(p);
        self.target.update(&self.encoder, &self.projector, m)
    }
}
