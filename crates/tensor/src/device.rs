//! Where a tensor's storage lives.

use crate::error::{Error, Result};

/// A compute device. Every tensor is on exactly one; ops refuse operands on different devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, CPU kernels (SIMD + rayon).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (the CUDA backend: the `cuda` feature, on by default).
    Cuda(usize),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// `Ok` when tensors can be placed on this device, else [`Error::DeviceUnavailable`] with the
    /// plain reason (no driver, no NVRTC, no such GPU, or a build without the `cuda` feature).
    pub fn check(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => crate::cuda::CudaBackend::get(i).map(|_| ()),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(no_cuda_build(self)),
        }
    }

    /// Waits until every op queued on this device has finished (a no-op on the CPU, whose ops
    /// run synchronously); used to time GPU work and before reading clocks.
    pub fn synchronize(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => crate::cuda::CudaBackend::get(i)?.synchronize(),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(no_cuda_build(self)),
        }
    }

    /// GPU `ordinal` when it can be used, else the CPU.
    pub fn cuda_if_available(ordinal: usize) -> Device {
        let d = Device::Cuda(ordinal);
        if d.check().is_ok() {
            d
        } else {
            Device::Cpu
        }
    }

    /// Prepares every kernel this device can run, so that no op waits for a compile later:
    /// on a GPU, [`crate::cuda::CudaBackend::load_all_kernels`] (NVRTC on all cores at once,
    /// through the on-disk cache); nothing to do on the CPU.
    pub fn load_kernels(self) -> Result<KernelsLoaded> {
        match self {
            Device::Cpu => Ok(KernelsLoaded::default()),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => crate::cuda::CudaBackend::get(i)?.load_all_kernels(),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(no_cuda_build(self)),
        }
    }

    /// Every device this process can use: the CPU, then each usable GPU.
    pub fn all_available() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut v = vec![Device::Cpu];
        #[cfg(feature = "cuda")]
        if let Ok(n) = crate::cuda::device_count() {
            v.extend((0..n).map(Device::Cuda).filter(|d| d.check().is_ok()));
        }
        v
    }

    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Device> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| Error::DeviceUnavailable {
                    device: Device::Cpu,
                    reason: format!("unknown device {other:?}; use cpu, cuda or cuda:N"),
                }),
        }
    }
}

/// What [`Device::load_kernels`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelsLoaded {
    /// Kernel files that were not loaded yet and now are (0 on the CPU, or when every file
    /// was loaded before).
    pub files: usize,
    /// How many of them NVRTC compiled; the others came from the on-disk cache.
    pub compiled: usize,
    /// Wall-clock seconds it took.
    pub seconds: f64,
}

/// The error for a GPU asked of a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub(crate) fn no_cuda_build(device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: "selfsup-tensor was built without its `cuda` feature".into(),
    }
}
