//! Launches of `kernels/layer_norm.cu`: the fused CUDA arm of [`Tensor::layer_norm`]
//! (`crate::ops::layer_norm`), whose CPU reference is `crate::cpu::layer_norm`.
//!
//! [`Tensor::layer_norm`]: crate::Tensor::layer_norm

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::launch::{float_tag, opt_ptr, per_row, BLOCK};
use super::CudaStorage;
use crate::error::Result;
use crate::DType;

const OP: &str = "layer_norm";

/// The kernels' tag for input `x` and output (or output gradient) `y` dtypes: `f32`, `f64`,
/// or `f32_bf16` for an f32 input whose output is bf16.
fn tag(x: DType, y: DType) -> Result<&'static str> {
    match (x, y) {
        (DType::F32, DType::BF16) => Ok("f32_bf16"),
        _ if x == y => float_tag(OP, x),
        _ => Err(crate::Error::DTypeMismatch {
            op: OP,
            lhs: x,
            rhs: y,
        }),
    }
}

/// Forward over contiguous `x` (`rows * len` from element 0) with optional `[len]` weight and
/// bias: `(y, mean, rstd)`, the last two `[rows]` in `x`'s dtype, `y` in `out` (`x`'s dtype,
/// or bf16 for f32 `x`: the f32 result rounded once).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &CudaStorage,
    w: Option<&CudaStorage>,
    b: Option<&CudaStorage>,
    rows: usize,
    len: usize,
    eps: f64,
    out: DType,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let t = tag(x.dtype(), out)?;
    let be = &x.backend;
    let y = CudaStorage::alloc(be, out, rows * len)?;
    let mean = CudaStorage::alloc(be, x.dtype(), rows)?;
    let rstd = CudaStorage::alloc(be, x.dtype(), rows)?;
    if rows * len == 0 {
        return Ok((y, mean, rstd));
    }
    let f = be.function("layer_norm", &format!("layer_norm_fwd_{t}"))?;
    let (px, pw, pb, py, pm, pr) = (
        x.ptr(),
        opt_ptr(w),
        opt_ptr(b),
        y.ptr(),
        mean.ptr(),
        rstd.ptr(),
    );
    let (r64, n64) = (rows as i64, len as i64);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pw)
        .arg(&pb)
        .arg(&py)
        .arg(&pm)
        .arg(&pr)
        .arg(&r64)
        .arg(&n64)
        .arg(&eps);
    // SAFETY: x and y hold rows * len elements, w and b len (or are null), mean and rstd rows.
    unsafe { l.launch(per_row(rows)) }.map_err(|e| be.err(OP, e))?;
    Ok((y, mean, rstd))
}

/// Rows of columns per block of the weight/bias gradient kernel.
const ROWS_PER_CHUNK: usize = 64;

/// Backward: `dx` (in `x`'s dtype) from the contiguous input `x`, output gradient `g` (in
/// `x`'s dtype, or bf16 for f32 `x`), the saved `mean` / `rstd` and the weight, plus `add`
/// (contiguous, `x`'s dtype: a gradient `x` already has, added as `dx` is written); with
/// `want_wb`, also the weight's and bias's gradients as per-chunk sums
/// `[2, chunks, len]` (the weight's chunks, then the bias's) and `chunks`, for the caller to sum
/// over the chunks in order (deterministic: no atomics).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &CudaStorage,
    w: Option<&CudaStorage>,
    g: &CudaStorage,
    mean: &CudaStorage,
    rstd: &CudaStorage,
    add: Option<&CudaStorage>,
    rows: usize,
    len: usize,
    want_wb: bool,
) -> Result<(CudaStorage, Option<(CudaStorage, usize)>)> {
    if add.is_some_and(|a| a.dtype() != x.dtype() || a.len() < rows * len) {
        return Err(x.backend.err_msg(format!(
            "{OP}: the gradient to add must be {:?} with {rows} x {len} elements, as x",
            x.dtype()
        )));
    }
    let t = tag(x.dtype(), g.dtype())?;
    let be = &x.backend;
    let dx = CudaStorage::alloc(be, x.dtype(), rows * len)?;
    if rows * len == 0 {
        let zeros = want_wb
            .then(|| CudaStorage::full(be, x.dtype(), 2 * len, 0.0).map(|p| (p, 1)))
            .transpose()?;
        return Ok((dx, zeros));
    }
    let (r64, n64) = (rows as i64, len as i64);
    let (px, pw, pg, pm, pr, pd, pa) = (
        x.ptr(),
        opt_ptr(w),
        g.ptr(),
        mean.ptr(),
        rstd.ptr(),
        dx.ptr(),
        opt_ptr(add),
    );
    let f = be.function("layer_norm", &format!("layer_norm_bw_dx_{t}"))?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pw)
        .arg(&pg)
        .arg(&pm)
        .arg(&pr)
        .arg(&pd)
        .arg(&pa)
        .arg(&r64)
        .arg(&n64);
    // SAFETY: x, g, dx and add (or null) hold rows * len elements, w len (or null), mean and
    // rstd rows.
    unsafe { l.launch(per_row(rows)) }.map_err(|e| be.err(OP, e))?;
    if !want_wb {
        return Ok((dx, None));
    }
    let f = be.function("layer_norm", &format!("layer_norm_bw_wb_{t}"))?;
    // At most 65535 row chunks (the grid's y limit): wider chunks for very many rows.
    let chunk = ROWS_PER_CHUNK.max(rows.div_ceil(65_535));
    let chunks = rows.div_ceil(chunk);
    let part = CudaStorage::alloc(be, x.dtype(), chunks * 2 * len)?;
    let cfg = LaunchConfig {
        grid_dim: (len.div_ceil(BLOCK as usize) as u32, chunks as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    let (pp, chunk) = (part.ptr(), chunk as i64);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&px)
        .arg(&pg)
        .arg(&pm)
        .arg(&pr)
        .arg(&pp)
        .arg(&r64)
        .arg(&n64)
        .arg(&chunk);
    // SAFETY: as above; part holds chunks * 2 * len elements, and the grid's y covers the chunks.
    unsafe { l.launch(cfg) }.map_err(|e| be.err(OP, e))?;
    Ok((dx, Some((part, chunks))))
}
