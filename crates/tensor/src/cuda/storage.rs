//! Device buffers: [`CudaStorage`], one typed `CudaSlice` per dtype, with host transfers,
//! strided copies, fills and casts (kernels in `kernels/copy.cu`).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use half::{bf16, f16};

use super::launch::{grid_for, Dims};
use super::CudaBackend;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::CpuStorage;
use crate::{Device, Layout};

/// The typed device buffer inside a [`CudaStorage`].
pub enum CudaData {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// f64 elements.
    F64(CudaSlice<f64>),
    /// bf16 elements.
    BF16(CudaSlice<bf16>),
    /// f16 elements.
    F16(CudaSlice<f16>),
    /// i64 elements.
    I64(CudaSlice<i64>),
    /// u32 elements.
    U32(CudaSlice<u32>),
}

/// Runs `$body` with `$v` bound to the typed slice inside a [`CudaData`] (any dtype).
macro_rules! with_cuda {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CudaData::F32($v) => $body,
            CudaData::F64($v) => $body,
            CudaData::BF16($v) => $body,
            CudaData::F16($v) => $body,
            CudaData::I64($v) => $body,
            CudaData::U32($v) => $body,
        }
    };
}

/// A flat buffer of one dtype on one GPU.
pub struct CudaStorage {
    /// The elements.
    pub data: CudaData,
    /// The GPU they live on.
    pub backend: Arc<CudaBackend>,
}

impl Drop for CudaStorage {
    /// The buffer goes back to the pool with `cuMemFreeAsync` (cudarc's drop of the slice, which
    /// runs after this), which acts on the thread's current context: the thread that drops a
    /// tensor may never have made one current (a test harness or rayon thread).
    fn drop(&mut self) {
        let _ = self.backend.bind();
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?}, {} elements, {:?})",
            self.dtype(),
            self.len(),
            self.backend
        )
    }
}

/// The cast kernels of `kernels/copy.cu`, as `cast_<from>_<to>`.
pub(crate) const CAST_KERNELS: &[&str] = &[
    "cast_f32_f64",
    "cast_f64_f32",
    "cast_i64_f32",
    "cast_i64_f64",
    "cast_u32_f32",
    "cast_u32_f64",
    "cast_u32_i64",
    "cast_i64_u32",
    "cast_f32_i64",
    "cast_f64_i64",
    "cast_f32_u32",
    "cast_f64_u32",
    "cast_f32_bf16",
    "cast_bf16_f32",
    "cast_f32_f16",
    "cast_f16_f32",
];

fn dtype_tag(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::I64 => "i64",
        DType::U32 => "u32",
    }
}

impl CudaStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match &self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::F64(_) => DType::F64,
            CudaData::BF16(_) => DType::BF16,
            CudaData::F16(_) => DType::F16,
            CudaData::I64(_) => DType::I64,
            CudaData::U32(_) => DType::U32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_cuda!(&self.data, v => v.len())
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device.
    pub fn device(&self) -> Device {
        Device::Cuda(self.backend.ordinal())
    }

    /// The raw device address of element 0 (for kernel arguments; valid while `self` lives).
    pub fn ptr(&self) -> u64 {
        let stream = self.backend.stream();
        with_cuda!(&self.data, v => {
            let (p, _sync) = v.device_ptr(stream);
            p
        })
    }

    /// A copy of a host buffer.
    pub fn from_cpu(backend: &Arc<CudaBackend>, c: &CpuStorage) -> Result<CudaStorage> {
        if c.is_empty() {
            return CudaStorage::alloc(backend, c.dtype(), 0);
        }
        backend.mark(|| format!("copy to device {:?}", c.dtype()));
        let dst = CudaStorage::alloc(backend, c.dtype(), c.len())?;
        let bytes: &[u8] = match c {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::I64(v) => bytemuck::cast_slice(v),
            CpuStorage::U32(v) => bytemuck::cast_slice(v),
        };
        // SAFETY: `dst` was just allocated with `c.len()` elements of `c`'s dtype, and its
        // stream-ordered free comes after the copy.
        unsafe { backend.upload(bytes, dst.ptr())? };
        Ok(dst)
    }

    /// A host copy of the whole buffer (waits for queued work).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let s = self.backend.stream();
        let e = |e| self.backend.err("copy to host", e);
        self.backend
            .mark(|| format!("copy to host {:?}", self.dtype()));
        let host = match &self.data {
            CudaData::F32(v) => CpuStorage::F32(s.clone_dtoh(v).map_err(e)?),
            CudaData::F64(v) => CpuStorage::F64(s.clone_dtoh(v).map_err(e)?),
            CudaData::BF16(v) => CpuStorage::BF16(s.clone_dtoh(v).map_err(e)?),
            CudaData::F16(v) => CpuStorage::F16(s.clone_dtoh(v).map_err(e)?),
            CudaData::I64(v) => CpuStorage::I64(s.clone_dtoh(v).map_err(e)?),
            CudaData::U32(v) => CpuStorage::U32(s.clone_dtoh(v).map_err(e)?),
        };
        // The copy into pageable memory is complete when the call returns; synchronising also
        // surfaces any error of the kernels queued before it.
        self.backend.synchronize()?;
        Ok(host)
    }

    /// An uninitialised buffer of `n` elements (every caller writes all of it before reading).
    /// An empty tensor gets a one-element buffer: the driver refuses zero-byte allocations.
    pub fn alloc(backend: &Arc<CudaBackend>, dtype: DType, n: usize) -> Result<CudaStorage> {
        let n = n.max(1);
        let s = backend.stream();
        let e = |e| backend.err("allocate", e);
        // SAFETY: the callers overwrite every element before any read.
        let data = unsafe {
            match dtype {
                DType::F32 => CudaData::F32(s.alloc(n).map_err(e)?),
                DType::F64 => CudaData::F64(s.alloc(n).map_err(e)?),
                DType::BF16 => CudaData::BF16(s.alloc(n).map_err(e)?),
                DType::F16 => CudaData::F16(s.alloc(n).map_err(e)?),
                DType::I64 => CudaData::I64(s.alloc(n).map_err(e)?),
                DType::U32 => CudaData::U32(s.alloc(n).map_err(e)?),
            }
        };
        Ok(CudaStorage {
            data,
            backend: backend.clone(),
        })
    }

    /// A buffer of `n` copies of `value` (converted to `dtype` as the CPU side does).
    pub fn full(
        backend: &Arc<CudaBackend>,
        dtype: DType,
        n: usize,
        value: f64,
    ) -> Result<CudaStorage> {
        let out = CudaStorage::alloc(backend, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let bits: u64 = match dtype {
            DType::F32 => (value as f32).to_bits() as u64,
            DType::F64 => value.to_bits(),
            DType::BF16 => crate::dtype::bf16_from_f64(value).to_bits() as u64,
            DType::F16 => crate::dtype::f16_from_f64(value).to_bits() as u64,
            DType::I64 => (value as i64) as u64,
            DType::U32 => (value as u32) as u64,
        };
        let (dst, n64) = (out.ptr(), n as i64);
        let size = dtype.size_in_bytes();
        let f = backend.function("copy", &format!("fill_b{}", size * 8))?;
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&dst).arg(&n64);
        let (v16, v32) = (bits as u16, bits as u32);
        match size {
            2 => b.arg(&v16),
            4 => b.arg(&v32),
            _ => b.arg(&bits),
        };
        // SAFETY: fill_bN(T* dst, i64 n, T v) with dst holding n elements of N bits.
        unsafe { b.launch(grid_for(n)) }.map_err(|e| backend.err("fill", e))?;
        Ok(out)
    }

    /// `0, 1, ..., n-1` in `dtype`: f32, f64, i64 and u32 written by `arange_<dtype>`; bf16 and
    /// f16 through f32 (the same values as the CPU's below 2^24, where f32 holds every integer).
    pub fn arange(backend: &Arc<CudaBackend>, dtype: DType, n: usize) -> Result<CudaStorage> {
        let name = match dtype {
            DType::F32 => "arange_f32",
            DType::F64 => "arange_f64",
            DType::I64 => "arange_i64",
            DType::U32 => "arange_u32",
            DType::BF16 | DType::F16 => {
                return CudaStorage::arange(backend, DType::F32, n)?.cast(dtype, n);
            }
        };
        let out = CudaStorage::alloc(backend, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let (dst, n64) = (out.ptr(), n as i64);
        let f = backend.function("copy", name)?;
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&dst).arg(&n64);
        // SAFETY: arange_<dtype>(T* dst, i64 n) with dst holding n elements of that dtype.
        unsafe { b.launch(grid_for(n)) }.map_err(|e| backend.err("arange", e))?;
        Ok(out)
    }

    /// Copies the elements of `src` at layout `ls` into this buffer at layout `ld` (same shape
    /// and dtype; any strides on either side).
    pub fn copy_strided_from(&mut self, ld: &Layout, src: &CudaStorage, ls: &Layout) -> Result<()> {
        if self.dtype() != src.dtype() {
            return Err(Error::DTypeMismatch {
                op: "copy",
                lhs: self.dtype(),
                rhs: src.dtype(),
            });
        }
        let n = ls.numel();
        if n == 0 {
            return Ok(());
        }
        let d = Dims::new(ls.shape(), &[ls, ld])?;
        let f = self.backend.function(
            "copy",
            &format!("copy_b{}", self.dtype().size_in_bytes() * 8),
        )?;
        let (s, dst, n64) = (src.ptr(), self.ptr(), n as i64);
        let mut b = self.backend.stream().launch_builder(&f);
        b.arg(&s).arg(&dst).arg(&n64).arg(&d);
        // SAFETY: both layouts were checked against their buffers by the tensor layer.
        unsafe { b.launch(grid_for(n)) }.map_err(|e| self.backend.err("copy", e))?;
        Ok(())
    }

    /// The elements at layout `l`, as a new contiguous buffer.
    pub fn contiguous(&self, l: &Layout) -> Result<CudaStorage> {
        let mut out = CudaStorage::alloc(&self.backend, self.dtype(), l.numel())?;
        out.copy_strided_from(&Layout::contiguous(l.shape()), self, l)?;
        Ok(out)
    }

    /// The first `rows * cols` elements of this f32 buffer, a row-major `rows x cols` matrix,
    /// cast to bf16 (a new buffer) in the same pass that sums its columns:
    /// `(bf16 copy, column sums, chunks)`, the sums f32 `[chunks, cols]` partials over
    /// consecutive chunks of rows, for the caller to add up (a fixed order: deterministic; no
    /// rows, no chunks). The output gradient of a linear layer at bf16 precision: its bf16 copy
    /// feeds both products and the sums are the bias gradient, in one read of it.
    pub fn cast_bf16_colsum(
        &self,
        rows: usize,
        cols: usize,
    ) -> Result<(CudaStorage, CudaStorage, usize)> {
        const OP: &str = "linear";
        if self.dtype() != DType::F32 {
            return Err(Error::DTypeMismatch {
                op: OP,
                lhs: self.dtype(),
                rhs: DType::F32,
            });
        }
        if self.len() < rows * cols {
            return Err(self.backend.err_msg(format!(
                "{OP}: a buffer of {} elements holds no {rows} x {cols} matrix",
                self.len()
            )));
        }
        let (per_chunk, chunks, cfg) = colsum_launch(rows, cols);
        let out = CudaStorage::alloc(&self.backend, DType::BF16, rows * cols)?;
        let partial = CudaStorage::alloc(&self.backend, DType::F32, chunks * cols)?;
        if rows * cols == 0 {
            return Ok((out, partial, chunks));
        }
        let f = self.backend.function("copy", "cast_f32_bf16_colsum")?;
        let (s, d, p) = (self.ptr(), out.ptr(), partial.ptr());
        let (r64, c64, k64) = (rows as i64, cols as i64, per_chunk as i64);
        let mut b = self.backend.stream().launch_builder(&f);
        b.arg(&s).arg(&d).arg(&p).arg(&r64).arg(&c64).arg(&k64);
        // SAFETY: this buffer holds rows * cols f32 (checked above), out
        // rows * cols bf16 and partial chunks * cols f32; the grid covers every column once
        // per chunk.
        unsafe { b.launch(cfg) }.map_err(|e| self.backend.err(OP, e))?;
        Ok((out, partial, chunks))
    }

    /// The f32 column sums of this contiguous row-major bf16 `rows x cols` matrix per chunk of
    /// rows (`kernels/copy.cu`'s `colsum_bf16`): `(partial [chunks, cols], chunks)`, to be
    /// summed over chunks (a bias's gradient from a bf16 output gradient).
    pub fn colsum_bf16(&self, rows: usize, cols: usize) -> Result<(CudaStorage, usize)> {
        const OP: &str = "linear";
        if self.dtype() != DType::BF16 {
            return Err(Error::DTypeMismatch {
                op: OP,
                lhs: self.dtype(),
                rhs: DType::BF16,
            });
        }
        if self.len() < rows * cols {
            return Err(self.backend.err_msg(format!(
                "{OP}: a buffer of {} elements holds no {rows} x {cols} matrix",
                self.len()
            )));
        }
        let (per_chunk, chunks, cfg) = colsum_launch(rows, cols);
        let partial = CudaStorage::alloc(&self.backend, DType::F32, chunks * cols)?;
        if rows * cols == 0 {
            return Ok((partial, chunks));
        }
        let f = self.backend.function("copy", "colsum_bf16")?;
        let (s, p) = (self.ptr(), partial.ptr());
        let (r64, c64, k64) = (rows as i64, cols as i64, per_chunk as i64);
        let mut b = self.backend.stream().launch_builder(&f);
        b.arg(&s).arg(&p).arg(&r64).arg(&c64).arg(&k64);
        // SAFETY: this buffer holds rows * cols bf16 (checked above) and partial chunks * cols
        // f32; the grid covers every column once per chunk.
        unsafe { b.launch(cfg) }.map_err(|e| self.backend.err(OP, e))?;
        Ok((partial, chunks))
    }

    /// The first `n` elements converted to `to` (a new buffer).
    pub fn cast(&self, to: DType, n: usize) -> Result<CudaStorage> {
        let name = format!("cast_{}_{}", dtype_tag(self.dtype()), dtype_tag(to));
        if !CAST_KERNELS.contains(&name.as_str()) {
            return Err(crate::storage::no_kernel("to_dtype", self.device()));
        }
        let out = CudaStorage::alloc(&self.backend, to, n)?;
        if n == 0 {
            return Ok(out);
        }
        let f = self.backend.function("copy", &name)?;
        let (s, d, n64) = (self.ptr(), out.ptr(), n as i64);
        let mut b = self.backend.stream().launch_builder(&f);
        b.arg(&s).arg(&d).arg(&n64);
        // SAFETY: both buffers hold at least n elements of their dtypes.
        unsafe { b.launch(grid_for(n)) }.map_err(|e| self.backend.err("to_dtype", e))?;
        Ok(out)
    }
}

/// Rows per chunk, the number of chunks and the launch shape of a kernel built on
/// common.cuh's `bf16_store_colsum` over a `rows x cols` matrix: blocks of 32 x 8 threads, a
/// grid column per 32 columns and a grid row per chunk (the grid's y dimension holds at most
/// 65,535).
pub(crate) fn colsum_launch(rows: usize, cols: usize) -> (usize, usize, LaunchConfig) {
    let per_chunk = 128usize.max(rows.div_ceil(65_535));
    let chunks = rows.div_ceil(per_chunk);
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(32) as u32, chunks as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    (per_chunk, chunks, cfg)
}
