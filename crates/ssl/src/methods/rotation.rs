//! Rotation prediction (Gidaris et al. 2018, RotNet): every image is shown at 0, 90, 180 and
//! 270 degrees and a linear head on the encoder's features classifies which rotation it sees.

use selfsup_nn::Linear;
use selfsup_tensor::{DType, Generator};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::Result;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::metric::argmax_accuracy;
use crate::pretext::label_tensor;
use crate::pretext::rotate::rotate_all;

/// RotNet: encoder and a 4-way linear head, cross-entropy over all four rotations of each
/// image (the `4B` images go through the encoder as one batch).
#[derive(Debug)]
pub struct Rotation {
    /// The encoder.
    pub encoder: Encoder,
    /// The 4-way rotation classifier.
    pub head: Linear,
}

impl Rotation {
    /// Builds the method from `cfg` (its encoder).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let head = Linear::new(encoder.out_dim(), 4, true, DType::F32, g)?;
        Ok(Rotation { encoder, head })
    }
}

impl_module!(Rotation { encoder, head });

impl SslMethod for Rotation {
    fn name(&self) -> MethodName {
        MethodName::Rotation
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("rotation", 1)?[0];
        let b = x.shape()[0];
        let (rotated, labels) = rotate_all(x)?;
        let h = self.encoder.embed(&rotated)?;
        let logits = self.head.forward(&h)?;
        let labels = label_tensor(&labels)?;
        let loss = logits.cross_entropy(&labels)?;
        let acc = argmax_accuracy(&logits, &labels, None)?;
        Ok(StepOutput {
            loss,
            embeddings: Some((h.detach().narrow(0, 0, b)?, None)),
            metrics: vec![("rotation_acc".into(), acc)],
        })
    }
}
