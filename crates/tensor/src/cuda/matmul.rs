//! Matrix products on the GPU through cuBLAS (strided-batched SGEMM/DGEMM): the CUDA arm of
//! [`crate::ops::matmul`], whose CPU reference is [`crate::cpu::matmul`]. f32 products follow
//! [`crate::precision`]: TF32 through `CUBLAS_COMPUTE_32F_FAST_TF32`, bf16 by casting the
//! operands to bf16 and running `cublasGemmStridedBatchedEx` with f32 accumulation and output.
//!
//! Row-major `C[m, n] = A[m, k] · B[k, n]` is computed as the column-major product
//! `Cᵀ = Bᵀ · Aᵀ`, so no operand is transposed in memory: a row-major operand is passed as-is
//! (`N`), a column-major one (a transposed view) as `T`. Operands whose matrices are neither,
//! or whose batch axes do not collapse to one stride, are first copied contiguous.

use std::sync::Mutex;

use cudarc::cublas::{result as blas, sys as blas_sys};

use super::{CudaBackend, CudaStorage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::MatmulPrecision;
use crate::{Device, Layout};

/// A cuBLAS handle bound to a backend's stream.
pub(crate) struct BlasHandle(blas_sys::cublasHandle_t);
// SAFETY: the handle is only used under the backend's mutex.
unsafe impl Send for BlasHandle {}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: created by create_handle, destroyed once.
        let _ = unsafe { blas::destroy_handle(self.0) };
    }
}

/// Why a device without cuBLAS cannot be used, and the fix.
pub(crate) const CUBLAS_MISSING: &str = "cuBLAS (libcublas.so.13 or .12) could not be loaded: \
    install the CUDA toolkit's cuBLAS or `pip install nvidia-cublas`, and put its directory on \
    LD_LIBRARY_PATH";

/// Opens cuBLAS on `backend`'s stream, or says why it cannot.
pub(crate) fn open_blas(backend: &CudaBackend) -> Result<Mutex<BlasHandle>> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(Error::DeviceUnavailable {
            device: Device::Cuda(backend.ordinal()),
            reason: CUBLAS_MISSING.into(),
        });
    }
    // A handle belongs to the context current on this thread.
    backend.bind()?;
    let h = blas::create_handle().map_err(|e| backend.err_msg(format!("cublasCreate: {e:?}")))?;
    let handle = BlasHandle(h);
    // SAFETY: a live handle and the backend's live stream.
    unsafe { blas::set_stream(h, backend.stream().cu_stream() as _) }
        .map_err(|e| backend.err_msg(format!("cublasSetStream: {e:?}")))?;
    Ok(Mutex::new(handle))
}

/// How one operand's matrices are passed to cuBLAS: `(transposed, leading dimension, batch
/// stride, offset)`.
type Plan = (bool, usize, usize, usize);

/// The [`Plan`] for a logical row-major `rows x cols` matrix per batch entry at layout `l`, if
/// cuBLAS can read it in place.
fn plan(l: &Layout, rows: usize, cols: usize) -> Option<Plan> {
    let r = l.rank();
    let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
    // Batch entries i = 0..batch must sit at offset + i * bs.
    let shape = &l.shape()[..r - 2];
    let strides = &l.strides()[..r - 2];
    let mut bs = None;
    let mut expect = 1usize;
    for d in (0..shape.len()).rev() {
        if shape[d] == 1 {
            continue;
        }
        match bs {
            None => bs = Some(strides[d]),
            Some(b) => {
                if strides[d] != b * expect {
                    return None;
                }
            }
        }
        expect *= shape[d];
    }
    let bs = bs.unwrap_or(0);
    // Row-major: Xᵀ is column-major cols x rows with ld = rs.
    if (cs == 1 || cols == 1) && (rows == 1 || rs >= cols.max(1)) {
        let ld = if rows == 1 { cols.max(1) } else { rs };
        return Some((false, ld, bs, l.offset()));
    }
    // Column-major: X is column-major rows x cols with ld = cs, passed transposed.
    if (rs == 1 || rows == 1) && (cols == 1 || cs >= rows.max(1)) {
        let ld = if cols == 1 { rows.max(1) } else { cs };
        return Some((true, ld, bs, l.offset()));
    }
    None
}

/// How cuBLAS reads operand `s` at layout `l` (`rows x cols` matrices): in place, or from a
/// contiguous copy (returned) when its strides do not allow that.
fn operand(
    s: &CudaStorage,
    l: &Layout,
    rows: usize,
    cols: usize,
) -> Result<(Option<CudaStorage>, Plan)> {
    if let Some(p) = plan(l, rows, cols) {
        return Ok((None, p));
    }
    let dense = s.contiguous(l)?;
    let p = plan(&Layout::contiguous(l.shape()), rows, cols).ok_or_else(|| {
        s.backend
            .err_msg("matmul: no plan for a contiguous operand".into())
    })?;
    Ok((Some(dense), p))
}

/// `[batch.., m, k] · [batch.., k, n]` with both layouts broadcast to the same batch shape;
/// returns the contiguous `[batch.., m, n]` product.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Result<CudaStorage> {
    let backend = &a.backend;
    let dtype = a.dtype();
    if b.dtype() != dtype {
        return Err(Error::DTypeMismatch {
            op: "matmul",
            lhs: dtype,
            rhs: b.dtype(),
        });
    }
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(crate::ops::unsupported("matmul", dtype));
    }
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return CudaStorage::full(backend, dtype, len, 0.0);
    }
    let (a_dense, pa) = operand(a, la, m, k)?;
    let (b_dense, pb) = operand(b, lb, k, n)?;
    // How far into each buffer the operand reaches (what a bf16 copy has to cover).
    let extent = |dense: &Option<CudaStorage>, l: &Layout| match dense {
        Some(d) => d.len(),
        None => l.storage_extent(),
    };
    let (ea, eb) = (extent(&a_dense, la), extent(&b_dense, lb));
    let (a, b) = (a_dense.as_ref().unwrap_or(a), b_dense.as_ref().unwrap_or(b));
    let precision = if dtype == DType::F32 {
        crate::precision::matmul_precision()
    } else {
        MatmulPrecision::F32
    };
    // bf16 copies of the operands' reach, read through the same plans.
    let (a16, b16) = if precision == MatmulPrecision::Bf16 {
        (
            Some(a.cast(DType::BF16, ea)?),
            Some(b.cast(DType::BF16, eb)?),
        )
    } else {
        (None, None)
    };
    let (a, b) = (a16.as_ref().unwrap_or(a), b16.as_ref().unwrap_or(b));
    gemm(a, pa, b, pb, batch, m, k, n, dtype, precision)
}

/// `[batch.., m, k] · [batch.., k, n]` of two bf16 operands (already cast, e.g. kept from a
/// forward pass for its backward) with f32 accumulation; returns the contiguous f32
/// `[batch.., m, n]` product: what [`matmul`] computes for f32 operands at
/// [`MatmulPrecision::Bf16`], without casting them again.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Result<CudaStorage> {
    matmul_bf16_to(a, la, b, lb, batch, m, k, n, DType::F32)
}

/// [`matmul_bf16`] with the product stored as `out` (f32, or bf16: the f32 accumulator
/// rounded once as cuBLAS stores it), for a product that is only ever read as a bf16 operand
/// or summed into an f32 result (the convolution's column gradient).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_to(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    out: DType,
) -> Result<CudaStorage> {
    for s in [a, b] {
        if s.dtype() != DType::BF16 {
            return Err(Error::DTypeMismatch {
                op: "matmul_bf16",
                lhs: s.dtype(),
                rhs: DType::BF16,
            });
        }
    }
    if !matches!(out, DType::F32 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            op: "matmul_bf16",
            dtype: out,
            supported: "f32, bf16",
        });
    }
    let len = batch * m * n;
    if len == 0 || k == 0 {
        return CudaStorage::full(&a.backend, out, len, 0.0);
    }
    let (a_dense, pa) = operand(a, la, m, k)?;
    let (b_dense, pb) = operand(b, lb, k, n)?;
    let (a, b) = (a_dense.as_ref().unwrap_or(a), b_dense.as_ref().unwrap_or(b));
    gemm(a, pa, b, pb, batch, m, k, n, out, MatmulPrecision::Bf16)
}

/// One strided-batched cuBLAS call on operands read through their plans: bf16 operands with
/// f32 accumulation, f32 ones in f32 or TF32 (`precision`), f64 in f64; the output (`out`
/// dtype, f32 for bf16 operands) is contiguous `[batch, m, n]`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    a: &CudaStorage,
    pa: Plan,
    b: &CudaStorage,
    pb: Plan,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    out_dtype: DType,
    precision: MatmulPrecision,
) -> Result<CudaStorage> {
    let backend = &a.backend;
    let out = CudaStorage::alloc(backend, out_dtype, batch * m * n)?;
    let op = |t: bool| {
        if t {
            blas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let int = |v: usize, what: &str| -> Result<i32> {
        i32::try_from(v).map_err(|_| {
            backend.err_msg(format!(
                "matmul: {what} = {v} exceeds cuBLAS's 32-bit sizes"
            ))
        })
    };
    let (mi, ni, ki, bi) = (
        int(n, "n")?,
        int(m, "m")?,
        int(k, "k")?,
        int(batch, "batch")?,
    );
    let (lda_b, lda_a) = (int(pb.1, "ld")?, int(pa.1, "ld")?);
    let size = a.dtype().size_in_bytes() as u64;
    let (ptr_b, ptr_a) = (b.ptr() + pb.3 as u64 * size, a.ptr() + pa.3 as u64 * size);
    backend.bind()?;
    let handle = backend.blas()?;
    let h = handle.lock().unwrap_or_else(|p| p.into_inner());
    backend.mark(|| {
        let b = if batch > 1 {
            format!("{batch} x ")
        } else {
            String::new()
        };
        let to = if out_dtype == DType::BF16 {
            "->BF16"
        } else {
            ""
        };
        format!("cublas gemm {:?}{to} {b}{m}x{k}x{n}", a.dtype())
    });
    // Column-major: C'(n x m) = op(B')(n x k) · op(A')(k x m).
    // SAFETY: pointers, leading dimensions and batch strides were derived from layouts that lie
    // inside their buffers; out holds batch * m * n elements.
    let r = unsafe {
        match (a.dtype(), precision) {
            (DType::BF16, _) | (DType::F32, MatmulPrecision::Tf32) => {
                let (one, zero) = (1.0f32, 0.0f32);
                let (operands, compute) = if a.dtype() == DType::BF16 {
                    (
                        blas_sys::cudaDataType::CUDA_R_16BF,
                        blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    )
                } else {
                    (
                        blas_sys::cudaDataType::CUDA_R_32F,
                        blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    )
                };
                blas::gemm_strided_batched_ex(
                    h.0,
                    op(pb.0),
                    op(pa.0),
                    mi,
                    ni,
                    ki,
                    (&one as *const f32).cast(),
                    ptr_b as *const std::ffi::c_void,
                    operands,
                    lda_b,
                    pb.2 as i64,
                    ptr_a as *const std::ffi::c_void,
                    operands,
                    lda_a,
                    pa.2 as i64,
                    (&zero as *const f32).cast(),
                    out.ptr() as *mut std::ffi::c_void,
                    if out_dtype == DType::BF16 {
                        blas_sys::cudaDataType::CUDA_R_16BF
                    } else {
                        blas_sys::cudaDataType::CUDA_R_32F
                    },
                    mi,
                    (m * n) as i64,
                    bi,
                    compute,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
            (DType::F32, _) => {
                let (one, zero) = (1.0f32, 0.0f32);
                blas::sgemm_strided_batched(
                    h.0,
                    op(pb.0),
                    op(pa.0),
                    mi,
                    ni,
                    ki,
                    &one,
                    ptr_b as *const f32,
                    lda_b,
                    pb.2 as i64,
                    ptr_a as *const f32,
                    lda_a,
                    pa.2 as i64,
                    &zero,
                    out.ptr() as *mut f32,
                    mi,
                    (m * n) as i64,
                    bi,
                )
            }
            _ => {
                let (one, zero) = (1.0f64, 0.0f64);
                blas::dgemm_strided_batched(
                    h.0,
                    op(pb.0),
                    op(pa.0),
                    mi,
                    ni,
                    ki,
                    &one,
                    ptr_b as *const f64,
                    lda_b,
                    pb.2 as i64,
                    ptr_a as *const f64,
                    lda_a,
                    pa.2 as i64,
                    &zero,
                    out.ptr() as *mut f64,
                    mi,
                    (m * n) as i64,
                    bi,
                )
            }
        }
    };
    r.map_err(|e| {
        backend.err_msg(format!(
            "cuBLAS gemm ({m}x{k} by {k}x{n}, batch {batch}): {e:?}"
        ))
    })?;
    Ok(out)
}

/// The rate, in GFLOP/s, of cuBLAS's bf16 GEMM on `backend`'s device: random `n x n` bf16 matrices,
/// f32 accumulation, bf16 output (how PyTorch multiplies bf16 tensors), the median of `reps`
/// timed calls after two untimed ones, each call waited for. The device's bf16 matmul peak, the
/// denominator of `selfsup bench gpt-step --model gpt2`'s MFU; selfsup's own bf16 products
/// cast f32 operands first and write f32, so they stay below it.
pub fn bf16_gemm_gflops(
    backend: &std::sync::Arc<CudaBackend>,
    n: usize,
    reps: usize,
) -> Result<f64> {
    if n == 0 || reps == 0 {
        return Err(backend.err_msg(format!(
            "bf16_gemm_gflops: needs n > 0 and reps > 0, got n = {n}, reps = {reps}"
        )));
    }
    let ni = i32::try_from(n).map_err(|_| {
        backend.err_msg(format!(
            "bf16_gemm_gflops: n = {n} exceeds cuBLAS's 32-bit sizes"
        ))
    })?;
    // Random operands: a product of constants (or zeros) runs faster than one of real data
    // (METHOD.md: 13% on an H200 of this workplace), which would inflate the peak.
    let a = random_bf16(backend, n * n, 1)?;
    let b = random_bf16(backend, n * n, 2)?;
    let c = CudaStorage::alloc(backend, DType::BF16, n * n)?;
    backend.bind()?;
    let handle = backend.blas()?;
    let (one, zero) = (1.0f32, 0.0f32);
    let call = || {
        let h = handle.lock().unwrap_or_else(|p| p.into_inner());
        let n2 = (n * n) as i64;
        // SAFETY: a, b and c each hold n * n bf16 elements; one batch.
        unsafe {
            blas::gemm_strided_batched_ex(
                h.0,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                ni,
                ni,
                (&one as *const f32).cast(),
                b.ptr() as *const std::ffi::c_void,
                blas_sys::cudaDataType::CUDA_R_16BF,
                ni,
                n2,
                a.ptr() as *const std::ffi::c_void,
                blas_sys::cudaDataType::CUDA_R_16BF,
                ni,
                n2,
                (&zero as *const f32).cast(),
                c.ptr() as *mut std::ffi::c_void,
                blas_sys::cudaDataType::CUDA_R_16BF,
                ni,
                n2,
                1,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .map_err(|e| backend.err_msg(format!("cuBLAS bf16 gemm ({n}x{n}): {e:?}")))
    };
    for _ in 0..2 {
        call()?;
    }
    backend.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        call()?;
        backend.synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    Ok(2.0 * (n as f64).powi(3) / times[reps / 2] / 1e9)
}

/// `len` bf16 values uniform in [-1, 1) (the Philox draw under `seed`, cast on the device):
/// operands for [`bf16_gemm_gflops`].
fn random_bf16(
    backend: &std::sync::Arc<CudaBackend>,
    len: usize,
    seed: u64,
) -> Result<CudaStorage> {
    let uniform = super::random::Draw::Uniform { lo: -1.0, hi: 1.0 };
    super::random::draw(backend, DType::F32, len, seed, 0, uniform)?.cast(DType::BF16, len)
}

#[cfg(test)]
mod tests {
    use super::plan;
    use crate::Layout;

    #[test]
    fn plans_pass_row_and_column_major_operands_in_place() {
        // Row-major [2, 3, 4]: ld 4, batch stride 12.
        let l = Layout::contiguous(&[2, 3, 4]);
        assert_eq!(plan(&l, 3, 4), Some((false, 4, 12, 0)));
        // Its transpose [2, 4, 3] is column-major: passed transposed with ld 4.
        let t = l.permute(&[0, 2, 1]).unwrap();
        assert_eq!(plan(&t, 4, 3), Some((true, 4, 12, 0)));
        // A broadcast batch has stride 0.
        let b = Layout::contiguous(&[3, 4])
            .broadcast_to(&[5, 3, 4])
            .unwrap();
        assert_eq!(plan(&b, 3, 4), Some((false, 4, 0, 0)));
        // Batch axes that do not collapse to one stride are refused (copied by the caller).
        let p = Layout::contiguous(&[2, 3, 5, 4])
            .permute(&[1, 0, 2, 3])
            .unwrap();
        assert_eq!(plan(&p, 5, 4), None);
        // Neither row- nor column-major (a strided column view) is refused.
        let s = Layout::contiguous(&[3, 8]).narrow(1, 0, 4).unwrap();
        assert_eq!(plan(&s, 3, 4), Some((false, 8, 0, 0)));
    }
}
