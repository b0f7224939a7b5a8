//! SimCLR (Chen et al. 2020): two augmented views per image through one encoder and a
//! projection MLP, NT-Xent over the `2B` projections with both views as anchors.

use selfsup_nn::{Mlp, MlpConfig};
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::loss::nt_xent;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

/// SimCLR: encoder, projection MLP (`proj_layers` layers, ReLU), NT-Xent at `temperature`.
#[derive(Debug)]
pub struct Simclr {
    /// The encoder.
    pub encoder: Encoder,
    /// The projection head.
    pub projector: Mlp,
    temperature: f64,
}

impl Simclr {
    /// Builds SimCLR from `cfg` (its encoder, `proj_*` sizes and `temperature`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let projector = Mlp::new(
            &MlpConfig::new(
                encoder.out_dim(),
                cfg.proj_hidden,
                cfg.proj_dim,
                cfg.proj_layers,
            ),
            DType::F32,
            g,
        )?;
        Ok(Simclr {
            encoder,
            projector,
            temperature: cfg.temperature,
        })
    }
}

impl_module!(Simclr { encoder, projector });

impl SslMethod for Simclr {
    fn name(&self) -> MethodName {
        MethodName::Simclr
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("simclr", 2)?;
        let b = v[0].shape()[0];
        let h = self.encoder.embed(&Tensor::concat(&[&v[0], &v[1]], 0)?)?;
        let z = self.projector.forward(&h)?;
        let loss = nt_xent(&z, self.temperature)?;
        let h = h.detach();
        Ok(StepOutput {
            loss,
            embeddings: Some((h.narrow(0, 0, b)?, Some(h.narrow(0, b, b)?))),
            metrics: Vec::new(),
        })
    }
}
