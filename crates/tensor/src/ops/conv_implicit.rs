//! The GPU convolution as implicit GEMM on the tensor cores (`kernels/conv_mma.cu`, launched by
//! [`crate::cuda::conv_mma`]), chosen by [`GpuConv::Implicit`](crate::ops::fusion::GpuConv) for
//! f32 tensors at bf16 matmul precision with one group: the forward, the input gradient and the
//! weight gradient each gather their operands from `x` and `dy` as they load them (the weight
//! is packed as bf16 rows first, per stride phase for the input gradient), so none of the column matrices of the im2col path (`ops::conv`) is written, and the
//! backward keeps the input (f32) rather than its columns (bf16, `kh·kw` times as many
//! elements). The weight gradient's reduction over all `n·oh·ow` positions is cut into slices
//! when its output would not fill the GPU (as `cuda::split_k` plans for the im2col path), their
//! partial products summed in order.

use crate::autograd::BackwardOp;
use crate::cpu::conv::ConvGeom;
use crate::cuda::conv_mma as kernels;
use crate::error::Result;
use crate::ops::fusion::{gpu_conv, GpuConv};
use crate::ops::{cuda_ref, dense, with_cuda};
use crate::storage::Storage;
use crate::{DType, Tensor};

const OP: &str = "conv2d";

/// Whether `conv2d` of f32 `x` with geometry `g` runs here: at bf16 matmul precision under
/// [`GpuConv::Implicit`], one group, kernel sides of at most 15, sizes within the kernels'
/// 32-bit indexing, on a GPU of
/// compute capability 8.0 or later (bf16 `mma.sync`); otherwise im2col + cuBLAS runs.
pub(crate) fn applies(x: &Tensor, g: &ConvGeom) -> bool {
    x.dtype() == DType::F32
        && crate::precision::matmul_precision() == crate::precision::MatmulPrecision::Bf16
        && gpu_conv() == GpuConv::Implicit
        && kernels::fits(g)
        && with_cuda(OP, x, |c| Ok(c.backend.capability().0 >= 8)).unwrap_or(false)
}

/// `conv2d(x, w) + b` on the GPU by implicit GEMM (see the module docs); the caller checked
/// [`applies`].
pub(crate) fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &ConvGeom) -> Result<Tensor> {
    let xd = dense(x)?;
    let wd = dense(&w.detach())?;
    let bd = b.map(dense).transpose()?;
    let y = {
        let (gx, gw) = (xd.read(), wd.read());
        let gb = bd.as_ref().map(|b| b.read());
        let bs = gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?;
        let packed = kernels::pack_weight(cuda_ref(OP, &gw)?, g)?;
        kernels::forward(cuda_ref(OP, &gx)?, &packed, bs, g)?
    };
    let y = Tensor::from_storage(Storage::Cuda(y), &[g.n, g.c_out, g.oh, g.ow]);
    let mut inputs = vec![x, w];
    inputs.extend(b);
    // dx needs the weight, dW the input: keep only what the backward will use.
    let keep_x = w.requires_grad().then_some(xd);
    let keep_w = x.requires_grad().then_some(wd);
    Ok(y.attach(&inputs, || {
        Box::new(Conv2dBackImplicit {
            geom: *g,
            x: keep_x,
            w: keep_w,
        })
    }))
}

/// The backward of [`conv2d`], holding its operands.
struct Conv2dBackImplicit {
    geom: ConvGeom,
    /// The dense f32 input, when the weight needs a gradient.
    x: Option<Tensor>,
    /// The dense f32 weight `[c_out, c_in, kh, kw]`, when the input needs a gradient (packed for
    /// the input gradient's product there).
    w: Option<Tensor>,
}

impl BackwardOp for Conv2dBackImplicit {
    fn name(&self) -> &'static str {
        OP
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let g = &self.geom;
        let (x, w) = (&inputs[0], &inputs[1]);
        let dy = dense(grad)?;
        let mut grads = vec![None, None];
        if let (true, Some(wd)) = (x.requires_grad(), &self.w) {
            let gw = wd.read();
            let packed = kernels::pack_weight_t(cuda_ref(OP, &gw)?, g)?;
            let dx = with_cuda(OP, &dy, |d| kernels::input_grad(d, &packed, g))?;
            grads[0] = Some(Tensor::from_storage(Storage::Cuda(dx), x.shape()));
        }
        if let (true, Some(xd)) = (w.requires_grad(), &self.x) {
            let k = g.c_in * g.kh * g.kw;
            let sms = with_cuda(OP, &dy, |d| Ok(d.backend.multiprocessors()))?;
            let want = crate::cuda::split_k::reduction_slices(g.c_out, k, g.n * g.oh * g.ow, sms);
            let (part, s) = {
                let gx = xd.read();
                let xs = cuda_ref(OP, &gx)?;
                with_cuda(OP, &dy, |d| kernels::weight_grad_partials(d, xs, g, want))?
            };
            let part = Tensor::from_storage(Storage::Cuda(part), &[s, g.c_out, k]);
            let dw = if s == 1 { part } else { part.sum(&[0], false)? };
            grads[1] = Some(dw.reshape(w.shape())?);
        }
        crate::ops::conv::gpu::push_bias_grad(&mut grads, inputs, &dy)?;
        Ok(grads)
    }
}
