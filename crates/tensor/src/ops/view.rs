//! Views: reshape, permute/transpose, narrow, select, broadcast, squeeze/unsqueeze share the
//! input's storage (reshape copies only when the strides cannot express the new shape);
//! `contiguous` copies only when needed. Each records the backward that routes the gradient
//! back to the input's shape.

use crate::autograd::BackwardOp;
use crate::error::{shape_err, Error, Result};
use crate::layout::{numel, resolve_axis, Layout};
use crate::Tensor;

/// A view of `x` with layout `l`, recording `bw` as its backward.
fn view(x: &Tensor, l: Layout, bw: impl FnOnce() -> Box<dyn BackwardOp>) -> Tensor {
    x.with_layout(l).attach(&[x], bw)
}

/// Copies the elements of `x` into a fresh contiguous buffer (no graph).
pub(crate) fn copy_contiguous(x: &Tensor) -> Result<Tensor> {
    let s = x.read().contiguous(x.layout())?;
    Ok(Tensor::from_storage(s, x.shape()))
}

/// A zero tensor of `shape` with `g` written into the sub-view `sub` (the backward of
/// narrow/select/indexing by ranges).
pub(crate) fn scatter_view(g: &Tensor, shape: &[usize], sub: &Layout) -> Result<Tensor> {
    let out = Tensor::zeros_on(shape, g.dtype(), g.device())?;
    {
        let mut w = out.write();
        let gg = g.read();
        w.copy_strided_from(sub, &gg, g.layout())?;
    }
    Ok(out)
}

struct ReshapeBack(Vec<usize>);
impl BackwardOp for ReshapeBack {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&self.0)?)])
    }
}

struct PermuteBack(Vec<usize>);
impl BackwardOp for PermuteBack {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![Some(g.permute(&inv)?)])
    }
}

/// Backward of views that select a sub-block: scatter into zeros at the same sub-layout.
struct SubViewBack {
    name: &'static str,
    sub: Layout,
}
impl BackwardOp for SubViewBack {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(scatter_view(g, inputs[0].shape(), &self.sub)?)])
    }
}

struct BroadcastBack;
impl BackwardOp for BroadcastBack {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(crate::ops::sum_to_shape(g, inputs[0].shape())?)])
    }
}

struct IdentityBack;
impl BackwardOp for IdentityBack {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

impl Tensor {
    /// The same elements with a new shape (one entry may be `usize::MAX`... use [`Tensor::reshape_infer`]
    /// for an inferred axis). A view when the strides allow, otherwise a copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!(
                    "cannot reshape {:?} ({} elements) to {shape:?} ({} elements)",
                    self.shape(),
                    self.numel(),
                    numel(shape)
                ),
            );
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let from = self.shape().to_vec();
        match self.layout().reshape(shape) {
            Some(l) => Ok(view(self, l, || Box::new(ReshapeBack(from)))),
            None => {
                let c = self.contiguous()?;
                Ok(view(&c, Layout::contiguous(shape), || {
                    Box::new(ReshapeBack(from))
                }))
            }
        }
    }

    /// Reshape where one axis given as `-1` is inferred.
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let n_infer = shape.iter().filter(|&&d| d < 0).count();
        if n_infer > 1 || (n_infer == 1 && (known == 0 || self.numel() % known != 0)) {
            return shape_err(
                "reshape",
                format!("cannot reshape {:?} to {shape:?}", self.shape()),
            );
        }
        let s: Vec<usize> = shape
            .iter()
            .map(|&d| {
                if d < 0 {
                    self.numel() / known.max(1)
                } else {
                    d as usize
                }
            })
            .collect();
        self.reshape(&s)
    }

    /// Reorders the axes (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let l = self.layout().permute(perm)?;
        let p = perm.to_vec();
        Ok(view(self, l, || Box::new(PermuteBack(p))))
    }

    /// Swaps two axes (a view; negative axes count from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (
            resolve_axis("transpose", a, self.shape())?,
            resolve_axis("transpose", b, self.shape())?,
        );
        let mut p: Vec<usize> = (0..self.rank()).collect();
        p.swap(a, b);
        self.permute(&p)
    }

    /// Transpose of the last two axes.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return shape_err(
                "t",
                format!("needs at least 2 axes, got shape {:?}", self.shape()),
            );
        }
        self.transpose(-2, -1)
    }

    /// Elements `start..start + len` along `axis` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = resolve_axis("narrow", axis, self.shape())?;
        let l = self.layout().narrow(a, start, len)?;
        let sub = Layout::contiguous(self.shape()).narrow(a, start, len)?;
        Ok(view(self, l, || {
            Box::new(SubViewBack {
                name: "narrow",
                sub,
            })
        }))
    }

    /// Index `i` along `axis`, removing that axis (a view).
    pub fn select(&self, axis: isize, i: usize) -> Result<Tensor> {
        let a = resolve_axis("select", axis, self.shape())?;
        let l = self.layout().select(a, i)?;
        let sub = Layout::contiguous(self.shape()).select(a, i)?;
        Ok(view(self, l, || {
            Box::new(SubViewBack {
                name: "select",
                sub,
            })
        }))
    }

    /// Repeats size-1 axes (and prepends axes) to reach `shape`, without copying.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let l = self.layout().broadcast_to(shape)?;
        Ok(view(self, l, || Box::new(BroadcastBack)))
    }

    /// Alias of [`Tensor::broadcast_to`] (PyTorch's name).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Removes axis `axis`, which must have size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = resolve_axis("squeeze", axis, self.shape())?;
        if self.shape()[a] != 1 {
            return shape_err(
                "squeeze",
                format!(
                    "axis {a} of shape {:?} has size {}, not 1",
                    self.shape(),
                    self.shape()[a]
                ),
            );
        }
        let mut s = self.shape().to_vec();
        s.remove(a);
        self.reshape(&s)
    }

    /// Inserts a size-1 axis at `axis` (`0..=rank`; negative counts from the end, `-1` appends).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let r = self.rank() as isize;
        let a = if axis < 0 { axis + r + 1 } else { axis };
        if a < 0 || a > r {
            return Err(Error::Axis {
                op: "unsqueeze",
                axis,
                shape: self.shape().into(),
                rank: self.rank(),
            });
        }
        let mut s = self.shape().to_vec();
        s.insert(a as usize, 1);
        self.reshape(&s)
    }

    /// Merges axes `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let (s, e) = (
            resolve_axis("flatten", start, self.shape())?,
            resolve_axis("flatten", end, self.shape())?,
        );
        if s > e {
            return shape_err("flatten", format!("start axis {s} is after end axis {e}"));
        }
        let mut shape = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// A contiguous tensor with the same values: `self` when already contiguous, else a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        Ok(copy_contiguous(self)?.attach(&[self], || Box::new(IdentityBack)))
    }

    /// A contiguous copy in a fresh buffer (recorded: gradients flow through it).
    pub fn copy(&self) -> Result<Tensor> {
        Ok(copy_contiguous(self)?.attach(&[self], || Box::new(IdentityBack)))
    }

    /// Writes `src`'s values into this tensor's elements in place (shapes must match; no
    /// gradient is recorded). Used for optimiser steps, EMA updates and loading weights.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        crate::ops::check_same("assign", self, src)?;
        if src.shape() != self.shape() {
            return shape_err(
                "assign",
                format!(
                    "source shape {:?} differs from destination shape {:?}",
                    src.shape(),
                    self.shape()
                ),
            );
        }
        let src = if self.same_storage(src) {
            copy_contiguous(src)?
        } else {
            src.clone()
        };
        let mut w = self.write();
        let s = src.read();
        w.copy_strided_from(self.layout(), &s, src.layout())?;
        Ok(())
    }
}
