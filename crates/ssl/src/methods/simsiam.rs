//! SimSiam (Chen & He 2021): one encoder, a projector ending in BatchNorm and a bottleneck
//! predictor; each view's prediction regresses the other view's projection under a
//! stop-gradient: `loss = -cos(p1, sg(z2)) / 2 - cos(p2, sg(z1)) / 2`. No momentum network.

use selfsup_nn::Mlp;
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::loss::negative_cosine;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::bn_mlp;

/// SimSiam: encoder, projector, predictor.
#[derive(Debug)]
pub struct Simsiam {
    /// The encoder.
    pub encoder: Encoder,
    /// The projector (`proj_layers` layers, BatchNorm, affine-free BatchNorm on the output).
    pub projector: Mlp,
    /// The predictor (`proj_dim -> pred_hidden -> proj_dim`, BatchNorm on the hidden layer).
    pub predictor: Mlp,
}

impl Simsiam {
    /// Builds SimSiam from `cfg` (encoder, `proj_*`, `pred_hidden`).
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
        Ok(Simsiam {
            encoder,
            projector,
            predictor,
        })
    }
}

impl_module!(Simsiam {
    encoder,
    projector,
    predictor
});

impl SslMethod for Simsiam {
    fn name(&self) -> MethodName {
        MethodName::Simsiam
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("simsiam", 2)?;
        let b = v[0].shape()[0];
        let h = self.encoder.embed(&Tensor::concat(&[&v[0], &v[1]], 0)?)?;
        let z = self.projector.forward(&h)?;
        let p = self.predictor.forward(&z)?;
        let zd = z.detach();
        let (p1, p2) = (p.narrow(0, 0, b)?, p.narrow(0, b, b)?);
        let (z1, z2) = (zd.narrow(0, 0, b)?, zd.narrow(0, b, b)?);
        let loss = negative_cosine(&p1, &z2)?
            .add(&negative_cosine(&p2, &z1)?)?
            .mul_scalar(0.5)?;
        // The per-dimension std of the normalised projections: 1/sqrt(d) when healthy, 0 when
        // collapsed (the paper's collapse monitor).
        let z_std = zd
            .l2_normalize(-1, 1e-12)?
            .std(&[0], false, false)?
            .mean_all()?;
        let h = h.detach();
        Ok(StepOutput {
            loss,
            embeddings: Some((h.narrow(0, 0, b)?, Some(h.narrow(0, b, b)?))),
            metrics: vec![("z_std".into(), z_std)],
        })
    }
}
