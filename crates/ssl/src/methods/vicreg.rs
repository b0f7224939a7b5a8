//! VICReg (Bardes, Ponce & LeCun 2022): one encoder and a BatchNorm MLP expander; the loss
//! keeps the two views' expansions close (invariance), every dimension's std above 1
//! (variance) and the dimensions decorrelated (covariance), weights `cfg.sim_weight`,
//! `cfg.var_weight`, `cfg.cov_weight`. The three terms are logged.

use selfsup_nn::Mlp;
use selfsup_tensor::{DType, Generator};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::{vicreg, VicregWeights};
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::bn_mlp;

/// VICReg: encoder and expander.
#[derive(Debug)]
pub struct Vicreg {
    /// The encoder.
    pub encoder: Encoder,
    /// The expander (`proj_layers` layers, BatchNorm + ReLU between them).
    pub projector: Mlp,
    weights: VicregWeights,
}

impl Vicreg {
    /// Builds VICReg from `cfg` (encoder, `proj_*`, the three weights).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let weights = VicregWeights {
            sim: cfg.sim_weight,
            var: cfg.var_weight,
            cov: cfg.cov_weight,
        };
        if [weights.sim, weights.var, weights.cov]
            .iter()
            .any(|w| !(*w >= 0.0 && w.is_finite()))
        {
            return config(format!(
                "vicreg: sim_weight, var_weight and cov_weight must be >= 0, got {}, {}, {}",
                weights.sim, weights.var, weights.cov
            ));
        }
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let proj = bn_mlp(
            encoder.out_dim(),
            cfg.proj_hidden,
            cfg.proj_dim,
            cfg.proj_layers,
            false,
        );
        let projector = Mlp::new(&proj, DType::F32, g)?;
        Ok(Vicreg {
            encoder,
            projector,
            weights,
        })
    }
}

impl_module!(Vicreg { encoder, projector });

impl SslMethod for Vicreg {
    fn name(&self) -> MethodName {
        MethodName::Vicreg
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("vicreg", 2)?;
        let h1 = self.encoder.embed(&v[0])?;
        let h2 = self.encoder.embed(&v[1])?;
        let z1 = self.projector.forward(&h1)?;
        let z2 = self.projector.forward(&h2)?;
        let terms = vicreg(&z1, &z2, &self.weights)?;
        Ok(StepOutput {
            loss: terms.loss,
            embeddings: Some((h1.detach(), Some(h2.detach()))),
            metrics: vec![
                ("invariance".into(), terms.invariance.detach()),
                ("variance".into(), terms.variance.detach()),
                ("covariance".into(), terms.covariance.detach()),
            ],
        })
    }
}
