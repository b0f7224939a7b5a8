//! Row reductions over contiguous data: `out[r] = reduce(x[r*len .. (r+1)*len])`.
//!
//! Callers permute the reduced axes to the end first. Rows are reduced with the lane-parallel
//! helpers of [`super::lanes`] (vectorisable, and more accurate than one running sum); long
//! rows are split into fixed-size chunks reduced in parallel and combined in order, so results
//! do not depend on thread count.

use super::lanes::{lanes_max, lanes_min, lanes_sum};
use crate::dtype::Float;
use rayon::prelude::*;

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Maximum (NaN wins).
    Max,
    /// Minimum (NaN wins).
    Min,
}

const PAR: usize = 1 << 15;
const SPLIT: usize = 1 << 14;

#[inline]
fn reduce_slice<T: Float>(x: &[T], kind: ReduceKind) -> T {
    super::simd::dispatch(
        #[inline(always)]
        || reduce_slice_inner(x, kind),
    )
}

#[inline(always)]
fn reduce_slice_inner<T: Float>(x: &[T], kind: ReduceKind) -> T {
    match kind {
        ReduceKind::Sum => lanes_sum(x),
        ReduceKind::Max => lanes_max(x),
        ReduceKind::Min => lanes_min(x),
    }
}

/// The value that `combine` leaves unchanged (the result of an empty reduction).
fn identity<T: Float>(kind: ReduceKind) -> T {
    match kind {
        ReduceKind::Sum => T::ZERO,
        ReduceKind::Max => T::NEG_INF,
        ReduceKind::Min => T::INF,
    }
}

fn combine<T: Float>(a: T, b: T, kind: ReduceKind) -> T {
    match kind {
        ReduceKind::Sum => a + b,
        ReduceKind::Max => a.max(b),
        ReduceKind::Min => a.min(b),
    }
}

fn reduce_row<T: Float>(x: &[T], kind: ReduceKind) -> T {
    if x.len() >= 2 * SPLIT {
        let parts: Vec<T> = x.par_chunks(SPLIT).map(|c| reduce_slice(c, kind)).collect();
        parts
            .into_iter()
            .reduce(|a, b| combine(a, b, kind))
            .unwrap_or(T::ZERO)
    } else {
        reduce_slice(x, kind)
    }
}

/// Reduces each of the `rows` rows of length `len` of the contiguous `x`.
pub fn reduce_rows<T: Float>(x: &[T], rows: usize, len: usize, kind: ReduceKind) -> Vec<T> {
    if len == 0 {
        return vec![identity(kind); rows];
    }
    if rows >= 2 && x.len() >= PAR {
        x.par_chunks(len).map(|r| reduce_slice(r, kind)).collect()
    } else {
        x.chunks(len).map(|r| reduce_row(r, kind)).collect()
    }
}

/// Reduces the leading `rows` axis of a contiguous `[rows, cols]` array: `out[c]` combines
/// `x[r, c]` over `r` (e.g. a bias gradient summed over the batch). Runs along rows, so the
/// inner loop is a vectorised combine of two rows; parallel over blocks of rows, partial results
/// combined in block order (deterministic for a given size).
pub fn reduce_leading<T: Float>(x: &[T], rows: usize, cols: usize, kind: ReduceKind) -> Vec<T> {
    let id = identity(kind);
    if cols == 0 {
        return Vec::new();
    }
    let block = |rs: &[T]| -> Vec<T> {
        let mut acc = vec![id; cols];
        // One loop per kind, so the inner loop holds no branch and vectorises.
        match kind {
            ReduceKind::Sum => combine_rows(&mut acc, rs, |a, b| a + b),
            ReduceKind::Max => combine_rows(&mut acc, rs, |a, b| a.max(b)),
            ReduceKind::Min => combine_rows(&mut acc, rs, |a, b| a.min(b)),
        }
        acc
    };
    let x = &x[..rows * cols];
    if x.len() < PAR || rows < 2 {
        return block(x);
    }
    let rows_per = (SPLIT / cols).max(1);
    let parts: Vec<Vec<T>> = x.par_chunks(rows_per * cols).map(block).collect();
    let mut out = vec![id; cols];
    for p in parts {
        for (a, v) in out.iter_mut().zip(p) {
            *a = combine(*a, v, kind);
        }
    }
    out
}

/// `acc[c] = f(acc[c], row[c])` for every row of `rows` (rows of `acc.len()` values).
#[inline(always)]
fn combine_rows<T: Float>(acc: &mut [T], rows: &[T], f: impl Fn(T, T) -> T) {
    let cols = acc.len();
    super::simd::dispatch(
        #[inline(always)]
        || {
            for r in rows.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(r) {
                    *a = f(*a, v);
                }
            }
        },
    );
}

/// Index of the first maximum (`max = true`) or minimum of each row.
pub fn arg_rows<T: Float>(x: &[T], len: usize, max: bool) -> Vec<i64> {
    let f = |r: &[T]| -> i64 {
        let mut best = 0;
        for i in 1..r.len() {
            let better = if max {
                r[i] > r[best] || (r[i].is_nan() && !r[best].is_nan())
            } else {
                r[i] < r[best] || (r[i].is_nan() && !r[best].is_nan())
            };
            if better {
                best = i;
            }
        }
        best as i64
    };
    if x.len() >= PAR {
        x.par_chunks(len).map(f).collect()
    } else {
        x.chunks(len).map(f).collect()
    }
}
