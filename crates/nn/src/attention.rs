//! Multi-head self-attention `softmax(Q K^T / sqrt(d)) V`, causal and key-padding masks.
//!
//! Without a key-padding mask or active attention dropout, the input projection and the heads
//! run as one op, [`Tensor::qkv_attention_as`] (the fused [`Tensor::attention_qkv`]: no
//! per-head copies, no stored `T x T` probabilities; on a GPU at bf16 precision the projections
//! and the output kept in bf16); otherwise through the composed ops, which support both.

use std::collections::HashMap;

use selfsup_tensor::{DType, Generator, Tensor};

use crate::activation::Dropout;

use crate::error::{config, Result};
use crate::linear::Linear;
use crate::module::{join, Module};

/// The score given to masked positions: large and finite so that a fully masked row gives a
/// uniform distribution instead of NaN; `exp` of it underflows to exactly 0 otherwise.
pub const MASK_VALUE: f64 = -1e9;

/// Multi-head self-attention: `qkv` (`[3D, D]`, Q, K and V stacked) and the output `proj`.
#[derive(Debug)]
pub struct MultiHeadAttention {
    /// Input projection to queries, keys and values.
    pub qkv: Linear,
    /// Output projection.
    pub proj: Linear,
    /// Dropout on the attention probabilities, if any (see [`MultiHeadAttention::with_dropout`]).
    pub dropout: Option<Dropout>,
    heads: usize,
}

/// `[T, T]` with 1 above the diagonal (the future), 0 elsewhere.
pub fn causal_mask(t: usize, dtype: DType) -> Result<Tensor> {
    let v: Vec<f64> = (0..t * t)
        .map(|k| if k % t > k / t { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, &[t, t])?.to_dtype(dtype)?)
}

impl MultiHeadAttention {
    /// Attention over `dim` features split into `heads` heads (`dim % heads == 0`).
    pub fn new(
        dim: usize,
        heads: usize,
        bias: bool,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Self> {
        if heads == 0 || dim % heads != 0 {
            return config(format!(
                "MultiHeadAttention: dim {dim} is not divisible by {heads} heads"
            ));
        }
        Ok(MultiHeadAttention {
            qkv: Linear::new(dim, 3 * dim, bias, dtype, g)?,
            proj: Linear::new(dim, dim, bias, dtype, g)?,
            dropout: None,
            heads,
        })
    }

    /// Adds dropout with probability `p` on the attention probabilities (training only).
    pub fn with_dropout(mut self, p: f64, gen: Generator) -> Result<Self> {
        self.dropout = Some(Dropout::new(p, gen)?);
        Ok(self)
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Attends over `x` `[B, T, D]`. With `causal`, position `i` sees only positions `<= i`.
    /// `key_padding` `[B, T]` (the layer's dtype) is nonzero at padding positions, which no
    /// query attends to. `x` is in the layer's dtype, or bf16 for an f32 layer (the operand of
    /// its products, already rounded: `selfsup_tensor::precision::operand_dtype`). Returns
    /// `[B, T, D]`.
    pub fn forward(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.attend(x, causal, key_padding, None)
    }

    /// `residual + self.forward(x, causal, key_padding)` for `residual` `[B, T, D]` (a
    /// transformer block's residual stream), with the sum made by the output projection
    /// ([`Linear::forward_residual`]: on a GPU at bf16 matmul precision its product adds the
    /// residual as it stores its result).
    pub fn forward_residual(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.attend(x, causal, key_padding, Some(residual))
    }

    /// The attention, its output projection adding `residual` where one is given.
    fn attend(
        &self,
        x: &Tensor,
        causal: bool,
        key_padding: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let project = |y: &Tensor| match residual {
            Some(r) => self.proj.forward_residual(y, r),
            None => self.proj.forward(y),
        };
        if x.rank() != 3 {
            return config(format!(
                "MultiHeadAttention: input must be [B, T, D], got {:?}",
                x.shape()
            ));
        }
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if d != self.proj.in_features() {
            return config(format!(
                "MultiHeadAttention: input feature size {d} differs from the layer's {}",
                self.proj.in_features()
            ));
        }
        let h = self.heads;
        let dh = d / h;
        let dropout = self.dropout.as_ref().is_some_and(|d| d.is_active());
        let w = &self.qkv.weight;
        // A bf16 input of f32 weights is their product's operand, already rounded
        // (`precision::operand_dtype`).
        let operand = x.dtype() == DType::BF16 && w.dtype() == DType::F32;
        let fusable = matches!(x.dtype(), DType::F32 | DType::F64) || operand;
        if key_padding.is_none() && !dropout && fusable {
            // The attention's output is only read as the output projection's operand: written
            // in the dtype that product reads it in (bf16 on a GPU at bf16 matmul precision).
            let out = selfsup_tensor::precision::operand_dtype(&self.proj.weight);
            let y = x.qkv_attention_as(w, self.qkv.bias.as_ref(), h, causal, out)?;
            return project(&y);
        }
        // Such an operand widened for the composition, whose masks and scores are in the
        // weights' dtype.
        let x = &if operand {
            x.to_dtype(w.dtype())?
        } else {
            x.clone()
        };
        // [B, T, 3, H, dh] -> [3, B, H, T, dh]
        let qkv = self
            .qkv
            .forward(x)?
            .reshape(&[b, t, 3, h, dh])?
            .permute(&[2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
        let mut scores = q
            .matmul(&k.transpose(-2, -1)?)?
            .mul_scalar(1.0 / (dh as f64).sqrt())?;
        if causal {
            let mask = causal_mask(t, x.dtype())?.to_device(x.device())?;
            scores = scores.masked_fill(&mask, MASK_VALUE)?;
        }
        if let Some(pad) = key_padding {
            if pad.shape() != [b, t] {
                return config(format!(
                    "MultiHeadAttention: key padding mask must be [B, T] = [{b}, {t}], got {:?}",
                    pad.shape()
                ));
            }
            let pad = pad.reshape(&[b, 1, 1, t])?.to_device(x.device())?;
            scores = scores.masked_fill(&pad, MASK_VALUE)?;
        }
        let mut probs = scores.softmax(-1)?;
        if let Some(d) = &self.dropout {
            probs = d.forward(&probs)?;
        }
        let out = probs.matmul(&v)?; // [B, H, T, dh]
        let out = out.permute(&[0, 2, 1, 3])?.reshape(&[b, t, d])?;
        project(&out)
    }
}

impl Module for MultiHeadAttention {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.qkv.visit_params(&join(prefix, "qkv"), f);
        self.proj.visit_params(&join(prefix, "proj"), f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.qkv.visit_params_mut(&join(prefix, "qkv"), f);
        self.proj.visit_params_mut(&join(prefix, "proj"), f);
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        if let Some(d) = &self.dropout {
            d.visit_rng(&join(prefix, "dropout"), f);
        }
    }
    fn load_rng(&self, prefix: &str, states: &HashMap<String, (u64, u64)>) {
        if let Some(d) = &self.dropout {
            d.load_rng(&join(prefix, "dropout"), states);
        }
    }
    fn set_train(&mut self, train: bool) {
        if let Some(d) = &mut self.dropout {
            d.set_train(train);
        }
    }
}
