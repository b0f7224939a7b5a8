//! Reductions over any set of axes, with `keepdim`: sum, mean, max/min (with argmax/argmin),
//! var/std, logsumexp. An empty axis list means every axis.

use crate::autograd::BackwardOp;
use crate::cpu::reduce::{arg_rows, reduce_leading, reduce_rows, ReduceKind};
use crate::cpu::strided::contiguous_slice;
use crate::error::{invalid, Result};
use crate::layout::{numel, resolve_axis};
use crate::ops::float_map;
use crate::storage::{CpuStorage, Storage};
use crate::Tensor;

/// Axes to reduce, sorted and deduplicated, plus the output shapes with and without kept axes.
struct Plan {
    axes: Vec<usize>,
    keep_shape: Vec<usize>,
    out_shape: Vec<usize>,
    perm: Vec<usize>,
    len: usize,
}

fn plan(op: &'static str, x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Plan> {
    let shape = x.shape();
    let mut ax: Vec<usize> = if axes.is_empty() {
        (0..shape.len()).collect()
    } else {
        axes.iter()
            .map(|&a| resolve_axis(op, a, shape))
            .collect::<Result<_>>()?
    };
    ax.sort_unstable();
    ax.dedup();
    let keep_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if ax.contains(&i) { 1 } else { d })
        .collect();
    let out_shape: Vec<usize> = if keepdim {
        keep_shape.clone()
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !ax.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let mut perm: Vec<usize> = (0..shape.len()).filter(|i| !ax.contains(i)).collect();
    perm.extend(&ax);
    let len = ax.iter().map(|&a| shape[a]).product();
    Ok(Plan {
        axes: ax,
        keep_shape,
        out_shape,
        perm,
        len,
    })
}

fn reduce_forward(op: &'static str, x: &Tensor, p: &Plan, kind: ReduceKind) -> Result<Storage> {
    #[cfg(feature = "cuda")]
    if let Storage::Cuda(c) = &*x.read() {
        let l = x.layout().permute(&p.perm)?;
        let rows = numel(&p.keep_shape);
        return Ok(Storage::Cuda(crate::cuda::reduce::rows(
            op, kind, c, &l, rows, p.len,
        )?));
    }
    // Leading axes of a contiguous tensor (a bias gradient over the batch): combine whole rows
    // instead of transposing the reduced axes to the end.
    let j = p.axes.len();
    if x.is_contiguous() && j < x.rank() && p.axes.iter().enumerate().all(|(i, &a)| i == a) {
        let rows: usize = x.shape()[..j].iter().product();
        let cols: usize = x.shape()[j..].iter().product();
        let off = x.layout().offset();
        let g = x.read();
        return Ok(Storage::Cpu(float_map!(op, g.cpu(op)?, v => {
            reduce_leading(&v[off..off + rows * cols], rows, cols, kind)
        })));
    }
    let l = x.layout().permute(&p.perm)?;
    let g = x.read();
    Ok(Storage::Cpu(float_map!(op, g.cpu(op)?, v => {
        let data = contiguous_slice(&v[..], &l);
        reduce_rows(&data, numel(&p.keep_shape), p.len, kind)
    })))
}

struct SumBack {
    keep_shape: Vec<usize>,
}
impl BackwardOp for SumBack {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(
            g.reshape(&self.keep_shape)?
                .broadcast_to(inputs[0].shape())?,
        )])
    }
}

/// Max/min backward: the gradient goes to the extreme elements, shared equally between ties.
struct ExtremeBack {
    keep_shape: Vec<usize>,
    axes: Vec<isize>,
}
impl BackwardOp for ExtremeBack {
    fn name(&self) -> &'static str {
        "max/min"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let mask = x.eq(&out.reshape(&self.keep_shape)?)?;
        let count = mask.sum(&self.axes, true)?;
        let share = g.reshape(&self.keep_shape)?.div(&count)?;
        Ok(vec![Some(mask.mul(&share)?)])
    }
}

impl Tensor {
    /// Sum over `axes` (all axes if empty).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let p = plan("sum", self, axes, keepdim)?;
        let s = reduce_forward("sum", self, &p, ReduceKind::Sum)?;
        let keep_shape = p.keep_shape.clone();
        Ok(Tensor::from_op(s, &p.out_shape, &[self], || {
            Box::new(SumBack { keep_shape })
        }))
    }

    /// Sum of every element, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&[], false)
    }

    /// Mean over `axes` (all axes if empty).
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let p = plan("mean", self, axes, keepdim)?;
        if p.len == 0 {
            return invalid(
                "mean",
                format!("mean over empty axes of shape {:?}", self.shape()),
            );
        }
        self.sum(axes, keepdim)?.mul_scalar(1.0 / p.len as f64)
    }

    /// Mean of every element.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&[], false)
    }

    fn extreme(
        &self,
        op: &'static str,
        axes: &[isize],
        keepdim: bool,
        kind: ReduceKind,
    ) -> Result<Tensor> {
        let p = plan(op, self, axes, keepdim)?;
        if p.len == 0 {
            return invalid(
                op,
                format!("{op} over an empty axis of shape {:?}", self.shape()),
            );
        }
        let s = reduce_forward(op, self, &p, kind)?;
        let keep_shape = p.keep_shape.clone();
        let axes: Vec<isize> = p.axes.iter().map(|&a| a as isize).collect();
        Ok(Tensor::from_op(s, &p.out_shape, &[self], || {
            Box::new(ExtremeBack { keep_shape, axes })
        }))
    }

    /// Maximum over `axes` (all if empty); ties share the gradient.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("max", axes, keepdim, ReduceKind::Max)
    }

    /// Minimum over `axes` (all if empty); ties share the gradient.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.extreme("min", axes, keepdim, ReduceKind::Min)
    }

    fn arg(&self, op: &'static str, axis: isize, keepdim: bool, max: bool) -> Result<Tensor> {
        let p = plan(op, self, &[axis], keepdim)?;
        if p.len == 0 {
            return invalid(
                op,
                format!("{op} over an empty axis of shape {:?}", self.shape()),
            );
        }
        let l = self.layout().permute(&p.perm)?;
        let g = self.read();
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(c) = &*g {
            let rows = numel(&p.keep_shape);
            let s = crate::cuda::reduce::arg_rows(op, max, c, &l, rows, p.len)?;
            return Ok(Tensor::from_storage(Storage::Cuda(s), &p.out_shape));
        }
        let idx = match g.cpu(op)? {
            CpuStorage::F32(v) => arg_rows(&contiguous_slice(&v[..], &l), p.len, max),
            CpuStorage::F64(v) => arg_rows(&contiguous_slice(&v[..], &l), p.len, max),
            other => return Err(crate::ops::unsupported(op, other.dtype())),
        };
        Ok(Tensor::from_cpu(CpuStorage::I64(idx), &p.out_shape))
    }

    /// Index (i64) of the maximum along `axis` (first one on ties).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg("argmax", axis, keepdim, true)
    }

    /// Index (i64) of the minimum along `axis` (first one on ties).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg("argmin", axis, keepdim, false)
    }

    /// Variance over `axes`, with Bessel's correction when `unbiased`.
    pub fn var(&self, axes: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let p = plan("var", self, axes, keepdim)?;
        let n = p.len as f64 - if unbiased { 1.0 } else { 0.0 };
        if n <= 0.0 {
            return invalid(
                "var",
                format!(
                    "needs more than {} element(s) along the reduced axes of {:?}",
                    if unbiased { 1 } else { 0 },
                    self.shape()
                ),
            );
        }
        let d = self.sub(&self.mean(axes, true)?)?;
        d.sqr()?.sum(axes, keepdim)?.mul_scalar(1.0 / n)
    }

    /// Standard deviation over `axes`.
    pub fn std(&self, axes: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        self.var(axes, unbiased, keepdim)?.sqrt()
    }

    /// log(sum(exp(x))) over `axes`, computed stably.
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let m = self.detach().max(axes, true)?;
        // Rows of all -inf would give NaN from inf - inf: shift them by 0 instead.
        let finite = m.abs()?.lt_scalar(f64::INFINITY)?;
        let m = m.where_(&finite, &Tensor::zeros_on(&[], m.dtype(), m.device())?)?;
        let s = self.sub(&m)?.exp()?.sum(axes, true)?.log()?.add(&m)?;
        if keepdim {
            Ok(s)
        } else {
            let p = plan("logsumexp", self, axes, false)?;
            s.reshape(&p.out_shape)
        }
    }
}
