//! Where a tensor's storage lives.

/// A compute device. Every tensor is on exactly one; ops refuse operands on different devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, CPU kernels (SIMD + rayon).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal (the CUDA backend, issue 7; not available in this build yet).
    Cuda(usize),
}

impl Device {
    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }
}
