//! The pre-LayerNorm transformer block and a classification head.

use std::collections::HashMap;

use selfsup_tensor::{DType, Generator, Tensor};

use crate::activation::Dropout;

use crate::activation::Activation;
use crate::attention::MultiHeadAttention;
use crate::error::{config, Result};
use crate::linear::Linear;
use crate::mlp::{Mlp, MlpConfig};
use crate::module::{join, Module};
use crate::norm::LayerNorm;

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))` (GPT-2 / ViT style), MLP `D -> ratio*D -> D`.
#[derive(Debug)]
pub struct TransformerBlock {
    /// Norm before attention.
    pub ln1: LayerNorm,
    /// Self-attention.
    pub attn: MultiHeadAttention,
    /// Norm before the MLP.
    pub ln2: LayerNorm,
    /// Two-layer MLP (`fc.0`, `fc.1`).
    pub mlp: Mlp,
    /// Dropout on the attention and MLP outputs before each residual add, if any.
    pub resid_dropout: Option<Dropout>,
}

impl TransformerBlock {
    /// A block of width `dim`, `heads` heads, MLP hidden size `mlp_ratio * dim` with `act`.
    pub fn new(
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
        act: Activation,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Self> {
        let mut cfg = MlpConfig::new(dim, mlp_ratio * dim, dim, 2);
        cfg.activation = act;
        Ok(TransformerBlock {
            ln1: LayerNorm::new(dim, dtype),
            attn: MultiHeadAttention::new(dim, heads, true, dtype, g)?,
            ln2: LayerNorm::new(dim, dtype),
            mlp: Mlp::new(&cfg, dtype, g)?,
            resid_dropout: None,
        })
    }

    /// Adds dropout with probability `p` on the attention probabilities and on both residual
    /// branches (GPT-2 style), drawing from generators forked from `gen`.
    pub fn with_dropout(mut self, p: f64, gen: &mut Generator) -> Result<Self> {
        let fork = |g: &mut Generator| {
            let w = g.fork().next_u64();
            Generator::new(w)
        };
        let attn_gen = fork(gen);
        self.attn = self.attn.with_dropout(p, attn_gen)?;
        self.resid_dropout = Some(Dropout::new(p, fork(gen))?);
        Ok(self)
    }

    fn resid(&self, x: Tensor) -> Result<Tensor> {
        match &self.resid_dropout {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }

    /// Applies the block to `[B, T, D]`; masks as in [`MultiHeadAttention::forward`].
    pub fn forward(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        // The norms' outputs are only read as the products' operands: written in the dtype
        // the products read them in (bf16 on a GPU at bf16 matmul precision).
        let operand = selfsup_tensor::precision::operand_dtype(x);
        let h = self.ln1.forward_as(x, operand)?;
        if self.resid_dropout.as_ref().is_some_and(|d| d.is_active()) {
            let a = self.attn.forward(&h, causal, key_padding)?;
            let x = x.add(&self.resid(a)?)?;
            let m = self.mlp.forward(&self.ln2.forward_as(&x, operand)?)?;
            return Ok(x.add(&self.resid(m)?)?);
        }
        // No dropout between a branch and its residual: the branches' last products add it.
        let x = self.attn.forward_residual(&h, causal, key_padding, x)?;
        let h = self.ln2.forward_as(&x, operand)?;
        self.mlp.forward_residual(&h, &x)
    }
}

impl Module for TransformerBlock {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.ln1.visit_params(&join(prefix, "ln1"), f);
        self.attn.visit_params(&join(prefix, "attn"), f);
        self.ln2.visit_params(&join(prefix, "ln2"), f);
        self.mlp.visit_params(&join(prefix, "mlp"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.ln1.visit_params_mut(&join(prefix, "ln1"), f);
        self.attn.visit_params_mut(&join(prefix, "attn"), f);
        self.ln2.visit_params_mut(&join(prefix, "ln2"), f);
        self.mlp.visit_params_mut(&join(prefix, "mlp"), f);
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        self.attn.visit_rng(&join(prefix, "attn"), f);
        if let Some(d) = &self.resid_dropout {
            d.visit_rng(&join(prefix, "resid_dropout"), f);
        }
    }
    fn load_rng(&self, prefix: &str, states: &HashMap<String, (u64, u64)>) {
        self.attn.load_rng(&join(prefix, "attn"), states);
        if let Some(d) = &self.resid_dropout {
            d.load_rng(&join(prefix, "resid_dropout"), states);
        }
    }
    fn set_train(&mut self, train: bool) {
        self.attn.set_train(train);
        self.mlp.set_train(train);
        if let Some(d) = &mut self.resid_dropout {
            d.set_train(train);
        }
    }
}

/// How a [`ClassificationHead`] reduces a token sequence `[B, T, D]` to `[B, D]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Input is already `[B, D]`.
    None,
    /// Mean over tokens.
    Mean,
    /// The first token (a CLS token).
    First,
}

/// Optional pooling, optional LayerNorm, then a linear classifier (`norm`, `fc`).
#[derive(Debug)]
pub struct ClassificationHead {
    /// Norm before the classifier, if any.
    pub norm: Option<LayerNorm>,
    /// The classifier.
    pub fc: Linear,
    pooling: Pooling,
}

impl ClassificationHead {
    /// A head from `dim` features to `classes` logits.
    pub fn new(
        dim: usize,
        classes: usize,
        pooling: Pooling,
        layer_norm: bool,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Self> {
        Ok(ClassificationHead {
            norm: layer_norm.then(|| LayerNorm::new(dim, dtype)),
            fc: Linear::new(dim, classes, true, dtype, g)?,
            pooling,
        })
    }

    /// Logits `[B, classes]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = match (self.pooling, x.rank()) {
            (Pooling::None, 2) => x.clone(),
            (Pooling::Mean, 3) => x.mean(&[1], false)?,
            (Pooling::First, 3) => x.select(1, 0)?,
            (p, _) => {
                return config(format!(
                    "ClassificationHead: pooling {p:?} does not fit input shape {:?}",
                    x.shape()
                ))
            }
        };
        let x = match &self.norm {
            Some(n) => n.forward(&x)?,
            None => x,
        };
        self.fc.forward(&x)
    }
}

impl Module for ClassificationHead {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        if let Some(n) = &self.norm {
            n.visit_params(&join(prefix, "norm"), f);
        }
        self.fc.visit_params(&join(prefix, "fc"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        if let Some(n) = &mut self.norm {
            n.visit_params_mut(&join(prefix, "norm"), f);
        }
        self.fc.visit_params_mut(&join(prefix, "fc"), f);
    }
}
