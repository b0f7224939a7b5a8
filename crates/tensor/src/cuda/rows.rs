//! Launches of the row kernels: softmax / log-softmax (`kernels/softmax.cu`) and the fused
//! cross-entropy (`kernels/loss.cu`). CPU references: `crate::cpu::softmax`,
//! `crate::cpu::cross_entropy`.

use cudarc::driver::PushKernelArg;

use super::launch::{float_tag, per_row, Dims};
use super::CudaStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::Layout;

/// Softmax (or log-softmax) of `x` at layout `l` (the softmax axis last, `rows * len`
/// elements) into contiguous rows.
pub fn softmax(
    x: &CudaStorage,
    l: &Layout,
    rows: usize,
    len: usize,
    log: bool,
) -> Result<CudaStorage> {
    let op = if log { "log_softmax" } else { "softmax" };
    let t = float_tag(op, x.dtype())?;
    let out = CudaStorage::alloc(&x.backend, x.dtype(), rows * len)?;
    if rows * len == 0 {
        return Ok(out);
    }
    let d = Dims::new(l.shape(), &[l])?;
    let f = x.backend.function("softmax", &format!("{op}_{t}"))?;
    let (px, py, r64, n64) = (x.ptr(), out.ptr(), rows as i64, len as i64);
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px).arg(&py).arg(&r64).arg(&n64).arg(&d);
    // SAFETY: the layout was checked against x's buffer; out holds rows * len elements.
    unsafe { b.launch(per_row(rows)) }.map_err(|e| x.backend.err(op, e))?;
    Ok(out)
}

/// Which target value marks a skipped row in the cross-entropy kernels (`None`: every row
/// counts). Targets outside `[0, c)` that are not it give NaN rows.
#[derive(Clone, Copy, Debug)]
pub struct Ignore(pub Option<i64>);

impl Ignore {
    fn args(self) -> (i32, i64) {
        match self.0 {
            Some(v) => (1, v),
            None => (0, 0),
        }
    }
}

/// Cross-entropy forward over contiguous logits `x` (`n * c` elements from element 0; f32, f64,
/// or bf16) and targets `tg` (i64, contiguous from element 0): per-row losses and
/// log-sum-exps, in x's dtype (f32 for bf16 logits).
pub fn cross_entropy_forward(
    x: &CudaStorage,
    tg: &CudaStorage,
    n: usize,
    c: usize,
    eps: f64,
    ignore: Ignore,
) -> Result<(CudaStorage, CudaStorage)> {
    let (t, out) = match x.dtype() {
        DType::BF16 => ("bf16", DType::F32),
        d => (float_tag("cross_entropy", d)?, d),
    };
    if tg.dtype() != DType::I64 {
        return Err(Error::DTypeMismatch {
            op: "cross_entropy",
            lhs: tg.dtype(),
            rhs: DType::I64,
        });
    }
    let loss = CudaStorage::alloc(&x.backend, out, n)?;
    let lse = CudaStorage::alloc(&x.backend, out, n)?;
    if n == 0 {
        return Ok((loss, lse));
    }
    let f = x
        .backend
        .function("loss", &format!("cross_entropy_fwd_{t}"))?;
    let (px, pt, pl, ps, n64, c64) = (x.ptr(), tg.ptr(), loss.ptr(), lse.ptr(), n as i64, c as i64);
    let (has_ignore, ignore) = ignore.args();
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px)
        .arg(&pt)
        .arg(&pl)
        .arg(&ps)
        .arg(&n64)
        .arg(&c64)
        .arg(&eps)
        .arg(&has_ignore)
        .arg(&ignore);
    // SAFETY: x holds n * c elements, tg n targets (the kernel reads x only for targets in
    // [0, c)), loss and lse n each.
    unsafe { b.launch(per_row(n)) }.map_err(|e| x.backend.err("cross_entropy", e))?;
    Ok((loss, lse))
}

/// Cross-entropy backward: `dx` for contiguous logits `x`, given the saved `lse`, the targets
/// and the loss's gradient `g` (one element, on the device): in `x`'s dtype (f32 or f64), or
/// for bf16 logits with `bf16` (whose `lse` and `g` are f32) rounded to bf16, the operand of a
/// fused linear head's products.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward(
    x: &CudaStorage,
    tg: &CudaStorage,
    lse: &CudaStorage,
    g: &CudaStorage,
    g_offset: usize,
    n: usize,
    c: usize,
    scale: f64,
    eps: f64,
    ignore: Ignore,
    bf16: bool,
) -> Result<CudaStorage> {
    let (kernel, out) = match (bf16, x.dtype()) {
        (true, DType::BF16) => ("cross_entropy_bw_bf16_bf16".to_string(), DType::BF16),
        (false, d) => (
            format!("cross_entropy_bw_{}", float_tag("cross_entropy", d)?),
            d,
        ),
        (true, d) => {
            return Err(Error::DTypeMismatch {
                op: "cross_entropy",
                lhs: d,
                rhs: DType::BF16,
            })
        }
    };
    let dx = CudaStorage::alloc(&x.backend, out, n * c)?;
    if n * c == 0 {
        return Ok(dx);
    }
    let f = x.backend.function("loss", &kernel)?;
    let size = g.dtype().size_in_bytes() as u64;
    let (px, pt, pl, pg, pd) = (
        x.ptr(),
        tg.ptr(),
        lse.ptr(),
        g.ptr() + g_offset as u64 * size,
        dx.ptr(),
    );
    let (n64, c64) = (n as i64, c as i64);
    let (has_ignore, ignore) = ignore.args();
    let mut b = x.backend.stream().launch_builder(&f);
    b.arg(&px)
        .arg(&pt)
        .arg(&pl)
        .arg(&pg)
        .arg(&pd)
        .arg(&n64)
        .arg(&c64)
        .arg(&scale)
        .arg(&eps)
        .arg(&has_ignore)
        .arg(&ignore);
    // A warp per row, 8 rows per block (loss.cu), at most 65,535 blocks striding over rows.
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(8).min(65_535) as u32, 1, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: x and dx hold n * c elements, tg and lse n, g at least one past g_offset; the
    // kernel's loops stay below n rows and c columns.
    unsafe { b.launch(cfg) }.map_err(|e| x.backend.err("cross_entropy", e))?;
    Ok(dx)
}
