//! Launches of `kernels/reduce.cu`: the CUDA arm of the sum/max/min reductions and of
//! argmax/argmin in [`crate::ops::reduce`] (the CPU reference is `crate::cpu::reduce`).

use cudarc::driver::PushKernelArg;

use super::launch::{per_row, Dims};
use super::CudaStorage;
use crate::cpu::reduce::ReduceKind;
use crate::error::Result;
use crate::Layout;

/// Reduces `x` at layout `l` (reduced axes last, `rows * len` elements) to `rows` values.
pub fn rows(
    op: &'static str,
    kind: ReduceKind,
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<CudaStorage> {
    let tag = super::launch::float_tag(op, x.dtype())?;
    let kind_name = match kind {
        ReduceKind::Sum => "sum",
        ReduceKind::Max => "max",
        ReduceKind::Min => "min",
    };
    if len == 0 {
        // An empty reduction is its identity (0, -inf or +inf), as on the CPU.
        let v = match kind {
            ReduceKind::Sum => 0.0,
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
        };
        return CudaStorage::full(&x.backend, x.dtype(), rows, v);
    }
    let out = CudaStorage::alloc(&x.backend, x.dtype(), rows)?;
    if rows == 0 {
        return Ok(out);
    }
    launch_rows(
        op,
        &format!("reduce_{kind_name}_{tag}"),
        x,
        &out,
        l,
        rows,
        len,
    )?;
    Ok(out)
}

/// Index (i64) of the maximum (`max`) or minimum of each of the `rows` rows of `len > 0`
/// elements of `x` at layout `l` (reduced axis last): the first one on ties, the first NaN if
/// there is one, as the CPU's `arg_rows`.
pub fn arg_rows(
    op: &'static str,
    max: bool,
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<CudaStorage> {
    let tag = super::launch::float_tag(op, x.dtype())?;
    let out = CudaStorage::alloc(&x.backend, crate::DType::I64, rows)?;
    if rows == 0 || len == 0 {
        return Ok(out);
    }
    let kind = if max { "max" } else { "min" };
    launch_rows(
        op,
        &format!("argreduce_{kind}_{tag}"),
        x,
        &out,
        l,
        rows,
        len,
    )?;
    Ok(out)
}

/// One block per row (grid-stride over rows) of `name`, reading `x` through `l`.
fn launch_rows(
    op: &'static str,
    name: &str,
    x: &CudaStorage,
    out: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
) -> Result<()> {
    let d = Dims::new(l.shape(), &[l])?;
    let f = x.backend.function("reduce", name)?;
    let (px, po, r64, n64) = (x.ptr(), out.ptr(), rows as i64, len as i64);
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px).arg(&po).arg(&r64).arg(&n64).arg(&d);
    let cfg = per_row(rows);
    // SAFETY: the layout was checked against x's buffer; out holds `rows` elements.
    unsafe { b.launch(cfg) }.map_err(|e| x.backend.err(op, e))?;
    Ok(())
}
