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
//! A layer with GELU's tanh form after it runs the activation in the epilogue too
//! ([`linear_gelu`], `CUBLASLT_EPILOGUE_GELU_AUX(_BIAS)`: the activation and, for the backward,
//! the pre-activation, both bf16), and its backward the activation's derivative
//! ([`dgelu`], `CUBLASLT_EPILOGUE_DGELU`, reading that pre-activation), so neither the
//! activation nor its gradient has a pass of its own; `kernels/unary.cu`'s `gelu_tanh` kernels
//! are their reference.
//! cuBLASLt is optional: where it cannot be loaded, or declines a product, these return
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

/// What the algorithm cache keys a product by: its epilogue, whether `A` is read transposed,
/// the sizes of `D` (`m x n`) and of the sum (`k`), the operand dtype, whether a bias is added,
/// the output dtype and whether a residual is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    epilogue: Epilogue,
    trans_a: bool,
    m: usize,
    n: usize,
    k: usize,
    dtype: DType,
    bias: bool,
    to: DType,
    residual: bool,
}

/// The epilogues used here (the bias is added by each forward one where a bias is given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Epilogue {
    /// `D = A·B (+ bias) (+ C)`.
    Plain,
    /// `D = gelu(A·B (+ bias))` with the tanh form, and the pre-activation `A·B (+ bias)`
    /// stored in the aux buffer in `D`'s dtype (`CUBLASLT_EPILOGUE_GELU_AUX(_BIAS)`).
    GeluAux,
    /// `D = A·B ⊙ gelu'(aux)` (`CUBLASLT_EPILOGUE_DGELU`): the gradient of the pre-activation
    /// from that of the activation, with the pre-activation read from the aux buffer.
    DGelu,
}

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
            let Key {
                epilogue,
                m,
                n,
                k,
                dtype,
                to,
                ..
            } = key;
            self.declined = Some(format!(
                "cuBLASLt declined the product of D = {m} x {n} over {k} ({dtype:?} to {to:?}, \
                 epilogue {epilogue:?}): {e:?}; such layers run their epilogue's work in \
                 separate kernels"
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
    if bias.is_some_and(|b| b.dtype() != to) {
        return Err(backend.err_msg(format!("linear: the bias must be {to:?}, as the result")));
    }
    if residual.is_some_and(|r| r.dtype() != DType::F32 || to != DType::F32) {
        return Err(
            backend.err_msg("linear: the residual must be f32, as an f32 result".to_string())
        );
    }
    if n == 0 || k == 0 || out == 0 {
        return Ok(None);
    }
    // Row-major y [n, out] is column-major D (out x n) = Wᵀ·x with W read as stored
    // (k x out, transposed) and x as stored (k x n).
    let spec = Spec {
        epilogue: Epilogue::Plain,
        a: w,
        trans_a: true,
        b: x,
        m: out,
        n,
        k,
        to,
        bias,
        residual,
        aux: None,
    };
    let y = CudaStorage::alloc(backend, to, n * out)?;
    let name = || {
        let with = if bias.is_some() { " + bias" } else { "" };
        let plus = if residual.is_some() {
            " + residual"
        } else {
            ""
        };
        let into = if to == DType::BF16 { "->BF16" } else { "" };
        format!("cublasLt linear {dtype:?}{into} {n}x{k}x{out}{with}{plus}")
    };
    Ok(run(&spec, &y, name)?.then_some(y))
}

/// `gelu(x · Wᵀ + b)` (GELU's tanh form, as cuBLASLt computes it) for contiguous bf16 `x`
/// `[n, k]` and `w` `[out, k]` and an optional bf16 `bias` `[out]`, f32 accumulation:
/// `(y, pre)`, both contiguous bf16 `[n, out]`, `pre` the pre-activation `x · Wᵀ + b` that the
/// backward's [`dgelu`] reads, each rounded once as the GEMM stores it. `Ok(None)` where
/// cuBLASLt is unavailable or declines, or `out` is not a multiple of 8 (the pre-activation's
/// leading dimension must be).
pub fn linear_gelu(
    x: &CudaStorage,
    w: &CudaStorage,
    bias: Option<&CudaStorage>,
    n: usize,
    k: usize,
    out: usize,
) -> Result<Option<(CudaStorage, CudaStorage)>> {
    let backend = &x.backend;
    let bf16 = |t: &CudaStorage| t.dtype() == DType::BF16;
    if !bf16(x) || !bf16(w) || bias.is_some_and(|b| !bf16(b)) {
        return Err(backend.err_msg(format!(
            "linear_gelu: x, W and the bias must be bf16 (got {:?}, {:?}, {:?})",
            x.dtype(),
            w.dtype(),
            bias.map(|b| b.dtype())
        )));
    }
    if !out.is_multiple_of(8) || n == 0 || k == 0 {
        return Ok(None);
    }
    let (y, pre) = (
        CudaStorage::alloc(backend, DType::BF16, n * out)?,
        CudaStorage::alloc(backend, DType::BF16, n * out)?,
    );
    let spec = Spec {
        epilogue: Epilogue::GeluAux,
        a: w,
        trans_a: true,
        b: x,
        m: out,
        n,
        k,
        to: DType::BF16,
        bias,
        residual: None,
        aux: Some(&pre),
    };
    let name = || {
        let with = if bias.is_some() { " + bias" } else { "" };
        format!("cublasLt linear BF16->BF16 {n}x{k}x{out}{with} + gelu_tanh")
    };
    Ok(run(&spec, &y, name)?.then_some((y, pre)))
}

/// The gradient of [`linear_gelu`]'s pre-activation from the gradient `g` `[n, out]` of the
/// next layer's output and that layer's weight `w` `[out, hid]`: `(g · W) ⊙ gelu'(pre)`
/// (tanh form), with `pre` `[n, hid]` as [`linear_gelu`] stored it; all contiguous bf16, f32
/// accumulation, the result bf16 `[n, hid]` rounded once. `Ok(None)` where cuBLASLt is
/// unavailable or declines, or `hid` is not a multiple of 8.
pub fn dgelu(
    g: &CudaStorage,
    w: &CudaStorage,
    pre: &CudaStorage,
    n: usize,
    out: usize,
    hid: usize,
) -> Result<Option<CudaStorage>> {
    let backend = &g.backend;
    let bf16 = |t: &CudaStorage| t.dtype() == DType::BF16;
    if !bf16(g) || !bf16(w) || !bf16(pre) {
        return Err(backend.err_msg(format!(
            "dgelu: g, W and the pre-activation must be bf16 (got {:?}, {:?}, {:?})",
            g.dtype(),
            w.dtype(),
            pre.dtype()
        )));
    }
    if !hid.is_multiple_of(8) || n == 0 || out == 0 {
        return Ok(None);
    }
    // Row-major dh [n, hid] is column-major D (hid x n) = W'·g' with W as stored (hid x out,
    // not transposed) and g as stored (out x n).
    let spec = Spec {
        epilogue: Epilogue::DGelu,
        a: w,
        trans_a: false,
        b: g,
        m: hid,
        n,
        k: out,
        to: DType::BF16,
        bias: None,
        residual: None,
        aux: Some(pre),
    };
    let dh = CudaStorage::alloc(backend, DType::BF16, n * hid)?;
    let name = || format!("cublasLt dgelu_tanh BF16->BF16 {n}x{out}x{hid}");
    Ok(run(&spec, &dh, name)?.then_some(dh))
}

/// One product for cuBLASLt: column-major `D` (`m x n`, leading dimension `m`, `to`) `=
/// op(A)·B` with `A` as stored (`k x m` read transposed when `trans_a`, else `m x k`) and `B`
/// as stored (`k x n`), plus the epilogue's work: the bias (one entry per row of `D`, in `to`'s
/// dtype), the residual as `C` (`beta = 1`, f32 `m x n`) and the aux buffer (`m x n`, leading
/// dimension `m`, `to`'s dtype). The caller has checked the dtypes; [`run`] the sizes.
struct Spec<'a> {
    epilogue: Epilogue,
    a: &'a CudaStorage,
    trans_a: bool,
    b: &'a CudaStorage,
    m: usize,
    n: usize,
    k: usize,
    to: DType,
    bias: Option<&'a CudaStorage>,
    residual: Option<&'a CudaStorage>,
    aux: Option<&'a CudaStorage>,
}

/// Runs `spec` into `d` (at least `m x n` elements of `to`), marked in the profile as
/// `name()`: `Ok(false)` where cuBLASLt is unavailable or declines the product (nothing ran).
fn run(spec: &Spec, d_out: &CudaStorage, name: impl FnOnce() -> String) -> Result<bool> {
    let Spec {
        epilogue,
        a,
        trans_a,
        b,
        m,
        n,
        k,
        to,
        bias,
        residual,
        aux,
    } = *spec;
    let backend = &a.backend;
    let dtype = a.dtype();
    // Every buffer against the sizes the product reads and writes.
    let short = [
        ("A", Some(a), m * k),
        ("B", Some(b), k * n),
        ("D", Some(d_out), m * n),
        ("the bias", bias, m),
        ("the residual", residual, m * n),
        ("the aux buffer", aux, m * n),
    ]
    .into_iter()
    .find_map(|(what, t, need)| t.filter(|t| t.len() < need).map(|t| (what, t.len(), need)));
    if let Some((what, len, need)) = short {
        return Err(backend.err_msg(format!(
            "cuBLASLt product (D = {m} x {n} over {k}, epilogue {epilogue:?}): {what} holds \
             {len} elements, needs {need}"
        )));
    }
    if m == 0 || n == 0 || k == 0 {
        return Ok(false);
    }
    backend.bind()?;
    let Ok(state) = backend.lt() else {
        return Ok(false);
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let key = Key {
        epilogue,
        trans_a,
        m,
        n,
        k,
        dtype,
        bias: bias.is_some(),
        to,
        residual: residual.is_some(),
    };
    if let Some(None) = st.algos.get(&key) {
        return Ok(false);
    }
    let declined = |st: &mut LtState, e| st.decline(key, e).map(|_| false);
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
        Err(e) => return declined(&mut st, e),
    };
    let mut d = Descriptors {
        desc,
        layouts: Vec::with_capacity(3),
        pref: None,
    };
    let a_dims = if trans_a { (k, m) } else { (m, k) };
    for (rows, cols, ty) in [
        (a_dims.0, a_dims.1, operands),
        (k, n, operands),
        (m, n, result),
    ] {
        match lt::create_matrix_layout(ty, rows as u64, cols as u64, rows as i64) {
            Ok(l) => d.layouts.push(l),
            Err(e) => return declined(&mut st, e),
        }
    }
    use cudarc::cublas::sys::cublasOperation_t as Op;
    use sys::cublasLtEpilogue_t as E;
    use sys::cublasLtMatmulDescAttributes_t as A;
    let (ta, tb) = (
        if trans_a {
            Op::CUBLAS_OP_T
        } else {
            Op::CUBLAS_OP_N
        },
        Op::CUBLAS_OP_N,
    );
    let bias_ptr = bias.map(|b| b.ptr());
    let epi = match (epilogue, bias_ptr.is_some()) {
        (Epilogue::Plain, false) => E::CUBLASLT_EPILOGUE_DEFAULT,
        (Epilogue::Plain, true) => E::CUBLASLT_EPILOGUE_BIAS,
        (Epilogue::GeluAux, false) => E::CUBLASLT_EPILOGUE_GELU_AUX,
        (Epilogue::GeluAux, true) => E::CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
        (Epilogue::DGelu, _) => E::CUBLASLT_EPILOGUE_DGELU,
    };
    let aux_ptr = aux.map(|x| x.ptr());
    let aux_ld = m as i64;
    // SAFETY: the descriptor is live; each value has the size its attribute documents.
    let set = unsafe {
        set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &ta)
            .and_then(|_| set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &tb))
            .and_then(|_| set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epi))
            // The bias's dtype is left at its default, D's.
            .and_then(|_| match bias_ptr {
                Some(p) => set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p),
                None => Ok(()),
            })
            // The aux buffer's dtype is D's (its default).
            .and_then(|_| match aux_ptr {
                Some(p) => set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &p)
                    .and_then(|_| {
                        set_attr(d.desc, A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld)
                    }),
                None => Ok(()),
            })
    };
    if let Err(e) = set {
        return declined(&mut st, e);
    }
    let (la, lb, lc) = (d.layouts[0], d.layouts[1], d.layouts[2]);
    let algo = match st.algos.get(&key) {
        Some(Some(a)) => *a,
        _ => {
            let pref = match lt::create_matmul_pref() {
                Ok(p) => p,
                Err(e) => return declined(&mut st, e),
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
                Err(e) => return declined(&mut st, e),
            }
        }
    };
    let one = 1.0f32;
    // C: the residual, added with beta = 1; without one beta = 0 and C (= D) is not read.
    let (beta, c) = match residual {
        Some(r) => (1.0f32, r.ptr()),
        None => (0.0f32, d_out.ptr()),
    };
    let stream = backend.stream();
    backend.mark(name);
    let r = {
        let (ws, _sync) = st.workspace.device_ptr(stream);
        // SAFETY: the layouts describe A, B and D column-major with leading dimensions equal
        // to their row counts, within buffers the callers checked; the bias holds `m`
        // elements of D's dtype; the aux buffer `m x n` of D's dtype with leading dimension
        // `m`; the workspace holds WORKSPACE_BYTES; C is the residual (checked by the caller:
        // m x n f32, D's layout), or D itself with beta = 0, so not read.
        unsafe {
            lt::matmul(
                st.handle,
                d.desc,
                (&one as *const f32).cast(),
                (&beta as *const f32).cast(),
                a.ptr() as *const c_void,
                la,
                b.ptr() as *const c_void,
                lb,
                c as *const c_void,
                lc,
                d_out.ptr() as *mut c_void,
                lc,
                &algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as _,
            )
        }
    };
    // The GELU epilogues are also declined on any other status a call returns (an argument
    // cuBLASLt rejects, as it validates before it launches): the layer then runs its kernels,
    // and `lt_problem` names the status.
    let declinable = |e: &lt::CublasError| {
        e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED
            || (epilogue != Epilogue::Plain
                && e.0 != sys::cublasStatus_t::CUBLAS_STATUS_EXECUTION_FAILED)
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if declinable(&e) => {
            // Nothing ran: the mark goes, so the profile does not name a product that did not.
            backend.unmark();
            declined(&mut st, e)
        }
        Err(e) => Err(backend.err_msg(format!(
            "cuBLASLt product (D = {m} x {n} over {k}, {dtype:?}, epilogue {epilogue:?}): {e:?}"
        ))),
    }
}
