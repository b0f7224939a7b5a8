//! Launches of the kernels between the two layers of a fused MLP at bf16 matmul precision
//! (`kernels/unary.cu`, `<op>_to_bf16_bf16` and `<op>_bw_bf16_colsum_bf16`): the CUDA arm of
//! [`crate::Tensor::mlp2`]. Every operand is bf16 (the first layer's output, the activation,
//! their gradients), the arithmetic f32. The CPU reference is the composed form (linear, the
//! unary op's `f` / `df`, linear) with the same roundings to bf16.

use cudarc::driver::PushKernelArg;

use super::launch::grid_for;
use super::storage::colsum_launch;
use super::CudaStorage;
use crate::dtype::DType;
use crate::error::{Error, Result};

const OP: &str = "mlp2";

/// Fails unless `s` is a bf16 buffer of at least `n` elements that starts 4-byte aligned (the
/// activation kernel moves pairs of elements).
fn check_bf16(s: &CudaStorage, n: usize) -> Result<()> {
    if s.dtype() != DType::BF16 {
        return Err(Error::DTypeMismatch {
            op: OP,
            lhs: s.dtype(),
            rhs: DType::BF16,
        });
    }
    if s.len() < n {
        return Err(s.backend.err_msg(format!(
            "{OP}: a buffer of {} elements is shorter than {n}",
            s.len()
        )));
    }
    if !s.ptr().is_multiple_of(4) {
        return Err(s
            .backend
            .err_msg(format!("{OP}: a bf16 buffer that starts at an odd element")));
    }
    Ok(())
}

/// `a = bf16(act(h))` for the first `n` elements of the contiguous bf16 buffer `h`; `act` is
/// the unary kernel's name (`gelu_erf`, `relu`, ...). A new bf16 buffer of `n` elements.
pub fn act_to_bf16(h: &CudaStorage, act: &str, n: usize) -> Result<CudaStorage> {
    check_bf16(h, n)?;
    let out = CudaStorage::alloc(&h.backend, DType::BF16, n)?;
    if n == 0 {
        return Ok(out);
    }
    let f = h
        .backend
        .function("unary", &format!("{act}_to_bf16_bf16"))?;
    let (ph, pa, n64) = (h.ptr(), out.ptr(), n as i64);
    let mut b = h.backend.stream().launch_builder(&f);
    b.arg(&ph).arg(&pa).arg(&n64);
    // SAFETY: h holds at least n bf16 and starts 4-byte aligned (checked above), as does out
    // (a fresh allocation) with n bf16; the kernel reads pairs below n only.
    unsafe { b.launch(grid_for(n.div_ceil(2))) }.map_err(|e| h.backend.err(OP, e))?;
    Ok(out)
}

/// For row-major bf16 `rows x cols` `h` (the first layer's output) and `da` (the gradient of
/// the activation): `dh = bf16(da * act'(h))` and the per-chunk column sums of `dh` as stored
/// (`partial` `[chunks, cols]`, summed over chunks by the caller for the first layer's bias
/// gradient). Returns `(dh, partial, chunks)`.
pub fn act_backward_bf16_colsum(
    h: &CudaStorage,
    da: &CudaStorage,
    act: &str,
    rows: usize,
    cols: usize,
) -> Result<(CudaStorage, CudaStorage, usize)> {
    check_bf16(h, rows * cols)?;
    check_bf16(da, rows * cols)?;
    let (per_chunk, chunks, cfg) = colsum_launch(rows, cols);
    let dh = CudaStorage::alloc(&h.backend, DType::BF16, rows * cols)?;
    let partial = CudaStorage::alloc(&h.backend, DType::F32, chunks * cols)?;
    if rows * cols == 0 {
        return Ok((dh, partial, chunks));
    }
    let f = h
        .backend
        .function("unary", &format!("{act}_bw_bf16_colsum_bf16"))?;
    let (ph, pda, pdh, pp) = (h.ptr(), da.ptr(), dh.ptr(), partial.ptr());
    let (r64, c64, k64) = (rows as i64, cols as i64, per_chunk as i64);
    let mut b = h.backend.stream().launch_builder(&f);
    b.arg(&ph)
        .arg(&pda)
        .arg(&pdh)
        .arg(&pp)
        .arg(&r64)
        .arg(&c64)
        .arg(&k64);
    // SAFETY: h and da hold rows * cols bf16 (checked above), dh rows * cols bf16 and partial
    // chunks * cols f32; the grid covers every column once per chunk.
    unsafe { b.launch(cfg) }.map_err(|e| h.backend.err(OP, e))?;
    Ok((dh, partial, chunks))
}
