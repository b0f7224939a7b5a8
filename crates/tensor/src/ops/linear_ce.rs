//! A linear output head and its cross-entropy as one op ([`Tensor::linear_cross_entropy`]): a
//! language model's last layer and loss.
//!
//! Its values and gradients are those of [`Tensor::linear`] followed by
//! [`Tensor::cross_entropy_with`], and everywhere but one place it runs exactly that
//! composition. The exception is a GPU at bf16 matmul precision ([`crate::precision`]) with
//! f32 operands and the targets on that GPU, where the composition writes the logits in f32
//! and their gradient in f32 only for the head's backward to read it back and cast it to bf16
//! for its two products. Fused, as under PyTorch's autocast, the logits and their gradient are
//! bf16: the product stores the logits in bf16 (a bias rounded to bf16 and added in cuBLASLt's
//! epilogue), the cross-entropy's kernels read them (f32 arithmetic, f32 loss), and its
//! backward writes the gradient in bf16, the operand of the head's products. At GPT-2's
//! vocabulary (50,304) and 8,192 tokens, against the composition, a 1.65 GB f32 gradient
//! neither written nor read back (since session 22) and logits of 0.82 GB instead of 1.65 GB
//! written once and read twice (since session 31): about 5.8 GB of traffic fewer a step, and
//! 2.5 GB less memory at the step's peak. The results are the composition's with the logits
//! (and a bias) rounded to bf16, so they differ from it by bf16 rounding; a bias's gradient
//! sums the gradient as rounded to bf16.

use crate::error::{shape_err, Result};
use crate::ops::check_same;
use crate::ops::loss::CrossEntropy;
use crate::Tensor;

const OP: &str = "linear_cross_entropy";

impl Tensor {
    /// The cross-entropy ([`Tensor::cross_entropy_with`]) of the logits
    /// `self · weightᵀ + bias` for `self` `[N, in]`, `weight` `[classes, in]`, `bias`
    /// `[classes]` and targets `[N]`, as one op. Returns the loss (differentiable in `self`,
    /// `weight` and `bias`) and the logits `[N, classes]` (without a gradient; for metrics
    /// such as accuracy: `argmax` reads them on either device). On a GPU at bf16 matmul
    /// precision with the targets on that GPU it runs fused, with bf16 logits (the module
    /// documentation says what that saves and where it rounds), unless
    /// [`crate::ops::fusion::with_gpu_fusion`] asks for the composition; elsewhere it is that
    /// composition, with logits in `self`'s dtype.
    pub fn linear_cross_entropy(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        targets: &Tensor,
        opts: &CrossEntropy,
    ) -> Result<(Tensor, Tensor)> {
        for t in [weight].into_iter().chain(bias) {
            check_same(OP, self, t)?;
        }
        match (self.shape(), weight.shape(), targets.shape()) {
            ([n, k], [_, k2], [nt]) if k == k2 && n == nt => {}
            (x, w, t) => {
                return shape_err(
                    OP,
                    format!(
                        "needs input [N, in], weight [classes, in] and targets [N], got {x:?}, {w:?} and {t:?}"
                    ),
                )
            }
        }
        #[cfg(feature = "cuda")]
        if self.dtype() == crate::DType::F32
            && self.device() != crate::Device::Cpu
            && targets.device() == self.device()
            && crate::precision::matmul_precision() == crate::precision::MatmulPrecision::Bf16
            && (0.0..1.0).contains(&opts.label_smoothing)
            && bias.is_none_or(|b| b.shape() == [weight.shape()[0]])
            && crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused
        {
            return gpu::forward_bf16(self, weight, bias, targets, opts);
        }
        let logits = self.linear(weight, bias)?;
        let loss = logits.cross_entropy_with(targets, opts)?;
        Ok((loss, logits.detach()))
    }
}

/// The fused arm on a GPU at bf16 matmul precision.
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::autograd::BackwardOp;
    use crate::ops::linear::gpu::{affine_to_bf16, bf16_copy, colsum_bf16, product};
    use crate::ops::loss::cuda_ce::{forward_values, logits_grad, scaled_device_targets, Scaled};

    /// The forward: `x` and `W` cast to bf16 once, the logits stored in bf16 by the product
    /// (bias in its epilogue where cuBLASLt takes it), the cross-entropy's forward kernel on
    /// them.
    pub(super) fn forward_bf16(
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        targets: &Tensor,
        opts: &CrossEntropy,
    ) -> Result<(Tensor, Tensor)> {
        let (n, k, c) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let (x16, w16) = (bf16_copy(x)?, crate::shadow::bf16_operand(w)?);
        let logits = affine_to_bf16(&x16, &w16, bias, n, k, c)?;
        let s = scaled_device_targets(&logits, targets, opts)?;
        let (total, lse) = forward_values(&logits, &s)?;
        let mut inputs = vec![x, w, targets];
        inputs.extend(bias);
        let kept = logits.clone();
        let loss = total.attach(&inputs, || {
            Box::new(LinearCeBackBf16 {
                x16: w.requires_grad().then_some(x16),
                w16: x.requires_grad().then_some(w16),
                logits: kept,
                lse,
                s,
            })
        });
        Ok((loss, logits))
    }

    /// The backward of [`forward_bf16`]: the logits' gradient straight to bf16, then the
    /// head's products.
    struct LinearCeBackBf16 {
        /// `x` in bf16, when `W` needs a gradient.
        x16: Option<Tensor>,
        /// `W` in bf16, when `x` needs a gradient.
        w16: Option<Tensor>,
        /// The bf16 logits.
        logits: Tensor,
        /// Their rows' log-sum-exp.
        lse: Tensor,
        /// The device targets and the loss's scales.
        s: Scaled,
    }

    impl BackwardOp for LinearCeBackBf16 {
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
            let (n, k, c) = (x.shape()[0], x.shape()[1], w.shape()[0]);
            let mut grads: Vec<Option<Tensor>> = vec![None; inputs.len()];
            let g16 = logits_grad(&self.logits, &self.s, &self.lse, g, true)?;
            if let (true, Some(w16)) = (x.requires_grad(), &self.w16) {
                grads[0] = Some(product(&g16, w16, n, c, k)?);
            }
            if let (true, Some(x16)) = (w.requires_grad(), &self.x16) {
                grads[1] = Some(product(&g16.t()?, x16, c, n, k)?);
            }
            if inputs.get(3).is_some_and(|b| b.requires_grad()) {
                grads[3] = Some(colsum_bf16(&g16, n, c)?);
            }
            Ok(grads)
        }
    }
}
