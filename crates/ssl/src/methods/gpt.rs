//! GPT-style next-token prediction (Radford et al. 2018): a causal text transformer with a
//! tied output head reads tokens `[:, :T]` of each window `[B, T + 1]` and is trained with
//! cross-entropy against tokens `[:, 1:]`.

use selfsup_nn::init;
use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::{no_grad, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{Result, SslError};
use crate::loss::IGNORE_INDEX;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::metric::argmax_accuracy;

/// GPT: a causal text encoder.
#[derive(Debug)]
pub struct Gpt {
    /// The causal text transformer (tied head).
    pub encoder: Encoder,
    context: usize,
}

impl Gpt {
    /// Builds GPT from `cfg` (a text backbone).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, true, true, g)?;
        if encoder.as_text().is_none() {
            return Err(SslError::Config("gpt needs a text backbone".into()));
        }
        small_token_init(&encoder, g)?;
        Ok(Gpt {
            encoder,
            context: cfg.backbone.context,
        })
    }

    /// Next-token loss, logits `[B, T, V]` and hidden states of windows `tokens` `[B, T + 1]`.
    pub fn loss(&self, tokens: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let text = self
            .encoder
            .as_text()
            .ok_or_else(|| SslError::Config("gpt needs a text backbone".into()))?;
        if tokens.rank() != 2 || tokens.shape()[1] < 2 {
            return Err(SslError::Batch {
                method: "gpt",
                msg: format!("token ids must be [B, T + 1], got {:?}", tokens.shape()),
            });
        }
        let t = tokens.shape()[1] - 1;
        let inputs = tokens.narrow(1, 0, t)?.contiguous()?;
        let targets = tokens.narrow(1, 1, t)?.contiguous()?;
        let hidden = text.hidden(&inputs, None)?;
        // The tied head and the loss as one op (fused on a GPU at bf16 precision); the same
        // loss as `masked_token_ce` of the logits.
        let opts = CrossEntropy {
            ignore_index: Some(IGNORE_INDEX),
            ..CrossEntropy::default()
        };
        let (loss, logits) = text.head_cross_entropy(&hidden, &targets, &opts)?;
        Ok((loss, logits, hidden))
    }
}

/// Redraws the token table of a text encoder from `N(0, 0.02)` (GPT-2's initialisation). The
/// table doubles as the tied output head, and at the embedding's default `N(0, 1)` the initial
/// logits have a standard deviation of about `sqrt(dim)`, so the first losses are in the
/// hundreds.
pub(crate) fn small_token_init(encoder: &Encoder, g: &mut Generator) -> Result<()> {
    if let Some(text) = encoder.as_text() {
        let _ng = no_grad();
        let w = &text.tok.weight;
        w.assign(&init::normal(w.shape(), 0.0, 0.02, w.dtype(), g)?)?;
    }
    Ok(())
}

impl_module!(Gpt { encoder });

impl SslMethod for Gpt {
    fn name(&self) -> MethodName {
        MethodName::Gpt
    }
    fn input(&self) -> InputKind {
        InputKind::Tokens {
            context: self.context,
        }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let tokens = batch.tokens("gpt")?;
        let (loss, logits, hidden) = self.loss(tokens)?;
        let t = logits.shape()[1];
        let acc = argmax_accuracy(&logits, &tokens.narrow(1, 1, t)?, None)?;
        let bits = loss.detach().div_scalar(std::f64::consts::LN_2)?;
        Ok(StepOutput {
            loss,
            embeddings: Some((hidden.detach().mean(&[1], false)?, None)),
            metrics: vec![
                ("next_token_acc".into(), acc),
                ("bits_per_token".into(), bits),
            ],
        })
    }
}
