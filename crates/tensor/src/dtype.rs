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
element!(bf16, BF16, |x| x.to_f64(), |y| bf16_from_f64(y));
element!(f16, F16, |x| x.to_f64(), |y| f16_from_f64(y));

/// `y` rounded to f32 "to odd": `y` itself when exact; otherwise of the two f32 around it, the
/// one with an odd significand. Rounding that to a format with at least two fewer significand
/// bits, to nearest even, gives `y` correctly rounded to it (no double-rounding error).
fn f32_round_to_odd(y: f64) -> f32 {
    let f = y as f32;
    if !f.is_finite() || f64::from(f) == y {
        // Exact, NaN, or past f32's range (which bf16 and f16 round to infinity as well).
        return f;
    }
    // Toward zero, then the odd one of the pair: the last bit set.
    let mut bits = f.to_bits();
    if f64::from(f).abs() > y.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// `y` correctly rounded to bf16 (to nearest even; NaN stays NaN), as the GPU's conversion
/// kernels round f32. `half`'s own `bf16::from_f64` drops the low 32 bits of the f64 before
/// rounding, so an f32 just above a halfway point (its lowest three bits the only ones set
/// below the rounding bit) comes out rounded down as if it were halfway.
pub(crate) fn bf16_from_f64(y: f64) -> bf16 {
    bf16::from_f32(f32_round_to_odd(y))
}

/// `y` correctly rounded to f16 (to nearest even; NaN stays NaN); see [`bf16_from_f64`].
pub(crate) fn f16_from_f64(y: f64) -> f16 {
    f16::from_f32(f32_round_to_odd(y))
}
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

#[cfg(test)]
mod rounding_tests {
    use super::*;

    /// The bf16 (or f16) nearest to `y` among the neighbours of a candidate, ties to the even
    /// significand, found by comparing exact f64 distances.
    fn nearest(y: f64, candidate: u16, to_f64: impl Fn(u16) -> f64) -> u16 {
        let mut best = candidate;
        for c in [candidate.wrapping_sub(1), candidate.wrapping_add(1)] {
            let (d, db) = ((to_f64(c) - y).abs(), (to_f64(best) - y).abs());
            if d < db || (d == db && c & 1 == 0) {
                best = c;
            }
        }
        best
    }

    #[test]
    fn conversions_from_f64_round_to_nearest_even_exactly() {
        // Just above halfway between bf16 0x3f00 and 0x3f01: only the f32's last bit is set
        // below the rounding bit. `half`'s bf16::from_f64 rounds it down; the nearest is up.
        let y = f64::from(f32::from_bits(0x3f00_8001));
        assert_eq!(
            half::bf16::from_f64(y).to_bits(),
            0x3f00,
            "half's behaviour changed"
        );
        assert_eq!(bf16_from_f64(y).to_bits(), 0x3f01);
        assert_eq!(
            bf16_from_f64(y).to_bits(),
            bf16::from_f32(y as f32).to_bits()
        );
        // Exact halfway points go to the even one, both ways.
        assert_eq!(
            bf16_from_f64(f64::from(f32::from_bits(0x3f00_8000))).to_bits(),
            0x3f00
        );
        assert_eq!(
            bf16_from_f64(f64::from(f32::from_bits(0x3f01_8000))).to_bits(),
            0x3f02
        );
        assert!(bf16_from_f64(f64::NAN).is_nan() && f16_from_f64(f64::NAN).is_nan());
        assert_eq!(bf16_from_f64(1e300), bf16::INFINITY);
        assert_eq!(f16_from_f64(-1e6), f16::NEG_INFINITY);
        assert_eq!(bf16_from_f64(-0.0).to_bits(), 0x8000);
        // Random f64s and f32s of every magnitude (subnormals included), and f32s built next
        // to halfway points, against the exact nearest.
        let mut g = crate::rng::Philox::new(7, 0);
        for i in 0..200_000u32 {
            let r = g.next_u64();
            let y = match i % 3 {
                0 => f64::from_bits(r),
                1 => f64::from(f32::from_bits(r as u32)),
                _ => f64::from(f32::from_bits(
                    (r as u32 & 0xffff_0000) | 0x8000 | (r >> 40) as u32 & 7,
                )),
            };
            if !y.is_finite() || y.abs() > 1e30 {
                continue;
            }
            let b = bf16_from_f64(y).to_bits();
            assert_eq!(
                b,
                nearest(y, b, |c| bf16::from_bits(c).to_f64()),
                "bf16 of {y:e}"
            );
            if y.abs() < 6e4 {
                let h = f16_from_f64(y).to_bits();
                assert_eq!(
                    h,
                    nearest(y, h, |c| f16::from_bits(c).to_f64()),
                    "f16 of {y:e}"
                );
            }
        }
    }
}
