//! Element types: what a tensor can store ([`Element`]) and what CPU kernels compute in
//! ([`Float`]).
//!
//! f32 is first-class; f64 serves gradient checks and references; bf16 and f16 are storage
//! formats (converted to f32 for compute on the CPU); i64 and u32 hold labels and indices.

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// bfloat16 (storage; computed in f32 on the CPU).
    BF16,
    /// IEEE half (storage; computed in f32 on the CPU).
    F16,
    /// 64-bit signed integer (labels, indices).
    I64,
    /// 32-bit unsigned integer (indices).
    U32,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// Whether the dtype is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
    }

    /// Whether the dtype is an integer type.
    pub fn is_int(self) -> bool {
        !self.is_float()
    }

    /// Lower-case name, as used in checkpoints and messages (`f32`, `bf16`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::U32 => "u32",
        }
    }
}

/// A Rust type that a tensor can store.
pub trait Element: Copy + Send + Sync + 'static + std::fmt::Debug + PartialEq {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Converts to f64 (exact for every type but i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Converts from f64 (rounding to nearest; saturating for integers).
    fn from_f64(x: f64) -> Self;
    #[doc(hidden)]
    fn into_storage(v: Vec<Self>) -> crate::storage::CpuStorage;
    #[doc(hidden)]
    fn slice(s: &crate::storage::CpuStorage) -> Option<&[Self]>;
    #[doc(hidden)]
    fn slice_mut(s: &mut crate::storage::CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! element {
    ($t:ty, $d:ident, |$x:ident| $to:expr, |$y:ident| $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                let $x = self;
                $to
            }
            #[inline(always)]
            fn from_f64($y: f64) -> Self {
                $from
            }
            fn into_storage(v: Vec<Self>) -> crate::storage::CpuStorage {
                crate::storage::CpuStorage::$d(v)
            }
            fn slice(s: &crate::storage::CpuStorage) -> Option<&[Self]> {
                match s {
                    crate::storage::CpuStorage::$d(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut crate::storage::CpuStorage) -> Option<&mut [Self]> {
                match s {
                    crate::storage::CpuStorage::$d(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32, |x| x as f64, |y| y as f32);
element!(f64, F64, |x| x, |y| y);
element!(bf16, BF16, |x| x.to_f64(), |y| bf16::from_f64(y));
element!(f16, F16, |x| x.to_f64(), |y| f16::from_f64(y));
element!(i64, I64, |x| x as f64, |y| y as i64);
element!(u32, U32, |x| x as f64, |y| y as u32);

/// A float type the CPU kernels compute in (f32 and f64).
pub trait Float:
    Element
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Negative infinity.
    const NEG_INF: Self;
    /// Positive infinity.
    const INF: Self;
    /// Converts a small constant.
    fn c(x: f64) -> Self {
        Self::from_f64(x)
    }
    /// e^x.
    fn exp(self) -> Self;
    /// Natural log.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Error function (f32: the vectorisable [`crate::cpu::math::erf_f32`], absolute error
    /// below 4e-7; f64: libm).
    fn erf(self) -> Self;
    /// `(1 + erf(x), e^(-x²))` together, accurate in absolute terms without cancellation for
    /// negative x (the GELU's `2·Φ(x·√2)`; f32: [`crate::cpu::math::erf1p_gauss_f32`], f64:
    /// libm's `erfc(-x)`).
    fn erf1p_gauss(self) -> (Self, Self);
    /// x^y.
    fn powf(self, y: Self) -> Self;
    /// |x|.
    fn abs(self) -> Self;
    /// The larger of two (NaN-propagating).
    fn max(self, o: Self) -> Self;
    /// The smaller of two (NaN-propagating).
    fn min(self, o: Self) -> Self;
    /// Whether NaN.
    fn is_nan(self) -> bool;
    /// e^x - 1 accurately near 0.
    fn exp_m1(self) -> Self;
    /// ln(1 + x) accurately near 0.
    fn ln_1p(self) -> Self;
    /// `self * a + b` with one rounding: one FMA instruction inside
    /// [`crate::cpu::simd::dispatch`] on CPUs that have it (a slow library call elsewhere, so
    /// use it only in dispatched kernels).
    fn mul_add(self, a: Self, b: Self) -> Self;
}

macro_rules! float {
    ($t:ty, $erf:path, $exp:path, $erf1p_gauss:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            const INF: Self = <$t>::INFINITY;
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn erf1p_gauss(self) -> (Self, Self) {
                $erf1p_gauss(self)
            }
            #[inline(always)]
            fn powf(self, y: Self) -> Self {
                <$t>::powf(self, y)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                if self.is_nan() || self > o {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                if self.is_nan() || self < o {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
        }
    };
}
float!(
    f32,
    crate::cpu::math::erf_f32,
    crate::cpu::math::exp_f32,
    crate::cpu::math::erf1p_gauss_f32
);
float!(f64, libm::erf, f64::exp, erf1p_gauss_f64);

/// `(1 + erf(x), e^(-x²))` in f64, as `erfc(-x)` from libm.
fn erf1p_gauss_f64(x: f64) -> (f64, f64) {
    (libm::erfc(-x), (-x * x).exp())
}
