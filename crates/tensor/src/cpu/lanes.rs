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

/// Sums both components of `f(a_i, b_i, c_i)` over equal-length slices (the shortest length
/// when they differ) with 16 independent lanes each: walked in 16-element chunks, so the loop
/// vectorises with no bounds checks; the tail is summed apart and the lanes folded onto it.
#[inline(always)]
pub fn lanes_sum_pair3<T: Float>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> (T, T),
) -> (T, T) {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let (mut sa, mut sb) = ([T::ZERO; 16], [T::ZERO; 16]);
    let full = n / 16 * 16;
    for ((ca, cb), cc) in a[..full]
        .chunks_exact(16)
        .zip(b[..full].chunks_exact(16))
        .zip(c[..full].chunks_exact(16))
    {
        for k in 0..16 {
            let (p, q) = f(ca[k], cb[k], cc[k]);
            sa[k] += p;
            sb[k] += q;
        }
    }
    let (mut ta, mut tb) = (T::ZERO, T::ZERO);
    for j in full..n {
        let (p, q) = f(a[j], b[j], c[j]);
        ta += p;
        tb += q;
    }
    (
        sa.iter().fold(ta, |s, &v| s + v),
        sb.iter().fold(tb, |s, &v| s + v),
    )
}

/// Sums `f(a_i, b_i, c_i)` over equal-length slices, as [`lanes_sum_pair3`] does per component.
#[inline(always)]
pub fn lanes_sum3<T: Float>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> T {
    lanes_sum_pair3(a, b, c, |x, y, z| (f(x, y, z), T::ZERO)).0
}
