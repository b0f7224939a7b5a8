//! Row-wise softmax and log-softmax over contiguous rows: one pass for the maximum, one for
//! the sum of exponentials, one to write; rows in parallel above a size threshold.

use super::lanes::{lanes_max, lanes_sum};
use crate::dtype::Float;
use rayon::prelude::*;

const PAR: usize = 1 << 14;

fn row<T: Float>(x: &[T], out: &mut [T], log: bool) {
    super::simd::dispatch(
        #[inline(always)]
        || row_inner(x, out, log),
    )
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
