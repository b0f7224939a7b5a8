//! 2-D convolution (NCHW): `y = conv2d(x, w) + b` with stride, zero padding, dilation and
//! channel groups, as PyTorch's `F.conv2d`.
//!
//! Shapes: input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, kh, kw]`, bias `[C_out]`,
//! output `[N, C_out, OH, OW]` with `OH = (H + 2 ph - dh (kh - 1) - 1) / sh + 1` (likewise OW).
//! The forward pass and both backward passes (input and weight gradients) are dedicated
//! kernels in [`crate::cpu::conv`]; the bias gradient is the sum of the output gradient over
//! N, OH and OW. Non-contiguous operands are copied to contiguous ones first.

use crate::autograd::BackwardOp;
use crate::cpu::conv::{
    conv2d_backward_bias, conv2d_backward_input_with, conv2d_backward_weight, conv2d_forward,
    ConvGeom,
};
use crate::cpu::gemm::with_bf16_products;
use crate::cpu::matmul::Gemm;
use crate::dtype::Element;
use crate::error::{invalid, shape_err, Error, Result};
use crate::ops::{check_float, check_same, unsupported};
use crate::storage::Storage;
use crate::{DType, Tensor};

/// Hyper-parameters of [`Tensor::conv2d`]; the default is stride 1, no padding, dilation 1 and
/// one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between output positions (rows, columns); at least 1.
    pub stride: (usize, usize),
    /// Zeros added on each side of the input (rows, columns).
    pub padding: (usize, usize),
    /// Spacing between kernel taps (rows, columns); at least 1.
    pub dilation: (usize, usize),
    /// Channel groups; divides both the input and the output channels.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// The typed slice of a contiguous tensor's elements (the tensor's storage guard is `s`).
pub(crate) fn typed<'a, T: Element>(
    op: &'static str,
    s: &'a Storage,
    t: &Tensor,
) -> Result<&'a [T]> {
    let c = s.cpu(op)?;
    let v = T::slice(c).ok_or(Error::DTypeMismatch {
        op,
        lhs: c.dtype(),
        rhs: T::DTYPE,
    })?;
    let l = t.layout();
    Ok(&v[l.offset()..l.offset() + l.numel()])
}

/// A new tensor of `shape` holding `v`.
pub(crate) fn tensor_of<T: Element>(v: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_cpu(T::into_storage(v), shape)
}

/// Checks the operands of a convolution and returns its geometry.
fn geometry(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: &Conv2dParams) -> Result<ConvGeom> {
    const OP: &str = "conv2d";
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 4 {
        return shape_err(OP, format!("input {xs:?} must be 4-D [N, C, H, W]"));
    }
    if ws.len() != 4 {
        return shape_err(
            OP,
            format!("weight {ws:?} must be 4-D [C_out, C_in / groups, kh, kw]"),
        );
    }
    if p.groups == 0 || p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0
    {
        return invalid(
            OP,
            format!(
                "groups, stride and dilation must be at least 1, got groups {}, stride {:?}, dilation {:?}",
                p.groups, p.stride, p.dilation
            ),
        );
    }
    if ws.contains(&0) {
        return shape_err(OP, format!("weight {ws:?} has an empty dimension"));
    }
    let g = p.groups;
    if xs[1] % g != 0 || ws[0] % g != 0 {
        return shape_err(
            OP,
            format!(
                "groups {g} must divide the input channels of {xs:?} and the output channels of weight {ws:?}"
            ),
        );
    }
    if ws[1] * g != xs[1] {
        return shape_err(
            OP,
            format!(
                "input {xs:?} has {} channels but weight {ws:?} expects {} (groups {g})",
                xs[1],
                ws[1] * g
            ),
        );
    }
    if let Some(b) = b {
        if b.shape() != [ws[0]] {
            return shape_err(
                OP,
                format!("bias {:?} must be [{}] for weight {ws:?}", b.shape(), ws[0]),
            );
        }
    }
    let (kh, kw) = (ws[2], ws[3]);
    let ekh = p.dilation.0 * (kh - 1) + 1;
    let ekw = p.dilation.1 * (kw - 1) + 1;
    let (hp, wp) = (xs[2] + 2 * p.padding.0, xs[3] + 2 * p.padding.1);
    if hp < ekh || wp < ekw {
        return shape_err(
            OP,
            format!(
                "input {xs:?} padded by {:?} is {hp}x{wp}, smaller than the kernel of weight {ws:?} with dilation {:?} ({ekh}x{ekw})",
                p.padding, p.dilation
            ),
        );
    }
    Ok(ConvGeom {
        n: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: ws[0],
        kh,
        kw,
        oh: (hp - ekh) / p.stride.0 + 1,
        ow: (wp - ekw) / p.stride.1 + 1,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: g,
    })
}

/// The convolution on CPU buffers; `bf16`: its GEMMs multiply in bf16
/// (`cpu::gemm::with_bf16_products`).
fn forward<T: Gemm>(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeom,
    bf16: bool,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let (gx, gw) = (x.read(), w.read());
    let gb = b.map(|b| b.read());
    let bias = match (&gb, b) {
        (Some(s), Some(b)) => Some(typed::<T>(OP, s, b)?),
        _ => None,
    };
    let (xs, ws) = (typed::<T>(OP, &gx, x)?, typed::<T>(OP, &gw, w)?);
    let y = with_bf16_products(bf16, || conv2d_forward(xs, ws, bias, g));
    Ok(tensor_of(y, &[g.n, g.c_out, g.oh, g.ow]))
}

impl Tensor {
    /// 2-D convolution of `self` (`[N, C_in, H, W]`) with `weight` (`[C_out, C_in / groups, kh,
    /// kw]`) plus an optional `bias` (`[C_out]`); f32 or f64. See [`Conv2dParams`].
    ///
    /// ```
    /// # use selfsup_tensor::{Tensor, DType, ops::conv::Conv2dParams};
    /// let x = Tensor::ones(&[1, 1, 4, 4], DType::F32);
    /// let w = Tensor::ones(&[2, 1, 3, 3], DType::F32);
    /// let p = Conv2dParams { padding: (1, 1), ..Default::default() };
    /// let y = x.conv2d(&w, None, p)?;
    /// assert_eq!(y.shape(), &[1, 2, 4, 4]);
    /// assert_eq!(y.to_vec::<f32>()?[0], 4.0);
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d";
        check_float(OP, self)?;
        check_same(OP, self, weight)?;
        if let Some(b) = bias {
            check_same(OP, self, b)?;
        }
        let g = geometry(self, weight, bias, &params)?;
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() {
            return gpu::conv2d(self, weight, bias, &g);
        }
        let x = self.contiguous()?;
        let w = weight.contiguous()?;
        let b = bias.map(|b| b.contiguous()).transpose()?;
        let y = match x.dtype() {
            DType::F32 => {
                // Operands rounded as `crate::precision` asks (the bias is added, not rounded);
                // at bf16 with AVX-512 BF16 the GEMMs multiply in bf16 and round them as they
                // pack them, so only the small-k products that skip the GEMM need copies.
                let hw = crate::precision::cpu_bf16_products();
                let (xr, wr) = if hw && crate::cpu::conv::forward_uses_gemm(&g) {
                    (x.clone(), w.clone())
                } else {
                    (
                        crate::precision::cpu_operand(&x)?,
                        crate::precision::cpu_operand(&w)?,
                    )
                };
                forward::<f32>(&xr, &wr, b.as_ref(), &g, hw)?
            }
            DType::F64 => forward::<f64>(&x, &w, b.as_ref(), &g, false)?,
            d => return Err(unsupported(OP, d)),
        };
        let mut inputs = vec![&x, &w];
        inputs.extend(b.as_ref());
        Ok(y.attach(&inputs, || Box::new(Conv2dBack { geom: g })))
    }
}

/// Backward of [`Tensor::conv2d`]: inputs are the contiguous `[x, w]` or `[x, w, b]`.
struct Conv2dBack {
    geom: ConvGeom,
}

/// The gradients of `[x, w]` or `[x, w, b]` (values in `inputs`; `needs[i]` says whether input
/// `i` wants its gradient); `bf16` as for [`forward`]; `bf16_cols`: the column gradient is
/// rounded to bf16 (at bf16 matmul precision, as the GPU stores it).
fn backward<T: Gemm>(
    g: &ConvGeom,
    inputs: &[Tensor],
    needs: &[bool],
    dy: &Tensor,
    bf16: bool,
    bf16_cols: bool,
) -> Result<Vec<Option<Tensor>>> {
    const OP: &str = "conv2d backward";
    let (x, w) = (&inputs[0], &inputs[1]);
    let gdy = dy.read();
    let dys = typed::<T>(OP, &gdy, dy)?;
    let dx = if needs[0] {
        let gw = w.read();
        let ws = typed::<T>(OP, &gw, w)?;
        let v = with_bf16_products(bf16, || conv2d_backward_input_with(dys, ws, g, bf16_cols));
        Some(tensor_of(v, x.shape()))
    } else {
        None
    };
    let dw = if needs[1] {
        let gx = x.read();
        let xs = typed::<T>(OP, &gx, x)?;
        let v = with_bf16_products(bf16, || conv2d_backward_weight(xs, dys, g));
        Some(tensor_of(v, w.shape()))
    } else {
        None
    };
    let mut grads = vec![dx, dw];
    if let Some(b) = inputs.get(2) {
        grads.push(needs.get(2).copied().unwrap_or(false).then(|| {
            tensor_of(
                conv2d_backward_bias(dys, g.n, g.c_out, g.out_plane()),
                b.shape(),
            )
        }));
    }
    Ok(grads)
}

impl BackwardOp for Conv2dBack {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let dy = grad.contiguous()?;
        let needs: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
        match dy.dtype() {
            DType::F32 => {
                // The backward products round their operands as the forward did: the GEMMs
                // themselves where they multiply in bf16 (the backward uses only GEMMs).
                // At bf16 the column gradient is rounded to bf16 too, as the GPU stores it.
                let cols16 =
                    crate::precision::matmul_precision() == crate::precision::MatmulPrecision::Bf16;
                let hw = crate::precision::cpu_bf16_products();
                if hw {
                    return backward::<f32>(&self.geom, inputs, &needs, &dy, true, cols16);
                }
                let p = crate::precision::cpu_operand;
                let mut rounded = vec![p(&inputs[0])?, p(&inputs[1])?];
                rounded.extend(inputs.get(2).cloned());
                // The bias's gradient is a sum of the output gradient, not a product: from
                // `dy` itself, as where the GEMMs round (and on a GPU), not its rounded copy.
                let products = [needs[0], needs[1], false];
                let mut grads = backward::<f32>(
                    &self.geom,
                    &rounded,
                    &products[..needs.len()],
                    &p(&dy)?,
                    false,
                    cols16,
                )?;
                if let (Some(b), Some(true)) = (inputs.get(2), needs.get(2)) {
                    let g = &self.geom;
                    let gdy = dy.read();
                    let dys = typed::<f32>("conv2d backward", &gdy, &dy)?;
                    grads[2] = Some(tensor_of(
                        conv2d_backward_bias(dys, g.n, g.c_out, g.out_plane()),
                        b.shape(),
                    ));
                }
                Ok(grads)
            }
            DType::F64 => backward::<f64>(&self.geom, inputs, &needs, &dy, false, false),
            d => Err(unsupported("conv2d backward", d)),
        }
    }
}

/// The GPU convolution: im2col of the whole batch into the column matrix
/// `[c_in * kh * kw, n * oh * ow]` (`kernels/conv.cu`), then with one group, no bias and one image
/// or at least 64 output positions per image (a multiple of 8), one GEMM per image (a single
/// strided-batched cuBLAS call) writing the output `[n, c_out, oh, ow]` in place; otherwise one
/// GEMM per group (a single batched call) giving the channel-major `[c_out, n * oh * ow]`, then one
/// pass to the output's layout that also adds the bias. The backward is one op too: the output
/// gradient goes to `[c_out, n * oh * ow]` once, the weight gradient is a GEMM reducing over all
/// `n * oh * ow` columns (cut into slices when its output is too small to fill the GPU), and the
/// input gradient is `Wᵀ` times it, folded back by col2im. Under
/// [`GpuFusion::Composed`](crate::ops::fusion::GpuFusion) the products are single GEMMs over all
/// columns with the layout pass, to measure what the other arrangements buy. At bf16 matmul
/// precision (f32 tensors) the columns are written in bf16 by im2col itself, and they and the
/// weight's bf16 copy are kept for the backward, whose output gradient is written in bf16 by its
/// layout pass: every product at bf16 precision without a separate cast.
/// Under [`GpuConv::Implicit`](crate::ops::fusion::GpuConv) an f32 convolution at bf16
/// precision with one group runs as implicit GEMM instead (`ops::conv_implicit`).
#[cfg(feature = "cuda")]
pub(in crate::ops) mod gpu {
    use super::*;
    use crate::cuda::conv as kernels;
    use crate::ops::fusion::GpuFusion;
    use crate::ops::{cuda_ref, dense, with_cuda};

    const OP: &str = "conv2d";

    /// The output positions per image from which the forward runs one GEMM per image (one
    /// batched call) straight into `[n, c_out, oh, ow]`, rather than one GEMM over all columns
    /// and a layout pass: at 64 and more each image's product still fills tensor-core tiles.
    const PER_IMAGE_GEMM: usize = 64;

    /// Each image's columns and output start a multiple of this many elements apart, so that
    /// every batch entry of the per-image GEMMs is 16-byte aligned (in bf16; 32 in f32), as
    /// cuBLAS's fastest tensor-core kernels require (the SmallCnn's 14x14 and 7x7 outputs are
    /// not: their forward stays one GEMM over all columns, whose rows are aligned).
    const ALIGN_ELEMS: usize = 8;

    /// `[batch, m, k] · [batch, k, n]` (views cuBLAS reads in place: row- or column-major
    /// matrices), both bf16 (f32 accumulation and output) or both the same float dtype (at the
    /// run's matmul precision).
    fn product(
        a: &Tensor,
        b: &Tensor,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Tensor> {
        product_to(a, b, batch, m, k, n, DType::F32)
    }

    /// [`product`], with bf16 operands' product stored as `out` (f32 or bf16).
    fn product_to(
        a: &Tensor,
        b: &Tensor,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        out: DType,
    ) -> Result<Tensor> {
        let (ga, gb) = (a.read(), b.read());
        let (sa, sb) = (cuda_ref(OP, &ga)?, cuda_ref(OP, &gb)?);
        let s = if a.dtype() == DType::BF16 {
            crate::cuda::matmul::matmul_bf16_to(
                sa,
                a.layout(),
                sb,
                b.layout(),
                batch,
                m,
                k,
                n,
                out,
            )?
        } else {
            crate::cuda::matmul::matmul(sa, a.layout(), sb, b.layout(), batch, m, k, n)?
        };
        Ok(Tensor::from_storage(Storage::Cuda(s), &[batch, m, n]))
    }

    /// The weight gradient `dy_t · colsᵀ` (`[groups, c_out / groups, k / groups]`), a
    /// reduction over all `n·oh·ow` columns. With one group and few output tiles for the GPU's
    /// SMs it is cut into slices (`cuda::split_k`): one strided-batched GEMM writes each
    /// slice's partial product, then they are summed in order (and a ragged tail's product
    /// added), so the whole GPU works on it whatever cuBLAS's heuristics would do with one
    /// long reduction. Otherwise (or under [`GpuFusion::Composed`]) one GEMM.
    fn weight_grad(dyt: &Tensor, cols: &Tensor, g: &ConvGeom, fused: bool) -> Result<Tensor> {
        let (groups, cog, kg, cols_n) = sizes(g);
        let sms = {
            let guard = dyt.read();
            cuda_ref(OP, &guard)?.backend.multiprocessors()
        };
        let slices = if fused && groups == 1 {
            crate::cuda::split_k::reduction_slices(cog, kg, cols_n, sms)
        } else {
            1
        };
        if slices <= 1 {
            return product(dyt, &cols.transpose(1, 2)?, groups, cog, cols_n, kg);
        }
        let (s, len) = crate::cuda::split_k::slice_plan(cols_n, slices);
        let main = s * len;
        // Slice j of the columns is `[.., j·len, (j + 1)·len)`: views, read in place.
        let a = dyt
            .narrow(2, 0, main)?
            .reshape(&[cog, s, len])?
            .permute(&[1, 0, 2])?;
        let b = cols
            .narrow(2, 0, main)?
            .reshape(&[kg, s, len])?
            .permute(&[1, 2, 0])?;
        let mut dw = product(&a, &b, s, cog, len, kg)?.sum(&[0], true)?;
        if main < cols_n {
            let t = cols_n - main;
            let (at, bt) = (dyt.narrow(2, main, t)?, cols.narrow(2, main, t)?);
            dw = dw.add(&product(&at, &bt.transpose(1, 2)?, 1, cog, t, kg)?)?;
        }
        Ok(dw)
    }

    /// The geometry's GEMM sizes: (groups, output channels per group, column rows per group,
    /// columns).
    fn sizes(g: &ConvGeom) -> (usize, usize, usize, usize) {
        let groups = g.groups;
        (
            groups,
            g.c_out / groups,
            g.c_in / groups * g.kh * g.kw,
            g.n * g.oh * g.ow,
        )
    }

    pub(super) fn conv2d(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        g: &ConvGeom,
    ) -> Result<Tensor> {
        if crate::ops::conv_implicit::applies(x, g) {
            return crate::ops::conv_implicit::conv2d(x, w, b, g);
        }
        let bf16 = x.dtype() == DType::F32
            && crate::precision::matmul_precision() == crate::precision::MatmulPrecision::Bf16;
        let (groups, cog, kg, cols_n) = sizes(g);
        let xd = dense(x)?;
        let cols = with_cuda(OP, &xd, |c| kernels::im2col(c, g, bf16))?;
        let cols = Tensor::from_storage(Storage::Cuda(cols), &[groups, kg, cols_n]);
        let wk = if bf16 {
            crate::shadow::bf16_operand(w)?
        } else {
            dense(w)?
        }
        .reshape(&[groups, cog, kg])?;
        let fused = crate::ops::fusion::gpu_fusion() == GpuFusion::Fused;
        let out_shape = [g.n, g.c_out, g.oh, g.ow];
        let per_image = g.oh * g.ow;
        let per_image_gemms =
            g.n == 1 || (per_image >= PER_IMAGE_GEMM && per_image.is_multiple_of(ALIGN_ELEMS));
        let y = if fused && groups == 1 && b.is_none() && per_image_gemms {
            // One GEMM per image, all in one strided-batched call: W · columns of image i is
            // image i's `[c_out, oh·ow]` output, already in place in `[n, c_out, oh, ow]`.
            let wn = wk.expand(&[g.n, cog, kg])?;
            let ci = cols.reshape(&[kg, g.n, per_image])?.permute(&[1, 0, 2])?;
            product(&wn, &ci, g.n, cog, kg, per_image)?.reshape(&out_shape)?
        } else {
            let yt = product(&wk, &cols, groups, cog, kg, cols_n)?;
            let bd = b.map(dense).transpose()?;
            let (gy, gb) = (yt.read(), bd.as_ref().map(|b| b.read()));
            let bs = gb.as_ref().map(|g| cuda_ref(OP, g)).transpose()?;
            let y = kernels::output(cuda_ref(OP, &gy)?, bs, g)?;
            Tensor::from_storage(Storage::Cuda(y), &out_shape)
        };
        let mut inputs = vec![x, w];
        inputs.extend(b);
        // dx needs the weight, dW the columns: keep only what the backward will use.
        let keep_cols = w.requires_grad().then_some(cols);
        let keep_w = x.requires_grad().then_some(wk);
        Ok(y.attach(&inputs, || {
            Box::new(Conv2dBackGpu {
                geom: *g,
                bf16,
                fused,
                cols: keep_cols,
                wk: keep_w,
            })
        }))
    }

    /// Appends the bias gradient of a GPU backward to `grads` when the convolution had a bias
    /// (`inputs[2]`): the output gradient `dy` summed over images and positions, or `None` when
    /// the bias needs no gradient.
    pub(in crate::ops) fn push_bias_grad(
        grads: &mut Vec<Option<Tensor>>,
        inputs: &[Tensor],
        dy: &Tensor,
    ) -> Result<()> {
        if let Some(b) = inputs.get(2) {
            grads.push(if b.requires_grad() {
                Some(dy.sum(&[0, 2, 3], false)?)
            } else {
                None
            });
        }
        Ok(())
    }

    /// The backward of [`conv2d`], holding its GEMM operands.
    struct Conv2dBackGpu {
        geom: ConvGeom,
        /// The products ran in bf16 (the kept operands are bf16 copies).
        bf16: bool,
        /// The forward ran with [`GpuFusion::Fused`]: the weight gradient's long reduction
        /// may be cut into slices ([`weight_grad`]).
        fused: bool,
        /// The columns `[groups, k / groups, n * oh * ow]`, when the weight needs a gradient.
        cols: Option<Tensor>,
        /// The weight as `[groups, c_out / groups, k / groups]`, when the input needs one.
        wk: Option<Tensor>,
    }

    impl BackwardOp for Conv2dBackGpu {
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
            let (groups, cog, kg, cols_n) = sizes(g);
            let dy = dense(grad)?;
            let want_x = x.requires_grad() && self.wk.is_some();
            let want_w = w.requires_grad() && self.cols.is_some();
            let mut grads = vec![None, None];
            if want_x || want_w {
                let dyt = with_cuda(OP, &dy, |c| kernels::grad_t(c, g, self.bf16))?;
                let dyt = Tensor::from_storage(Storage::Cuda(dyt), &[groups, cog, cols_n]);
                if let (true, Some(wk)) = (want_x, &self.wk) {
                    // At bf16 the column gradient is stored in bf16 (col2im sums it in f32),
                    // as the CPU rounds it (`cpu::conv::conv2d_backward_input`).
                    let to = if self.bf16 { DType::BF16 } else { DType::F32 };
                    let dcols =
                        product_to(&wk.transpose(1, 2)?, &dyt, groups, kg, cog, cols_n, to)?;
                    let dx = with_cuda(OP, &dcols, |c| kernels::col2im(c, g))?;
                    grads[0] = Some(Tensor::from_storage(Storage::Cuda(dx), x.shape()));
                }
                if let (true, Some(cols)) = (want_w, &self.cols) {
                    let dw = weight_grad(&dyt, cols, g, self.fused)?;
                    grads[1] = Some(dw.reshape(w.shape())?);
                }
            }
            push_bias_grad(&mut grads, inputs, &dy)?;
            Ok(grads)
        }
    }
}

#[cfg(all(test, feature = "cuda"))]
mod gpu_composition_tests {
    use super::*;

    /// A host transliteration of `im2col` in `kernels/conv.cu`: the column matrix
    /// `[c_in * kh * kw, n * oh * ow]`.
    fn im2col_host(x: &[f64], g: &ConvGeom) -> Vec<f64> {
        let mut out = Vec::new();
        for ci in 0..g.c_in {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    for img in 0..g.n {
                        for oi in 0..g.oh {
                            for oj in 0..g.ow {
                                let r = (oi * g.stride.0 + ki * g.dilation.0) as isize
                                    - g.padding.0 as isize;
                                let q = (oj * g.stride.1 + kj * g.dilation.1) as isize
                                    - g.padding.1 as isize;
                                let inside =
                                    r >= 0 && q >= 0 && (r as usize) < g.h && (q as usize) < g.w;
                                out.push(if inside {
                                    x[((img * g.c_in + ci) * g.h + r as usize) * g.w + q as usize]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The GPU's im2col + GEMM composition (with the kernel's indexing done on the host) gives
    /// the direct convolution, for groups, strides, padding and dilation.
    #[test]
    fn im2col_and_gemm_give_the_direct_convolution() {
        let mut rng = crate::Generator::new(4);
        for (p, groups) in [
            (
                Conv2dParams {
                    padding: (1, 1),
                    ..Default::default()
                },
                1,
            ),
            (
                Conv2dParams {
                    stride: (2, 1),
                    padding: (2, 0),
                    dilation: (1, 2),
                    groups: 1,
                },
                1,
            ),
            (
                Conv2dParams {
                    padding: (1, 1),
                    groups: 2,
                    ..Default::default()
                },
                2,
            ),
        ] {
            let x = Tensor::randn(&[2, 4, 7, 6], 0.0, 1.0, DType::F64, &mut rng).unwrap();
            let w = Tensor::randn(&[6, 4 / groups, 3, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
            let b = Tensor::randn(&[6], 0.0, 1.0, DType::F64, &mut rng).unwrap();
            let g = geometry(&x, &w, Some(&b), &p).unwrap();
            // The GPU's composition on the host: one product per group over the whole batch,
            // `[c_out, n * L]`, then the output's `[n, c_out, L]` plus the bias.
            let (cog, kg, cols_n) = (6 / groups, 4 / groups * 9, g.n * g.oh * g.ow);
            let cols = Tensor::from_vec(
                im2col_host(&x.to_vec::<f64>().unwrap(), &g),
                &[groups, kg, cols_n],
            )
            .unwrap();
            let yt = w
                .reshape(&[groups, cog, kg])
                .unwrap()
                .matmul(&cols)
                .unwrap();
            let y = yt
                .reshape(&[6, g.n, g.oh, g.ow])
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .add(&b.reshape(&[1, 6, 1, 1]).unwrap())
                .unwrap();
            let want = x.conv2d(&w, Some(&b), p).unwrap();
            assert_eq!(y.shape(), want.shape());
            for (a, e) in y
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .zip(want.to_vec::<f64>().unwrap())
            {
                assert!((a - e).abs() < 1e-10, "{p:?}: {a} vs {e}");
            }
        }
    }
}
