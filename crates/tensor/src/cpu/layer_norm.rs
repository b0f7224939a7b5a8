//! Fused layer normalisation over the last axis of contiguous `[R, D]` data (rows `R`, the
//! product of the leading axes), forward and backward.
//!
//! Forward, per row: mean and biased variance (two passes over the row, which sits in L1),
//! then `y = (x - mean) * rstd * w + b` written once; `mean` and `rstd = 1 / sqrt(var + eps)`
//! are kept per row for the backward. Backward, per row with `gw = dy * w`:
//! `dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))`; the parameter gradients
//! `dw = sum_rows dy * xhat`, `db = sum_rows dy` are summed per parallel chunk of rows, then
//! across chunks. Rows are processed in parallel; sums run in 16 lanes.
//!
//! Every inner loop walks equal-length slices (an absent weight or bias is a row of ones or
//! zeros), so the compiler vectorises it without per-element bounds checks or branches.

use super::lanes::lanes_sum3;
use crate::dtype::Float;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `w` and `b` as slices of length `d` (ones and zeros when absent).
fn affine<'a, T: Float>(
    d: usize,
    w: Option<&'a [T]>,
    b: Option<&'a [T]>,
    ones: &'a mut Vec<T>,
    zeros: &'a mut Vec<T>,
) -> (&'a [T], &'a [T]) {
    let w = match w {
        Some(w) => &w[..d],
        None => {
            *ones = vec![T::ONE; d];
            &ones[..]
        }
    };
    let b = match b {
        Some(b) => &b[..d],
        None => {
            *zeros = vec![T::ZERO; d];
            &zeros[..]
        }
    };
    (w, b)
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
    let (mut ones, mut zeros) = (Vec::new(), Vec::new());
    let (w, b) = affine(d, w, b, &mut ones, &mut zeros);
    let x = &x[..rows * d];
    let inv_d = T::c(1.0 / d as f64);
    let eps = T::c(eps);
    let task = ROWS_PER_TASK * d;
    y.spare_capacity_mut()[..rows * d]
        .par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .zip(mean.par_chunks_mut(ROWS_PER_TASK))
        .zip(rstd.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|(((yc, xc), mc), rc)| {
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for (((yr, xr), m), r) in yc
                        .chunks_exact_mut(d)
                        .zip(xc.chunks_exact(d))
                        .zip(mc.iter_mut())
                        .zip(rc.iter_mut())
                    {
                        let mu = lanes_sum3(xr, xr, xr, |v, _, _| v) * inv_d;
                        let var = lanes_sum3(xr, xr, xr, |v, _, _| (v - mu) * (v - mu)) * inv_d;
                        let rs = T::ONE / (var + eps).sqrt();
                        *m = mu;
                        *r = rs;
                        let yr = &mut yr[..d];
                        for i in 0..d {
                            yr[i].write((xr[i] - mu) * rs * w[i] + b[i]);
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
    let (mut ones, mut zeros) = (Vec::new(), Vec::new());
    let (w, _) = affine(d, w, None, &mut ones, &mut zeros);
    let (x, dy) = (&x[..rows * d], &dy[..rows * d]);
    let inv_d = T::c(1.0 / d as f64);
    let task = ROWS_PER_TASK * d;
    let partials: Vec<(Vec<T>, Vec<T>)> = dx.spare_capacity_mut()[..rows * d]
        .par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .zip(dy.par_chunks(task))
        .zip(mean.par_chunks(ROWS_PER_TASK))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .map(|((((dc, xc), gc), mc), rc)| {
            let mut dw = vec![T::ZERO; d];
            let mut db = vec![T::ZERO; d];
            super::simd::dispatch(
                #[inline(always)]
                || {
                    let (dw, db) = (&mut dw[..d], &mut db[..d]);
                    for ((((dxr, xr), gr), &mu), &rs) in dc
                        .chunks_exact_mut(d)
                        .zip(xc.chunks_exact(d))
                        .zip(gc.chunks_exact(d))
                        .zip(mc)
                        .zip(rc)
                    {
                        let a = lanes_sum3(gr, w, w, |g, wv, _| g * wv) * inv_d;
                        let bm =
                            lanes_sum3(gr, w, xr, |g, wv, xv| g * wv * (xv - mu)) * (rs * inv_d);
                        let (dxr, xr, gr) = (&mut dxr[..d], &xr[..d], &gr[..d]);
                        for i in 0..d {
                            let xh = (xr[i] - mu) * rs;
                            dxr[i].write(rs * (gr[i] * w[i] - a - xh * bm));
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
