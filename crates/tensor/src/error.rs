//! The error type of the tensor crate.
//!
//! Policy: every operation returns [`Result`]. Misuse (shapes that do not agree, an axis out of
//! range, a dtype an op does not support, tensors on different devices) is reported as an
//! [`Error`] whose message names the op and the shapes or dtypes involved, e.g.
//! `matmul: lhs [32, 64] and rhs [65, 10] do not agree on the inner dimension`. Nothing in this
//! crate panics on input a caller controls.

use crate::{DType, Device};

/// A shape, printed as `[2, 3]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ShapeDisplay(pub Vec<usize>);

impl std::fmt::Debug for ShapeDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for ShapeDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for ShapeDisplay {
    fn from(s: &[usize]) -> Self {
        ShapeDisplay(s.to_vec())
    }
}

/// Everything that can go wrong in a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that the op needs to agree do not.
    #[error("{op}: {msg}")]
    Shape {
        /// The op that refused its inputs.
        op: &'static str,
        /// What does not agree, with the shapes.
        msg: String,
    },
    /// An axis index outside `0..rank` (negative axes count from the end).
    #[error("{op}: axis {axis} is out of range for a tensor of shape {shape} (rank {rank})")]
    Axis {
        /// The op.
        op: &'static str,
        /// The axis asked for.
        axis: isize,
        /// The tensor's shape.
        shape: ShapeDisplay,
        /// Its rank.
        rank: usize,
    },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch: lhs is {lhs:?}, rhs is {rhs:?} (convert one with .to_dtype())")]
    DTypeMismatch {
        /// The op.
        op: &'static str,
        /// Left operand's dtype.
        lhs: DType,
        /// Right operand's dtype.
        rhs: DType,
    },
    /// The op does not support this dtype.
    #[error("{op}: dtype {dtype:?} is not supported (supported: {supported})")]
    UnsupportedDType {
        /// The op.
        op: &'static str,
        /// The dtype given.
        dtype: DType,
        /// What the op accepts.
        supported: &'static str,
    },
    /// Operands live on different devices.
    #[error(
        "{op}: operands are on different devices ({lhs:?} and {rhs:?}); move one with .to_device()"
    )]
    DeviceMismatch {
        /// The op.
        op: &'static str,
        /// Left operand's device.
        lhs: Device,
        /// Right operand's device.
        rhs: Device,
    },
    /// The device cannot be used here (e.g. CUDA asked for but not available).
    #[error("device {device:?} is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: Device,
        /// Why it cannot be used.
        reason: String,
    },
    /// A CUDA driver or kernel failure on a device that was opened.
    #[error("CUDA error on {device:?}: {reason}")]
    Cuda {
        /// The device.
        device: Device,
        /// What failed, with the driver's error code.
        reason: String,
    },
    /// A data buffer whose length does not match the shape.
    #[error("{op}: {len} elements cannot fill shape {shape} ({expected} elements)")]
    DataLength {
        /// The op.
        op: &'static str,
        /// Elements given.
        len: usize,
        /// The shape asked for.
        shape: ShapeDisplay,
        /// Elements the shape needs.
        expected: usize,
    },
    /// An index outside the valid range.
    #[error("{op}: index {index} is out of range for size {size}")]
    Index {
        /// The op.
        op: &'static str,
        /// The bad index.
        index: i64,
        /// The size of the indexed dimension.
        size: usize,
    },
    /// A misuse of autograd (e.g. `backward` on a non-scalar).
    #[error("{op}: {msg}")]
    Autograd {
        /// The op.
        op: &'static str,
        /// What went wrong.
        msg: String,
    },
    /// Any other invalid argument.
    #[error("{op}: {msg}")]
    Invalid {
        /// The op.
        op: &'static str,
        /// What is wrong and how to fix it.
        msg: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for an [`Error::Shape`].
pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        msg: msg.into(),
    })
}

/// Shorthand for an [`Error::Invalid`].
pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        msg: msg.into(),
    })
}
