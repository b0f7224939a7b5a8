//! CPU kernels. Each file holds one family; each works on plain slices plus a [`Layout`]
//! (contiguous fast paths with a strided fallback) and parallelises with rayon above a size
//! threshold. Nothing here knows about autograd.
//!
//! [`Layout`]: crate::Layout

pub mod attention;
pub mod batch_norm;
pub mod conv;
pub mod cross_entropy;
pub mod gemm;
pub mod index;
pub mod lanes;
pub mod layer_norm;
pub mod math;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod simd;
pub mod softmax;
pub mod stride_copy;
pub mod strided;
