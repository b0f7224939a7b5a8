//! The [`SslMethod`] trait: what the trainer, the evaluation protocols and the CLI need from
//! every method, whichever family it belongs to.

use selfsup_nn::Module;
use selfsup_tensor::{Generator, Tensor};

use crate::config::MethodName;
use crate::encoder::Encoder;
use crate::error::{Result, SslError};

/// What a method consumes per step, so the trainer knows which batches to build.
#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    /// `count` augmented views of each image (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins,
    /// VICReg: 2), all at the encoder's input size.
    Views {
        /// Number of views.
        count: usize,
    },
    /// DINO-style multi-crop: two global views at the input size, then `local` smaller views
    /// of side `local_size`.
    MultiCrop {
        /// Number of local views.
        local: usize,
        /// Side of the local views in pixels.
        local_size: usize,
    },
    /// One view per image (lightly augmented or plain); the method derives its own inputs and
    /// targets from it (rotation, jigsaw, relative position, colorization, MAE, SimMIM, CPC).
    Images,
    /// Token ids `[B, T + 1]` (the extra token lets next-token methods shift by one).
    Tokens {
        /// Sequence length `T` the model sees.
        context: usize,
    },
}

/// One training batch.
#[derive(Clone, Debug, Default)]
pub struct SslBatch {
    /// Image views, each `[B, C, H, W]`, in the order of [`InputKind`] (one for
    /// [`InputKind::Images`]).
    pub views: Vec<Tensor>,
    /// Token ids `[B, T + 1]` (i64) for text methods.
    pub tokens: Option<Tensor>,
    /// Second segments and is-next labels for next-sentence prediction: `(ids [B, T], [B])`.
    pub pairs: Option<(Tensor, Tensor)>,
    /// The text part (`tokens`, `pairs`) as it was on the host before [`SslBatch::to_device`]
    /// moved it to a GPU, so a method that prepares inputs on the host from the ids (MLM's
    /// masking) need not read them back; `None` when the batch never left the host.
    pub host_text: Option<Box<SslBatch>>,
}

impl SslBatch {
    /// The same batch on `device` (a cheap clone for tensors already there).
    pub fn to_device(&self, device: selfsup_tensor::Device) -> selfsup_tensor::Result<SslBatch> {
        let text_on_host = self.tokens.iter().all(|t| t.device().is_cpu())
            && self
                .pairs
                .iter()
                .all(|(a, b)| a.device().is_cpu() && b.device().is_cpu());
        let host_text = match &self.host_text {
            Some(h) => Some(h.clone()),
            None if !device.is_cpu()
                && text_on_host
                && (self.tokens.is_some() || self.pairs.is_some()) =>
            {
                Some(Box::new(SslBatch {
                    views: Vec::new(),
                    tokens: self.tokens.clone(),
                    pairs: self.pairs.clone(),
                    host_text: None,
                }))
            }
            None => None,
        };
        Ok(SslBatch {
            host_text,
            views: self
                .views
                .iter()
                .map(|v| v.to_device(device))
                .collect::<selfsup_tensor::Result<_>>()?,
            tokens: self
                .tokens
                .as_ref()
                .map(|t| t.to_device(device))
                .transpose()?,
            pairs: match &self.pairs {
                Some((a, b)) => Some((a.to_device(device)?, b.to_device(device)?)),
                None => None,
            },
        })
    }

    /// A batch of image views.
    pub fn from_views(views: Vec<Tensor>) -> Self {
        SslBatch {
            views,
            ..Default::default()
        }
    }

    /// A batch of token ids `[B, T + 1]`.
    pub fn from_tokens(tokens: Tensor) -> Self {
        SslBatch {
            tokens: Some(tokens),
            ..Default::default()
        }
    }

    /// The first `n` views, or an error naming `method` when there are fewer.
    pub fn views(&self, method: &'static str, n: usize) -> Result<&[Tensor]> {
        if self.views.len() < n {
            return Err(SslError::Batch {
                method,
                msg: format!("needs {n} image views per batch, got {}", self.views.len()),
            });
        }
        Ok(&self.views[..n])
    }

    /// The text part of the batch on the host: the copy kept by [`SslBatch::to_device`], or
    /// this batch itself (whose tensors may then be anywhere).
    pub fn text_on_host(&self) -> &SslBatch {
        self.host_text.as_deref().unwrap_or(self)
    }

    /// The token ids, or an error naming `method`.
    pub fn tokens(&self, method: &'static str) -> Result<&Tensor> {
        self.tokens.as_ref().ok_or_else(|| SslError::Batch {
            method,
            msg: "needs token ids [B, T + 1]; it trains on text (--dataset text)".into(),
        })
    }
}

/// Where training stands, for schedules inside a method (EMA momentum, teacher temperature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Steps completed before this one (0-based index of the current step).
    pub step: u64,
    /// Total steps of the run.
    pub total: u64,
}

/// What one forward pass produced.
#[derive(Debug)]
pub struct StepOutput {
    /// The scalar loss to minimise (differentiable).
    pub loss: Tensor,
    /// Detached encoder features `[B, D]` of the first view and, where there is one, of the
    /// second view of the same images: the input of the collapse diagnostics.
    pub embeddings: Option<(Tensor, Option<Tensor>)>,
    /// Other figures worth logging (pretext accuracy, loss terms), by name: detached 0-d
    /// tensors, on the method's device (or the CPU), which the trainer reads back with the
    /// loss in one transfer.
    pub metrics: Vec<(String, Tensor)>,
}

impl StepOutput {
    /// An output with just a loss.
    pub fn loss(loss: Tensor) -> Self {
        StepOutput {
            loss,
            embeddings: None,
            metrics: Vec::new(),
        }
    }
}

/// An SSL method: encoder plus everything its objective needs (heads, target networks, queues,
/// centres), as one [`Module`] whose parameters and buffers (by dotted names) make its
/// checkpoint. The encoder's names start with `encoder.`.
pub trait SslMethod: Module + Send {
    /// The method's name.
    fn name(&self) -> MethodName;

    /// What batches it consumes.
    fn input(&self) -> InputKind;

    /// The encoder being pretrained.
    fn encoder(&self) -> &Encoder;

    /// The encoder, mutably (train/eval mode, loading weights).
    fn encoder_mut(&mut self) -> &mut Encoder;

    /// The loss on one batch (and what to log). Randomness (masks, rotations, permutations)
    /// comes from `g`.
    fn forward(
        &mut self,
        batch: &SslBatch,
        progress: Progress,
        g: &mut Generator,
    ) -> Result<StepOutput>;

    /// The parameters the optimiser updates: by default every parameter except those under
    /// `target.` (EMA networks move only in [`SslMethod::after_step`]).
    fn trainable_params(&self) -> Vec<(String, Tensor)> {
        self.params()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("target."))
            .collect()
    }

    /// Per-step updates after the optimiser step: EMA targets, queues, centres.
    fn after_step(&mut self, _progress: Progress) -> Result<()> {
        Ok(())
    }
}
