//! Indexing: index_select (and embedding lookup), gather, their scatter-add adjoints, one_hot,
//! and joining/splitting: concat, stack, split, chunk.

use crate::autograd::BackwardOp;
use crate::cpu::index;
use crate::error::{shape_err, Error, Result};
use crate::layout::{resolve_axis, Layout};
use crate::ops::float_map;
use crate::storage::{CpuStorage, Storage};
use crate::{with_cpu, DType, Tensor};

/// Reads an integer index tensor as `usize`s, checking each against `size`.
fn read_ids(op: &'static str, ids: &Tensor, size: usize) -> Result<Vec<usize>> {
    let raw: Vec<i64> = match ids.dtype() {
        DType::I64 => ids.to_vec::<i64>()?,
        DType::U32 => ids.to_vec::<u32>()?.into_iter().map(i64::from).collect(),
        d => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: d,
                supported: "i64 or u32 indices",
            })
        }
    };
    raw.into_iter()
        .map(|i| {
            if i < 0 || i as usize >= size {
                Err(Error::Index { op, index: i, size })
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

/// Indices as a backward pass keeps them: checked on the host, or left on the GPU.
enum Ids {
    Host(Vec<usize>),
    /// i64, dense, on the GPU the op ran on; never read back (out-of-range entries give NaN
    /// rows forward and are skipped backward by the kernels).
    #[cfg(feature = "cuda")]
    Device(Tensor),
}

/// Integer indices that already live on `device`, as the dense i64 tensor the kernels read.
#[cfg(feature = "cuda")]
fn device_ids(op: &'static str, ids: &Tensor) -> Result<Tensor> {
    match ids.dtype() {
        DType::I64 => crate::ops::dense(ids),
        DType::U32 => ids.to_dtype(DType::I64),
        d => Err(Error::UnsupportedDType {
            op,
            dtype: d,
            supported: "i64 or u32 indices",
        }),
    }
}

/// Checked indices as an i64 tensor on `device` (for the GPU kernels).
#[cfg(feature = "cuda")]
fn ids_on(ids: &[usize], shape: &[usize], device: crate::Device) -> Result<Tensor> {
    Tensor::from_vec(ids.iter().map(|&i| i as i64).collect::<Vec<i64>>(), shape)?.to_device(device)
}

/// Runs a GPU index kernel on `t` (made dense) and `ids` (i64 on the same device).
#[cfg(feature = "cuda")]
fn on_gpu(
    t: &Tensor,
    ids: &Tensor,
    g: crate::cuda::index::IndexGeom,
    f: fn(
        &crate::cuda::CudaStorage,
        &crate::cuda::CudaStorage,
        crate::cuda::index::IndexGeom,
    ) -> Result<crate::cuda::CudaStorage>,
) -> Result<Storage> {
    let t = crate::ops::dense(t)?;
    let (gt, gi) = (t.read(), ids.read());
    match (&*gt, &*gi) {
        (Storage::Cuda(ct), Storage::Cuda(ci)) => Ok(Storage::Cuda(f(ct, ci, g)?)),
        _ => Err(crate::storage::no_kernel("index", t.device())),
    }
}

fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

struct IndexSelectBack {
    axis: usize,
    ids: Ids,
}
impl BackwardOp for IndexSelectBack {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![
            Some(index_add_raw(inputs[0].shape(), self.axis, &self.ids, g)?),
            None,
        ])
    }
}

/// Zeros of `shape` with rows of `src` added at `ids` along `axis`.
fn index_add_raw(shape: &[usize], axis: usize, ids: &Ids, src: &Tensor) -> Result<Tensor> {
    let (outer, dim, inner) = split3(shape, axis);
    let ids = match ids {
        Ids::Host(v) => v,
        #[cfg(feature = "cuda")]
        Ids::Device(d) => {
            let geom = crate::cuda::index::IndexGeom {
                outer,
                dim,
                inner,
                n: d.numel(),
            };
            let s = on_gpu(src, d, geom, crate::cuda::index::index_add)?;
            return Ok(Tensor::from_storage(s, shape));
        }
    };
    #[cfg(feature = "cuda")]
    if !src.device().is_cpu() {
        let geom = crate::cuda::index::IndexGeom {
            outer,
            dim,
            inner,
            n: ids.len(),
        };
        let d = ids_on(ids, &[ids.len()], src.device())?;
        let s = on_gpu(src, &d, geom, crate::cuda::index::index_add)?;
        return Ok(Tensor::from_storage(s, shape));
    }
    let src = src.contiguous()?;
    let g = src.read();
    let l = src.layout();
    let s = float_map!("index_add", g.cpu("index_add")?, v => {
        let mut out = vec![crate::Float::ZERO; outer * dim * inner];
        index::index_add(&mut out, outer, dim, inner, ids, &v[l.offset()..l.offset() + l.numel()]);
        out
    });
    Ok(Tensor::from_cpu(s, shape))
}

struct GatherBack {
    axis: usize,
    ids: Ids,
}
impl BackwardOp for GatherBack {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let shape = inputs[0].shape();
        let (_, dim, inner) = split3(shape, self.axis);
        let (outer, n, _) = split3(g.shape(), self.axis);
        // Gradients of ids shape [outer, n, inner'] where inner' may be smaller than x's inner:
        // scatter into a buffer with g's inner size, then place it into x's shape.
        let gi: usize = g.shape()[self.axis + 1..].iter().product();
        let mut gshape = g.shape().to_vec();
        gshape[self.axis] = dim;
        #[cfg(feature = "cuda")]
        let small = if !g.device().is_cpu() {
            let geom = crate::cuda::index::IndexGeom {
                outer,
                dim,
                inner: gi,
                n,
            };
            let d = match &self.ids {
                Ids::Device(d) => d.clone(),
                Ids::Host(v) => ids_on(v, g.shape(), g.device())?,
            };
            Some(Tensor::from_storage(
                on_gpu(g, &d, geom, crate::cuda::index::scatter_add)?,
                &gshape,
            ))
        } else {
            None
        };
        #[cfg(not(feature = "cuda"))]
        let small: Option<Tensor> = None;
        let small = match small {
            Some(s) => s,
            None => self.scatter_cpu(g, &gshape, outer, dim, n, gi)?,
        };
        let full = if gi == inner && gshape == shape {
            small
        } else {
            let mut sub = Layout::contiguous(shape);
            for (a, &d) in gshape.iter().enumerate() {
                sub = sub.narrow(a, 0, d)?;
            }
            crate::ops::view::scatter_view(&small, shape, &sub)?
        };
        Ok(vec![Some(full), None])
    }
}

impl GatherBack {
    /// The CPU scatter-add of `g` into `gshape`.
    fn scatter_cpu(
        &self,
        g: &Tensor,
        gshape: &[usize],
        outer: usize,
        dim: usize,
        n: usize,
        gi: usize,
    ) -> Result<Tensor> {
        let ids = match &self.ids {
            Ids::Host(v) => v,
            #[cfg(feature = "cuda")]
            Ids::Device(_) => return Err(crate::storage::no_kernel("gather", g.device())),
        };
        let gc = g.contiguous()?;
        let gg = gc.read();
        let l = gc.layout();
        let s = float_map!("gather", gg.cpu("gather")?, v => {
            let mut out = vec![crate::Float::ZERO; outer * dim * gi];
            index::scatter_add(&mut out, dim, outer, n, gi, ids, &v[l.offset()..l.offset() + l.numel()]);
            out
        });
        Ok(Tensor::from_cpu(s, gshape))
    }
}

struct ConcatBack {
    axis: usize,
    sizes: Vec<usize>,
}
impl BackwardOp for ConcatBack {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for &s in &self.sizes {
            out.push(Some(g.narrow(self.axis as isize, start, s)?));
            start += s;
        }
        Ok(out)
    }
}

impl Tensor {
    /// Rows `ids` (1-D i64/u32) along `axis`; the output has `ids.len()` entries on that axis.
    pub fn index_select(&self, axis: isize, ids: &Tensor) -> Result<Tensor> {
        let a = resolve_axis("index_select", axis, self.shape())?;
        if ids.rank() != 1 {
            return shape_err(
                "index_select",
                format!("indices must be 1-D, got shape {:?}", ids.shape()),
            );
        }
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() && ids.device() == self.device() {
            // Indices already on the GPU (token ids of a batch) are not read back: reading
            // them would make the step wait for the device.
            let d = device_ids("index_select", ids)?;
            let (outer, dim, inner) = split3(self.shape(), a);
            let geom = crate::cuda::index::IndexGeom {
                outer,
                dim,
                inner,
                n: d.numel(),
            };
            let mut shape = self.shape().to_vec();
            shape[a] = d.numel();
            let s = on_gpu(self, &d, geom, crate::cuda::index::index_select)?;
            return Ok(Tensor::from_op(s, &shape, &[self, ids], || {
                Box::new(IndexSelectBack {
                    axis: a,
                    ids: Ids::Device(d),
                })
            }));
        }
        let idv = read_ids("index_select", ids, self.shape()[a])?;
        let mut shape = self.shape().to_vec();
        shape[a] = idv.len();
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() {
            let (outer, dim, inner) = split3(self.shape(), a);
            let geom = crate::cuda::index::IndexGeom {
                outer,
                dim,
                inner,
                n: idv.len(),
            };
            let d = ids_on(&idv, &[idv.len()], self.device())?;
            let s = on_gpu(self, &d, geom, crate::cuda::index::index_select)?;
            return Ok(Tensor::from_op(s, &shape, &[self, ids], || {
                Box::new(IndexSelectBack {
                    axis: a,
                    ids: Ids::Host(idv),
                })
            }));
        }
        let x = self.contiguous()?.detach();
        let (outer, dim, inner) = split3(x.shape(), a);
        let g = x.read();
        let l = x.layout();
        let data = g.cpu("index_select")?;
        let s: CpuStorage = with_cpu!(data, v => crate::Element::into_storage(index::index_select(&v[l.offset()..l.offset() + l.numel()], outer, dim, inner, &idv)));
        Ok(Tensor::from_op(
            Storage::Cpu(s),
            &shape,
            &[self, ids],
            || {
                Box::new(IndexSelectBack {
                    axis: a,
                    ids: Ids::Host(idv),
                })
            },
        ))
    }

    /// Embedding lookup: `self` is the table `[vocab, dim]`, `ids` any shape of i64/u32; the
    /// result has shape `ids.shape() + [dim]`. The backward scatter-adds into the table.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        if self.rank() != 2 {
            return shape_err(
                "embedding",
                format!("table must be [vocab, dim], got {:?}", self.shape()),
            );
        }
        let flat = ids.reshape(&[ids.numel()])?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        self.index_select(0, &flat)?.reshape(&shape)
    }

    /// `out[..., j, ...] = self[..., ids[..., j, ...], ...]` along `axis`; `ids` has the rank of
    /// `self`, its size on every other axis at most `self`'s.
    pub fn gather(&self, axis: isize, ids: &Tensor) -> Result<Tensor> {
        let a = resolve_axis("gather", axis, self.shape())?;
        if ids.rank() != self.rank()
            || ids
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .any(|(i, (&d, &s))| i != a && d > s)
        {
            return shape_err(
                "gather",
                format!(
                    "indices of shape {:?} do not fit input {:?} along axis {a}",
                    ids.shape(),
                    self.shape()
                ),
            );
        }
        // View x restricted to ids' extent on the non-gathered axes, as [outer, dim, inner].
        let mut xs = self.detach();
        for (i, &d) in ids.shape().iter().enumerate() {
            if i != a {
                xs = xs.narrow(i as isize, 0, d)?;
            }
        }
        let xs = xs.contiguous()?;
        let (outer, dim, inner) = split3(xs.shape(), a);
        let n = ids.shape()[a];
        #[cfg(feature = "cuda")]
        if !self.device().is_cpu() {
            // Indices already on the GPU are not read back (that would make the step wait):
            // the kernels give NaN for an out-of-range id and skip it backward. Host indices
            // are checked there first. Either way the backward reuses the device copy.
            let d = if ids.device() == self.device() {
                device_ids("gather", ids)?
            } else {
                ids_on(
                    &read_ids("gather", ids, self.shape()[a])?,
                    ids.shape(),
                    self.device(),
                )?
            };
            let geom = crate::cuda::index::IndexGeom {
                outer,
                dim,
                inner,
                n,
            };
            let s = on_gpu(&xs, &d, geom, crate::cuda::index::gather)?;
            return Ok(Tensor::from_op(s, ids.shape(), &[self, ids], || {
                Box::new(GatherBack {
                    axis: a,
                    ids: Ids::Device(d),
                })
            }));
        }
        let idv = read_ids("gather", ids, self.shape()[a])?;
        let g = xs.read();
        let l = xs.layout();
        let s = float_map!("gather", g.cpu("gather")?, v => index::gather(v, l.offset(), (dim * inner, inner, 1), outer, n, inner, &idv));
        Ok(Tensor::from_op(
            Storage::Cpu(s),
            ids.shape(),
            &[self, ids],
            || {
                Box::new(GatherBack {
                    axis: a,
                    ids: Ids::Host(idv),
                })
            },
        ))
    }

    /// One-hot encoding of integer `self` into `classes` columns of `dtype` (no gradient).
    pub fn one_hot(&self, classes: usize, dtype: DType) -> Result<Tensor> {
        let ids = read_ids("one_hot", self, classes)?;
        let mut v = vec![0.0f64; ids.len() * classes];
        for (r, &c) in ids.iter().enumerate() {
            v[r * classes + c] = 1.0;
        }
        let mut shape = self.shape().to_vec();
        shape.push(classes);
        Tensor::from_vec(v, &shape)?
            .to_dtype(dtype)?
            .to_device(self.device())
    }

    /// Joins tensors along `axis` (all other axes must match).
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or(Error::Invalid {
            op: "concat",
            msg: "needs at least one tensor".into(),
        })?;
        let a = resolve_axis("concat", axis, first.shape())?;
        for t in tensors {
            crate::ops::check_same("concat", first, t)?;
            let ok = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (x, y))| i == a || x == y);
            if !ok {
                return shape_err(
                    "concat",
                    format!(
                        "shape {:?} does not match {:?} outside axis {a}",
                        t.shape(),
                        first.shape()
                    ),
                );
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[a]).collect();
        let mut shape = first.shape().to_vec();
        shape[a] = sizes.iter().sum();
        let out = Tensor::zeros_on(&shape, first.dtype(), first.device())?;
        {
            let mut w = out.write();
            let full = Layout::contiguous(&shape);
            let mut start = 0;
            for (t, &s) in tensors.iter().zip(&sizes) {
                let g = t.read();
                w.copy_strided_from(&full.narrow(a, start, s)?, &g, t.layout())?;
                start += s;
            }
        }
        Ok(out.attach(tensors, || Box::new(ConcatBack { axis: a, sizes })))
    }

    /// Stacks same-shape tensors along a new axis `axis`.
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let us: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.unsqueeze(axis))
            .collect::<Result<_>>()?;
        Tensor::concat(&us.iter().collect::<Vec<_>>(), axis)
    }

    /// Splits along `axis` into pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], axis: isize) -> Result<Vec<Tensor>> {
        let a = resolve_axis("split", axis, self.shape())?;
        if sizes.iter().sum::<usize>() != self.shape()[a] {
            return shape_err(
                "split",
                format!(
                    "sizes {sizes:?} do not add up to axis {a} of {:?}",
                    self.shape()
                ),
            );
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(a as isize, start, s);
                start += s;
                t
            })
            .collect()
    }

    /// Splits along `axis` into `n` nearly equal pieces (the last may be smaller), as PyTorch.
    pub fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Tensor>> {
        let a = resolve_axis("chunk", axis, self.shape())?;
        if n == 0 {
            return Err(Error::Invalid {
                op: "chunk",
                msg: "number of chunks must be positive".into(),
            });
        }
        let d = self.shape()[a];
        let size = d.div_ceil(n).max(1);
        let mut sizes = vec![];
        let mut left = d;
        while left > 0 {
            sizes.push(size.min(left));
            left -= size.min(left);
        }
        self.split(&sizes, a as isize)
    }
}
