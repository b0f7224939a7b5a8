//! MoCo v3 (Chen, Xie & He 2021): no queue; queries from the online encoder, projector
//! (BatchNorm MLP) and predictor, keys from the momentum copy of encoder and projector
//! (`target`), in-batch InfoNCE at temperature `T`, symmetric:
//! `loss = 2T * (ce(q1, k2) + ce(q2, k1))` as in the reference code. The momentum follows a
//! cosine schedule from `cfg.momentum` to 1 over training.

use selfsup_nn::schedule::cosine_momentum;
use selfsup_nn::Mlp;
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::loss::info_nce_batch;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::{bn_mlp, MomentumBranch};

/// MoCo v3: encoder, projector, predictor, momentum `target`.
#[derive(Debug)]
pub struct MocoV3 {
    /// The online encoder.
    pub encoder: Encoder,
    /// The online projector (`proj_layers` layers, BatchNorm, affine-free BatchNorm on the
    /// output).
    pub projector: Mlp,
    /// The predictor (two layers, BatchNorm).
    pub predictor: Mlp,
    /// The momentum encoder and projector.
    pub target: MomentumBranch,
    temperature: f64,
    base_momentum: f64,
}

impl MocoV3 {
    /// Builds MoCo v3 from `cfg` (encoder, `proj_*`, `pred_hidden`, `momentum`,
    /// `temperature`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let proj = bn_mlp(
            encoder.out_dim(),
            cfg.proj_hidden,
            cfg.proj_dim,
            cfg.proj_layers,
            true,
        );
        let projector = Mlp::new(&proj, DType::F32, g)?;
        let pred = bn_mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, 2, false);
        let predictor = Mlp::new(&pred, DType::F32, g)?;
        let target = MomentumBranch::copy_of(cfg, &proj, &encoder, &projector)?;
        Ok(MocoV3 {
            encoder,
            projector,
            predictor,
            target,
            temperature: cfg.temperature,
            base_momentum: cfg.momentum,
        })
    }

    /// The EMA momentum after step `p.step` of `p.total`.
    pub fn momentum(&self, p: Progress) -> f64 {
        cosine_momentum(self.base_momentum, p.step, p.total)
    }
}

impl_module!(MocoV3 {
    encoder,
    projector,
    predictor,
    target
});

impl SslMethod for MocoV3 {
    fn name(&self) -> MethodName {
        MethodName::MocoV3
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("moco-v3", 2)?;
        let b = v[0].shape()[0];
        let x = Tensor::concat(&[&v[0], &v[1]], 0)?;
        let h = self.encoder.embed(&x)?;
        let q = self.predictor.forward(&self.projector.forward(&h)?)?;
        let k = self.target.forward(&x)?;
        let (q1, q2) = (q.narrow(0, 0, b)?, q.narrow(0, b, b)?);
        let (k1, k2) = (k.narrow(0, 0, b)?, k.narrow(0, b, b)?);
        let t = self.temperature;
        let loss = info_nce_batch(&q1, &k2, t)?
            .add(&info_nce_batch(&q2, &k1, t)?)?
            .mul_scalar(2.0 * t)?;
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
