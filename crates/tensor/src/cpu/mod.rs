//! CPU compute kernels.
pub mod gemm;
