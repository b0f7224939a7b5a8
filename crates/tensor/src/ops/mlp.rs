//! A two-layer perceptron `act(x·W1ᵀ + b1)·W2ᵀ + b2` as one op ([`Tensor::mlp2`]): the MLP of
//! a transformer block and of most SSL projection heads.
//!
//! Its values and gradients are those of [`Tensor::linear`], the activation and
//! [`Tensor::linear`] again, and everywhere but one place it runs exactly that composition.
//! The exception is a GPU at bf16 matmul precision ([`crate::precision`]) with f32 operands,
//! where the composition moves the hidden activation through memory in f32 more often than it
//! needs to: the first layer's output is written in f32 and read by the activation, the
//! activation written in f32 and read back to be cast to bf16 for the second product, and in
//! the backward the activation's gradient and the first layer's output gradient written in
//! f32 and read back. Fused, as under PyTorch's autocast, everything between the two products
//! is bf16: the first product stores its output in bf16 (its bias rounded to bf16 and added in
//! cuBLASLt's epilogue), the activation kernel reads it and writes the second layer's bf16
//! operand, the backward's second product stores the activation's gradient in bf16, and one
//! kernel reads it with the first layer's output and writes the first layer's bf16 output
//! gradient and its column sums. For GPT-2's MLP (hidden width 4·768) that is about 6.5 passes
//! over a `[tokens, 3072]` f32 matrix's bytes fewer per step and layer than the composition
//! (2.5 of them from keeping the first layer's output and the activation's gradient in bf16),
//! and half the memory it holds for the backward. The results are the composition's with the
//! first layer's output and the activation's gradient rounded to bf16 where PyTorch's autocast
//! rounds them (and the first bias rounded to bf16), so they differ from it by bf16 rounding.

use crate::error::{shape_err, Result};
use crate::ops::check_same;
use crate::Tensor;

const OP: &str = "mlp2";

/// The activation between the two layers of [`Tensor::mlp2`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpActivation {
    /// `max(x, 0)` ([`Tensor::relu`]).
    Relu,
    /// GELU, exact erf form ([`Tensor::gelu`]).
    Gelu,
    /// GELU, tanh approximation ([`Tensor::gelu_tanh`]).
    GeluTanh,
    /// `x · sigmoid(x)` ([`Tensor::silu`]).
    Silu,
    /// Hyperbolic tangent ([`Tensor::tanh`]).
    Tanh,
    /// Logistic sigmoid ([`Tensor::sigmoid`]).
    Sigmoid,
}

impl MlpActivation {
    /// Applies the activation as its own op.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            MlpActivation::Relu => x.relu(),
            MlpActivation::Gelu => x.gelu(),
            MlpActivation::GeluTanh => x.gelu_tanh(),
            MlpActivation::Silu => x.silu(),
            MlpActivation::Tanh => x.tanh(),
            MlpActivation::Sigmoid => x.sigmoid(),
        }
    }

    /// The unary kernel's name (`UnaryOp::NAME`), prefix of the fused kernels' names.
    #[cfg(feature = "cuda")]
    fn kernel(self) -> &'static str {
        use crate::ops::unary::{GeluErf, GeluTanh, Relu, Sigmoid, Silu, Tanh, UnaryOp};
        match self {
            MlpActivation::Relu => Relu::NAME,
            MlpActivation::Gelu => GeluErf::NAME,
            MlpActivation::GeluTanh => GeluTanh::NAME,
            MlpActivation::Silu => Silu::NAME,
            MlpActivation::Tanh => Tanh::NAME,
            MlpActivation::Sigmoid => Sigmoid::NAME,
        }
    }
}

/// The sizes `(n, in, hidden, out)` of an MLP's operands, or the error that names the misfit.
fn sizes(
    x: &Tensor,
    w1: &Tensor,
    b1: Option<&Tensor>,
    w2: &Tensor,
    b2: Option<&Tensor>,
) -> Result<(usize, usize, usize, usize)> {
    crate::ops::check_input(OP, x, w1)?;
    for t in [w2].into_iter().chain(b1).chain(b2) {
        check_same(OP, w1, t)?;
    }
    let (n, k) = match *x.shape() {
        [n, k] => (n, k),
        ref s => return shape_err(OP, format!("needs an input [N, in], got {s:?}")),
    };
    let hid = match *w1.shape() {
        [h, k1] if k1 == k => h,
        ref s => {
            return shape_err(
                OP,
                format!("first weight {s:?} does not fit input [{n}, {k}]: expected [hidden, {k}]"),
            )
        }
    };
    let out = match *w2.shape() {
        [o, h2] if h2 == hid => o,
        ref s => {
            return shape_err(
                OP,
                format!(
                "second weight {s:?} does not fit first weight [{hid}, {k}]: expected [out, {hid}]"
            ),
            )
        }
    };
    for (which, b, len) in [("first", b1, hid), ("second", b2, out)] {
        if let Some(b) = b {
            if b.shape() != [len] {
                return shape_err(
                    OP,
                    format!(
                        "{which} bias {:?} does not fit: expected [{len}]",
                        b.shape()
                    ),
                );
            }
        }
    }
    Ok((n, k, hid, out))
}

impl Tensor {
    /// The two-layer perceptron `act(self·w1ᵀ + b1)·w2ᵀ + b2` for `self` `[N, in]`, `w1`
    /// `[hidden, in]`, `w2` `[out, hidden]` (PyTorch's layout) and optional biases `[hidden]`
    /// and `[out]`: the values and gradients of
    /// `self.linear(w1, b1)?` → `act` → `.linear(w2, b2)?`, as one op. On a GPU at bf16 matmul
    /// precision ([`crate::precision`]) with f32 operands it runs fused, with the hidden
    /// layer and its gradient in bf16 as under PyTorch's autocast (the module documentation
    /// says what that saves and where it rounds), unless
    /// [`crate::ops::fusion::with_gpu_fusion`] asks for the composition; elsewhere it is that
    /// composition. A bf16 `self` with f32 weights is an operand already rounded, as
    /// [`Tensor::linear`] takes one.
    pub fn mlp2(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        act: MlpActivation,
        w2: &Tensor,
        b2: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.mlp2_plus(w1, b1, act, w2, b2, None)
    }

    /// `residual + self.mlp2(w1, b1, act, w2, b2)`, shaped as `residual`: the values and
    /// gradients of that sum for `residual` `[N, out]` or `[.., out]` (as
    /// [`Tensor::linear_residual`] takes it: a transformer block's `x + mlp(..)`) in the
    /// weights' dtype, whose gradient is the output's. Where [`Tensor::mlp2`] runs fused, the
    /// residual is added by the second product's epilogue, as [`Tensor::linear_residual`]
    /// adds it; elsewhere it is that composition.
    #[allow(clippy::too_many_arguments)]
    pub fn mlp2_residual(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        act: MlpActivation,
        w2: &Tensor,
        b2: Option<&Tensor>,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.mlp2_plus(w1, b1, act, w2, b2, Some(residual))
    }

    /// [`Tensor::mlp2`], plus `residual` where one is given ([`Tensor::mlp2_residual`]).
    #[allow(clippy::too_many_arguments)]
    fn mlp2_plus(
        &self,
        w1: &Tensor,
        b1: Option<&Tensor>,
        act: MlpActivation,
        w2: &Tensor,
        b2: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        #[allow(unused_variables)]
        let (n, k, hid, out) = sizes(self, w1, b1, w2, b2)?;
        if let Some(r) = residual {
            crate::ops::linear::check_residual(OP, w1, r, n, out)?;
        }
        #[cfg(feature = "cuda")]
        if crate::precision::gpu_bf16_input(self, w1)
            && crate::ops::fusion::gpu_fusion() == crate::ops::fusion::GpuFusion::Fused
        {
            let dims = [n, k, hid, out];
            return gpu::forward_bf16(self, [w1, w2], [b1, b2], act, dims, residual);
        }
        let y = act.apply(&self.linear(w1, b1)?)?.linear(w2, b2)?;
        match residual {
            Some(r) => y.reshape(r.shape())?.add(r),
            None => Ok(y),
        }
    }
}

/// The fused arm on a GPU at bf16 matmul precision.
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::autograd::BackwardOp;
    use crate::cuda::mlp::{act_backward_bf16_colsum, act_to_bf16};
    use crate::ops::cuda_ref;
    use crate::ops::dense;
    use crate::ops::linear::gpu::{
        affine_bf16, affine_to_bf16, bf16_copy, cast_bf16_colsum, colsum_bf16, product, product_to,
    };
    use crate::shadow::bf16_operand;
    use crate::storage::Storage;
    use crate::DType;

    /// The forward: `x`, `W1`, `W2` cast to bf16 once; the first product (with its bias in
    /// the GEMM's epilogue where cuBLASLt takes it) stored in bf16; its activation read and
    /// written in bf16; the second product in f32, plus `residual` where one is given (then
    /// the last input).
    pub(super) fn forward_bf16(
        x: &Tensor,
        [w1, w2]: [&Tensor; 2],
        [b1, b2]: [Option<&Tensor>; 2],
        act: MlpActivation,
        [n, k, hid, out]: [usize; 4],
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (w1_16, w2_16) = (bf16_operand(w1)?, bf16_operand(w2)?);
        let x16 = bf16_copy(x)?;
        // GELU's tanh form runs in the first product's epilogue where cuBLASLt takes it.
        let (h, a16) = match gelu_epilogue(act, &x16, &w1_16, b1, [n, k, hid])? {
            Some(both) => both,
            None => {
                let h = affine_to_bf16(&x16, &w1_16, b1, n, k, hid)?;
                let a16 = {
                    let gh = h.read();
                    let a = act_to_bf16(cuda_ref(OP, &gh)?, act.kernel(), n * hid)?;
                    Tensor::from_storage(Storage::Cuda(a), &[n, hid])
                };
                (h, a16)
            }
        };
        let mut y = affine_bf16(&a16, &w2_16, b2, n, hid, out, residual)?;
        if let Some(r) = residual {
            y = y.reshape(r.shape())?;
        }
        let mut inputs = vec![x, w1, w2];
        inputs.extend(b1);
        inputs.extend(b2);
        inputs.extend(residual);
        let first =
            x.requires_grad() || w1.requires_grad() || b1.is_some_and(|b| b.requires_grad());
        Ok(y.attach(&inputs, || {
            Box::new(MlpBackBf16 {
                act,
                has_b1: b1.is_some(),
                has_b2: b2.is_some(),
                x16: w1.requires_grad().then_some(x16),
                w1_16: x.requires_grad().then_some(w1_16),
                h: first.then_some(h),
                a16: w2.requires_grad().then_some(a16),
                w2_16: first.then_some(w2_16),
            })
        }))
    }

    /// For GELU's tanh form: the first layer's pre-activation `h` and activation, both bf16
    /// `[n, hid]`, from one cuBLASLt product with the bias and the activation in its epilogue
    /// (`cuda::lt::linear_gelu`); `None` for other activations, or where cuBLASLt declines.
    fn gelu_epilogue(
        act: MlpActivation,
        x16: &Tensor,
        w1_16: &Tensor,
        b1: Option<&Tensor>,
        [n, k, hid]: [usize; 3],
    ) -> Result<Option<(Tensor, Tensor)>> {
        if act != MlpActivation::GeluTanh || !hid.is_multiple_of(8) {
            return Ok(None);
        }
        let b16 = b1.map(bf16_operand).transpose()?;
        let (gx, gw) = (x16.read(), w1_16.read());
        let gb = b16.as_ref().map(|b| b.read());
        let bs = gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?;
        let r =
            crate::cuda::lt::linear_gelu(cuda_ref(OP, &gx)?, cuda_ref(OP, &gw)?, bs, n, k, hid)?;
        Ok(r.map(|(a, pre)| {
            (
                Tensor::from_storage(Storage::Cuda(pre), &[n, hid]),
                Tensor::from_storage(Storage::Cuda(a), &[n, hid]),
            )
        }))
    }

    /// For GELU's tanh form: the gradient of the first layer's pre-activation `h` from the
    /// output gradient `g16` `[n, out]` and `W2` in one cuBLASLt product with the activation's
    /// derivative in its epilogue (`cuda::lt::dgelu`); `None` for other activations, or
    /// where cuBLASLt declines.
    fn dgelu_epilogue(
        act: MlpActivation,
        g16: &Tensor,
        w2_16: &Tensor,
        h: &Tensor,
        [n, out, hid]: [usize; 3],
    ) -> Result<Option<Tensor>> {
        if act != MlpActivation::GeluTanh || !hid.is_multiple_of(8) {
            return Ok(None);
        }
        let (gg, gw, gh) = (g16.read(), w2_16.read(), h.read());
        let r = crate::cuda::lt::dgelu(
            cuda_ref(OP, &gg)?,
            cuda_ref(OP, &gw)?,
            cuda_ref(OP, &gh)?,
            n,
            out,
            hid,
        )?;
        Ok(r.map(|dh| Tensor::from_storage(Storage::Cuda(dh), &[n, hid])))
    }

    /// The backward of [`forward_bf16`], holding what its products and the activation's
    /// derivative read (each only when a gradient that needs it is wanted).
    struct MlpBackBf16 {
        act: MlpActivation,
        /// Whether `inputs` holds a first-layer bias (at index 3; the second layer's follows).
        has_b1: bool,
        /// Whether `inputs` holds a second-layer bias (after the first's; a residual, if any,
        /// is last).
        has_b2: bool,
        /// `x` in bf16 (for `dW1`).
        x16: Option<Tensor>,
        /// `W1` in bf16 (for `dx`).
        w1_16: Option<Tensor>,
        /// The first layer's output in bf16 (the activation's input).
        h: Option<Tensor>,
        /// The activation in bf16 (for `dW2`).
        a16: Option<Tensor>,
        /// `W2` in bf16 (for the activation's gradient).
        w2_16: Option<Tensor>,
    }

    impl BackwardOp for MlpBackBf16 {
        fn name(&self) -> &'static str {
            OP
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            g: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let (x, w1, w2) = (&inputs[0], &inputs[1], &inputs[2]);
            let b1 = self.has_b1.then(|| &inputs[3]);
            let i_b2 = 3 + self.has_b1 as usize;
            let b2 = self.has_b2.then(|| &inputs[i_b2]);
            let (n, k, hid, out) = (x.shape()[0], x.shape()[1], w1.shape()[0], w2.shape()[0]);
            // Shaped as a residual when there is one: the products read its rows.
            let (g, g_out) = (&g.reshape(&[n, out])?, g);
            let wants = |t: Option<&Tensor>| t.is_some_and(|t| t.requires_grad());
            let first = wants(Some(x)) || wants(Some(w1)) || wants(b1);
            let mut grads: Vec<Option<Tensor>> = vec![None; inputs.len()];
            // A residual's gradient is the output's.
            let i_res = i_b2 + self.has_b2 as usize;
            if inputs.get(i_res).is_some_and(|r| r.requires_grad()) {
                grads[i_res] = Some(g_out.clone());
            }
            // One pass over g: its bf16 copy and, with a second bias, its column sums.
            let g16 = if wants(b2) {
                let (g16, db2) = cast_bf16_colsum(g, n, out)?;
                grads[i_b2] = Some(db2);
                g16
            } else {
                bf16_copy(g)?
            };
            if let (true, Some(a16)) = (w2.requires_grad(), &self.a16) {
                grads[2] = Some(product(&g16.t()?, a16, out, n, hid)?);
            }
            let (Some(h), Some(w2_16), true) = (&self.h, &self.w2_16, first) else {
                return Ok(grads);
            };
            let g16 = dense(&g16)?;
            let (dh16, db1) =
                if let Some(dh16) = dgelu_epilogue(self.act, &g16, w2_16, h, [n, out, hid])? {
                    // The derivative in the product's epilogue; the bias's gradient from the
                    // stored bf16 values.
                    let db1 = if wants(b1) {
                        Some(colsum_bf16(&dh16, n, hid)?)
                    } else {
                        None
                    };
                    (dh16, db1)
                } else {
                    // The activation's gradient in bf16, then its derivative, the cast and the
                    // first bias's column sums in one pass.
                    let da = product_to(&g16, w2_16, n, out, hid, DType::BF16)?;
                    let (dh, partial, chunks) = {
                        let (gh, gda) = (h.read(), da.read());
                        act_backward_bf16_colsum(
                            cuda_ref(OP, &gh)?,
                            cuda_ref(OP, &gda)?,
                            self.act.kernel(),
                            n,
                            hid,
                        )?
                    };
                    let partial = Tensor::from_storage(Storage::Cuda(partial), &[chunks, hid]);
                    drop(da);
                    let db1 = if wants(b1) {
                        Some(partial.sum(&[0], false)?)
                    } else {
                        None
                    };
                    (Tensor::from_storage(Storage::Cuda(dh), &[n, hid]), db1)
                };
            if db1.is_some() {
                grads[3] = db1;
            }
            if let (true, Some(x16)) = (w1.requires_grad(), &self.x16) {
                grads[1] = Some(product(&dh16.t()?, x16, hid, n, k)?);
            }
            if let (true, Some(w1_16)) = (x.requires_grad(), &self.w1_16) {
                grads[0] = Some(product_to(&dh16, w1_16, n, hid, k, x.dtype())?);
            }
            Ok(grads)
        }
    }
}
