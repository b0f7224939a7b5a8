//! Barlow Twins (Zbontar et al. 2021): one encoder and a BatchNorm MLP projector; the
//! cross-correlation of the two views' standardised projections is pulled towards the
//! identity, off-diagonal terms weighted by `cfg.lambda`.

use selfsup_nn::Mlp;
use selfsup_tensor::{DType, Generator};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::barlow_twins;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::bn_mlp;

/// Barlow Twins: encoder and projector.
#[derive(Debug)]
pub struct BarlowTwins {
    /// The encoder.
    pub encoder: Encoder,
    /// The projector (`proj_layers` layers, BatchNorm + ReLU between them).
    pub projector: Mlp,
    lambda: f64,
}

impl BarlowTwins {
    /// Builds Barlow Twins from `cfg` (encoder, `proj_*`, `lambda`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        if !(cfg.lambda >= 0.0 && cfg.lambda.is_finite()) {
            return config(format!(
                "barlow-twins: lambda = {} must be >= 0",
                cfg.lambda
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
        Ok(BarlowTwins {
            encoder,
            projector,
            lambda: cfg.lambda,
        })
    }
}

impl_module!(BarlowTwins { encoder, projector });

impl SslMethod for BarlowTwins {
    fn name(&self) -> MethodName {
        MethodName::BarlowTwins
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("barlow-twins", 2)?;
        let h1 = self.encoder.embed(&v[0])?;
        let h2 = self.encoder.embed(&v[1])?;
        let z1 = self.projector.forward(&h1)?;
        let z2 = self.projector.forward(&h2)?;
        let loss = barlow_twins(&z1, &z2, self.lambda)?;
        // The two parts of the loss, for the log: sum (1 - C_ii)^2 and sum_{i != j} C_ij^2.
        let on = barlow_twins(&z1.detach(), &z2.detach(), 0.0)?;
        let mut metrics = vec![("on_diag".into(), on.clone())];
        if self.lambda > 0.0 {
            let off = loss.detach().sub(&on)?.div_scalar(self.lambda)?;
            metrics.push(("off_diag".into(), off));
        }
        Ok(StepOutput {
            loss,
            embeddings: Some((h1.detach(), Some(h2.detach()))),
            metrics,
        })
    }
}
