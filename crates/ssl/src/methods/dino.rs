//! DINO (Caron et al. 2021): self-distillation without labels. The student (encoder + head)
//! sees two global views and `cfg.local_crops` smaller local crops; the teacher (their EMA
//! copy under `target`, cosine momentum from `cfg.momentum` to 1) sees only the global views.
//! The teacher's outputs are centred (the centre is a buffer following the teacher's batch
//! mean with EMA rate `cfg.center_momentum`) and sharpened at `cfg.teacher_temp`; the student,
//! at temperature `cfg.temperature`, is trained with the cross-entropy towards them over all
//! pairs of different views.
//!
//! The head is an MLP (`proj_layers` layers, GELU, width `proj_hidden`) to a `proj_dim`
//! bottleneck, L2-normalised, then a weight-normalised linear layer (unit-norm rows, no bias)
//! to `cfg.dino_out_dim` outputs.

use selfsup_nn::schedule::cosine_momentum;
use selfsup_nn::{Activation, Linear, Mlp, MlpConfig, Module};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::{dino_center, dino_loss};
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

/// Side of the local crops for global views of side `image_size`: 3/7 of it (DINO's 96 for
/// 224), at least 4 pixels (12 for 28x28 images).
pub fn dino_local_size(image_size: usize) -> usize {
    (image_size * 3 / 7).max(4).min(image_size)
}

/// DINO's projection head: MLP to a bottleneck, L2 normalisation, weight-normalised last
/// layer.
#[derive(Debug)]
pub struct DinoHead {
    /// The MLP to the bottleneck.
    pub mlp: Mlp,
    /// The last layer (`[out_dim, bottleneck]`, no bias); its rows are normalised in forward.
    pub last: Linear,
}

impl_module!(DinoHead { mlp, last });

impl DinoHead {
    /// A head from `in_dim` features through `cfg.proj_*` to `cfg.dino_out_dim` outputs.
    pub fn new(in_dim: usize, cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let mlp = Mlp::new(
            &MlpConfig {
                activation: Activation::Gelu,
                ..MlpConfig::new(in_dim, cfg.proj_hidden, cfg.proj_dim, cfg.proj_layers)
            },
            DType::F32,
            g,
        )?;
        let last = Linear::new(cfg.proj_dim, cfg.dino_out_dim, false, DType::F32, g)?;
        Ok(DinoHead { mlp, last })
    }

    /// Outputs `[N, out_dim]` of features `[N, in_dim]`: cosines between the normalised
    /// bottleneck and the normalised rows of the last layer.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let z = self.mlp.forward(h)?.l2_normalize(-1, 1e-12)?;
        let w = self.last.weight.l2_normalize(-1, 1e-12)?;
        Ok(z.matmul(&w.t()?)?)
    }
}

/// The teacher: EMA copies of the encoder and the head.
#[derive(Debug)]
pub struct DinoTeacher {
    /// The teacher encoder.
    pub encoder: Encoder,
    /// The teacher head.
    pub head: DinoHead,
}

impl_module!(DinoTeacher { encoder, head });

/// DINO: student encoder and head, teacher under `target`, the centre.
#[derive(Debug)]
pub struct Dino {
    /// The student encoder.
    pub encoder: Encoder,
    /// The student head.
    pub head: DinoHead,
    /// The teacher (EMA of encoder and head).
    pub target: DinoTeacher,
    /// The centre of the teacher outputs `[1, dino_out_dim]`.
    pub center: Tensor,
    student_temp: f64,
    teacher_temp: f64,
    center_momentum: f64,
    base_momentum: f64,
    local_crops: usize,
    local_size: usize,
    pending: Option<Vec<Tensor>>,
}

impl Dino {
    /// Builds DINO from `cfg` (encoder, `proj_*`, `dino_out_dim`, `teacher_temp`,
    /// `temperature`, `center_momentum`, `momentum`, `local_crops`).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        if cfg.dino_out_dim == 0 {
            return config("dino: dino_out_dim must be at least 1");
        }
        if !(cfg.teacher_temp > 0.0 && cfg.teacher_temp.is_finite()) {
            return config(format!(
                "dino: teacher_temp = {} must be positive",
                cfg.teacher_temp
            ));
        }
        if !(0.0..1.0).contains(&cfg.center_momentum) {
            return config(format!(
                "dino: center_momentum = {} must be in [0, 1)",
                cfg.center_momentum
            ));
        }
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let head = DinoHead::new(encoder.out_dim(), cfg, g)?;
        let mut tg = Generator::new(0);
        let target = DinoTeacher {
            encoder: Encoder::new(&cfg.backbone, false, false, &mut tg)?,
            head: DinoHead::new(encoder.out_dim(), cfg, &mut tg)?,
        };
        target.encoder.copy_from(&encoder)?;
        target.head.copy_from(&head)?;
        Ok(Dino {
            encoder,
            head,
            target,
            center: Tensor::zeros(&[1, cfg.dino_out_dim], DType::F32),
            student_temp: cfg.temperature,
            teacher_temp: cfg.teacher_temp,
            center_momentum: cfg.center_momentum,
            base_momentum: cfg.momentum,
            local_crops: cfg.local_crops,
            local_size: dino_local_size(cfg.backbone.image_size),
            pending: None,
        })
    }

    /// The teacher's EMA momentum after step `p.step` of `p.total`.
    pub fn momentum(&self, p: Progress) -> f64 {
        cosine_momentum(self.base_momentum, p.step, p.total)
    }

    /// The teacher's outputs on the global views `x` (detached).
    pub fn teacher(&self, x: &Tensor) -> Result<Tensor> {
        let _g = no_grad();
        Ok(self
            .target
            .head
            .forward(&self.target.encoder.embed(x)?)?
            .detach())
    }
}

impl_module!(Dino { encoder, head, target } buffers: [center]);

/// Splits `x` `[k * b, ...]` into `k` chunks of `b` rows.
fn chunks(x: &Tensor, b: usize, k: usize) -> Result<Vec<Tensor>> {
    (0..k).map(|i| Ok(x.narrow(0, i * b, b)?)).collect()
}

impl SslMethod for Dino {
    fn name(&self) -> MethodName {
        MethodName::Dino
    }
    fn input(&self) -> InputKind {
        InputKind::MultiCrop {
            local: self.local_crops,
            local_size: self.local_size,
        }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("dino", 2 + self.local_crops)?;
        let b = v[0].shape()[0];
        if let Some(bad) = v.iter().find(|t| t.rank() != 4 || t.shape()[0] != b) {
            return Err(crate::SslError::Batch {
                method: "dino",
                msg: format!(
                    "every view must be [{b}, C, H, W] like the first, got {:?}",
                    bad.shape()
                ),
            });
        }
        let globals = Tensor::concat(&[&v[0], &v[1]], 0)?;
        let hg = self.encoder.embed(&globals)?;
        let mut student = chunks(&self.head.forward(&hg)?, b, 2)?;
        if self.local_crops > 0 {
            let refs: Vec<&Tensor> = v[2..].iter().collect();
            let hl = self.encoder.embed(&Tensor::concat(&refs, 0)?)?;
            student.extend(chunks(&self.head.forward(&hl)?, b, self.local_crops)?);
        }
        let teacher = chunks(&self.teacher(&globals)?, b, 2)?;
        let loss = dino_loss(
            &student,
            &teacher,
            &self.center,
            self.student_temp,
            self.teacher_temp,
        )?;
        // Entropy of the teacher's targets: log(out_dim) when uniform (collapse to the centre),
        // 0 when one-hot on one prototype (collapse to one dimension).
        let mut entropy: Option<Tensor> = None;
        for t in &teacher {
            let lq = t
                .detach()
                .sub(&self.center)?
                .mul_scalar(1.0 / self.teacher_temp)?
                .log_softmax(-1)?;
            let h = lq
                .exp()?
                .mul(&lq)?
                .sum(&[-1], false)?
                .mean_all()?
                .mul_scalar(-0.5)?;
            entropy = Some(match entropy {
                Some(e) => e.add(&h)?,
                None => h,
            });
        }
        let entropy = match entropy {
            Some(e) => e,
            None => Tensor::zeros(&[], DType::F32),
        };
        self.pending = Some(teacher);
        let hg = hg.detach();
        Ok(StepOutput {
            loss,
            embeddings: Some((hg.narrow(0, 0, b)?, Some(hg.narrow(0, b, b)?))),
            metrics: vec![("teacher_entropy".into(), entropy)],
        })
    }
    fn after_step(&mut self, p: Progress) -> Result<()> {
        let m = self.momentum(p);
        selfsup_nn::schedule::ema_update(&self.target.encoder.params(), &self.encoder.params(), m)?;
        selfsup_nn::schedule::ema_update(&self.target.head.params(), &self.head.params(), m)?;
        if let Some(t) = self.pending.take() {
            let _g = no_grad();
            let c = dino_center(&self.center, &t, self.center_momentum)?;
            self.center.assign(&c)?;
        }
        Ok(())
    }
}
