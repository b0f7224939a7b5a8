//! `selfsup-tensor`: the tensor engine under selfsup.
//!
//! - [`Tensor`]: an n-dimensional array (f32, f64, bf16, f16, i64, u32) over shared storage,
//!   with views (reshape, permute, narrow, select, broadcast) that do not copy.
//! - Reverse-mode autograd written by hand: every op records its backward; [`Tensor::backward`]
//!   fills the `grad` of leaves; [`no_grad`] and [`Tensor::detach`] stop it.
//! - CPU kernels vectorised and parallel with rayon ([`cpu`]); one op definition per family in
//!   [`ops`], with a device dispatch point for the CUDA backend. Run a training step inside
//!   [`parallel::hot`] so the pool's workers spin between ops instead of sleeping.
//! - A counter-based RNG ([`rng`]) so random draws are reproducible across threads and devices.
//! - [`gradcheck`]: finite-difference checks of any function of tensors.
//!
//! # Errors
//! Every op returns [`Result`]; misuse is an [`Error`] that names the op and the shapes.
//!
//! ```
//! use selfsup_tensor::{Tensor, DType};
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?.requires_grad_();
//! let y = x.matmul(&x.t()?)?.sum_all()?;
//! y.backward()?;
//! assert_eq!(x.grad().unwrap().to_vec::<f32>()?, vec![8.0, 12.0, 8.0, 12.0]);
//! # Ok::<(), selfsup_tensor::Error>(())
//! ```

#![warn(missing_docs)]

pub mod alloc;
pub mod autograd;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
mod dtype;
mod error;
pub mod gradcheck;
mod layout;
pub mod ops;
pub mod parallel;
pub mod precision;
pub mod rng;
#[cfg(feature = "cuda")]
mod shadow;
mod storage;
mod tensor;

pub use autograd::{is_grad_enabled, no_grad, no_grad_scope, set_grad_enabled, BackwardOp};
pub use device::{Device, KernelsLoaded};
pub use dtype::{DType, Element, Float};
pub use error::{Error, Result, ShapeDisplay};
pub use layout::{broadcast_shapes, Layout};
pub use ops::conv::Conv2dParams;
pub use ops::mlp::MlpActivation;
pub use rng::Generator;
pub use storage::{CpuStorage, Storage};
pub use tensor::{live_buffers, Tensor, TensorId};
