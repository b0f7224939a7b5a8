//! 2-D pooling over NCHW tensors: max pooling (padding counts as -inf, argmax saved for
//! backward), average pooling (PyTorch's `count_include_pad` choice), adaptive average pooling
//! (PyTorch's bins) and global average pooling (`[N, C, H, W] -> [N, C]`), each with its
//! backward. Output sizes follow PyTorch with `ceil_mode = false`:
//! `OH = (H + 2 ph - kh) / sh + 1`. Non-contiguous inputs are copied to contiguous ones first.

use std::sync::Arc;

use crate::autograd::BackwardOp;
use crate::cpu::pool::{
    avg_pool_backward, avg_pool_forward, max_pool_backward, max_pool_forward, AxisWindows,
    PoolWindows,
};
use crate::dtype::Float;
use crate::error::{invalid, shape_err, Result};
use crate::ops::conv::{tensor_of, typed};
use crate::ops::{check_float, unsupported};
use crate::{DType, Tensor};

/// `[N, C, H, W]` of a pooling input, or an error naming `op`.
fn nchw(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    check_float(op, x)?;
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => shape_err(
            op,
            format!("input {:?} must be 4-D [N, C, H, W]", x.shape()),
        ),
    }
}

/// Sliding windows for a (kernel, stride, padding) pooling, checked as PyTorch does.
fn sliding(
    op: &'static str,
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<PoolWindows> {
    let [_, _, h, w] = nchw(op, x)?;
    if kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
        return invalid(
            op,
            format!("kernel {kernel:?} and stride {stride:?} must be at least 1"),
        );
    }
    if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
        return invalid(
            op,
            format!("padding {padding:?} must be at most half of kernel {kernel:?}"),
        );
    }
    if h + 2 * padding.0 < kernel.0 || w + 2 * padding.1 < kernel.1 {
        return shape_err(
            op,
            format!(
                "input {:?} padded by {padding:?} is smaller than kernel {kernel:?}",
                x.shape()
            ),
        );
    }
    Ok(PoolWindows::new(
        AxisWindows::Sliding {
            len: h,
            kernel: kernel.0,
            stride: stride.0,
            pad: padding.0,
        },
        AxisWindows::Sliding {
            len: w,
            kernel: kernel.1,
            stride: stride.1,
            pad: padding.1,
        },
    ))
}

/// Max pooling forward in `T`: output tensor and argmax positions.
fn max_forward<T: Float>(x: &Tensor, win: &PoolWindows) -> Result<(Tensor, Vec<u32>)> {
    let [n, c, h, w] = nchw("max_pool2d", x)?;
    let g = x.read();
    let (y, idx) = max_pool_forward(typed::<T>("max_pool2d", &g, x)?, n * c, h, w, win);
    Ok((tensor_of(y, &[n, c, win.rows.len(), win.cols.len()]), idx))
}

/// Backward of max pooling: routes each output gradient to its saved argmax.
struct MaxPoolBack {
    idx: Arc<Vec<u32>>,
}

fn max_backward<T: Float>(idx: &[u32], x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = nchw("max_pool2d backward", x)?;
    let g = dy.read();
    let dys = typed::<T>("max_pool2d backward", &g, dy)?;
    Ok(tensor_of(
        max_pool_backward(dys, idx, n * c, h * w),
        x.shape(),
    ))
}

impl BackwardOp for MaxPoolBack {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let dy = grad.contiguous()?;
        let dx = match dy.dtype() {
            DType::F32 => max_backward::<f32>(&self.idx, &inputs[0], &dy)?,
            DType::F64 => max_backward::<f64>(&self.idx, &inputs[0], &dy)?,
            d => return Err(unsupported("max_pool2d backward", d)),
        };
        Ok(vec![Some(dx)])
    }
}

/// An average pooling: its windows and divisor rule (see [`avg_pool_forward`]).
struct AvgPool {
    name: &'static str,
    win: PoolWindows,
    fixed_divisor: Option<usize>,
    out_shape: Vec<usize>,
}

impl AvgPool {
    fn forward<T: Float>(&self, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = nchw(self.name, x)?;
        let g = x.read();
        let xs = typed::<T>(self.name, &g, x)?;
        let y = avg_pool_forward(xs, n * c, h, w, &self.win, self.fixed_divisor);
        Ok(tensor_of(y, &self.out_shape))
    }

    fn backward_t<T: Float>(&self, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = nchw(self.name, x)?;
        let g = dy.read();
        let dys = typed::<T>(self.name, &g, dy)?;
        let dx = avg_pool_backward(dys, n * c, h, w, &self.win, self.fixed_divisor);
        Ok(tensor_of(dx, x.shape()))
    }

    /// Runs the pooling on `x`, recording its backward.
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if !x.device().is_cpu() {
            return gpu::avg_pool(self, x);
        }
        let x = x.contiguous()?;
        let y = match x.dtype() {
            DType::F32 => self.forward::<f32>(&x)?,
            DType::F64 => self.forward::<f64>(&x)?,
            d => return Err(unsupported(self.name, d)),
        };
        Ok(y.attach(&[&x], || Box::new(self)))
    }
}

impl BackwardOp for AvgPool {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(
        &self,
        inputs: &[Tensor],
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let dy = grad.contiguous()?;
        let dx = match dy.dtype() {
            DType::F32 => self.backward_t::<f32>(&inputs[0], &dy)?,
            DType::F64 => self.backward_t::<f64>(&inputs[0], &dy)?,
            d => return Err(unsupported(self.name, d)),
        };
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// Max pooling of `[N, C, H, W]` with `kernel`, `stride` and `padding` (rows, columns);
    /// padding counts as -inf and must be at most half the kernel. The gradient goes to the
    /// first maximum of each window.
    ///
    /// ```
    /// # use selfsup_tensor::Tensor;
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4])?;
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0))?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![5.0, 7.0, 13.0, 15.0]);
    /// # Ok::<(), selfsup_tensor::Error>(())
    /// ```
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        let win = sliding(OP, self, kernel, stride, padding)?;
        let [_, _, h, w] = nchw(OP, self)?;
        if h * w > u32::MAX as usize {
            return invalid(
                OP,
                format!(
                    "input {:?} has planes too large for u32 indices",
                    self.shape()
                ),
            );
        }
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() {
            return gpu::max_pool(self, &win);
        }
        let x = self.contiguous()?;
        let (y, idx) = match x.dtype() {
            DType::F32 => max_forward::<f32>(&x, &win)?,
            DType::F64 => max_forward::<f64>(&x, &win)?,
            d => return Err(unsupported(OP, d)),
        };
        Ok(y.attach(&[&x], || Box::new(MaxPoolBack { idx: Arc::new(idx) })))
    }

    /// Average pooling of `[N, C, H, W]` with `kernel`, `stride` and zero `padding` (at most
    /// half the kernel). With `count_include_pad` (PyTorch's default, `true`) every window
    /// divides by `kh * kw`; otherwise by the number of input elements it covers.
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        count_include_pad: bool,
    ) -> Result<Tensor> {
        const OP: &str = "avg_pool2d";
        let win = sliding(OP, self, kernel, stride, padding)?;
        let s = self.shape();
        AvgPool {
            name: OP,
            out_shape: vec![s[0], s[1], win.rows.len(), win.cols.len()],
            win,
            fixed_divisor: count_include_pad.then_some(kernel.0 * kernel.1),
        }
        .apply(self)
    }

    /// Adaptive average pooling of `[N, C, H, W]` to `[N, C, oh, ow]` with PyTorch's bins:
    /// output row `i` averages input rows `floor(i H / oh)..ceil((i + 1) H / oh)`.
    pub fn adaptive_avg_pool2d(&self, output: (usize, usize)) -> Result<Tensor> {
        const OP: &str = "adaptive_avg_pool2d";
        let [n, c, h, w] = nchw(OP, self)?;
        if output.0 == 0 || output.1 == 0 || h == 0 || w == 0 {
            return shape_err(
                OP,
                format!(
                    "cannot pool input {:?} to output size {output:?}",
                    self.shape()
                ),
            );
        }
        AvgPool {
            name: OP,
            win: PoolWindows::new(
                AxisWindows::Adaptive {
                    len: h,
                    out: output.0,
                },
                AxisWindows::Adaptive {
                    len: w,
                    out: output.1,
                },
            ),
            fixed_divisor: None,
            out_shape: vec![n, c, output.0, output.1],
        }
        .apply(self)
    }

    /// Mean over the spatial axes: `[N, C, H, W] -> [N, C]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        const OP: &str = "global_avg_pool2d";
        let [n, c, h, w] = nchw(OP, self)?;
        if h == 0 || w == 0 {
            return shape_err(OP, format!("input {:?} has an empty plane", self.shape()));
        }
        AvgPool {
            name: OP,
            win: PoolWindows::new(
                AxisWindows::Adaptive { len: h, out: 1 },
                AxisWindows::Adaptive { len: w, out: 1 },
            ),
            fixed_divisor: None,
            out_shape: vec![n, c],
        }
        .apply(self)
    }
}

/// The GPU arms of the poolings (`kernels/pool.cu`).
#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::cuda::pool::{self as k, PoolShape};
    use crate::storage::Storage;

    /// The dense input and the kernels' description of the pooling.
    fn prepare(
        op: &'static str,
        x: &Tensor,
        win: &PoolWindows,
        fixed_div: usize,
    ) -> Result<(Tensor, PoolShape)> {
        let [n, c, _, _] = nchw(op, x)?;
        Ok((crate::ops::dense(x)?, PoolShape::new(win, n * c, fixed_div)))
    }

    pub(super) fn max_pool(x: &Tensor, win: &PoolWindows) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        check_float(OP, x)?;
        let (xd, shape) = prepare(OP, x, win, 0)?;
        let (y, idx) = crate::ops::with_cuda(OP, &xd, |s| k::max_forward(s, &shape))?;
        let s = x.shape();
        let (oh, ow) = shape.out();
        let y = Tensor::from_storage(Storage::Cuda(y), &[s[0], s[1], oh, ow]);
        let idx = Tensor::from_storage(Storage::Cuda(idx), y.shape());
        Ok(y.attach(&[x], || Box::new(MaxBack { shape, idx })))
    }

    struct MaxBack {
        shape: PoolShape,
        idx: Tensor,
    }

    impl BackwardOp for MaxBack {
        fn name(&self) -> &'static str {
            "max_pool2d"
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let dy = crate::ops::dense(grad)?;
            let dx = crate::ops::with_cuda("max_pool2d", &dy, |d| {
                crate::ops::with_cuda("max_pool2d", &self.idx, |i| {
                    k::max_backward(d, i, &self.shape)
                })
            })?;
            Ok(vec![Some(Tensor::from_storage(
                Storage::Cuda(dx),
                inputs[0].shape(),
            ))])
        }
    }

    pub(super) fn avg_pool(p: AvgPool, x: &Tensor) -> Result<Tensor> {
        check_float(p.name, x)?;
        let (xd, shape) = prepare(p.name, x, &p.win, p.fixed_divisor.unwrap_or(0))?;
        let y = crate::ops::with_cuda(p.name, &xd, |s| k::avg_forward(s, &shape))?;
        let y = Tensor::from_storage(Storage::Cuda(y), &p.out_shape);
        let name = p.name;
        Ok(y.attach(&[x], || Box::new(AvgBack { name, shape })))
    }

    struct AvgBack {
        name: &'static str,
        shape: PoolShape,
    }

    impl BackwardOp for AvgBack {
        fn name(&self) -> &'static str {
            self.name
        }
        fn backward(
            &self,
            inputs: &[Tensor],
            _: &Tensor,
            grad: &Tensor,
        ) -> Result<Vec<Option<Tensor>>> {
            let dy = crate::ops::dense(grad)?;
            let dx = crate::ops::with_cuda(self.name, &dy, |d| k::avg_backward(d, &self.shape))?;
            Ok(vec![Some(Tensor::from_storage(
                Storage::Cuda(dx),
                inputs[0].shape(),
            ))])
        }
    }
}
