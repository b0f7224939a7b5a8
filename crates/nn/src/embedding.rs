//! Token embeddings and positional embeddings (learned and sinusoidal).

use selfsup_tensor::{DType, Generator, Tensor};

use crate::error::{config, Result};
use crate::init;
use crate::module::{visit_one, visit_one_mut, Module};

/// A lookup table `weight` `[vocab, dim]`, initialised `N(0, 1)` as in PyTorch.
#[derive(Debug)]
pub struct Embedding {
    /// `[vocab, dim]`.
    pub weight: Tensor,
}

impl Embedding {
    /// A table of `vocab` vectors of size `dim`, drawn from N(0, 1) (PyTorch's default).
    pub fn new(vocab: usize, dim: usize, dtype: DType, g: &mut Generator) -> Result<Embedding> {
        Embedding::with_std(vocab, dim, 1.0, dtype, g)
    }

    /// A `[vocab, dim]` table drawn from N(0, std²) (GPT-2 uses 0.02 for a table that is also
    /// the output head).
    pub fn with_std(
        vocab: usize,
        dim: usize,
        std: f64,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Embedding> {
        Ok(Embedding {
            weight: init::normal(&[vocab, dim], 0.0, std, dtype, g)?.requires_grad_(),
        })
    }

    /// Looks up integer ids (i64/u32, any shape): the result has shape `ids.shape() + [dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.weight.embedding(ids)?)
    }
}

impl Module for Embedding {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_one(prefix, "weight", &self.weight, f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        visit_one_mut(prefix, "weight", &mut self.weight, f);
    }
}

/// Learned absolute positions: `weight` `[max_len, dim]`, truncated normal (std 0.02) at init.
#[derive(Debug)]
pub struct LearnedPositionalEmbedding {
    /// `[max_len, dim]`.
    pub weight: Tensor,
}

impl LearnedPositionalEmbedding {
    /// Positions `0..max_len` of size `dim`.
    pub fn new(max_len: usize, dim: usize, dtype: DType, g: &mut Generator) -> Result<Self> {
        let w = init::trunc_normal(&[max_len, dim], 0.0, 0.02, -0.04, 0.04, dtype, g)?;
        Ok(LearnedPositionalEmbedding {
            weight: w.requires_grad_(),
        })
    }

    /// Adds the embeddings of positions `0..T` to `x` of shape `[B, T, dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(-2)?;
        let max = self.weight.shape()[0];
        if t > max {
            return config(format!(
                "LearnedPositionalEmbedding: sequence length {t} exceeds max_len {max}"
            ));
        }
        Ok(x.add(&self.weight.narrow(0, 0, t)?)?)
    }
}

impl Module for LearnedPositionalEmbedding {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_one(prefix, "weight", &self.weight, f);
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        visit_one_mut(prefix, "weight", &mut self.weight, f);
    }
}

/// The fixed sinusoidal table of "Attention is all you need", `[len, dim]`:
/// `pe[p, 2i] = sin(p / 10000^(2i/dim))`, `pe[p, 2i+1] = cos(...)`. `dim` must be even.
pub fn sinusoidal_positions(len: usize, dim: usize, dtype: DType) -> Result<Tensor> {
    if dim % 2 != 0 {
        return config(format!("sinusoidal_positions: dim {dim} must be even"));
    }
    let mut v = vec![0.0f64; len * dim];
    for p in 0..len {
        for i in 0..dim / 2 {
            let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / dim as f64);
            v[p * dim + 2 * i] = angle.sin();
            v[p * dim + 2 * i + 1] = angle.cos();
        }
    }
    Ok(Tensor::from_vec(v, &[len, dim])?.to_dtype(dtype)?)
}
