//! Softmax and log-softmax along one axis (fused, numerically stable), with backward
//! `dx = y * (g - sum(g * y))` and `dx = g - softmax * sum(g)` respectively.

use crate::autograd::BackwardOp;
use crate::cpu::softmax::softmax_rows;
use crate::cpu::strided::contiguous_slice;
use crate::error::Result;
use crate::layout::resolve_axis;
use crate::ops::float_map;
use crate::storage::Storage;
use crate::Tensor;

struct SoftmaxBack {
    axis: isize,
    log: bool,
}

impl BackwardOp for SoftmaxBack {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(&self, _: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let y = y.detach();
        let gx = if self.log {
            g.sub(&y.exp()?.mul(&g.sum(&[self.axis], true)?)?)?
        } else {
            y.mul(&g.sub(&g.mul(&y)?.sum(&[self.axis], true)?)?)?
        };
        Ok(vec![Some(gx)])
    }
}

fn softmax_impl(x: &Tensor, axis: isize, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    let a = resolve_axis(op, axis, x.shape())?;
    let last = x.rank() - 1;
    // Move the axis last, compute over contiguous rows, move it back.
    let xt = if a == last {
        x.detach()
    } else {
        x.detach().transpose(a as isize, last as isize)?
    };
    let len = x.shape()[a];
    let s = {
        let g = xt.read();
        let l = xt.layout();
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(c) = &*g {
            let rows = l.numel() / len.max(1);
            let s = crate::cuda::rows::softmax(c, l, rows, len, log)?;
            drop(g);
            return finish(x, Storage::Cuda(s), &xt, a, last, log);
        }
        Storage::Cpu(
            float_map!(op, g.cpu(op)?, v => softmax_rows(&contiguous_slice(&v[..], l), len, log)),
        )
    };
    finish(x, s, &xt, a, last, log)
}

/// Wraps the rows computed for `xt` (the axis moved last) back into `x`'s axis order.
fn finish(x: &Tensor, s: Storage, xt: &Tensor, a: usize, last: usize, log: bool) -> Result<Tensor> {
    let yt = Tensor::from_storage(s, xt.shape());
    let y = if a == last {
        yt
    } else {
        yt.transpose(a as isize, last as isize)?
    };
    Ok(y.attach(&[x], || {
        Box::new(SoftmaxBack {
            axis: a as isize,
            log,
        })
    }))
}

impl Tensor {
    /// Softmax along `axis`.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        softmax_impl(self, axis, false)
    }

    /// Log-softmax along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        softmax_impl(self, axis, true)
    }
}
