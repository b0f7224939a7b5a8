//! Text transformers: a GPT-style causal decoder and a BERT-style bidirectional encoder, both
//! pre-LayerNorm, with learned positions, a final LayerNorm and an output head over the
//! vocabulary that is either tied to the token embedding or its own bias-free linear layer.
//! Names: `tok.weight`, `pos.weight`, `blocks.{i}.…`, `ln_f.…`, `head.weight` (untied only).

use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::{DType, Generator, Tensor};

use crate::activation::Activation;
use crate::embedding::{Embedding, LearnedPositionalEmbedding};
use crate::error::{config, Result};
use crate::linear::Linear;
use crate::module::{join, Module};
use crate::norm::LayerNorm;
use crate::transformer::TransformerBlock;

/// Sizes and options of a [`TextTransformer`].
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest sequence (number of learned positions).
    pub context: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Model width.
    pub dim: usize,
    /// MLP hidden size as a multiple of `dim`.
    pub mlp_ratio: usize,
    /// Causal (GPT) or bidirectional (BERT) attention.
    pub causal: bool,
    /// Output head tied to the token embedding.
    pub tied: bool,
    /// Dropout on attention probabilities and residual branches (0 for none).
    pub dropout: f64,
    /// The MLP's activation: GELU (erf form) for the reference GPT, GELU's tanh form for
    /// GPT-2 (as OpenAI's GPT-2 and llm.c define it; on a GPU at bf16 precision the MLP then
    /// runs it, and its derivative, in the products' cuBLASLt epilogues).
    pub activation: Activation,
}

impl TextConfig {
    /// The reference char-level GPT of shared/README.md (vocab 96, context 128, 4 x 4 heads,
    /// d 128, untied head): 834,304 parameters.
    pub fn reference_gpt() -> TextConfig {
        TextConfig {
            vocab: 96,
            context: 128,
            layers: 4,
            heads: 4,
            dim: 128,
            mlp_ratio: 4,
            causal: true,
            tied: false,
            dropout: 0.0,
            activation: Activation::Gelu,
        }
    }

    /// GPT-2 small as llm.c trains it: vocab 50304 (50257 padded to a multiple of 128),
    /// context 1024, 12 blocks of 12 heads, d 768, MLP 4x with GELU's tanh form, head tied to
    /// the token embedding, no dropout: 124,475,904 parameters.
    pub fn gpt2_small() -> TextConfig {
        TextConfig {
            vocab: 50304,
            context: 1024,
            layers: 12,
            heads: 12,
            dim: 768,
            mlp_ratio: 4,
            causal: true,
            tied: true,
            dropout: 0.0,
            activation: Activation::GeluTanh,
        }
    }
}

/// A GPT-style decoder or BERT-style encoder over token ids.
#[derive(Debug)]
pub struct TextTransformer {
    /// Token embedding `[vocab, dim]`.
    pub tok: Embedding,
    /// Learned positions `[context, dim]`.
    pub pos: LearnedPositionalEmbedding,
    /// The blocks.
    pub blocks: Vec<TransformerBlock>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// Untied output head (`None` when tied to `tok`).
    pub head: Option<Linear>,
    /// The configuration it was built from.
    pub config: TextConfig,
}

impl TextTransformer {
    /// Builds the model: learned positions N(0, 0.02) truncated at two standard deviations; the
    /// token embedding N(0, 0.02) when it is also the output head (`tied`, as GPT-2 does: with
    /// N(0, 1) the first logits would have a standard deviation of about sqrt(dim)), else
    /// N(0, 1) (PyTorch's `nn.Embedding`); PyTorch defaults elsewhere.
    pub fn new(cfg: &TextConfig, dtype: DType, g: &mut Generator) -> Result<TextTransformer> {
        if cfg.vocab == 0
            || cfg.context == 0
            || cfg.layers == 0
            || cfg.heads == 0
            || cfg.dim % cfg.heads.max(1) != 0
        {
            return config(format!(
                "TextTransformer: invalid sizes {cfg:?} (all positive, dim divisible by heads)"
            ));
        }
        let mut blocks = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            let b =
                TransformerBlock::new(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.activation, dtype, g)?;
            blocks.push(if cfg.dropout > 0.0 {
                b.with_dropout(cfg.dropout, g)?
            } else {
                b
            });
        }
        Ok(TextTransformer {
            tok: if cfg.tied {
                Embedding::with_std(cfg.vocab, cfg.dim, 0.02, dtype, g)?
            } else {
                Embedding::new(cfg.vocab, cfg.dim, dtype, g)?
            },
            pos: LearnedPositionalEmbedding::new(cfg.context, cfg.dim, dtype, g)?,
            blocks,
            ln_f: LayerNorm::new(cfg.dim, dtype),
            head: if cfg.tied {
                None
            } else {
                Some(Linear::new(cfg.dim, cfg.vocab, false, dtype, g)?)
            },
            config: cfg.clone(),
        })
    }

    /// Hidden states `[B, T, dim]` of token ids `[B, T]` (i64); `key_padding` `[B, T]` marks
    /// padding positions with 1 (BERT-style batches of unequal lengths).
    pub fn hidden(&self, ids: &Tensor, key_padding: Option<&Tensor>) -> Result<Tensor> {
        if ids.rank() != 2 || ids.shape()[1] > self.config.context {
            return config(format!(
                "TextTransformer: token ids must be [batch, T] with T <= {}, got {:?}",
                self.config.context,
                ids.shape()
            ));
        }
        let mut h = self.pos.forward(&self.tok.forward(ids)?)?;
        for b in &self.blocks {
            h = b.forward(&h, self.config.causal, key_padding)?;
        }
        self.ln_f.forward(&h)
    }

    /// Vocabulary logits `[B, T, vocab]` from hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.head {
            Some(h) => h.forward(hidden),
            None => Ok(hidden.matmul(&self.tok.weight.t()?)?),
        }
    }

    /// The cross-entropy of [`TextTransformer::logits`] of `hidden` `[B, T, dim]` against
    /// token ids `targets` `[B, T]`, with the head and the loss as one op
    /// ([`Tensor::linear_cross_entropy`], fused on a GPU at bf16 matmul precision). Returns
    /// the loss and the logits `[B, T, vocab]` (without a gradient; bf16 where fused).
    pub fn head_cross_entropy(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        opts: &CrossEntropy,
    ) -> Result<(Tensor, Tensor)> {
        let ([b, t, d], [tb, tt]) = (hidden.shape(), targets.shape()) else {
            return config(format!(
                "TextTransformer: head_cross_entropy needs hidden [B, T, dim] and targets [B, T], got {:?} and {:?}",
                hidden.shape(),
                targets.shape()
            ));
        };
        if (b, t) != (tb, tt) {
            return config(format!(
                "TextTransformer: targets {:?} do not fit hidden {:?}: expected [{b}, {t}]",
                targets.shape(),
                hidden.shape()
            ));
        }
        let (b, t) = (*b, *t);
        let h = hidden.reshape(&[b * t, *d])?;
        let tg = targets.reshape(&[b * t])?;
        let (w, bias) = match &self.head {
            Some(l) => (&l.weight, l.bias.as_ref()),
            None => (&self.tok.weight, None),
        };
        let (loss, logits) = h.linear_cross_entropy(w, bias, &tg, opts)?;
        let v = logits.shape()[1];
        Ok((loss, logits.reshape(&[b, t, v])?))
    }

    /// Logits of token ids: `logits(hidden(ids))`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.logits(&self.hidden(ids, None)?)
    }

    /// Forward FLOPs per token at full context (matmuls only: 2 x parameters in the blocks and
    /// head, plus attention scores and mixing).
    pub fn flops_per_token(&self) -> usize {
        let c = &self.config;
        let per_block =
            2 * (4 * c.dim * c.dim + 2 * c.mlp_ratio * c.dim * c.dim) + 2 * 2 * c.context * c.dim;
        c.layers * per_block + 2 * c.dim * c.vocab
    }
}

impl Module for TextTransformer {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.tok.visit_params(&join(prefix, "tok"), f);
        self.pos.visit_params(&join(prefix, "pos"), f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.ln_f.visit_params(&join(prefix, "ln_f"), f);
        if let Some(h) = &self.head {
            h.visit_params(&join(prefix, "head"), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.tok.visit_params_mut(&join(prefix, "tok"), f);
        self.pos.visit_params_mut(&join(prefix, "pos"), f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params_mut(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.ln_f.visit_params_mut(&join(prefix, "ln_f"), f);
        if let Some(h) = &mut self.head {
            h.visit_params_mut(&join(prefix, "head"), f);
        }
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit_rng(&join(prefix, &format!("blocks.{i}")), f);
        }
    }
    fn load_rng(&self, prefix: &str, states: &std::collections::HashMap<String, (u64, u64)>) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.load_rng(&join(prefix, &format!("blocks.{i}")), states);
        }
    }
    fn set_train(&mut self, train: bool) {
        for b in &mut self.blocks {
            b.set_train(train);
        }
    }
}
