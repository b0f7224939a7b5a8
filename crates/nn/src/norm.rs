//! Normalisation layers: [`LayerNorm`] (on the tensor crate's fused layer-norm op) and
//! [`BatchNorm`] (1-D and 2-D, on the fused batch-norm op, with the ReLU folded in by
//! [`BatchNorm::forward_relu`]).

use selfsup_tensor::ops::ema::EmaItem;
use selfsup_tensor::{no_grad, DType, Tensor};

use crate::error::{config, Result};
use crate::module::{visit_one, visit_one_mut, Layer, Module};

/// Layer normalisation over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// with the biased variance, as PyTorch's `LayerNorm(dim)`.
#[derive(Debug)]
pub struct LayerNorm {
    /// Scale, `[dim]` (ones at init); `None` without affine parameters.
    pub weight: Option<Tensor>,
    /// Shift, `[dim]` (zeros at init).
    pub bias: Option<Tensor>,
    /// Added to the variance (1e-5 by default).
    pub eps: f64,
    dim: usize,
}

impl LayerNorm {
    /// LayerNorm over a last axis of size `dim`, eps 1e-5, with affine parameters.
    pub fn new(dim: usize, dtype: DType) -> LayerNorm {
        LayerNorm {
            weight: Some(Tensor::ones(&[dim], dtype).requires_grad_()),
            bias: Some(Tensor::zeros(&[dim], dtype).requires_grad_()),
            eps: 1e-5,
            dim,
        }
    }

    /// LayerNorm without the affine parameters.
    pub fn without_affine(dim: usize) -> LayerNorm {
        LayerNorm {
            weight: None,
            bias: None,
            eps: 1e-5,
            dim,
        }
    }

    /// Normalises `x` of shape `[..., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_as(x, x.dtype())
    }

    /// [`LayerNorm::forward`] with the result stored as `out`, for a norm whose output is only
    /// read as a product's operand: `out` is [`selfsup_tensor::precision::operand_dtype`] of
    /// `x`, bf16 on a GPU at bf16 matmul precision, where one kernel writes that operand
    /// ([`Tensor::layer_norm_as`]); `x`'s own dtype elsewhere, where this is `forward`.
    pub fn forward_as(&self, x: &Tensor, out: DType) -> Result<Tensor> {
        let d = x.dim(-1)?;
        if d != self.dim {
            return config(format!(
                "LayerNorm: input shape {:?} does not end in {}",
                x.shape(),
                self.dim
            ));
        }
        Ok(x.layer_norm_as(self.weight.as_ref(), self.bias.as_ref(), self.eps, out)?)
    }
}

impl Module for LayerNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        if let Some(w) = &self.weight {
            visit_one(prefix, "weight", w, f);
        }
        if let Some(b) = &self.bias {
            visit_one(prefix, "bias", b, f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        if let Some(w) = &mut self.weight {
            visit_one_mut(prefix, "weight", w, f);
        }
        if let Some(b) = &mut self.bias {
            visit_one_mut(prefix, "bias", b, f);
        }
    }
}

impl Layer for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        LayerNorm::forward(self, x)
    }
}

/// Batch normalisation over the channel axis 1 of `[N, C]`, `[N, C, L]` (BatchNorm1d) or
/// `[N, C, H, W]` (BatchNorm2d).
///
/// Training: normalises with the batch mean and biased variance, and updates the running
/// statistics with `running = (1 - momentum) * running + momentum * batch` (unbiased variance),
/// momentum 0.1. Evaluation: normalises with the running statistics. Buffers:
/// `running_mean`, `running_var`, `num_batches_tracked` (as in PyTorch).
#[derive(Debug)]
pub struct BatchNorm {
    /// Scale `[C]` (ones at init), `None` without affine parameters.
    pub weight: Option<Tensor>,
    /// Shift `[C]` (zeros at init).
    pub bias: Option<Tensor>,
    /// Running mean `[C]` (a buffer).
    pub running_mean: Tensor,
    /// Running (unbiased) variance `[C]` (a buffer).
    pub running_var: Tensor,
    /// Number of training batches seen, as a one-element i64 buffer.
    pub num_batches_tracked: Tensor,
    /// Weight of the new batch in the running statistics (0.1).
    pub momentum: f64,
    /// Added to the variance (1e-5).
    pub eps: f64,
    /// Expected input rank(s): 2 or 3 for BatchNorm1d, 4 for BatchNorm2d.
    ranks: &'static [usize],
    train: bool,
}

impl BatchNorm {
    fn with_ranks(c: usize, affine: bool, dtype: DType, ranks: &'static [usize]) -> BatchNorm {
        BatchNorm {
            weight: affine.then(|| Tensor::ones(&[c], dtype).requires_grad_()),
            bias: affine.then(|| Tensor::zeros(&[c], dtype).requires_grad_()),
            running_mean: Tensor::zeros(&[c], dtype),
            running_var: Tensor::ones(&[c], dtype),
            num_batches_tracked: Tensor::zeros(&[], DType::I64),
            momentum: 0.1,
            eps: 1e-5,
            ranks,
            train: true,
        }
    }

    /// BatchNorm1d over `c` channels, for `[N, C]` or `[N, C, L]` inputs.
    pub fn new_1d(c: usize, affine: bool, dtype: DType) -> BatchNorm {
        BatchNorm::with_ranks(c, affine, dtype, &[2, 3])
    }

    /// BatchNorm2d over `c` channels, for `[N, C, H, W]` inputs.
    pub fn new_2d(c: usize, affine: bool, dtype: DType) -> BatchNorm {
        BatchNorm::with_ranks(c, affine, dtype, &[4])
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.train
    }

    /// Normalises `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// Normalises `x` and applies a ReLU, in one fused op (the `Conv -> BN -> ReLU` block).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let c = self.running_mean.numel();
        if !self.ranks.contains(&x.rank()) || x.shape()[1] != c {
            return config(format!(
                "BatchNorm: input shape {:?} must have rank in {:?} and {c} channels on axis 1",
                x.shape(),
                self.ranks
            ));
        }
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        if !self.train {
            return Ok(x.batch_norm_eval(
                &self.running_mean,
                &self.running_var,
                w,
                b,
                self.eps,
                relu,
            )?);
        }
        let n = x.numel() / c;
        if n < 2 {
            return config(format!(
                "BatchNorm: training needs more than one value per channel, got input {:?}",
                x.shape()
            ));
        }
        let (y, mean, var) = x.batch_norm_train(w, b, self.eps, relu)?;
        let _g = no_grad();
        let m = self.momentum;
        // running = (1 - m) running + m batch, with the batch variance made unbiased by
        // n / (n - 1) in its factor; both in one in-place update (one launch on a GPU).
        Tensor::ema_steps_(&[
            EmaItem {
                target: &self.running_mean,
                source: &mean,
                keep: 1.0 - m,
                scale: m,
            },
            EmaItem {
                target: &self.running_var,
                source: &var,
                keep: 1.0 - m,
                scale: m * n as f64 / (n as f64 - 1.0),
            },
        ])?;
        // Counted where the buffer lives: reading it back would make every training step wait
        // for the device.
        self.num_batches_tracked.count_up_(1)?;
        Ok(y)
    }
}

impl Module for BatchNorm {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        if let Some(w) = &self.weight {
            visit_one(prefix, "weight", w, f);
        }
        if let Some(b) = &self.bias {
            visit_one(prefix, "bias", b, f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        if let Some(w) = &mut self.weight {
            visit_one_mut(prefix, "weight", w, f);
        }
        if let Some(b) = &mut self.bias {
            visit_one_mut(prefix, "bias", b, f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_one(prefix, "running_mean", &self.running_mean, f);
        visit_one(prefix, "running_var", &self.running_var, f);
        visit_one(prefix, "num_batches_tracked", &self.num_batches_tracked, f);
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        f(crate::join(prefix, "running_mean"), &mut self.running_mean);
        f(crate::join(prefix, "running_var"), &mut self.running_var);
        f(
            crate::join(prefix, "num_batches_tracked"),
            &mut self.num_batches_tracked,
        );
    }
    fn set_train(&mut self, train: bool) {
        self.train = train;
    }
}

impl Layer for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        BatchNorm::forward(self, x)
    }
}
