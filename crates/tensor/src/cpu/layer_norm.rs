//! Fused layer normalisation over the last axis of contiguous `[R, D]` data (rows `R`, the
//! product of the leading axes), forward and backward.
//!
//! Forward, per row: mean and biased variance (two passes over the row, which sits in L1),
//! then `y = (x - mean) * rstd * w + b` written once; `mean` and `rstd = 1 / sqrt(var + eps)`
//! are kept per row for the backward. Backward, per row with `gw = dy * w`:
//! `dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))`; the parameter gradients
//! `dw = sum_rows dy * xhat`, `db = sum_rows dy` are summed per parallel chunk of rows, then
//! across chunks. Rows are processed in parallel; sums run in 16 lanes.

use crate::dtype::Float;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Sum of `f(i)` for `i < n` in 16 lanes.
#[inline(always)]
fn lanes<T: Float>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut acc = [T::ZERO; 16];
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(i + k);
        }
        i += 16;
    }
    let mut tail = T::ZERO;
    for j in full..n {
        tail += f(j);
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Forward: returns `(y, mean, rstd)` for rows of length `d`; `w`, `b` have length `d` (or are
/// absent: 1 and 0).
pub fn forward<T: Float>(
    x: &[T],
    d: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    let mut y: Vec<T> = Vec::with_capacity(rows * d);
    let mut mean = vec![T::ZERO; rows];
    let mut rstd = vec![T::ZERO; rows];
    if rows == 0 || d == 0 {
        return (y, mean, rstd);
    }
    let inv_d = T::c(1.0 / d as f64);
    let task = ROWS_PER_TASK * d;
    y.spare_capacity_mut()[..rows * d]
        .par_chunks_mut(task)
        .zip(mean.par_chunks_mut(ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(t, ((yc, mc), rc))| {
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for (r, yr) in yc.chunks_mut(d).enumerate() {
                        let row = t * ROWS_PER_TASK + r;
                        let xr = &x[row * d..(row + 1) * d];
                        let mu = lanes(d, |i| xr[i]) * inv_d;
                        let var = lanes(d, |i| {
                            let c = xr[i] - mu;
                            c * c
                        }) * inv_d;
                        let rs = T::ONE / (var + T::c(eps)).sqrt();
                        mc[r] = mu;
                        rc[r] = rs;
                        let wv = |i: usize| w.map_or(T::ONE, |w| w[i]);
                        let bv = |i: usize| b.map_or(T::ZERO, |b| b[i]);
                        for i in 0..d {
                            yr[i].write((xr[i] - mu) * rs * wv(i) + bv(i));
                        }
                    }
                },
            )
        });
    // SAFETY: every row chunk wrote all of its `d` values above.
    unsafe { y.set_len(rows * d) };
    (y, mean, rstd)
}

/// Backward: returns `(dx, dw, db)` (`dw`, `db` summed over rows, length `d`).
pub fn backward<T: Float>(
    x: &[T],
    dy: &[T],
    d: usize,
    w: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    let mut dx: Vec<T> = Vec::with_capacity(rows * d);
    if rows == 0 || d == 0 {
        return (dx, vec![T::ZERO; d], vec![T::ZERO; d]);
    }
    let inv_d = T::c(1.0 / d as f64);
    let task = ROWS_PER_TASK * d;
    let partials: Vec<(Vec<T>, Vec<T>)> = dx.spare_capacity_mut()[..rows * d]
        .par_chunks_mut(task)
        .enumerate()
        .map(|(t, dc)| {
            let mut dw = vec![T::ZERO; d];
            let mut db = vec![T::ZERO; d];
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for (r, dxr) in dc.chunks_mut(d).enumerate() {
                        let row = t * ROWS_PER_TASK + r;
                        let (xr, gr) = (&x[row * d..(row + 1) * d], &dy[row * d..(row + 1) * d]);
                        let (mu, rs) = (mean[row], rstd[row]);
                        let wv = |i: usize| w.map_or(T::ONE, |w| w[i]);
                        let a = lanes(d, |i| gr[i] * wv(i)) * inv_d;
                        let bm = lanes(d, |i| gr[i] * wv(i) * (xr[i] - mu) * rs) * inv_d;
                        let (dw, db) = (&mut dw[..d], &mut db[..d]);
                        for i in 0..d {
                            let xh = (xr[i] - mu) * rs;
                            dxr[i].write(rs * (gr[i] * wv(i) - a - xh * bm));
                            dw[i] += gr[i] * xh;
                            db[i] += gr[i];
                        }
                    }
                },
            );
            (dw, db)
        })
        .collect();
    // SAFETY: every row chunk wrote all of its `d` values above.
    unsafe { dx.set_len(rows * d) };
    let mut dw = vec![T::ZERO; d];
    let mut db = vec![T::ZERO; d];
    for (pw, pb) in partials {
        for i in 0..d {
            dw[i] += pw[i];
            db[i] += pb[i];
        }
    }
    (dx, dw, db)
}
