//! The CUDA backend (issue 7): device buffers, kernels compiled at run time from
//! `kernels/*.cu` with NVRTC, and the launches behind each op's CUDA arm.
//!
//! Nothing here needs CUDA at build time: cudarc loads libcuda and libnvrtc when a CUDA device
//! is first asked for, and [`CudaBackend::get`] explains what is missing when they are absent.
//! [`available`] is the cheap check tests and programs use to pick a device.

pub mod attention;
pub mod batch_norm;
mod compile;
pub mod conv;
pub mod conv_mma;
mod device;
pub mod elementwise;
pub(crate) mod fastdiv;
pub mod index;
pub(crate) mod launch;
pub mod layer_norm;
pub mod lt;
pub mod matmul;
pub mod mlp;
pub mod optim;
pub mod pool;
pub mod profile;
pub mod random;
pub mod reduce;
pub mod rows;
pub mod sort;
pub mod split_k;
mod staging;
mod storage;
pub(crate) mod table;

pub use compile::{
    cache_dir, compile_cubin, kernel_file, nvrtc_problem, nvrtc_version, KERNEL_FILES,
};
pub use device::{device_count, emulator_counters, CudaBackend, EmulatorCounters};
pub use storage::{CudaData, CudaStorage};

/// Whether CUDA device `ordinal` can be used, or the plain reason why not.
pub fn available(ordinal: usize) -> std::result::Result<(), String> {
    CudaBackend::get(ordinal).map(|_| ()).map_err(|e| match e {
        crate::Error::DeviceUnavailable { reason, .. } => reason,
        other => other.to_string(),
    })
}
