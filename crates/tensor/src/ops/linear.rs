//! Fully connected layer `y = x·Wᵀ + b` as one op ([`Tensor::linear`]).
//!
//! The composed form (`x.matmul(&w.t())` then `add(&b)`) writes the product once and then reads
//! it back to add the bias into a second buffer. Here the GEMM adds the bias as it stores each
//! tile ([`Output::ColBias`]), so the output is written once and never read; the weight is
//! read through its transposed strides, without a copy.

use crate::autograd::BackwardOp;
use crate::cpu::matmul::{Gemm, Output};
use crate::error::{shape_err, Result};
use crate::layout::Layout;
use crate::ops::check_same;
use crate::storage::Storage;
use crate::{DType, Element, Tensor};

const OP: &str = "linear";

struct LinearBack;

impl BackwardOp for LinearBack {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let gx = if x.requires_grad() {
            Some(g.matmul(w)?)
        } else {
            None
        };
        let gw = if w.requires_grad() {
            Some(g.t()?.matmul(x)?)
        } else {
            None
        };
        let mut grads = vec![gx, gw];
        if let Some(b) = inputs.get(2) {
            grads.push(if b.requires_grad() {
                Some(g.sum(&[0], false)?)
            } else {
                None
            });
        }
        Ok(grads)
    }
}

/// `x·Wᵀ (+ b)` on strided `x` `[n, k]` and `w` `[out, k]`; returns the contiguous `[n, out]`.
#[allow(clippy::too_many_arguments)]
fn forward<T: Gemm + Element>(
    x: &[T],
    lx: &Layout,
    w: &[T],
    lw: &Layout,
    bias: Option<&[T]>,
    n: usize,
    k: usize,
    out: usize,
) -> Vec<T> {
    if n == 0 || out == 0 || k == 0 {
        let mut y = vec![T::ZERO; n * out];
        if let (Some(b), true) = (bias, out > 0) {
            y.chunks_exact_mut(out).for_each(|r| r.copy_from_slice(b));
        }
        return y;
    }
    // Every element is written by the GEMM (β = 0 never reads C), so the output is not
    // initialised first.
    let mut y: Vec<T> = Vec::with_capacity(n * out);
    let (rsx, csx) = (lx.strides()[0] as isize, lx.strides()[1] as isize);
    // B = Wᵀ: element (p, j) is w[j, p].
    let (rsb, csb) = (lw.strides()[1] as isize, lw.strides()[0] as isize);
    // SAFETY: the layouts lie inside their buffers (checked when they were built); `y` has room
    // for the `n × out` block, which aliases neither operand, and the GEMM writes all of it.
    unsafe {
        let a = x.as_ptr().add(lx.offset());
        let b = w.as_ptr().add(lw.offset());
        let c = y.as_mut_ptr();
        let out_mode = match bias {
            Some(bias) => Output::ColBias(bias.as_ptr()),
            None => Output::Write,
        };
        T::gemm_into(
            n,
            k,
            out,
            a,
            rsx,
            csx,
            b,
            rsb,
            csb,
            c,
            out as isize,
            out_mode,
        );
        y.set_len(n * out);
    }
    y
}

/// Runs [`forward`] on the CPU buffers of the operands.
fn typed<T: Gemm + Element>(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    n: usize,
    k: usize,
    out: usize,
) -> Result<Storage> {
    let b = bias.map(|b| b.to_vec::<T>()).transpose()?;
    let (gx, gw) = (x.read(), w.read());
    let (cx, cw) = (gx.cpu(OP)?, gw.cpu(OP)?);
    let mismatch = |c: &crate::storage::CpuStorage| crate::Error::DTypeMismatch {
        op: OP,
        lhs: c.dtype(),
        rhs: T::DTYPE,
    };
    let xs = T::slice(cx).ok_or_else(|| mismatch(cx))?;
    let ws = T::slice(cw).ok_or_else(|| mismatch(cw))?;
    let y = forward(xs, x.layout(), ws, w.layout(), b.as_deref(), n, k, out);
    Ok(Storage::Cpu(T::into_storage(y)))
}

impl Tensor {
    /// The fully connected layer `self · weightᵀ + bias` for `self` `[N, in]`, `weight`
    /// `[out, in]` (PyTorch's layout) and `bias` `[out]`: the same values as
    /// `self.matmul(&weight.t()?)?.add(bias)?` in one op, with one output buffer written once.
    /// Any operand may be a strided view. Differentiable in all three: `dx = g·W`,
    /// `dW = gᵀ·x`, `db = Σ_rows g`. f32 and f64 run fused; bf16/f16 run the composed form.
    /// On a GPU at [`crate::precision::MatmulPrecision::Bf16`], f32 operands are cast to bf16
    /// once per forward and those copies serve the backward too, whose output gradient is also
    /// cast once for both products (the composed form casts each operand of each product).
    /// A bf16 `self` with f32 parameters is an operand already rounded
    /// ([`crate::precision::operand_dtype`]): read as it is there, widened to f32 elsewhere;
    /// its gradient is bf16.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (n, k, out) = sizes(self, weight, bias)?;
        #[cfg(feature = "cuda")]
        if crate::precision::gpu_bf16_input(self, weight) {
            return gpu::forward_bf16(self, weight, bias, [n, k, out], None);
        }
        if crate::precision::is_bf16_operand(self, weight) {
            return self.to_dtype(DType::F32)?.linear(weight, bias);
        }
        #[cfg(feature = "cuda")]
        if self.dtype() == DType::F32
            && self.device() != crate::Device::Cpu
            && crate::precision::matmul_precision() == crate::precision::MatmulPrecision::F32
        {
            if let Some(y) = gpu::forward_f32_fused(self, weight, bias, n, k, out)? {
                return Ok(y);
            }
        }
        let fused = self.device() == crate::Device::Cpu;
        let s = match self.dtype() {
            DType::F32 if fused => {
                // Operands rounded as `crate::precision` asks (the bias is added, not rounded),
                // by the GEMM as it packs them where it multiplies in bf16.
                if crate::precision::cpu_bf16_products() {
                    crate::cpu::gemm::with_bf16_products(true, || {
                        typed::<f32>(self, weight, bias, n, k, out)
                    })?
                } else {
                    let (x, w) = (
                        crate::precision::cpu_operand(self)?,
                        crate::precision::cpu_operand(weight)?,
                    );
                    typed::<f32>(&x, &w, bias, n, k, out)?
                }
            }
            DType::F64 if fused => typed::<f64>(self, weight, bias, n, k, out)?,
            // bf16/f16, and the GPU where cuBLASLt did not take it (TF32, strided operands, no
            // bias, no cuBLASLt): the composed form (cuBLAS GEMM, then the bias add).
            _ => {
                let y = self.matmul(&weight.t()?)?;
                return match bias {
                    Some(b) => y.add(b),
                    None => Ok(y),
                };
            }
        };
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Tensor::from_op(s, &[n, out], &inputs, || {
            Box::new(LinearBack)
        }))
    }

    /// `residual + self · weightᵀ + bias`, shaped as `residual`: the values and gradients of
    /// `self.linear(weight, bias)?.reshape(residual.shape())?.add(residual)` for `residual`
    /// `[N, out]`, or `[.., out]` whose leading axes hold the `N` rows in order (a transformer
    /// block's stream `[B, T, D]` for its `x + proj(..)`, so that its gradient reaches it
    /// without a reshape between), in the weight's dtype; its gradient is the output's. On a GPU at
    /// bf16 matmul precision, where [`Tensor::linear`] runs on its bf16 copies, the residual is
    /// the GEMM's `C` (cuBLASLt, `beta = 1`), so the sum is written once: per output element 8
    /// bytes fewer than the layer and an add (whose read of both terms and write of the sum
    /// become one read of the residual), and the add's launch; the sum's f32 rounding may
    /// differ from the composition's in the last bit. Elsewhere, and under
    /// [`crate::ops::fusion::GpuFusion::Composed`], it is that composition.
    pub fn linear_residual(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (n, k, out) = sizes(self, weight, bias)?;
        check_residual(OP, weight, residual, n, out)?;
        #[cfg(feature = "cuda")]
        if crate::precision::gpu_bf16_input(self, weight)
            && crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused
        {
            return gpu::forward_bf16(self, weight, bias, [n, k, out], Some(residual));
        }
        #[cfg(not(feature = "cuda"))]
        let _ = k;
        self.linear(weight, bias)?
            .reshape(residual.shape())?
            .add(residual)
    }
}

/// Checks that `residual` has `weight`'s dtype and device and `[n, out]` or `[.., out]` with `n`
/// rows: the shapes [`Tensor::linear_residual`] and [`Tensor::mlp2_residual`] take.
pub(crate) fn check_residual(
    op: &'static str,
    weight: &Tensor,
    residual: &Tensor,
    n: usize,
    out: usize,
) -> Result<()> {
    check_same(op, weight, residual)?;
    if residual.shape().last() != Some(&out) || residual.numel() != n * out {
        return shape_err(
            op,
            format!(
                "residual {:?} does not fit the output: expected [{n}, {out}], or [.., {out}] with {n} rows",
                residual.shape()
            ),
        );
    }
    Ok(())
}

/// The sizes `(n, in, out)` of a linear layer's operands, or the error that names the misfit.
fn sizes(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    crate::ops::check_input(OP, x, weight)?;
    if let Some(b) = bias {
        check_same(OP, weight, b)?;
    }
    let (n, k) = match *x.shape() {
        [n, k] => (n, k),
        ref s => {
            return shape_err(OP, format!("needs an input [N, in], got {s:?}"));
        }
    };
    let out = match *weight.shape() {
        [o, k2] if k2 == k => o,
        ref s => {
            return shape_err(
                OP,
                format!("weight {s:?} does not fit input [{n}, {k}]: expected [out, {k}]"),
            );
        }
    };
    if let Some(b) = bias {
        if b.shape() != [out] {
            return shape_err(
                OP,
                format!(
                    "bias {:?} does not fit weight [{out}, {k}]: expected [{out}]",
                    b.shape()
                ),
            );
        }
    }
    Ok((n, k, out))
}

/// The GPU arm at bf16 matmul precision: `x` and `W` cast to bf16 once, the copies kept for
/// the backward, whose `g` is cast once for both of its products (the composed form casts
/// `x`, `W` and `g` once per product: three more passes over `g` and one more over `x`).
#[cfg(feature = "cuda")]
pub(crate) mod gpu {
    use super::*;
    use crate::cuda::matmul::matmul_bf16_to;
    use crate::ops::{cuda_ref, dense};

    /// A contiguous, detached bf16 copy of the GPU tensor `t`.
    pub(crate) fn bf16_copy(t: &Tensor) -> Result<Tensor> {
        dense(&t.detach().to_dtype(DType::BF16)?)
    }

    /// `a · b` for bf16 `a` `[m, k]` and `b` `[k, n]` (views; cuBLAS reads row- or
    /// column-major ones in place), f32 accumulation: the f32 `[m, n]` product.
    pub(crate) fn product(a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        product_to(a, b, m, k, n, DType::F32)
    }

    /// [`product`] stored as `to` (f32, or bf16: the f32 sum rounded once as cuBLAS stores it).
    pub(crate) fn product_to(
        a: &Tensor,
        b: &Tensor,
        m: usize,
        k: usize,
        n: usize,
        to: DType,
    ) -> Result<Tensor> {
        let (ga, gb) = (a.read(), b.read());
        let s = matmul_bf16_to(
            cuda_ref(OP, &ga)?,
            a.layout(),
            cuda_ref(OP, &gb)?,
            b.layout(),
            1,
            m,
            k,
            n,
            to,
        )?;
        Ok(Tensor::from_storage(Storage::Cuda(s), &[m, n]))
    }

    /// `x · Wᵀ + b` through cuBLASLt with the bias in the GEMM's epilogue, for contiguous `x`
    /// and `W` (bf16 or f32) on a GPU, stored as `to` (f32 or bf16; the bias is cast to it),
    /// plus the f32 `residual` `[n, out]` as the GEMM's `C` (for an f32 `to`); `None` where
    /// cuBLASLt is unavailable or declines.
    fn fused(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        [n, k, out]: [usize; 3],
        to: DType,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let b = match bias {
            Some(b) if to == DType::BF16 => Some(crate::shadow::bf16_operand(b)?),
            Some(b) => Some(dense(b)?),
            None => None,
        };
        let r = residual.map(dense).transpose()?;
        let (gx, gw) = (x.read(), w.read());
        let gb = b.as_ref().map(|b| b.read());
        let bs = gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?;
        let gr = r.as_ref().map(|r| r.read());
        let rs = gr.as_ref().map(|g| cuda_ref(OP, g)).transpose()?;
        let y = crate::cuda::lt::linear_to(
            cuda_ref(OP, &gx)?,
            cuda_ref(OP, &gw)?,
            bs,
            n,
            k,
            out,
            to,
            rs,
        )?;
        Ok(y.map(|y| Tensor::from_storage(Storage::Cuda(y), &[n, out])))
    }

    /// The f32 layer on a GPU at f32 precision with the bias in cuBLASLt's epilogue (the
    /// backward is the CPU's, through the ops); `None` (compose it) for strided operands or
    /// where cuBLASLt declines.
    pub(super) fn forward_f32_fused(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        n: usize,
        k: usize,
        out: usize,
    ) -> Result<Option<Tensor>> {
        let plain = |t: &Tensor| t.is_contiguous() && t.layout().offset() == 0;
        if bias.is_none() || !plain(x) || !plain(w) {
            return Ok(None);
        }
        let Some(y) = fused(
            &x.detach(),
            &w.detach(),
            bias,
            [n, k, out],
            DType::F32,
            None,
        )?
        else {
            return Ok(None);
        };
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        Ok(Some(y.attach(&inputs, || Box::new(LinearBack))))
    }

    /// The layer on the bf16 copies of `x` and `W`, plus `residual` where one is given (then
    /// the last input, whose gradient is the output's).
    pub(super) fn forward_bf16(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        [n, k, out]: [usize; 3],
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (x16, w16) = (bf16_copy(x)?, crate::shadow::bf16_operand(w)?);
        let mut y = affine_bf16(&x16, &w16, bias, n, k, out, residual)?;
        if let Some(r) = residual {
            y = y.reshape(r.shape())?;
        }
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        inputs.extend(residual);
        // dx needs W, dW needs x: keep only what the backward will use.
        let keep_x = w.requires_grad().then_some(x16);
        let keep_w = x.requires_grad().then_some(w16);
        Ok(y.attach(&inputs, || {
            Box::new(LinearBackBf16 {
                x16: keep_x,
                w16: keep_w,
                has_bias: bias.is_some(),
            })
        }))
    }

    /// `x16 · W16ᵀ + b (+ residual)` for contiguous bf16 `x16` `[n, k]` and `W16` `[out, k]`
    /// and an f32 `residual` of `n x out` elements on a GPU, `[n, out]` in f32 and outside
    /// autograd: the bias and
    /// the residual in cuBLASLt's epilogue where it takes them, else a cuBLAS product and adds.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn affine_bf16(
        x16: &Tensor,
        w16: &Tensor,
        bias: Option<&Tensor>,
        n: usize,
        k: usize,
        out: usize,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if let Some(y) = fused(x16, w16, bias, [n, k, out], DType::F32, residual)? {
            return Ok(y);
        }
        let mut y = product(x16, &w16.t()?, n, k, out)?;
        if let Some(b) = bias {
            y = y.add(&b.detach())?;
        }
        match residual {
            Some(r) => r.detach().reshape(&[n, out])?.add(&y),
            None => Ok(y),
        }
    }

    /// [`affine_bf16`] stored in bf16, as under PyTorch's autocast: the bias rounded to bf16,
    /// added to the f32 sum in cuBLASLt's epilogue, and the result rounded once (for a layer
    /// whose output is only read as a bf16 operand, or by a kernel that reads bf16). Where
    /// cuBLASLt declines, the f32 layer and a cast (the same values, but for the bias's
    /// rounding).
    pub(crate) fn affine_to_bf16(
        x16: &Tensor,
        w16: &Tensor,
        bias: Option<&Tensor>,
        n: usize,
        k: usize,
        out: usize,
    ) -> Result<Tensor> {
        match fused(x16, w16, bias, [n, k, out], DType::BF16, None)? {
            Some(y) => Ok(y),
            None => dense(&affine_bf16(x16, w16, bias, n, k, out, None)?.to_dtype(DType::BF16)?),
        }
    }

    /// The bf16 copy of an f32 output gradient `g` `[n, out]` and its column sums (a bias's
    /// gradient), from one pass over `g`.
    pub(crate) fn cast_bf16_colsum(g: &Tensor, n: usize, out: usize) -> Result<(Tensor, Tensor)> {
        let gd = dense(g)?;
        let gg = gd.read();
        let (g16, partial, chunks) = cuda_ref(OP, &gg)?.cast_bf16_colsum(n, out)?;
        let partial = Tensor::from_storage(Storage::Cuda(partial), &[chunks, out]);
        Ok((
            Tensor::from_storage(Storage::Cuda(g16), &[n, out]),
            partial.sum(&[0], false)?,
        ))
    }

    /// The f32 column sums of a contiguous bf16 gradient `g16` `[n, out]` (a bias's gradient
    /// where the output gradient exists only in bf16).
    pub(crate) fn colsum_bf16(g16: &Tensor, n: usize, out: usize) -> Result<Tensor> {
        let (partial, chunks) = {
            let gd = g16.read();
            cuda_ref(OP, &gd)?.colsum_bf16(n, out)?
        };
        Tensor::from_storage(Storage::Cuda(partial), &[chunks, out]).sum(&[0], false)
    }

    /// The backward of [`forward_bf16`], holding its bf16 operands.
    struct LinearBackBf16 {
        /// `x` in bf16, when `W` needs a gradient.
        x16: Option<Tensor>,
        /// `W` in bf16, when `x` needs a gradient.
        w16: Option<Tensor>,
        /// Whether `inputs[2]` is a bias (a residual, if any, follows).
        has_bias: bool,
    }

    impl BackwardOp for LinearBackBf16 {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            g: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let (x, w) = (&inputs[0], &inputs[1]);
            let (n, k, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
            // Shaped as a residual when there is one: the products read its rows.
            let (g, g_out) = (&g.reshape(&[n, out])?, g);
            let wants = |t: &Tensor, kept: &Option<Tensor>| t.requires_grad() && kept.is_some();
            let bias_grad = self.has_bias && inputs[2].requires_grad();
            // One read of g: its bf16 copy for the products and, with a bias, its column sums.
            let (g16, db) = if bias_grad {
                let (g16, db) = cast_bf16_colsum(g, n, out)?;
                (Some(g16), Some(db))
            } else if wants(x, &self.w16) || wants(w, &self.x16) {
                (Some(bf16_copy(g)?), None)
            } else {
                (None, None)
            };
            let mut grads = vec![None, None];
            if let (Some(g16), true) = (&g16, x.requires_grad()) {
                if let Some(w16) = &self.w16 {
                    grads[0] = Some(product_to(g16, w16, n, out, k, x.dtype())?);
                }
            }
            if let (Some(g16), true) = (&g16, w.requires_grad()) {
                if let Some(x16) = &self.x16 {
                    grads[1] = Some(product(&g16.t()?, x16, out, n, k)?);
                }
            }
            if self.has_bias {
                grads.push(db);
            }
            // A residual, the last input: its gradient is the output's.
            if let Some(r) = inputs.get(grads.len()) {
                grads.push(r.requires_grad().then(|| g_out.clone()));
            }
            Ok(grads)
        }
    }
}
