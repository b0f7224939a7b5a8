//! Row-wise softmax and log-softmax over contiguous rows: one pass for the maximum, one for
//! the sum of exponentials, one to write; rows in parallel above a size threshold.

use crate::dtype::Float;
use rayon::prelude::*;

const PAR: usize = 1 << 14;

fn row<T: Float>(x: &[T], out: &mut [T], log: bool) {
    super::simd::dispatch(
        #[inline(always)]
        || row_inner(x, out, log),
    )
}

/// Maximum with 16 independent lanes (vectorisable; NaN propagates).
#[inline(always)]
pub(crate) fn lanes_max<T: Float>(x: &[T]) -> T {
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
pub(crate) fn lanes_sum<T: Float>(x: &[T]) -> T {
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
pub(crate) fn lanes_sum_exp<T: Float>(x: &[T], m: T) -> T {
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

#[inline(always)]
fn row_inner<T: Float>(x: &[T], out: &mut [T], log: bool) {
    let m = lanes_max(x);
    let m = if m == T::NEG_INF { T::ZERO } else { m };
    // Separate passes so each loop vectorises (a running sum beside exp would not).
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
    }
    let s = lanes_sum(out);
    if log {
        let lse = s.ln() + m;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - lse;
        }
    } else {
        let inv = T::ONE / s;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Softmax (or log-softmax) of each row of length `len`.
pub fn softmax_rows<T: Float>(x: &[T], len: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    if len == 0 {
        return out;
    }
    if x.len() >= PAR {
        out.par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .for_each(|(o, r)| row(r, o, log));
    } else {
        out.chunks_mut(len)
            .zip(x.chunks(len))
            .for_each(|(o, r)| row(r, o, log));
    }
    out
}
