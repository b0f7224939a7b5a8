//! Tensor ops, one family per file, each with its forward (shape checks, device dispatch to a
//! kernel) and its backward (a [`crate::autograd::BackwardOp`] written with tensor ops).

pub mod attention;
pub mod batch_norm;
pub mod binary;
pub mod cast;
pub mod conv;
#[cfg(feature = "cuda")]
mod conv_implicit;
pub mod ema;
pub mod finite;
pub mod fusion;
pub mod index;
pub mod layer_norm;
pub mod linear;
pub mod linear_ce;
pub mod loss;
pub mod matmul;
pub mod mlp;
pub mod optim;
pub mod pool;
pub mod qkv_attention;
pub mod random;
pub mod reduce;
pub mod softmax;
pub mod transfer;
pub mod unary;
pub mod view;

use crate::error::{Error, Result};
use crate::{DType, Tensor};

/// The error for a dtype an op does not compute in.
pub(crate) fn unsupported(op: &'static str, dtype: DType) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        supported: "f32, f64 (convert bf16/f16 with .to_dtype(DType::F32))",
    }
}

/// Refuses operands of different dtypes or devices.
pub(crate) fn check_same(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    check_device(op, a, b)
}

/// Refuses operands on different devices.
fn check_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    Ok(())
}

/// [`check_same`] for an input `x` and a parameter `w` of a matmul-heavy op, which also takes
/// a bf16 `x` with an f32 `w` on the same device (an operand already rounded:
/// [`crate::precision::operand_dtype`]).
pub(crate) fn check_input(op: &'static str, x: &Tensor, w: &Tensor) -> Result<()> {
    if crate::precision::is_bf16_operand(x, w) {
        return check_device(op, x, w);
    }
    check_same(op, x, w)
}

/// Runs `f` on the elements of `t` (made contiguous, detached) as a `&[T]`; `op` names the
/// caller in errors.
pub(crate) fn with_slice<T: crate::Element, R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> Result<R> {
    let t = t.detach().contiguous()?;
    let g = t.read();
    let cpu = g.cpu(op)?;
    let s = T::slice(cpu).ok_or(Error::DTypeMismatch {
        op,
        lhs: cpu.dtype(),
        rhs: T::DTYPE,
    })?;
    let l = t.layout();
    Ok(f(&s[l.offset()..l.offset() + l.numel()]))
}

/// `t`'s elements contiguous from element 0 of their own buffer, detached (a copy only if
/// needed): what kernels that take a bare pointer need.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().offset() == 0 {
        Ok(t.detach())
    } else {
        crate::ops::view::copy_contiguous(&t.detach())
    }
}

/// Runs `f` on `t`'s GPU buffer; a tensor elsewhere is the "no kernel for this device" error
/// naming `op` (for GPU arms reached with a tensor that is not on a GPU).
#[cfg(feature = "cuda")]
pub(crate) fn with_cuda<R>(
    op: &'static str,
    t: &Tensor,
    f: impl FnOnce(&crate::cuda::CudaStorage) -> Result<R>,
) -> Result<R> {
    match &*t.read() {
        crate::storage::Storage::Cuda(s) => f(s),
        _ => Err(crate::storage::no_kernel(op, t.device())),
    }
}

/// The CUDA storage behind a read guard, or the op's no-kernel error for any other storage
/// (for GPU arms that hold several operands' guards at once).
#[cfg(feature = "cuda")]
pub(crate) fn cuda_ref<'a>(
    op: &'static str,
    g: &'a std::sync::RwLockReadGuard<'_, crate::storage::Storage>,
) -> Result<&'a crate::cuda::CudaStorage> {
    match &**g {
        crate::storage::Storage::Cuda(c) => Ok(c),
        other => Err(crate::storage::no_kernel(op, other.device())),
    }
}

/// Refuses non-float tensors.
pub(crate) fn check_float(op: &'static str, a: &Tensor) -> Result<()> {
    match a.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        d => Err(unsupported(op, d)),
    }
}

/// Evaluates `$body` with `$v` bound to the f32 or f64 slice of a CPU storage, wrapping the
/// resulting `Vec` back into a storage of the same dtype; other dtypes are an error.
macro_rules! float_map {
    ($op:expr, $cpu:expr, $v:ident => $body:expr) => {
        match $cpu {
            $crate::storage::CpuStorage::F32($v) => $crate::storage::CpuStorage::F32($body),
            $crate::storage::CpuStorage::F64($v) => $crate::storage::CpuStorage::F64($body),
            other => return Err($crate::ops::unsupported($op, other.dtype())),
        }
    };
}
pub(crate) use float_map;

/// Like [`float_map`] for two storages of the same float dtype.
macro_rules! float_map2 {
    ($op:expr, $a:expr, $b:expr, $x:ident, $y:ident => $body:expr) => {
        match ($a, $b) {
            ($crate::storage::CpuStorage::F32($x), $crate::storage::CpuStorage::F32($y)) => {
                $crate::storage::CpuStorage::F32($body)
            }
            ($crate::storage::CpuStorage::F64($x), $crate::storage::CpuStorage::F64($y)) => {
                $crate::storage::CpuStorage::F64($body)
            }
            (a, b) => {
                return Err(if a.dtype() == b.dtype() {
                    $crate::ops::unsupported($op, a.dtype())
                } else {
                    $crate::Error::DTypeMismatch {
                        op: $op,
                        lhs: a.dtype(),
                        rhs: b.dtype(),
                    }
                })
            }
        }
    };
}
pub(crate) use float_map2;

/// Like [`float_map`] for three storages of the same float dtype.
macro_rules! float_map3 {
    ($op:expr, $a:expr, $b:expr, $c:expr, $x:ident, $y:ident, $z:ident => $body:expr) => {
        match ($a, $b, $c) {
            (
                $crate::storage::CpuStorage::F32($x),
                $crate::storage::CpuStorage::F32($y),
                $crate::storage::CpuStorage::F32($z),
            ) => $crate::storage::CpuStorage::F32($body),
            (
                $crate::storage::CpuStorage::F64($x),
                $crate::storage::CpuStorage::F64($y),
                $crate::storage::CpuStorage::F64($z),
            ) => $crate::storage::CpuStorage::F64($body),
            (a, _, _) => return Err($crate::ops::unsupported($op, a.dtype())),
        }
    };
}
pub(crate) use float_map3;

/// Reduces a broadcast gradient back to `shape` by summing the broadcast axes.
pub(crate) fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let extra = g.rank() - shape.len();
    let mut axes: Vec<isize> = (0..extra as isize).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[extra + i] != 1 {
            axes.push((extra + i) as isize);
        }
    }
    let s = if axes.is_empty() {
        g.clone()
    } else {
        g.sum(&axes, true)?
    };
    s.reshape(shape)
}
