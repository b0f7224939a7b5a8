//! Device storage: the flat buffers behind tensors.
//!
//! [`Storage`] has one variant per device. Every primitive op is a method of the op's module
//! that matches on it: the CPU arm calls a kernel in [`crate::cpu`]; the CUDA backend (issue 7)
//! adds a `Cuda` variant and one arm per primitive, so ops, autograd and layouts stay unchanged.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::Device;
use half::{bf16, f16};

/// A flat host buffer of one dtype.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f16 elements.
    F16(Vec<f16>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u32 elements.
    U32(Vec<u32>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a [`CpuStorage`] (any dtype).
#[macro_export]
#[doc(hidden)]
macro_rules! with_cpu {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::storage::CpuStorage::F32($v) => $body,
            $crate::storage::CpuStorage::F64($v) => $body,
            $crate::storage::CpuStorage::BF16($v) => $body,
            $crate::storage::CpuStorage::F16($v) => $body,
            $crate::storage::CpuStorage::I64($v) => $body,
            $crate::storage::CpuStorage::U32($v) => $body,
        }
    };
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        with_cpu!(self, v => v.len())
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A zero-filled buffer.
    pub fn zeros(dtype: DType, n: usize) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
        }
    }

    /// `0, 1, ..., n-1` in `dtype`.
    pub fn arange(dtype: DType, n: usize) -> CpuStorage {
        match dtype {
            DType::I64 => CpuStorage::I64((0..n as i64).collect()),
            DType::U32 => CpuStorage::U32((0..n as u32).collect()),
            DType::F64 => CpuStorage::F64((0..n).map(|i| i as f64).collect()),
            DType::F32 => CpuStorage::F32((0..n).map(|i| i as f32).collect()),
            DType::BF16 => CpuStorage::BF16(
                (0..n)
                    .map(|i| crate::dtype::bf16_from_f64(i as f64))
                    .collect(),
            ),
            DType::F16 => CpuStorage::F16(
                (0..n)
                    .map(|i| crate::dtype::f16_from_f64(i as f64))
                    .collect(),
            ),
        }
    }

    /// A buffer of `n` copies of `value` converted to `dtype`.
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::BF16 => CpuStorage::BF16(vec![crate::dtype::bf16_from_f64(value); n]),
            DType::F16 => CpuStorage::F16(vec![crate::dtype::f16_from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
            DType::U32 => CpuStorage::U32(vec![value as u32; n]),
        }
    }

    /// Copies the elements of `src` at layout `ls` into this buffer at layout `ld` (same shape,
    /// same dtype).
    pub fn copy_strided_from(
        &mut self,
        ld: &crate::Layout,
        src: &CpuStorage,
        ls: &crate::Layout,
    ) -> Result<()> {
        use crate::cpu::strided::copy_into;
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => copy_into(d, ld, s, ls),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => copy_into(d, ld, s, ls),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => copy_into(d, ld, s, ls),
            (CpuStorage::F16(d), CpuStorage::F16(s)) => copy_into(d, ld, s, ls),
            (CpuStorage::I64(d), CpuStorage::I64(s)) => copy_into(d, ld, s, ls),
            (CpuStorage::U32(d), CpuStorage::U32(s)) => copy_into(d, ld, s, ls),
            (d, s) => {
                return Err(Error::DTypeMismatch {
                    op: "copy",
                    lhs: d.dtype(),
                    rhs: s.dtype(),
                })
            }
        }
        Ok(())
    }

    /// The typed slice, if the dtype is `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(self)
    }
}

/// A buffer on some device.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory (the `cuda` feature).
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaStorage),
}

impl Storage {
    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => c.device(),
        }
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => c.dtype(),
        }
    }

    /// The host buffer, or an error naming `op` if the storage is elsewhere (an op whose CUDA
    /// arm is not written yet).
    pub fn cpu(&self, op: &'static str) -> Result<&CpuStorage> {
        let _ = op;
        match self {
            Storage::Cpu(c) => Ok(c),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => Err(no_kernel(op, c.device())),
        }
    }

    /// The host buffer, mutably.
    pub fn cpu_mut(&mut self, op: &'static str) -> Result<&mut CpuStorage> {
        let _ = op;
        match self {
            Storage::Cpu(c) => Ok(c),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => Err(no_kernel(op, c.device())),
        }
    }

    /// Copies the elements of `src` at layout `ls` into this buffer at layout `ld` (same shape,
    /// dtype and device).
    pub fn copy_strided_from(
        &mut self,
        ld: &crate::Layout,
        src: &Storage,
        ls: &crate::Layout,
    ) -> Result<()> {
        match (self, src) {
            (Storage::Cpu(d), Storage::Cpu(s)) => d.copy_strided_from(ld, s, ls),
            #[cfg(feature = "cuda")]
            (Storage::Cuda(d), Storage::Cuda(s)) => d.copy_strided_from(ld, s, ls),
            #[allow(unreachable_patterns)]
            (d, s) => Err(Error::DeviceMismatch {
                op: "copy",
                lhs: d.device(),
                rhs: s.device(),
            }),
        }
    }

    /// The elements at layout `l` as a new contiguous buffer on the same device.
    pub fn contiguous(&self, l: &crate::Layout) -> Result<Storage> {
        match self {
            Storage::Cpu(c) => Ok(Storage::Cpu(
                crate::with_cpu!(c, v => crate::Element::into_storage(
                crate::cpu::strided::to_contiguous(&v[..], l))),
            )),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => Ok(Storage::Cuda(c.contiguous(l)?)),
        }
    }

    /// `0, 1, ..., n-1` in `dtype`, written on `device`.
    pub fn arange(device: Device, dtype: DType, n: usize) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::arange(dtype, n))),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                let b = crate::cuda::CudaBackend::get(i)?;
                Ok(Storage::Cuda(crate::cuda::CudaStorage::arange(
                    &b, dtype, n,
                )?))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::no_cuda_build(device)),
        }
    }

    /// A buffer of `n` copies of `value` on `device`.
    pub fn full(device: Device, dtype: DType, n: usize, value: f64) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::full(dtype, n, value))),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => {
                let b = crate::cuda::CudaBackend::get(i)?;
                Ok(Storage::Cuda(crate::cuda::CudaStorage::full(
                    &b, dtype, n, value,
                )?))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::device::no_cuda_build(device)),
        }
    }
}

/// The error for an op whose kernel for `device` does not exist in this build.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn no_kernel(op: &'static str, device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: format!(
            "{op} has no kernel for this device in this build; move its inputs with \
             .to_device(Device::Cpu) for this op"
        ),
    }
}
