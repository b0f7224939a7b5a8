//! cuBLASLt products with a fused epilogue: the fully connected layer `y = x·Wᵀ + b` with the
//! bias added by the GEMM as it stores each tile (`CUBLASLT_EPILOGUE_BIAS`), so `y` is written
//! once and never read back by a separate bias-add kernel (one read and one write of `y`
//! saved). Used by [`crate::Tensor::linear`] on a GPU; its CPU reference is the same op's CPU
//! arm (`crate::cpu::matmul` with a column bias).
//!
//! Row-major `y[n, out]` is the column-major `out x n` matrix `D = op(A)·B + bias` with
//! `A = W` as stored (column-major `k x out`, `op = T`) and `B = x` as stored (column-major
//! `k x n`); the bias has one entry per row of `D`. A residual `r` (f32, `D`'s layout) is added
//! as the GEMM's `C` with `beta = 1` (`D = op(A)·B + r + bias`; a transformer block's
//! `x + proj(..)`), so the sum is written once and no add kernel reads the product back.
//! cuBLASLt is optional: where it cannot be loaded, or declines a product, [`linear`] returns
//! `None` and the caller composes the layer.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, DevicePtr};

use super::{CudaBackend, CudaStorage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::Device;

/// Bytes of device workspace cuBLASLt may use (NVIDIA's advice for Hopper is 32 MiB).
const WORKSPACE_BYTES: usize = 32 << 20;

/// The shape, operand dtype, bias, output dtype and residual of a product, for the algorithm
/// cache.
type Key = (usize, usize, usize, DType, bool, DType, bool);

/// A cuBLASLt handle, its workspace, and the algorithm chosen for each product shape (`None`:
/// cuBLASLt declined that shape, which is then composed without asking again).
pub(crate) struct LtState {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    algos: HashMap<Key, Option<sys::cublasLtMatmulAlgo_t>>,
    declined: Option<String>,
}

impl LtState {
    /// The first product cuBLASLt declined in this process, and why.
    pub(crate) fn declined(&self) -> Option<String> {
        self.declined.clone()
    }

    /// Records that the product `key` was declined (composed from now on), and the first
    /// reason.
    fn decline(&mut self, key: Key, e: lt::CublasError) -> Result<Option<CudaStorage>> {
        self.algos.insert(key, None);
        if self.declined.is_none() {
            let (n, k, out, dtype, _, to, _) = key;
            self.declined = Some(format!(
                "cuBLASLt declined the linear product [{n}, {k}] by [{out}, {k}]ᵀ ({dtype:?} to \
                 {to:?}): {e:?}; such layers add their bias in a separate kernel"
            ));
        }
        Ok(None)
    }
}
// SAFETY: the handle is only used under the backend's mutex.
unsafe impl Send for LtState {}

impl Drop for LtState {
    fn drop(&mut self) {
        // SAFETY: created by create_handle, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// Opens cuBLASLt for `backend`, or says why it cannot.
pub(crate) fn open_lt(backend: &CudaBackend) -> Result<Mutex<LtState>> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::DeviceUnavailable {
            device: Device::Cuda(backend.ordinal()),
            reason: "cuBLASLt (libcublasLt.so.13 or .12) could not be loaded: it ships with \
                     cuBLAS (`pip install nvidia-cublas`); put its directory on LD_LIBRARY_PATH"
                .into(),
        });
    }
    // A handle belongs to the device current on this thread.
    backend.bind()?;
    let handle =
        lt::create_handle().map_err(|e| backend.err_msg(format!("cublasLtCreate: {e:?}")))?;
    // SAFETY: cuBLASLt only uses the workspace as scratch; nothing reads it uninitialised.
    let workspace = match unsafe { backend.stream().alloc::<u8>(WORKSPACE_BYTES) } {
        Ok(w) => w,
        Err(e) => {
            // SAFETY: the handle was just created and is not used again.
            let _ = unsafe { lt::destroy_handle(handle) };
            return Err(backend.err("cuBLASLt workspace", e));
        }
    };
    // cublasLtMatmul requires a 256-byte aligned workspace; the pool's blocks are, but a product
    // refused for that would be a hard error later, so an unaligned one leaves cuBLASLt unused.
    let ws_ptr = {
        let (p, _sync) = workspace.device_ptr(backend.stream());
        p
    };
    if ws_ptr % 256 != 0 {
        // SAFETY: the handle was just created and is not used again.
        let _ = unsafe { lt::destroy_handle(handle) };
        return Err(Error::DeviceUnavailable {
            device: Device::Cuda(backend.ordinal()),
            reason: format!("cuBLASLt's workspace at {ws_ptr:#x} is not 256-byte aligned"),
        });
    }
    Ok(Mutex::new(LtState {
        handle,
        workspace,
        algos: HashMap::new(),
        declined: None,
    }))
}

/// Descriptors of one product, destroyed on drop.
struct Descriptors {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: Vec<sys::cublasLtMatrixLayout_t>,
    pref: Option<sys::cublasLtMatmulPreference_t>,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each was created once by this module and is destroyed once.
        unsafe {
            for l in &self.layouts {
                let _ = lt::destroy_matrix_layout(*l);
            }
            if let Some(p) = self.pref {
                let _ = lt::destroy_matmul_pref(p);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// Sets a 4- or 8-byte attribute of a matmul descriptor.
unsafe fn set_attr<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> std::result::Result<(), lt::CublasError> {
    lt::set_matmul_desc_attribute(
        desc,
        attr,
        (value as *const T).cast(),
        std::mem::size_of::<T>(),
    )
}

/// `x · Wᵀ (+ bias)` through cuBLASLt for contiguous `x` `[n, k]` and `w` `[out, k]`, both
/// bf16 (f32 accumulation) or both f32 (f32 compute), and an f32 `bias` `[out]` added by the
/// GEMM's epilogue: the contiguous f32 `[n, out]` result. `Ok(None)` when cuBLASLt is not
/// available or has no algorithm for this product (the caller composes the layer instead).
pub fn linear(
    x: &CudaStorage,
    w: &CudaStorage,
    bias: Option<&CudaStorage>,
    n: usize,
    k: usize,
    out: usize,
) -> Result<Option<CudaStorage>> {
    linear_to(x, w, bias, n, k, out, DType::F32, None)
}

/// [`linear`] with the result stored as `to`: f32, or bf16 (the f32 sum, bias included, rounded
/// once as the GEMM stores it; for a layer whose output is only read as a bf16 operand). The
/// bias is in `to`'s dtype, as cuBLASLt takes it by default: a bf16 bias for a bf16 result, as
/// under PyTorch's autocast. With a `residual` (contiguous f32 `[n, out]`; `to` must be f32)
/// the result is `residual + x·Wᵀ + b`, the residual read by the GEMM's epilogue.
#[allow(clippy::too_many_arguments)]
pub fn linear_to(
    x: &CudaStorage,
    w: &CudaStorage,
    bias: Option<&CudaStorage>,
    n: usize,
    k: usize,
    out: usize,
    to: DType,
    residual: Option<&CudaStorage>,
) -> Result<Option<CudaStorage>> {
    let backend = &x.backend;
    let dtype = x.dtype();
    if !matches!(to, DType::BF16 | DType::F32) {
        return Err(Error::UnsupportedDType {
            op: "linear",
            dtype: to,
            supported: "f32, bf16",
        });
    }
    if w.dtype() != dtype || !matches!(dtype, DType::BF16 | DType::F32) {
        return Err(Error::DTypeMismatch {
            op: "linear",
            lhs: dtype,
            rhs: w.dtype(),
        });
    }
    if bias.is_some_and(|b| b.dtype() != to || b.len() < out) {
        return Err(backend.err_msg(format!(
            "linear: the bias must be {to:?} with {out} elements, as the result"
        )));
    }
    if residual.is_some_and(|r| r.dtype() != DType::F32 || to != DType::F32 || r.len() < n * out) {
        return Err(backend.err_msg(format!(
            "linear: the residual must be f32 with {n} x {out} elements, as an f32 result"
        )));
    }
    if x.len() < n * k || w.len() < out * k {
        return Err(backend.err_msg(format!(
            "linear: buffers of {} and {} elements are too small for [{n}, {k}] and [{out}, {k}]",
            x.len(),
            w.len()
        )));
    }
    if n == 0 || k == 0 || out == 0 {
        return Ok(None);
    }
    backend.bind()?;
    let Ok(state) = backend.lt() else {
        return Ok(None);
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let key = (n, k, out, dtype, bias.is_some(), to, residual.is_some());
    if let Some(None) = st.algos.get(&key) {
        return Ok(None);
    }
    let operands = if dtype == DType::BF16 {
        sys::cudaDataType::CUDA_R_16BF
    } else {
        sys::cudaDataType::CUDA_R_32F
    };
    let f32t = sys::cudaDataType::CUDA_R_32F;
    let result = if to == DType::BF16 {
        sys::cudaDataType::CUDA_R_16BF
    } else {
        f32t
    };
    let desc = match lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t) {
        Ok(d) => d,
        Err(e) => return st.decline(key, e),
    };
    let mut d = Descriptors {
        desc,
        layouts: Vec::with_capacity(3),
        pref: None,
    };
    for (rows, cols, ty) in [(k, out, operands), (k, n, operands), (out, n, result)] {
        match lt::create_matrix_layout(ty, rows as u64, cols as u64, rows as i64) {
            Ok(l) => d.layouts.push(l),
            Err(e) => return st.decline(key, e),
        }
    }
    use sys::cublasLtMatmulDescAttributes_t as A;
    let (ta, tb) = (
        cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T,
        cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N,
    );
    let bias_ptr = bias.map(|b| b.ptr());
    let epilogue = if bias_ptr.is_some() {
        sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
    } else {
        sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
    };
    // SAFETY: the descriptor is live; each value has the size its attribute documents.
    let set = unsafe {
        set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &ta)
            .and_then(|_| set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &tb))
            .and_then(|_| set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue))
            // The bias's dtype is left at its default, D's.
            .and_then(|_| match bias_ptr {
                Some(p) => set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p),
                None => Ok(()),
            })
    };
    if let Err(e) = set {
        return st.decline(key, e);
    }
    let (la, lb, lc) = (d.layouts[0], d.layouts[1], d.layouts[2]);
    let algo = match st.algos.get(&key) {
        Some(Some(a)) => *a,
        _ => {
            let pref = match lt::create_matmul_pref() {
                Ok(p) => p,
                Err(e) => return st.decline(key, e),
            };
            d.pref = Some(pref);
            let bytes = WORKSPACE_BYTES as u64;
            // SAFETY: live descriptors; the attribute is a u64 byte count.
            let max_workspace =
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES;
            let handle = st.handle;
            let found = unsafe {
                lt::set_matmul_pref_attribute(pref, max_workspace, (&bytes as *const u64).cast(), 8)
                    .and_then(|_| {
                        lt::get_matmul_algo_heuristic(handle, d.desc, la, lb, lc, lc, pref)
                    })
            };
            match found {
                Ok(h) => {
                    st.algos.insert(key, Some(h.algo));
                    h.algo
                }
                Err(e) => return st.decline(key, e),
            }
        }
    };
    let y = CudaStorage::alloc(backend, to, n * out)?;
    let one = 1.0f32;
    // C: the residual, added with beta = 1; without one beta = 0 and C (= y) is not read.
    let (beta, c) = match residual {
        Some(r) => (1.0f32, r.ptr()),
        None => (0.0f32, y.ptr()),
    };
    let stream = backend.stream();
    backend.mark(|| {
        let with = if bias.is_some() { " + bias" } else { "" };
        let plus = if residual.is_some() {
            " + residual"
        } else {
            ""
        };
        let into = if to == DType::BF16 { "->BF16" } else { "" };
        format!("cublasLt linear {dtype:?}{into} {n}x{k}x{out}{with}{plus}")
    });
    let r = {
        let (ws, _sync) = st.workspace.device_ptr(stream);
        // SAFETY: the layouts describe x (k x n), W (k x out) and y (out x n) column-major
        // with leading dimensions equal to their row counts, within the buffers checked
        // above; the bias holds `out` elements of y's dtype; the workspace holds
        // WORKSPACE_BYTES; C is the residual (checked above: n x out f32, y's layout), or y
        // itself with beta = 0, so not read.
        unsafe {
            lt::matmul(
                st.handle,
                d.desc,
                (&one as *const f32).cast(),
                (&beta as *const f32).cast(),
                w.ptr() as *const c_void,
                la,
                x.ptr() as *const c_void,
                lb,
                c as *const c_void,
                lc,
                y.ptr() as *mut c_void,
                lc,
                &algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as _,
            )
        }
    };
    match r {
        Ok(()) => Ok(Some(y)),
        Err(e) if e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => {
            // Nothing ran: the mark goes, so the profile does not name a product that did not.
            backend.unmark();
            st.decline(key, e)
        }
        Err(e) => Err(backend.err_msg(format!(
            "cuBLASLt linear ([{n}, {k}] by [{out}, {k}]ᵀ, {dtype:?}): {e:?}"
        ))),
    }
}
