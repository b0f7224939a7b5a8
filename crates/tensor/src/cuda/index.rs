//! Launches of `kernels/index.cu`: index_select / embedding, gather, and their scatter-add
//! adjoints (the CUDA arms of [`crate::ops::index`]; CPU reference `crate::cpu::index`).

use cudarc::driver::PushKernelArg;

use super::launch::float_tag;
use super::launch::grid_for;
use super::CudaStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The geometry of an indexing launch: tensors seen as `[outer, dim, inner]` around the indexed
/// axis, `n` indices on that axis.
#[derive(Clone, Copy, Debug)]
pub struct IndexGeom {
    /// Product of the axes before the indexed one.
    pub outer: usize,
    /// Length of the indexed axis in the indexed tensor.
    pub dim: usize,
    /// Product of the axes after it.
    pub inner: usize,
    /// Number of indices along the axis.
    pub n: usize,
}

fn launch(
    kernel: &str,
    src: &CudaStorage,
    ids: &CudaStorage,
    out: &CudaStorage,
    g: IndexGeom,
) -> Result<()> {
    if ids.dtype() != DType::I64 {
        return Err(Error::DTypeMismatch {
            op: "index",
            lhs: ids.dtype(),
            rhs: DType::I64,
        });
    }
    let total = g.outer * g.n * g.inner;
    if total == 0 {
        return Ok(());
    }
    let b = &src.backend;
    let f = b.function("index", kernel)?;
    let (ps, pi, po) = (src.ptr(), ids.ptr(), out.ptr());
    let (o, d, i, n) = (g.outer as i64, g.dim as i64, g.inner as i64, g.n as i64);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&ps).arg(&pi).arg(&po).arg(&o).arg(&d).arg(&i).arg(&n);
    // SAFETY: the callers checked every index against `dim` on the host and sized the buffers
    // from the same geometry.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| b.err(kernel, e))?;
    Ok(())
}

/// `out[o, j, i] = src[o, ids[j], i]` (any dtype); `src` contiguous from element 0.
pub fn index_select(src: &CudaStorage, ids: &CudaStorage, g: IndexGeom) -> Result<CudaStorage> {
    let out = CudaStorage::alloc(&src.backend, src.dtype(), g.outer * g.n * g.inner)?;
    let bits = src.dtype().size_in_bytes() * 8;
    launch(&format!("index_select_b{bits}"), src, ids, &out, g)?;
    Ok(out)
}

/// Zeros `[outer, dim, inner]` with `src[o, j, i]` added at row `ids[j]` (rows of ids outside
/// `[0, dim)` skipped). Deterministic: the ids are sorted on the device (`sort::sort_pairs`,
/// stable) and each row's sum is taken in order of `j`, as the CPU takes it, so the values are
/// the CPU's bit for bit, in every run. Launches: the fill, the keys, three per 8 bits of `dim`
/// (two for a vocabulary of 50,304) and the sums.
pub fn index_add(src: &CudaStorage, ids: &CudaStorage, g: IndexGeom) -> Result<CudaStorage> {
    let tag = float_tag("index_add", src.dtype())?;
    if ids.dtype() != DType::I64 {
        return Err(Error::DTypeMismatch {
            op: "index_add",
            lhs: ids.dtype(),
            rhs: DType::I64,
        });
    }
    let b = &src.backend;
    if g.n > i32::MAX as usize || g.dim >= u32::MAX as usize {
        return Err(b.err_msg(format!(
            "index_add: {} indices into an axis of {} exceed the GPU scatter-add's 2^31 indices \
             and 2^32 - 1 rows; split the batch",
            g.n, g.dim
        )));
    }
    let out = CudaStorage::full(b, src.dtype(), g.outer * g.dim * g.inner, 0.0)?;
    if g.outer * g.n * g.inner == 0 {
        return Ok(out);
    }
    let keys = CudaStorage::alloc(b, DType::U32, g.n)?;
    let vals = CudaStorage::alloc(b, DType::U32, g.n)?;
    let f = b.function("index", "index_keys")?;
    let (pi, pk, pv) = (ids.ptr(), keys.ptr(), vals.ptr());
    let (n, d) = (g.n as i64, g.dim as i64);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&pi).arg(&pk).arg(&pv).arg(&n).arg(&d);
    // SAFETY: ids, keys and vals hold n values each.
    unsafe { l.launch(grid_for(g.n)) }.map_err(|e| b.err("index_keys", e))?;
    // Keys run up to `dim` (the out-of-range ids' key).
    let key_bits = u32::BITS - (g.dim as u32).leading_zeros();
    let (keys, order) = super::sort::sort_pairs(keys, vals, g.n, key_bits)?;
    let f = b.function("index", &format!("index_add_sorted_{tag}"))?;
    let (ps, pk, po, pout) = (src.ptr(), keys.ptr(), order.ptr(), out.ptr());
    let (o, i) = (g.outer as i64, g.inner as i64);
    let mut l = b.stream().launch_builder(&f);
    l.arg(&ps)
        .arg(&pk)
        .arg(&po)
        .arg(&pout)
        .arg(&o)
        .arg(&d)
        .arg(&i)
        .arg(&n);
    // SAFETY: keys and order hold n sorted pairs, each key below dim or skipped; src and out
    // sized from the same geometry.
    unsafe { l.launch(grid_for(g.outer * g.n * g.inner)) }.map_err(|e| b.err("index_add", e))?;
    Ok(out)
}

/// `out[o, j, i] = x[o, ids[o, j, i], i]`; `x` contiguous `[outer, dim, inner]`.
pub fn gather(x: &CudaStorage, ids: &CudaStorage, g: IndexGeom) -> Result<CudaStorage> {
    let tag = float_tag("gather", x.dtype())?;
    let out = CudaStorage::alloc(&x.backend, x.dtype(), g.outer * g.n * g.inner)?;
    launch(&format!("gather_{tag}"), x, ids, &out, g)?;
    Ok(out)
}

/// Zeros `[outer, dim, inner]` with `src[o, j, i]` added at `[o, ids[o, j, i], i]` (ids
/// outside `[0, dim)` skipped). Deterministic, as [`index_add`]: the elements are sorted on the
/// device by id and then, stably, by column `(o, i)`, and each `(column, id)` run is summed in
/// order of `j`, as the CPU sums it: its values bit for bit. Launches: the fill, the keys, three
/// per 8 bits of `dim`, the column keys, three per 8 bits of `outer * inner` columns, the sums.
pub fn scatter_add(src: &CudaStorage, ids: &CudaStorage, g: IndexGeom) -> Result<CudaStorage> {
    let tag = float_tag("scatter_add", src.dtype())?;
    if ids.dtype() != DType::I64 {
        return Err(Error::DTypeMismatch {
            op: "scatter_add",
            lhs: ids.dtype(),
            rhs: DType::I64,
        });
    }
    let b = &src.backend;
    let total = g.outer * g.n * g.inner;
    let columns = g.outer * g.inner;
    if total > i32::MAX as usize || g.dim >= u32::MAX as usize || columns > u32::MAX as usize {
        return Err(b.err_msg(format!(
            "scatter_add: {total} elements in {columns} columns into an axis of {} exceed the GPU \
             scatter-add's 2^31 elements, 2^32 columns and 2^32 - 1 rows; split the batch",
            g.dim
        )));
    }
    let out = CudaStorage::full(b, src.dtype(), g.outer * g.dim * g.inner, 0.0)?;
    if total == 0 {
        return Ok(out);
    }
    let (t64, d, n, inner, outer) = (
        total as i64,
        g.dim as i64,
        g.n as i64,
        g.inner as i64,
        g.outer as i64,
    );
    let keys = CudaStorage::alloc(b, DType::U32, total)?;
    let vals = CudaStorage::alloc(b, DType::U32, total)?;
    let f = b.function("index", "scatter_keys")?;
    let (pi, pk, pv) = (ids.ptr(), keys.ptr(), vals.ptr());
    let mut l = b.stream().launch_builder(&f);
    l.arg(&pi).arg(&pk).arg(&pv).arg(&t64).arg(&d);
    // SAFETY: ids, keys and vals hold `total` values each.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| b.err("scatter_keys", e))?;
    let id_bits = u32::BITS - (g.dim as u32).leading_zeros();
    let (_, order) = super::sort::sort_pairs(keys, vals, total, id_bits)?;
    let cols = CudaStorage::alloc(b, DType::U32, total)?;
    let f = b.function("index", "column_keys")?;
    let (po, pc) = (order.ptr(), cols.ptr());
    let mut l = b.stream().launch_builder(&f);
    l.arg(&po).arg(&pc).arg(&t64).arg(&n).arg(&inner);
    // SAFETY: order holds a permutation of 0..total; cols holds `total` values.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| b.err("column_keys", e))?;
    let col_bits = u32::BITS - ((columns - 1) as u32).leading_zeros();
    let (_, order) = super::sort::sort_pairs(cols, order, total, col_bits)?;
    let f = b.function("index", &format!("scatter_add_sorted_{tag}"))?;
    let (ps, po, pout) = (src.ptr(), order.ptr(), out.ptr());
    let mut l = b.stream().launch_builder(&f);
    l.arg(&ps)
        .arg(&pi)
        .arg(&po)
        .arg(&pout)
        .arg(&outer)
        .arg(&d)
        .arg(&inner)
        .arg(&n);
    // SAFETY: order is a permutation of 0..total grouped by (column, id); ids and src hold
    // `total` values, out `outer * dim * inner`, and only ids inside [0, dim) are written.
    unsafe { l.launch(grid_for(total)) }.map_err(|e| b.err("scatter_add", e))?;
    Ok(out)
}
