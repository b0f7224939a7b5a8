//! Reductions with 16 independent accumulators: the compiler keeps them in vector registers,
//! so these loops vectorise (a single running accumulator would not, under strict float
//! ordering), and the fixed combination order keeps results deterministic. Call them inside
//! [`super::simd::dispatch`] to get the widest instruction set.

use crate::dtype::Float;

/// Maximum with 16 independent lanes (vectorisable; NaN propagates).
#[inline(always)]
pub fn lanes_max<T: Float>(x: &[T]) -> T {
    let mut acc = [T::NEG_INF; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    rem.iter()
        .fold(acc.iter().fold(T::NEG_INF, |a, &b| a.max(b)), |a, &b| {
            a.max(b)
        })
}

/// Sum with 16 independent lanes (vectorisable).
#[inline(always)]
pub fn lanes_sum<T: Float>(x: &[T]) -> T {
    let mut acc = [T::ZERO; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] += c[k];
        }
    }
    rem.iter()
        .fold(acc.iter().fold(T::ZERO, |a, &b| a + b), |a, &b| a + b)
}

/// `sum(exp(x - m))` with 16 independent lanes (vectorisable).
#[inline(always)]
pub fn lanes_sum_exp<T: Float>(x: &[T], m: T) -> T {
    let mut acc = [T::ZERO; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] += (c[k] - m).exp();
        }
    }
    rem.iter()
        .fold(acc.iter().fold(T::ZERO, |a, &b| a + b), |a, &b| {
            a + (b - m).exp()
        })
}

/// Minimum with 16 independent lanes (vectorisable; NaN propagates).
#[inline(always)]
pub fn lanes_min<T: Float>(x: &[T]) -> T {
    let mut acc = [T::INF; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for k in 0..16 {
            acc[k] = acc[k].min(c[k]);
        }
    }
    rem.iter()
        .fold(acc.iter().fold(T::INF, |a, &b| a.min(b)), |a, &b| a.min(b))
}
