//! BERT-style masked language modelling (Devlin et al. 2019) on the bidirectional text
//! transformer with a tied output head: each non-padding token is selected with probability
//! `mask_ratio` (0.15); a selected token becomes `[MASK]` (80%), a random token (10%) or stays
//! (10%); cross-entropy is taken on the selected positions only. With `nsp`, a linear head on
//! the first position's hidden state also predicts whether the second segment (from
//! `SslBatch::pairs`) follows the first.
//!
//! Token ids follow the vocabularies of this workspace: id 0 is `[PAD]`, id 1 is `[MASK]`.

use selfsup_data::mask::{BertMasking, MaskedTokens, IGNORE_INDEX};
use selfsup_nn::{join, Linear, Module};
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result, SslError};
use crate::loss::masked_token_ce;
use crate::macros::encoder_access;
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::metric::argmax_accuracy;

/// The `[PAD]` id (never selected, masked out of attention).
pub const PAD_ID: i64 = 0;
/// The `[MASK]` id.
pub const MASK_ID: i64 = 1;

/// MLM: the text encoder and an optional next-sentence head.
#[derive(Debug)]
pub struct Mlm {
    /// The bidirectional text transformer (tied head).
    pub encoder: Encoder,
    /// Next-sentence prediction head (hidden state of position 0 to 2 classes), with `nsp`.
    pub nsp_head: Option<Linear>,
    masking: BertMasking,
    context: usize,
}

/// What one MLM pass computed (for tests and inspection).
#[derive(Debug)]
pub struct MlmOutput {
    /// Vocabulary logits `[B, T, V]`.
    pub logits: Tensor,
    /// Hidden states `[B, T, dim]`.
    pub hidden: Tensor,
    /// The masked-token loss.
    pub mlm_loss: Tensor,
    /// Fraction of selected tokens predicted right (0-d, on the model's device).
    pub accuracy: Tensor,
}

impl Mlm {
    /// Builds MLM from `cfg` (a text backbone; `mask_ratio` is the selection probability).
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let encoder = Encoder::new(&cfg.backbone, false, true, g)?;
        let text = encoder
            .as_text()
            .ok_or_else(|| SslError::Config("mlm needs a text backbone".into()))?;
        let (vocab, dim) = (text.config.vocab, text.config.dim);
        crate::methods::gpt::small_token_init(&encoder, g)?;
        if vocab < 3 {
            return config(format!(
                "mlm: a vocabulary of {vocab} ids has no room for [PAD], [MASK] and a token"
            ));
        }
        let nsp_head = if cfg.nsp {
            Some(Linear::new(dim, 2, true, DType::F32, g)?)
        } else {
            None
        };
        Ok(Mlm {
            nsp_head,
            masking: BertMasking {
                prob: cfg.mask_ratio,
                mask_token: MASK_ID,
                vocab_size: vocab,
                special: vec![PAD_ID, MASK_ID],
            },
            context: cfg.backbone.context,
            encoder,
        })
    }

    /// BERT masking of `ids` (row-major) with randomness from `rng`. When nothing was selected
    /// (tiny batches), one random non-padding position becomes `[MASK]` so the loss is defined.
    pub fn mask_tokens(&self, ids: &[i64], rng: &mut Philox) -> MaskedTokens {
        let mut m = self.masking.apply(ids, rng);
        if m.targets.iter().all(|&t| t == IGNORE_INDEX) {
            let cand: Vec<usize> = (0..ids.len())
                .filter(|&i| ids[i] != PAD_ID && ids[i] != MASK_ID)
                .collect();
            if !cand.is_empty() {
                let i = cand[rng.below(cand.len() as u64) as usize];
                m.targets[i] = ids[i];
                m.inputs[i] = MASK_ID;
            }
        }
        m
    }

    /// The MLM pass on masked inputs `[B, T]` with targets `[B, T]` ([`IGNORE_INDEX`] where not
    /// selected). Reads `inputs` on the host to find the padding (a read back when they are on
    /// a GPU; the training step makes the mask from the host ids instead).
    pub fn forward_masked(&self, inputs: &Tensor, targets: &Tensor) -> Result<MlmOutput> {
        let pad = pad_mask(&inputs.to_vec::<i64>()?, inputs.shape())?;
        self.forward_with_pad(inputs, targets, pad)
    }

    /// [`Mlm::forward_masked`] with the padding mask (host, from [`pad_mask`]) already made.
    fn forward_with_pad(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        pad: Option<Tensor>,
    ) -> Result<MlmOutput> {
        let text = self
            .encoder
            .as_text()
            .ok_or_else(|| SslError::Config("mlm needs a text backbone".into()))?;
        let pad = pad.map(|p| p.to_device(Module::device(self))).transpose()?;
        let hidden = text.hidden(inputs, pad.as_ref())?;
        let logits = text.logits(&hidden)?;
        let mlm_loss = masked_token_ce(&logits, targets)?;
        let accuracy = argmax_accuracy(&logits, targets, Some(IGNORE_INDEX))?;
        Ok(MlmOutput {
            logits,
            hidden,
            mlm_loss,
            accuracy,
        })
    }

    /// The sequence the model sees: the first `T` tokens, or with next-sentence pairs the first
    /// half of segment A followed by the start of segment B.
    fn sequence(&self, batch: &SslBatch) -> Result<(Tensor, Option<Tensor>)> {
        let tokens = batch.tokens("mlm")?;
        if tokens.rank() != 2 || tokens.shape()[1] < 2 {
            return Err(SslError::Batch {
                method: "mlm",
                msg: format!("token ids must be [B, T + 1], got {:?}", tokens.shape()),
            });
        }
        let t = (tokens.shape()[1] - 1).min(self.context);
        match (&self.nsp_head, &batch.pairs) {
            (Some(_), Some((second, labels))) => {
                let half = t / 2;
                let rest = t - half;
                if second.rank() != 2 || second.shape()[1] < rest || half == 0 {
                    return Err(SslError::Batch {
                        method: "mlm",
                        msg: format!(
                            "next-sentence segments must be [B, >= {rest}], got {:?}",
                            second.shape()
                        ),
                    });
                }
                let seq = Tensor::concat(
                    &[&tokens.narrow(1, 0, half)?, &second.narrow(1, 0, rest)?],
                    1,
                )?;
                Ok((seq, Some(labels.clone())))
            }
            (Some(_), None) => Err(SslError::Batch {
                method: "mlm",
                msg: "nsp = true needs next-sentence pairs in the batch (feed::nsp_batch)".into(),
            }),
            (None, _) => Ok((tokens.narrow(1, 0, t)?.contiguous()?, None)),
        }
    }
}

impl Module for Mlm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.encoder.visit_params(&join(prefix, "encoder"), f);
        if let Some(h) = &self.nsp_head {
            h.visit_params(&join(prefix, "nsp_head"), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.encoder.visit_params_mut(&join(prefix, "encoder"), f);
        if let Some(h) = &mut self.nsp_head {
            h.visit_params_mut(&join(prefix, "nsp_head"), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.encoder.visit_buffers(&join(prefix, "encoder"), f);
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.encoder.visit_buffers_mut(&join(prefix, "encoder"), f);
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        self.encoder.visit_rng(&join(prefix, "encoder"), f);
    }
    fn load_rng(&self, prefix: &str, states: &std::collections::HashMap<String, (u64, u64)>) {
        self.encoder.load_rng(&join(prefix, "encoder"), states);
    }
    fn set_train(&mut self, train: bool) {
        self.encoder.set_train(train);
    }
}

impl SslMethod for Mlm {
    fn name(&self) -> MethodName {
        MethodName::Mlm
    }
    fn input(&self) -> InputKind {
        InputKind::Tokens {
            context: self.context,
        }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, g: &mut Generator) -> Result<StepOutput> {
        // The masking draws on the host from the ids: take them from the batch's host copy
        // (kept when the trainer moved it to a GPU), so nothing is read back from the device.
        let (seq, labels) = self.sequence(batch.text_on_host())?;
        let shape = seq.shape().to_vec();
        let ids = seq.to_vec::<i64>()?;
        let m = self.mask_tokens(&ids, &mut g.fork());
        let dev = Module::device(self);
        let pad = pad_mask(&m.inputs, &shape)?;
        let inputs = Tensor::from_vec(m.inputs, &shape)?.to_device(dev)?;
        let targets = Tensor::from_vec(m.targets, &shape)?.to_device(dev)?;
        let labels = labels.map(|l| l.to_device(dev)).transpose()?;
        let out = self.forward_with_pad(&inputs, &targets, pad)?;
        let mut metrics = vec![
            ("mlm_loss".to_string(), out.mlm_loss.detach()),
            ("mlm_acc".to_string(), out.accuracy),
        ];
        let mut loss = out.mlm_loss.clone();
        if let (Some(head), Some(labels)) = (&self.nsp_head, labels) {
            let logits = head.forward(&out.hidden.select(1, 0)?)?;
            let nsp = logits.cross_entropy(&labels)?;
            let acc = argmax_accuracy(&logits, &labels, None)?;
            metrics.push(("nsp_loss".into(), nsp.detach()));
            metrics.push(("nsp_acc".into(), acc));
            loss = loss.add(&nsp)?;
        }
        let feats = out.hidden.detach().mean(&[1], false)?;
        Ok(StepOutput {
            loss,
            embeddings: Some((feats, None)),
            metrics,
        })
    }
}

/// The key-padding mask of `ids` (1.0 at [PAD], f32, `shape`), or `None` when nothing is
/// padding (the encoder then runs unmasked).
fn pad_mask(ids: &[i64], shape: &[usize]) -> Result<Option<Tensor>> {
    if !ids.contains(&PAD_ID) {
        return Ok(None);
    }
    let pad: Vec<f32> = ids
        .iter()
        .map(|&t| if t == PAD_ID { 1.0 } else { 0.0 })
        .collect();
    Ok(Some(Tensor::from_vec(pad, shape)?))
}
