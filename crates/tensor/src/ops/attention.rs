//! Fused scaled-dot-product self-attention on packed projections
//! ([`Tensor::attention_qkv`]): one op in the graph instead of the select / permute copies,
//! two batched products, scaling, masking and softmax of the composed form, with a backward
//! that recomputes the probabilities from the saved log-sum-exp (kernels in
//! [`crate::cpu::attention`]).

use crate::autograd::BackwardOp;
use crate::cpu::attention::{self as kernel, AttnDims};
use crate::cpu::gemm::with_bf16_products;
use crate::cpu::matmul::Gemm;
use crate::error::{shape_err, Result};
use crate::ops::with_slice;
use crate::{DType, Device, Tensor};

const OP: &str = "attention_qkv";

/// How [`Tensor::attention_qkv`] runs on a GPU: the fused flash-style kernels (the default) or
/// composed of matmuls and a softmax (which then follow [`crate::precision`]: bf16 tensor-core
/// products, but a stored `T x T` score matrix). For measuring one against the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GpuAttention {
    /// `kernels/attention.cu` (f32 heads up to 128 wide, f64 up to 64; composed otherwise).
    #[default]
    Fused,
    /// Matmuls, a mask and a softmax.
    Composed,
}

impl std::str::FromStr for GpuAttention {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fused" => Ok(GpuAttention::Fused),
            "composed" => Ok(GpuAttention::Composed),
            other => Err(format!(
                "unknown attention kernel {other:?}: expected fused or composed"
            )),
        }
    }
}

thread_local! {
    static GPU_ATTENTION: std::cell::Cell<GpuAttention> = const { std::cell::Cell::new(GpuAttention::Fused) };
}

/// Runs `f` with [`Tensor::attention_qkv`] on a GPU computed as `a` says (on this thread,
/// restored afterwards; the backward pass follows what the forward chose).
pub fn with_gpu_attention<R>(a: GpuAttention, f: impl FnOnce() -> R) -> R {
    crate::ops::fusion::scoped(&GPU_ATTENTION, a, f)
}

/// The [`GpuAttention`] in force on this thread.
pub fn gpu_attention() -> GpuAttention {
    GPU_ATTENTION.with(|c| c.get())
}

struct AttnBack {
    dims: AttnDims,
    causal: bool,
    scale: f64,
    /// Whether the forward's products were bf16 products (the backward's are too).
    bf16: bool,
    /// The forward's output `[B, T, D]` and per-row log-sum-exp `[B, H, T]`.
    out: Tensor,
    lse: Tensor,
}

impl AttnBack {
    fn typed<T: Gemm>(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        // The saved output and log-sum-exp are read in place, like the input and the gradient.
        let g = with_slice::<T, _>(OP, x, |xs| {
            with_slice::<T, _>(OP, grad, |gs| {
                with_slice::<T, _>(OP, &self.out, |os| {
                    with_slice::<T, _>(OP, &self.lse, |ls| {
                        with_bf16_products(self.bf16, || {
                            kernel::backward(
                                xs,
                                os,
                                ls,
                                gs,
                                self.dims,
                                self.causal,
                                T::c(self.scale),
                            )
                        })
                    })
                })
            })
        })????;
        Ok(Tensor::from_cpu(T::into_storage(g), x.shape()))
    }
}

impl BackwardOp for AttnBack {
    fn name(&self) -> &'static str {
        OP
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let g = match inputs[0].dtype() {
            DType::F32 => self.typed::<f32>(&inputs[0], grad)?,
            DType::F64 => self.typed::<f64>(&inputs[0], grad)?,
            d => return Err(crate::ops::unsupported(OP, d)),
        };
        Ok(vec![Some(g)])
    }
}

fn forward_typed<T: Gemm>(
    x: &Tensor,
    dims: AttnDims,
    causal: bool,
    scale: f64,
    bf16: bool,
) -> Result<(Tensor, Tensor)> {
    let (out, lse) = with_slice::<T, _>(OP, x, |xs| {
        with_bf16_products(bf16, || kernel::forward(xs, dims, causal, T::c(scale)))
    })?;
    let AttnDims { b, t, h, dh } = dims;
    Ok((
        Tensor::from_cpu(T::into_storage(out), &[b, t, h * dh]),
        Tensor::from_cpu(T::into_storage(lse), &[b, h, t]),
    ))
}

/// Attention composed of matmuls, a mask and a softmax (for devices without the fused kernel).
fn composed(x: &Tensor, heads: usize, dh: usize, causal: bool) -> Result<Tensor> {
    let (b, t) = (x.shape()[0], x.shape()[1]);
    // [B, T, 3, H, dh] -> [3, B, H, T, dh]
    let qkv = x
        .reshape(&[b, t, 3, heads, dh])?
        .permute(&[2, 0, 3, 1, 4])?;
    let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
    let scale = 1.0 / (dh.max(1) as f64).sqrt();
    let mut scores = q.matmul(&k.transpose(-1, -2)?)?.mul_scalar(scale)?;
    if causal {
        // 1 above the diagonal (future positions): key index > query index, compared on x's
        // device from one row of positions (t values moved, not t x t).
        let pos = Tensor::arange(t, x.dtype()).to_device(x.device())?;
        let mask = pos.reshape(&[1, t])?.gt(&pos.reshape(&[t, 1])?)?;
        scores = scores.masked_fill(&mask, f64::NEG_INFINITY)?;
    }
    let out = scores.softmax(-1)?.matmul(&v)?; // [B, H, T, dh]
    out.permute(&[0, 2, 1, 3])?.reshape(&[b, t, heads * dh])
}

impl Tensor {
    /// Multi-head self-attention `softmax(Q K^T / sqrt(dh)) V` on packed projections.
    ///
    /// `self` is `[B, T, 3D]`, the output of one input projection to queries, keys and values
    /// (in that order along the last axis, each `[H, dh]` with `D = heads * dh`, as PyTorch's
    /// `in_proj`); the result is `[B, T, D]` with the heads concatenated, as
    /// `F.scaled_dot_product_attention(q, k, v, is_causal=causal)` followed by merging the
    /// heads. With `causal`, position `i` attends to positions `<= i` only. The `T x T`
    /// probabilities are not kept for the backward (it recomputes them), so memory grows with
    /// `T`, not `T^2`. Differentiable; f32 or f64. On the GPU it runs the flash-style kernels
    /// of `kernels/attention.cu` for f32 heads up to 128 wide and f64 heads up to 64 (wider
    /// heads, or more than 65,535 batch x head pairs, are composed of matmuls and a softmax;
    /// [`with_gpu_attention`] picks the composed form). At bf16 matmul precision
    /// ([`crate::precision`]) f32 attention multiplies in bf16 with f32 sums where the device
    /// can: on a GPU of compute capability 8.0+ (heads up to 64 wide, `attention_mma.cu`) and
    /// on a CPU with AVX-512 BF16; the softmax stays f32. No attention mask other
    /// than the causal one and no dropout: compose the ops for those.
    pub fn attention_qkv(&self, heads: usize, causal: bool) -> Result<Tensor> {
        if self.rank() != 3 {
            return shape_err(
                OP,
                format!(
                    "needs packed projections [B, T, 3D], got {:?}",
                    self.shape()
                ),
            );
        }
        let (b, t, d3) = (self.shape()[0], self.shape()[1], self.shape()[2]);
        if heads == 0 || d3 % (3 * heads) != 0 {
            return shape_err(
                OP,
                format!(
                    "last axis {d3} of {:?} is not 3 x heads x head width for {heads} heads",
                    self.shape()
                ),
            );
        }
        crate::ops::check_float(OP, self)?;
        let dh = d3 / (3 * heads);
        #[cfg(feature = "cuda")]
        if self.device() != Device::Cpu && gpu_attention() == GpuAttention::Fused {
            if let Some(kernels) = gpu::kernels(self, b * heads, dh) {
                return gpu::forward(self, kernels, AttnDims { b, t, h: heads, dh }, causal);
            }
        }
        if self.device() != Device::Cpu {
            return composed(self, heads, dh, causal);
        }
        let dims = AttnDims { b, t, h: heads, dh };
        let scale = 1.0 / (dh.max(1) as f64).sqrt();
        // bf16 products where this CPU has them (f32 tensors at bf16 precision); f32 otherwise.
        let bf16 = self.dtype() == DType::F32 && crate::precision::cpu_bf16_products();
        let (out, lse) = match self.dtype() {
            DType::F32 => forward_typed::<f32>(self, dims, causal, scale, bf16)?,
            DType::F64 => forward_typed::<f64>(self, dims, causal, scale, false)?,
            dt => return Err(crate::ops::unsupported(OP, dt)),
        };
        let saved = out.detach();
        Ok(out.attach(&[self], || {
            Box::new(AttnBack {
                dims,
                causal,
                bf16,
                scale,
                out: saved,
                lse,
            })
        }))
    }
}

/// The fused GPU attention (`kernels/attention.cu`): one kernel forward, two backward (the
/// query gradient, then the key and value gradients), no `T x T` buffer.
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::cuda::attention::Kernels;
    use crate::ops::{cuda_ref, dense};
    use crate::storage::Storage;

    fn scale(dh: usize) -> f64 {
        1.0 / (dh.max(1) as f64).sqrt()
    }

    /// The fused kernels for `x` (on a CUDA device) with `batch_heads` heads of width `dh`:
    /// the tensor cores when `x` is f32, the matmul precision is bf16, the device has them
    /// (compute capability 8.0+) and the heads are at most 64 wide; else the CUDA cores when
    /// they cover the shape; else `None` (the caller composes the op).
    pub(super) fn kernels(x: &Tensor, batch_heads: usize, dh: usize) -> Option<Kernels> {
        use crate::cuda::attention as ca;
        let tensor_cores = crate::precision::matmul_precision()
            == crate::precision::MatmulPrecision::Bf16
            && x.dtype() == DType::F32
            && ca::mma_head_width_bound(x.dtype(), batch_heads, dh).is_some()
            && match x.device() {
                Device::Cuda(i) => crate::cuda::CudaBackend::get(i)
                    .map(|be| be.capability().0 >= 8)
                    .unwrap_or(false),
                Device::Cpu => false,
            };
        if tensor_cores {
            Some(Kernels::TensorCores)
        } else {
            ca::head_width_bound(x.dtype(), batch_heads, dh).map(|_| Kernels::CudaCores)
        }
    }

    pub(super) fn forward(
        x: &Tensor,
        kernels: Kernels,
        dims: AttnDims,
        causal: bool,
    ) -> Result<Tensor> {
        let AttnDims { b, t, h, dh } = dims;
        let xd = dense(x)?;
        let gx = xd.read();
        let (out, lse) = crate::cuda::attention::forward(
            cuda_ref(OP, &gx)?,
            kernels,
            x.dtype(),
            b,
            t,
            h,
            dh,
            causal,
            scale(dh),
        )?;
        let out = Tensor::from_storage(Storage::Cuda(out), &[b, t, h * dh]);
        let lse = Tensor::from_storage(Storage::Cuda(lse), &[b, h, t]);
        let saved = out.detach();
        Ok(out.attach(&[x], || {
            Box::new(AttnBackCuda {
                dims,
                kernels,
                causal,
                out: saved,
                lse,
            })
        }))
    }

    struct AttnBackCuda {
        dims: AttnDims,
        /// The forward's kernels (the backward uses the same set).
        kernels: Kernels,
        causal: bool,
        out: Tensor,
        lse: Tensor,
    }

    impl BackwardOp for AttnBackCuda {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let AttnDims { b, t, h, dh } = self.dims;
            let (x, g) = (dense(&inputs[0])?, dense(grad)?);
            let (gx, gg, go, gl) = (x.read(), g.read(), self.out.read(), self.lse.read());
            let dx = crate::cuda::attention::backward(
                cuda_ref(OP, &gx)?,
                self.kernels,
                cuda_ref(OP, &go)?,
                cuda_ref(OP, &gl)?,
                cuda_ref(OP, &gg)?,
                b,
                t,
                h,
                dh,
                self.causal,
                scale(dh),
            )?;
            Ok(vec![Some(Tensor::from_storage(
                Storage::Cuda(dx),
                inputs[0].shape(),
            ))])
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
        let mut g = crate::Generator::new(3);
        let x = Tensor::randn(&[2, 7, 3 * 12], 0.0, 1.0, DType::F64, &mut g).unwrap();
        for causal in [false, true] {
            assert_close_grads(
                &[&x],
                |v| v[0].attention_qkv(3, causal),
                |v| composed(&v[0], 3, 4, causal),
                1e-10,
            );
        }
    }
}
