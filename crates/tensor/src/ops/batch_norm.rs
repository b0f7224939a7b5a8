//! Fused batch normalisation over channel axis 1 (`[N, C]`, `[N, C, L]`, `[N, C, H, W]`, ...),
//! with an optional ReLU folded in: in training mode from the batch statistics
//! ([`Tensor::batch_norm_train`]), in evaluation mode from given statistics
//! ([`Tensor::batch_norm_eval`]). One op in the graph instead of the eight elementwise ops and
//! two reductions of the composed form; the backward is the closed-form batch-norm gradient
//! (kernels in [`crate::cpu::batch_norm`]).

use crate::autograd::BackwardOp;
use crate::cpu::batch_norm::{self as kernel, BnGeom};
use crate::error::{invalid, shape_err, Result};
use crate::ops::with_slice;
use crate::{DType, Device, Float, Tensor};

const OP: &str = "batch_norm";

/// The geometry of `x`, after checking the per-channel operands against it.
fn geometry(x: &Tensor, per_channel: &[(&str, Option<&Tensor>)], eps: f64) -> Result<BnGeom> {
    if x.rank() < 2 {
        return shape_err(
            OP,
            format!(
                "input {:?} needs rank >= 2 with channels on axis 1",
                x.shape()
            ),
        );
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return invalid(OP, format!("eps {eps} must be finite and >= 0"));
    }
    crate::ops::check_float(OP, x)?;
    let c = x.shape()[1];
    for (name, t) in per_channel {
        if let Some(t) = t {
            crate::ops::check_same(OP, x, t)?;
            if t.shape() != [c] {
                return shape_err(
                    OP,
                    format!(
                        "{name} has shape {:?}, expected [{c}] for input {:?}",
                        t.shape(),
                        x.shape()
                    ),
                );
            }
        }
    }
    let n = x.shape()[0];
    let s = x.shape()[2..].iter().product();
    Ok(BnGeom { n, c, s })
}

/// Per-channel vector of `t`, or `fill` repeated when absent.
fn channel_vec<T: Float>(t: Option<&Tensor>, c: usize, fill: T) -> Result<Vec<T>> {
    match t {
        Some(t) => t.to_vec::<T>(),
        None => Ok(vec![fill; c]),
    }
}

/// Forward in dtype `T`: returns `(y, mean, var)` (the batch statistics in training, the given
/// ones otherwise) as host vectors.
fn forward_typed<T: Float>(
    x: &Tensor,
    g: BnGeom,
    stats: Option<(&Tensor, &Tensor)>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<(Vec<T>, Vec<T>, Vec<T>)> {
    let w = channel_vec(weight, g.c, T::ONE)?;
    let b = channel_vec(bias, g.c, T::ZERO)?;
    let (mean, var) = match stats {
        Some((m, v)) => (m.to_vec::<T>()?, v.to_vec::<T>()?),
        None => with_slice::<T, _>(OP, x, |xs| kernel::stats(xs, g))?,
    };
    let mut scale = Vec::with_capacity(g.c);
    let mut shift = Vec::with_capacity(g.c);
    for ch in 0..g.c {
        let k = w[ch] / (var[ch] + T::c(eps)).sqrt();
        scale.push(k);
        shift.push(b[ch] - mean[ch] * k);
    }
    let y = with_slice::<T, _>(OP, x, |xs| kernel::apply(xs, g, &scale, &shift, relu))?;
    Ok((y, mean, var))
}

struct BnBack {
    geom: BnGeom,
    training: bool,
    relu: bool,
    eps: f64,
    has_weight: bool,
    has_bias: bool,
    /// The statistics the forward pass normalised with, `[C]`.
    mean: Tensor,
    var: Tensor,
}

impl BnBack {
    fn typed<T: Float>(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let g = self.geom;
        let x = &inputs[0];
        let weight = self.has_weight.then(|| &inputs[1]);
        let w = channel_vec(weight, g.c, T::ONE)?;
        let mean = self.mean.to_vec::<T>()?;
        let var = self.var.to_vec::<T>()?;
        let invstd: Vec<T> = var
            .iter()
            .map(|&v| T::ONE / (v + T::c(self.eps)).sqrt())
            .collect();
        let k: Vec<T> = w.iter().zip(&invstd).map(|(&a, &b)| a * b).collect();
        let grad = grad.contiguous()?;
        let (sg, sgx, dx) = with_slice::<T, _>(OP, x, |xs| {
            with_slice::<T, _>(OP, &grad, |dy| {
                with_slice::<T, _>(OP, output, |ys| {
                    let y = self.relu.then_some(ys);
                    let (sg, sgx) = kernel::grad_sums(xs, dy, y, g, &mean, &invstd);
                    let sums = self.training.then_some((&sg[..], &sgx[..]));
                    let dx = kernel::grad_input(xs, dy, y, g, &mean, &invstd, &k, sums);
                    (sg, sgx, dx)
                })
            })
        })???;
        let vec_t = |v: Vec<f64>| {
            Tensor::from_cpu(T::into_storage(v.into_iter().map(T::c).collect()), &[g.c])
        };
        let mut out = vec![Some(Tensor::from_cpu(T::into_storage(dx), x.shape()))];
        if self.has_weight {
            out.push(Some(vec_t(sgx.clone())));
        }
        if self.has_bias {
            out.push(Some(vec_t(sg.clone())));
        }
        if !self.training {
            // d/dmean = -k sum g; d/dvar = -w invstd^2 sum(g xhat) / 2.
            let dmean = (0..g.c).map(|c| -k[c].to_f64() * sg[c]).collect();
            let dvar = (0..g.c)
                .map(|c| {
                    let is = invstd[c].to_f64();
                    -0.5 * w[c].to_f64() * is * is * sgx[c]
                })
                .collect();
            out.push(Some(vec_t(dmean)));
            out.push(Some(vec_t(dvar)));
        }
        Ok(out)
    }
}

impl BackwardOp for BnBack {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        match inputs[0].dtype() {
            DType::F32 => self.typed::<f32>(inputs, output, grad),
            DType::F64 => self.typed::<f64>(inputs, output, grad),
            d => Err(crate::ops::unsupported(OP, d)),
        }
    }
}

/// Dispatches the forward pass on the dtype and records the op.
#[allow(clippy::too_many_arguments)]
fn batch_norm_op(
    x: &Tensor,
    g: BnGeom,
    stats: Option<(&Tensor, &Tensor)>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    fn wrap<T: Float>(r: (Vec<T>, Vec<T>, Vec<T>), shape: &[usize]) -> (Tensor, Tensor, Tensor) {
        let c = r.1.len();
        (
            Tensor::from_cpu(T::into_storage(r.0), shape),
            Tensor::from_cpu(T::into_storage(r.1), &[c]),
            Tensor::from_cpu(T::into_storage(r.2), &[c]),
        )
    }
    #[cfg(feature = "cuda")]
    if x.device() != Device::Cpu && stats.is_none() {
        return gpu::train(x, g, weight, bias, eps, relu);
    }
    #[cfg(feature = "cuda")]
    if let Some((mean, var)) = stats {
        let needs_grad = crate::autograd::is_grad_enabled()
            && [Some(x), Some(mean), Some(var), weight, bias]
                .into_iter()
                .flatten()
                .any(|t| t.requires_grad());
        if x.device() != Device::Cpu && !needs_grad {
            return gpu::eval(x, g, mean, var, weight, bias, eps, relu);
        }
    }
    if x.device() != Device::Cpu {
        return composed(x, stats, weight, bias, eps, relu);
    }
    let (y, mean, var) = match x.dtype() {
        DType::F32 => wrap(
            forward_typed::<f32>(x, g, stats, weight, bias, eps, relu)?,
            x.shape(),
        ),
        DType::F64 => wrap(
            forward_typed::<f64>(x, g, stats, weight, bias, eps, relu)?,
            x.shape(),
        ),
        d => return Err(crate::ops::unsupported(OP, d)),
    };
    let mut inputs: Vec<&Tensor> = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    if let Some((m, v)) = stats {
        inputs.push(m);
        inputs.push(v);
    }
    let (bm, bv) = (mean.clone(), var.clone());
    let y = y.attach(&inputs, || {
        Box::new(BnBack {
            geom: g,
            training: stats.is_none(),
            relu,
            eps,
            has_weight: weight.is_some(),
            has_bias: bias.is_some(),
            mean: bm,
            var: bv,
        })
    });
    Ok((y, mean, var))
}

/// The fused GPU batch norm in training mode (`kernels/batch_norm.cu`).
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::ops::{cuda_ref, dense};
    use crate::storage::Storage;

    pub(super) fn train(
        x: &Tensor,
        g: BnGeom,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let xd = dense(x)?;
        let wd = weight.map(dense).transpose()?;
        let bd = bias.map(dense).transpose()?;
        let (gx, gw, gb) = (
            xd.read(),
            wd.as_ref().map(|t| t.read()),
            bd.as_ref().map(|t| t.read()),
        );
        let (y, mean, var) = crate::cuda::batch_norm::train_forward(
            cuda_ref(OP, &gx)?,
            gw.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
            gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
            g,
            eps,
            relu,
        )?;
        let y = Tensor::from_storage(Storage::Cuda(y), x.shape());
        let mean = Tensor::from_storage(Storage::Cuda(mean), &[g.c]);
        let var = Tensor::from_storage(Storage::Cuda(var), &[g.c]);
        let mut inputs: Vec<&Tensor> = vec![x];
        inputs.extend(weight);
        inputs.extend(bias);
        let (bm, bv) = (mean.clone(), var.clone());
        let y = y.attach(&inputs, || {
            Box::new(BnBackCuda {
                geom: g,
                relu,
                eps,
                has_weight: weight.is_some(),
                has_bias: bias.is_some(),
                mean: bm,
                var: bv,
            })
        });
        Ok((y, mean, var))
    }

    /// Evaluation mode with nothing to differentiate (inference): the per-channel scale and
    /// shift as the CPU makes them (`[C]` ops), then one elementwise kernel.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn eval(
        x: &Tensor,
        g: BnGeom,
        mean: &Tensor,
        var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let k = var.add_scalar(eps)?.sqrt()?;
        let scale = match weight {
            Some(w) => w.div(&k)?,
            None => k.recip()?,
        };
        let shift = mean.mul(&scale)?;
        let shift = match bias {
            Some(b) => b.sub(&shift)?,
            None => shift.neg()?,
        };
        let (xd, sc, sh) = (dense(x)?, dense(&scale)?, dense(&shift)?);
        let (gx, gsc, gsh) = (xd.read(), sc.read(), sh.read());
        let y = crate::cuda::batch_norm::eval_affine(
            cuda_ref(OP, &gx)?,
            cuda_ref(OP, &gsc)?,
            cuda_ref(OP, &gsh)?,
            g,
            relu,
        )?;
        Ok((
            Tensor::from_storage(Storage::Cuda(y), x.shape()),
            mean.clone(),
            var.clone(),
        ))
    }

    struct BnBackCuda {
        geom: BnGeom,
        relu: bool,
        eps: f64,
        has_weight: bool,
        has_bias: bool,
        mean: Tensor,
        var: Tensor,
    }

    impl BackwardOp for BnBackCuda {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            output: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let (x, y, gr) = (dense(&inputs[0])?, dense(output)?, dense(grad)?);
            let w = if self.has_weight {
                Some(dense(&inputs[1])?)
            } else {
                None
            };
            let (gx, gy, gg, gm, gv, gw) = (
                x.read(),
                y.read(),
                gr.read(),
                self.mean.read(),
                self.var.read(),
                w.as_ref().map(|t| t.read()),
            );
            let (dx, dw, db) = crate::cuda::batch_norm::train_backward(
                cuda_ref(OP, &gx)?,
                cuda_ref(OP, &gy)?,
                cuda_ref(OP, &gg)?,
                cuda_ref(OP, &gm)?,
                cuda_ref(OP, &gv)?,
                gw.as_ref().map(|g| cuda_ref(OP, g)).transpose()?,
                self.geom,
                self.eps,
                self.relu,
            )?;
            let c = self.geom.c;
            let mut out = vec![Some(Tensor::from_storage(
                Storage::Cuda(dx),
                inputs[0].shape(),
            ))];
            if self.has_weight {
                out.push(Some(Tensor::from_storage(Storage::Cuda(dw), &[c])));
            }
            if self.has_bias {
                out.push(Some(Tensor::from_storage(Storage::Cuda(db), &[c])));
            }
            Ok(out)
        }
    }
}

/// Batch normalisation composed of elementwise ops and reductions, for the cases without a
/// fused GPU kernel (evaluation mode on the GPU): the same values and gradients as the fused
/// op, more memory traffic.
fn composed(
    x: &Tensor,
    stats: Option<(&Tensor, &Tensor)>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut axes: Vec<isize> = vec![0];
    axes.extend(2..x.rank() as isize);
    let mut per_channel = vec![1usize; x.rank()];
    per_channel[1] = x.shape()[1];
    let (mean, var) = match stats {
        Some((m, v)) => (m.clone(), v.clone()),
        None => (x.mean(&axes, false)?, x.var(&axes, false, false)?),
    };
    let at = |t: &Tensor| t.reshape(&per_channel);
    let mut y = x
        .sub(&at(&mean)?)?
        .mul(&at(&var.add_scalar(eps)?.rsqrt()?)?)?;
    if let Some(w) = weight {
        y = y.mul(&at(w)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&at(b)?)?;
    }
    if relu {
        y = y.relu()?;
    }
    Ok((y, mean.detach(), var.detach()))
}

impl Tensor {
    /// Batch normalisation with the batch's own statistics (training mode), optionally followed
    /// by a ReLU, over channel axis 1 of a `[N, C, ...]` input:
    /// `y = act((x - mean) / sqrt(var + eps) * weight + bias)` with the per-channel mean and
    /// biased variance over all axes but 1. `weight` and `bias` are `[C]` (absent: 1 and 0).
    ///
    /// Returns `(y, mean, var)`; `mean` and `var` (biased, `[C]`) are plain values for updating
    /// running statistics and carry no gradient. Gradients flow to `x`, `weight` and `bias`
    /// through the statistics, as in the composed form. On the GPU it runs as fused kernels
    /// (`kernels/batch_norm.cu`).
    pub fn batch_norm_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let g = geometry(self, &[("weight", weight), ("bias", bias)], eps)?;
        if g.per_channel() < 2 {
            return shape_err(
                OP,
                format!(
                    "training needs more than one value per channel, got input {:?}",
                    self.shape()
                ),
            );
        }
        batch_norm_op(self, g, None, weight, bias, eps, relu)
    }

    /// Batch normalisation with given statistics (evaluation mode), optionally followed by a
    /// ReLU: `y = act((x - mean) / sqrt(var + eps) * weight + bias)`, `mean`, `var`, `weight`,
    /// `bias` all `[C]` (weight and bias optional). Differentiable in every tensor argument.
    /// On a GPU, when nothing needs a gradient (inference), one fused kernel; otherwise
    /// composed of elementwise ops.
    pub fn batch_norm_eval(
        &self,
        mean: &Tensor,
        var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        relu: bool,
    ) -> Result<Tensor> {
        let g = geometry(
            self,
            &[
                ("mean", Some(mean)),
                ("var", Some(var)),
                ("weight", weight),
                ("bias", bias),
            ],
            eps,
        )?;
        Ok(batch_norm_op(self, g, Some((mean, var)), weight, bias, eps, relu)?.0)
    }
}

#[cfg(test)]
mod composed_tests {
    use super::*;
    use crate::gradcheck::assert_close_grads;

    /// The GPU's composed form gives the fused CPU op's values and gradients, in both modes.
    #[test]
    fn composed_form_matches_the_fused_op() {
        let mut g = crate::Generator::new(2);
        let x = Tensor::randn(&[6, 3, 4, 5], 0.5, 2.0, DType::F64, &mut g).unwrap();
        let w = Tensor::rand(&[3], 0.5, 1.5, DType::F64, &mut g).unwrap();
        let b = Tensor::rand(&[3], -0.5, 0.5, DType::F64, &mut g).unwrap();
        let m = Tensor::rand(&[3], -0.5, 0.5, DType::F64, &mut g).unwrap();
        let v = Tensor::rand(&[3], 0.5, 1.5, DType::F64, &mut g).unwrap();
        for relu in [false, true] {
            assert_close_grads(
                &[&x, &w, &b],
                |t| {
                    Ok(t[0]
                        .batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-5, relu)?
                        .0)
                },
                |t| Ok(composed(&t[0], None, Some(&t[1]), Some(&t[2]), 1e-5, relu)?.0),
                1e-9,
            );
            assert_close_grads(
                &[&x, &w, &b, &m, &v],
                |t| t[0].batch_norm_eval(&t[3], &t[4], Some(&t[1]), Some(&t[2]), 1e-5, relu),
                |t| {
                    Ok(composed(
                        &t[0],
                        Some((&t[3], &t[4])),
                        Some(&t[1]),
                        Some(&t[2]),
                        1e-5,
                        relu,
                    )?
                    .0)
                },
                1e-9,
            );
        }
    }
}
