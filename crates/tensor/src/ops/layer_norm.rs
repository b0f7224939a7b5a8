//! Fused layer normalisation over the last axis ([`Tensor::layer_norm`]): one op in the graph
//! instead of the nine elementwise ops and reductions of the composed form, with the
//! closed-form backward (kernels in [`crate::cpu::layer_norm`]).

use crate::autograd::BackwardOp;
use crate::cpu::layer_norm as kernel;
use crate::error::{invalid, shape_err, Result};
use crate::ops::with_slice;
use crate::{DType, Device, Float, Tensor};

const OP: &str = "layer_norm";

struct LnBack {
    d: usize,
    has_weight: bool,
    has_bias: bool,
    /// Per-row mean and `1 / sqrt(var + eps)` from the forward pass.
    mean: Tensor,
    rstd: Tensor,
}

impl LnBack {
    fn typed<T: Float>(&self, inputs: &[Tensor], grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let w = if self.has_weight {
            Some(inputs[1].to_vec::<T>()?)
        } else {
            None
        };
        let mean = self.mean.to_vec::<T>()?;
        let rstd = self.rstd.to_vec::<T>()?;
        let (dx, dw, db) = with_slice::<T, _>(OP, x, |xs| {
            with_slice::<T, _>(OP, grad, |gs| {
                kernel::backward(xs, gs, self.d, w.as_deref(), &mean, &rstd)
            })
        })??;
        let mut out = vec![Some(Tensor::from_cpu(T::into_storage(dx), x.shape()))];
        if self.has_weight {
            out.push(Some(Tensor::from_cpu(T::into_storage(dw), &[self.d])));
        }
        if self.has_bias {
            out.push(Some(Tensor::from_cpu(T::into_storage(db), &[self.d])));
        }
        Ok(out)
    }
}

impl BackwardOp for LnBack {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        match inputs[0].dtype() {
            DType::F32 => self.typed::<f32>(inputs, grad),
            DType::F64 => self.typed::<f64>(inputs, grad),
            d => Err(crate::ops::unsupported(OP, d)),
        }
    }
}

/// Forward in dtype `T`: `(y, mean, rstd)` as tensors.
fn forward_typed<T: Float>(
    x: &Tensor,
    d: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let w = weight.map(|t| t.to_vec::<T>()).transpose()?;
    let b = bias.map(|t| t.to_vec::<T>()).transpose()?;
    let (y, mean, rstd) = with_slice::<T, _>(OP, x, |xs| {
        kernel::forward(xs, d, w.as_deref(), b.as_deref(), eps)
    })?;
    let rows = mean.len();
    Ok((
        Tensor::from_cpu(T::into_storage(y), x.shape()),
        Tensor::from_cpu(T::into_storage(mean), &[rows]),
        Tensor::from_cpu(T::into_storage(rstd), &[rows]),
    ))
}

/// Layer norm composed of reductions and elementwise ops, for devices without the fused kernel
/// (the GPU): the same values and gradients, more memory traffic.
fn composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let mean = x.mean(&[-1], true)?;
    let xc = x.sub(&mean)?;
    let rstd = xc.sqr()?.mean(&[-1], true)?.add_scalar(eps)?.rsqrt()?;
    let mut y = xc.mul(&rstd)?;
    if let Some(w) = weight {
        y = y.mul(w)?;
    }
    if let Some(b) = bias {
        y = y.add(b)?;
    }
    Ok(y)
}

/// Checks `layer_norm`'s arguments; the normalised axis's length.
fn checked(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<usize> {
    if x.rank() < 1 {
        return shape_err(OP, "needs a tensor of rank >= 1 (normalises the last axis)");
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return invalid(OP, format!("eps {eps} must be finite and >= 0"));
    }
    crate::ops::check_float(OP, x)?;
    let d = x.shape()[x.rank() - 1];
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            crate::ops::check_same(OP, x, t)?;
            if t.shape() != [d] {
                return shape_err(
                    OP,
                    format!(
                        "{name} has shape {:?}, expected [{d}] for input {:?}",
                        t.shape(),
                        x.shape()
                    ),
                );
            }
        }
    }
    Ok(d)
}

impl Tensor {
    /// Layer normalisation over the last axis:
    /// `y = (x - mean) / sqrt(var + eps) * weight + bias`, with the per-row mean and biased
    /// variance, as PyTorch's `F.layer_norm(x, [d], weight, bias, eps)`. `weight` and `bias`
    /// are `[d]` (absent: 1 and 0). Differentiable in `x`, `weight` and `bias`. On the CPU and
    /// on a GPU (`kernels/layer_norm.cu`).
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let d = checked(self, weight, bias, eps)?;
        #[cfg(feature = "cuda")]
        if self.device() != Device::Cpu && matches!(self.dtype(), DType::F32 | DType::F64) {
            return gpu::forward(self, d, weight, bias, eps, self.dtype());
        }
        if self.device() != Device::Cpu {
            return composed(self, weight, bias, eps);
        }
        let (y, mean, rstd) = match self.dtype() {
            DType::F32 => forward_typed::<f32>(self, d, weight, bias, eps)?,
            DType::F64 => forward_typed::<f64>(self, d, weight, bias, eps)?,
            dt => return Err(crate::ops::unsupported(OP, dt)),
        };
        let mut inputs: Vec<&Tensor> = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        Ok(y.attach(&inputs, || {
            Box::new(LnBack {
                d,
                has_weight: weight.is_some(),
                has_bias: bias.is_some(),
                mean,
                rstd,
            })
        }))
    }

    /// [`Tensor::layer_norm`] with its result stored as `out`: the values and gradients of
    /// `self.layer_norm(weight, bias, eps)?.to_dtype(out)`. For a LayerNorm whose output is
    /// only read as a product's bf16 operand (the pre-norm of a transformer block at bf16
    /// matmul precision, `out` from [`crate::precision::operand_dtype`]): on a GPU with f32
    /// `self` and bf16 `out` one kernel writes that operand (PyTorch's autocast writes the
    /// f32 result and casts it in the product) and the backward reads its gradient in bf16,
    /// as the product stores it; per element 4 bytes fewer written and 4 fewer read in the
    /// forward, and the cast's launch. `out` must be a float dtype. Elsewhere, and under
    /// [`crate::ops::fusion::GpuFusion::Composed`], it is that composition.
    pub fn layer_norm_as(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        out: DType,
    ) -> Result<Tensor> {
        let d = checked(self, weight, bias, eps)?;
        if !out.is_float() {
            return invalid(OP, format!("output dtype {out:?} must be a float dtype"));
        }
        #[cfg(feature = "cuda")]
        if self.device() != Device::Cpu
            && self.dtype() == DType::F32
            && out == DType::BF16
            && crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused
        {
            return gpu::forward(self, d, weight, bias, eps, out);
        }
        #[cfg(not(feature = "cuda"))]
        let _ = d;
        self.layer_norm(weight, bias, eps)?.to_dtype(out)
    }
}

/// The fused GPU LayerNorm (`kernels/layer_norm.cu`): one kernel forward, one for the input
/// gradient and one for the weight and bias gradients.
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::ops::{cuda_ref, dense};
    use crate::storage::Storage;

    pub(super) fn forward(
        x: &Tensor,
        d: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        out: DType,
    ) -> Result<Tensor> {
        let xd = dense(x)?;
        let rows = x.numel().checked_div(d).unwrap_or(0);
        let wd = weight.map(dense).transpose()?;
        let bd = bias.map(dense).transpose()?;
        let (gx, gw, gb) = (
            xd.read(),
            wd.as_ref().map(|t| t.read()),
            bd.as_ref().map(|t| t.read()),
        );
        let (y, mean, rstd) = crate::cuda::layer_norm::forward(
            cuda_ref(OP, &gx)?,
            gw.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
            gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
            rows,
            d,
            eps,
            out,
        )?;
        let y = Tensor::from_storage(Storage::Cuda(y), x.shape());
        let mut inputs: Vec<&Tensor> = vec![x];
        inputs.extend(weight);
        inputs.extend(bias);
        Ok(y.attach(&inputs, || {
            Box::new(LnBackCuda {
                d,
                rows,
                has_weight: weight.is_some(),
                has_bias: bias.is_some(),
                mean: Tensor::from_storage(Storage::Cuda(mean), &[rows]),
                rstd: Tensor::from_storage(Storage::Cuda(rstd), &[rows]),
            })
        }))
    }

    struct LnBackCuda {
        d: usize,
        rows: usize,
        has_weight: bool,
        has_bias: bool,
        mean: Tensor,
        rstd: Tensor,
    }

    impl BackwardOp for LnBackCuda {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            self.run(inputs, grad, None)
        }
        /// x's gradient from its other readers is added by the input-gradient kernel, unless
        /// the fusions are off (`GpuFusion::Composed`: autograd adds it).
        fn folds(&self) -> Option<usize> {
            (crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused).then_some(0)
        }
        fn backward_adding(
            &self,
            inputs: &[Tensor],
            output: &Tensor,
            grad: &Tensor,
            pending: Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let x = &inputs[0];
            if pending.dtype() == x.dtype() && pending.device() == x.device() {
                return self.run(inputs, grad, Some(&dense(&pending)?));
            }
            let grads = self.backward(inputs, output, grad)?;
            crate::autograd::add_pending(grads, inputs, 0, pending)
        }
    }

    impl LnBackCuda {
        /// The gradients, `add` (contiguous, x's dtype and shape) added into x's.
        fn run(
            &self,
            inputs: &[Tensor],
            grad: &Tensor,
            add: Option<&Tensor>,
        ) -> Result<Vec<Option<Tensor>>> {
            let x = dense(&inputs[0])?;
            // The kernels read a gradient in x's dtype, or in bf16 for f32 x.
            let readable =
                grad.dtype() == x.dtype() || (x.dtype(), grad.dtype()) == (DType::F32, DType::BF16);
            let g = if readable {
                dense(grad)?
            } else {
                dense(&grad.to_dtype(x.dtype())?)?
            };
            let w = if self.has_weight {
                Some(dense(&inputs[1])?)
            } else {
                None
            };
            let want_w = self.has_weight && inputs[1].requires_grad();
            let bias_at = if self.has_weight { 2 } else { 1 };
            let want_b = self.has_bias && inputs[bias_at].requires_grad();
            let (gx, gw, gg, gm, gr, ga) = (
                x.read(),
                w.as_ref().map(|t| t.read()),
                g.read(),
                self.mean.read(),
                self.rstd.read(),
                add.map(|t| t.read()),
            );
            let (dx, parts) = crate::cuda::layer_norm::backward(
                cuda_ref(OP, &gx)?,
                gw.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
                cuda_ref(OP, &gg)?,
                cuda_ref(OP, &gm)?,
                cuda_ref(OP, &gr)?,
                ga.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
                self.rows,
                self.d,
                want_w || want_b,
            )?;
            // The chunks' sums added in order (each gradient a tensor of its own): the weight's
            // are `parts[0]`, the bias's `parts[1]`.
            let parts = parts
                .map(|(p, chunks)| Tensor::from_storage(Storage::Cuda(p), &[2, chunks, self.d]));
            let row = |want: bool, i: usize| -> Result<Option<Tensor>> {
                match (&parts, want) {
                    (Some(p), true) => Ok(Some(p.select(0, i)?.sum(&[0], false)?)),
                    _ => Ok(None),
                }
            };
            let mut out = vec![Some(Tensor::from_storage(
                Storage::Cuda(dx),
                inputs[0].shape(),
            ))];
            if self.has_weight {
                out.push(row(want_w, 0)?);
            }
            if self.has_bias {
                out.push(row(want_b, 1)?);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod composed_tests {
    use super::*;
    use crate::gradcheck::assert_close_grads;

    /// The GPU's composed form gives the fused CPU op's values and gradients.
    #[test]
    fn composed_form_matches_the_fused_op() {
        let mut g = crate::Generator::new(1);
        let x = Tensor::randn(&[5, 3, 12], 0.0, 2.0, DType::F64, &mut g).unwrap();
        let w = Tensor::rand(&[12], 0.5, 1.5, DType::F64, &mut g).unwrap();
        let b = Tensor::rand(&[12], -0.5, 0.5, DType::F64, &mut g).unwrap();
        assert_close_grads(
            &[&x, &w, &b],
            |v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5),
            |v| composed(&v[0], Some(&v[1]), Some(&v[2]), 1e-5),
            1e-10,
        );
    }
}
