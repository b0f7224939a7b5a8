//! Fused softmax cross-entropy over rows of logits `[n, c]` (contiguous).
//!
//! Forward computes each row's log-sum-exp once and the loss from it, never storing
//! probabilities; backward recomputes `softmax = exp(x - lse)` once, writing the gradient
//! `(softmax - target_distribution) * scale` directly.

use crate::dtype::Float;
use rayon::prelude::*;

/// Per-row loss and log-sum-exp. `targets[r] = None` marks an ignored row (loss 0).
/// With label smoothing `eps`, the target distribution is `(1 - eps) * onehot + eps / c`.
pub fn forward<T: Float>(
    x: &[T],
    c: usize,
    targets: &[Option<usize>],
    eps: f64,
) -> (Vec<T>, Vec<T>) {
    let rows: Vec<(T, T)> = x
        .par_chunks(c)
        .zip(targets.par_iter())
        .map(|(r, t)| {
            let (m, s) = super::simd::dispatch(
                #[inline(always)]
                || {
                    let m = super::lanes::lanes_max(r);
                    let m = if m == T::NEG_INF { T::ZERO } else { m };
                    (m, super::lanes::lanes_sum_exp(r, m))
                },
            );
            let lse = s.ln() + m;
            let loss = match t {
                None => T::ZERO,
                Some(t) => {
                    let picked = lse - r[*t];
                    if eps > 0.0 {
                        let mean: T = r.iter().copied().sum::<T>() / T::c(c as f64);
                        T::c(1.0 - eps) * picked + T::c(eps) * (lse - mean)
                    } else {
                        picked
                    }
                }
            };
            (loss, lse)
        })
        .collect();
    rows.into_iter().unzip()
}

/// Gradient of `scale * sum_r loss[r]` with respect to the logits.
pub fn backward<T: Float>(
    x: &[T],
    c: usize,
    targets: &[Option<usize>],
    lse: &[T],
    scale: T,
    eps: f64,
) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .enumerate()
        .for_each(|(r, (o, xr))| {
            let Some(t) = targets[r] else { return };
            let s = scale;
            let uni = T::c(eps / c as f64);
            for (oj, &xj) in o.iter_mut().zip(xr) {
                *oj = ((xj - lse[r]).exp() - uni) * s;
            }
            o[t] = o[t] - T::c(1.0 - eps) * s;
        });
    out
}
