//! Self-attention with its input projection as one op ([`Tensor::qkv_attention`]): a
//! transformer block's `qkv` linear layer followed by [`Tensor::attention_qkv`].
//!
//! Its values and gradients are those of that composition, and everywhere but one place it
//! runs exactly that. The exception is a GPU (compute capability 8.0+) at bf16 matmul
//! precision ([`crate::precision`]) with f32 operands and heads the tensor-core attention
//! covers, where the composition moves the packed projections through memory in f32: the
//! product writes them in f32, the attention's forward and both backward kernels read them in
//! f32 (and convert them to bf16 as they load them), and the backward writes their gradient in
//! f32 only for the layer's backward to read it back and cast it to bf16 for its products.
//! Fused, as under PyTorch's autocast, the projections and their gradient are bf16: the
//! product stores them in bf16 (its bias rounded to bf16 and added in cuBLASLt's epilogue),
//! the attention kernels read them and write their gradient in bf16 (`attention_mma.cu`'s
//! `_bf16_` kernels), and the bias's gradient is summed from that. For GPT-2 (8,192 tokens,
//! width 768) about 10 passes over a `[tokens, 768]` f32 matrix's bytes fewer per layer and
//! step (counted, not measured), and half the memory the projections hold for the backward;
//! the bias's bf16 copy costs one small launch. The results are the
//! composition's with the projections and their gradient rounded to bf16 (and the bias
//! rounded to bf16), so they differ from it by bf16 rounding.
//!
//! [`Tensor::qkv_attention_as`] goes one step further for an output read only as the output
//! projection's bf16 operand (`nn::MultiHeadAttention`'s): the `_bf16o_` kernels store the
//! output in bf16 and read its gradient in bf16, as the product stores it. Per element of the
//! `[tokens, E]` output, the forward writes 2 bytes where it wrote 4 and the product's cast
//! (4 read, 2 written) is gone; the backward reads the gradient and the output in bf16 where
//! it read both in f32, and the product writes that gradient in bf16 (counted for GPT-2: about
//! 1.2 GB a step, and one launch a layer).

use crate::error::{invalid, shape_err, Result};
use crate::ops::check_same;
use crate::{DType, Tensor};

const OP: &str = "qkv_attention";

impl Tensor {
    /// Multi-head self-attention of `self` `[B, T, D]` with its input projection: the values
    /// and gradients of `self.linear(weight, bias)` (over the `B·T` rows) followed by
    /// [`Tensor::attention_qkv`]`(heads, causal)`, for `weight` `[3E, D]` (queries, keys and
    /// values stacked, each `E = heads · dh` wide, as PyTorch's `in_proj_weight`) and `bias`
    /// `[3E]`; the result is `[B, T, E]`. On a GPU at bf16 matmul precision with f32 operands
    /// and heads up to 64 wide it runs fused, with the projections and their gradient in bf16
    /// (the module documentation says what that saves and where it rounds), unless
    /// [`crate::ops::fusion::with_gpu_fusion`] or
    /// [`crate::ops::attention::with_gpu_attention`] asks for a composition; elsewhere it is
    /// that composition. A bf16 `self` with f32 weights is an operand already rounded, as
    /// [`Tensor::linear`] takes one.
    pub fn qkv_attention(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        heads: usize,
        causal: bool,
    ) -> Result<Tensor> {
        self.qkv_attention_as(weight, bias, heads, causal, weight.dtype())
    }

    /// [`Tensor::qkv_attention`] with its result stored as `out`: the values and gradients of
    /// `self.qkv_attention(weight, bias, heads, causal)?.to_dtype(out)`, for an output read
    /// only as a product's operand (`out` from [`crate::precision::operand_dtype`] of that
    /// product's weight). On a GPU where `qkv_attention` runs fused and `out` is bf16, its
    /// kernels store the output in bf16 and read its gradient in bf16 (the module
    /// documentation says what that saves); their backward's row terms `dO . O` read the
    /// stored output, so its gradients differ from the composition's by bf16 rounding there
    /// too. `out` must be a float dtype. Elsewhere it is that composition.
    pub fn qkv_attention_as(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        heads: usize,
        causal: bool,
        out: DType,
    ) -> Result<Tensor> {
        crate::ops::check_input(OP, self, weight)?;
        if !out.is_float() {
            return invalid(OP, format!("output dtype {out:?} must be a float dtype"));
        }
        if let Some(bias) = bias {
            check_same(OP, weight, bias)?;
        }
        let (b, t, d) = match *self.shape() {
            [b, t, d] => (b, t, d),
            ref s => return shape_err(OP, format!("needs an input [B, T, D], got {s:?}")),
        };
        let o = match *weight.shape() {
            [o, d2] if d2 == d => o,
            ref s => {
                return shape_err(
                    OP,
                    format!("weight {s:?} does not fit input [{b}, {t}, {d}]: expected [3E, {d}]"),
                )
            }
        };
        if heads == 0 || o % (3 * heads) != 0 {
            return shape_err(
                OP,
                format!("weight rows {o} are not 3 x heads x head width for {heads} heads"),
            );
        }
        if let Some(bias) = bias {
            if bias.shape() != [o] {
                return shape_err(
                    OP,
                    format!("bias {:?} does not fit: expected [{o}]", bias.shape()),
                );
            }
        }
        #[cfg(feature = "cuda")]
        if gpu::fits(self, weight, b * heads, o / (3 * heads)) {
            // The kernels store f32 or bf16; another float is the f32 output cast.
            let store = if out == DType::BF16 { out } else { DType::F32 };
            let y = gpu::forward(self, weight, bias, [b, t, d, o], heads, causal, store)?;
            return y.to_dtype(out);
        }
        self.reshape(&[b * t, d])?
            .linear(weight, bias)?
            .reshape(&[b, t, o])?
            .attention_qkv(heads, causal)?
            .to_dtype(out)
    }
}

/// The fused arm on a GPU at bf16 matmul precision.
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::autograd::BackwardOp;
    use crate::cuda::attention::{self as ca, Kernels};
    use crate::ops::attention::{gpu_attention, GpuAttention};
    use crate::ops::fusion::{gpu_fusion, GpuFusion};
    use crate::ops::linear::gpu::{affine_to_bf16, bf16_copy, colsum_bf16, product, product_to};
    use crate::ops::{cuda_ref, dense};
    use crate::storage::Storage;
    use crate::Device;

    /// Whether the fused arm runs for `x` with `batch_heads` heads of width `dh`.
    pub(super) fn fits(x: &Tensor, w: &Tensor, batch_heads: usize, dh: usize) -> bool {
        crate::precision::gpu_bf16_input(x, w)
            && gpu_fusion() == GpuFusion::Fused
            && gpu_attention() == GpuAttention::Fused
            && ca::mma_head_width_bound(DType::BF16, batch_heads, dh).is_some()
            && match x.device() {
                Device::Cuda(i) => crate::cuda::CudaBackend::get(i)
                    .map(|be| be.capability().0 >= 8)
                    .unwrap_or(false),
                Device::Cpu => false,
            }
    }

    /// The forward: `x` and `W` cast to bf16 once, the projections stored in bf16 by the
    /// product (bias in its epilogue), the tensor-core attention on them, its output stored in
    /// `out` (f32 or bf16).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        [b, t, d, o]: [usize; 4],
        heads: usize,
        causal: bool,
        out: DType,
    ) -> Result<Tensor> {
        let n = b * t;
        let dh = o / (3 * heads);
        let (x16, w16) = (
            bf16_copy(&x.reshape(&[n, d])?)?,
            crate::shadow::bf16_operand(w)?,
        );
        let qkv16 = affine_to_bf16(&x16, &w16, bias, n, d, o)?;
        let scale = 1.0 / (dh.max(1) as f64).sqrt();
        let (out, lse) = {
            let g = qkv16.read();
            ca::forward(
                cuda_ref(OP, &g)?,
                Kernels::TensorCores,
                out,
                b,
                t,
                heads,
                dh,
                causal,
                scale,
            )?
        };
        let out = Tensor::from_storage(Storage::Cuda(out), &[b, t, heads * dh]);
        let lse = Tensor::from_storage(Storage::Cuda(lse), &[b, heads, t]);
        let saved = out.detach();
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        Ok(out.attach(&inputs, || {
            Box::new(QkvAttentionBack {
                dims: [b, t, heads, dh],
                causal,
                scale,
                x16: w.requires_grad().then_some(x16),
                w16: x.requires_grad().then_some(w16),
                qkv16,
                out: saved,
                lse,
            })
        }))
    }

    /// The backward of [`forward`]: the attention's kernels write the projections' gradient in
    /// bf16, then the bias's column sums and the layer's two products.
    struct QkvAttentionBack {
        /// `[B, T, heads, dh]`.
        dims: [usize; 4],
        causal: bool,
        scale: f64,
        /// `x` in bf16 `[B·T, D]`, when `W` needs a gradient.
        x16: Option<Tensor>,
        /// `W` in bf16, when `x` needs a gradient.
        w16: Option<Tensor>,
        /// The projections in bf16 `[B·T, 3E]`.
        qkv16: Tensor,
        /// The forward's output (f32 or bf16) and its rows' log-sum-exp.
        out: Tensor,
        lse: Tensor,
    }

    impl BackwardOp for QkvAttentionBack {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let (x, w) = (&inputs[0], &inputs[1]);
            let [b, t, heads, dh] = self.dims;
            let (n, d, o) = (b * t, x.shape()[2], w.shape()[0]);
            let mut grads: Vec<Option<Tensor>> = vec![None; inputs.len()];
            // The output's gradient, in the output's dtype (autograd's sums round to it).
            let g = dense(&grad.to_dtype(self.out.dtype())?)?;
            let dqkv16 = {
                let (gq, gg, go, gl) = (
                    self.qkv16.read(),
                    g.read(),
                    self.out.read(),
                    self.lse.read(),
                );
                let s = ca::backward(
                    cuda_ref(OP, &gq)?,
                    Kernels::TensorCores,
                    cuda_ref(OP, &go)?,
                    cuda_ref(OP, &gl)?,
                    cuda_ref(OP, &gg)?,
                    b,
                    t,
                    heads,
                    dh,
                    self.causal,
                    self.scale,
                )?;
                Tensor::from_storage(Storage::Cuda(s), &[n, o])
            };
            if inputs.get(2).is_some_and(|b| b.requires_grad()) {
                grads[2] = Some(colsum_bf16(&dqkv16, n, o)?);
            }
            if let (true, Some(x16)) = (w.requires_grad(), &self.x16) {
                grads[1] = Some(product(&dqkv16.t()?, x16, o, n, d)?);
            }
            if let (true, Some(w16)) = (x.requires_grad(), &self.w16) {
                grads[0] = Some(product_to(&dqkv16, w16, n, o, d, x.dtype())?.reshape(&[b, t, d])?);
            }
            Ok(grads)
        }
    }
}
