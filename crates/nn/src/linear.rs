//! Fully connected layer.

use selfsup_tensor::{DType, Generator, Tensor};

use crate::error::{config, Result};
use crate::init;
use crate::module::{visit_one, visit_one_mut, Layer, Module};

/// `y = x W^T + b` over the last axis of `x` (any leading axes).
///
/// Parameters: `weight` `[out, in]`, `bias` `[out]` (optional). Initialised as PyTorch does:
/// both `U(-1/sqrt(in), 1/sqrt(in))`.
#[derive(Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A new layer with PyTorch's default initialisation.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return config(format!(
                "Linear: features must be positive, got in {in_features}, out {out_features}"
            ));
        }
        let weight = init::kaiming_uniform(
            &[out_features, in_features],
            5f64.sqrt(),
            init::FanMode::FanIn,
            dtype,
            g,
        )?
        .requires_grad_();
        let b = 1.0 / (in_features as f64).sqrt();
        let bias = if bias {
            Some(init::uniform(&[out_features], -b, b, dtype, g)?.requires_grad_())
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A layer over the given tensors (made parameter leaves if they are not already).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return config(format!(
                "Linear: weight must be [out, in], got {:?}",
                weight.shape()
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return config(format!(
                    "Linear: bias shape {:?} does not match weight {:?}",
                    b.shape(),
                    weight.shape()
                ));
            }
        }
        let leaf = |t: Tensor| {
            if t.requires_grad() {
                t
            } else {
                t.requires_grad_()
            }
        };
        Ok(Linear {
            weight: leaf(weight),
            bias: bias.map(leaf),
        })
    }

    /// Input size.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output size.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Applies the layer to `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        over_rows(x, |x2| Ok(x2.linear(&self.weight, self.bias.as_ref())?))
    }

    /// `residual + self.forward(x)` for `residual` of the output's shape `[..., out]`, as one
    /// op ([`Tensor::linear_residual`]: on a GPU at bf16 matmul precision the product adds the
    /// residual as it stores its result).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        check_residual("Linear", x, residual, self.out_features())?;
        Ok(rows(x)?.linear_residual(&self.weight, self.bias.as_ref(), residual)?)
    }
}

/// `x` `[.., in]` flattened to rows `[rows, in]`, as [`over_rows`] flattens it.
pub(crate) fn rows(x: &Tensor) -> Result<Tensor> {
    if x.rank() <= 2 {
        return Ok(x.clone());
    }
    Ok(x.reshape(&[x.numel() / x.dim(-1)?.max(1), x.dim(-1)?])?)
}

/// Checks that `residual` has the shape `[.., out]` of a layer's output for input `x` `[.., in]`
/// (the residual forms take it as it is and give their result its shape, so that its gradient
/// reaches it without a reshape between); `layer` names the layer in the error.
pub(crate) fn check_residual(layer: &str, x: &Tensor, residual: &Tensor, out: usize) -> Result<()> {
    let mut want = x.shape().to_vec();
    if let Some(last) = want.last_mut() {
        *last = out;
    }
    if residual.shape() != want.as_slice() {
        return config(format!(
            "{layer}: residual {:?} does not fit the output {want:?}: pass a tensor of the output's shape",
            residual.shape()
        ));
    }
    Ok(())
}

/// Applies `f`, a map from `[rows, in]` to `[rows, out]`, to `[.., in]` flattened to rows, and
/// restores the leading axes. `[.., in]` inputs thus run as one `[rows, in]` product, so a
/// weight gradient is one GEMM over all rows rather than a batch of products summed afterwards.
pub(crate) fn over_rows(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.rank() <= 2 {
        return f(x);
    }
    let lead: Vec<usize> = x.shape()[..x.rank() - 1].to_vec();
    let y = f(&rows(x)?)?;
    let mut shape = lead;
    shape.push(y.dim(-1)?);
    Ok(y.reshape(&shape)?)
}

impl Module for Linear {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_one(prefix, "weight", &self.weight, f);
        if let Some(b) = &self.bias {
            visit_one(prefix, "bias", b, f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        visit_one_mut(prefix, "weight", &mut self.weight, f);
        if let Some(b) = &mut self.bias {
            visit_one_mut(prefix, "bias", b, f);
        }
    }
}

impl Layer for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Linear::forward(self, x)
    }
}
