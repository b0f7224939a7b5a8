//! Fused multi-head self-attention on packed projections, forward and backward.
//!
//! Layout: the input is the output of one `[D, 3D]` projection, contiguous `[B, T, 3, H, dh]`
//! (queries, keys, values of head `h` at `[b, t, 0|1|2, h, ..]`, `D = H * dh`); the output is
//! contiguous `[B, T, H, dh]` = `[B, T, D]`, ready for the output projection, so no head is
//! ever split out or permuted into a copy.
//!
//! Forward, per query row `i` of head `h`: scores `s_j = scale * q_i . k_j` for the keys it
//! sees (`j <= i` when causal), `o_i = sum_j softmax(s)_j v_j`, and the row's log-sum-exp
//! `lse_i = max s + ln sum exp(s - max s)` kept for the backward. The `T x T` probabilities are
//! never stored: the backward recomputes `p_ij = exp(s_ij - lse_i)` (FlashAttention's scheme):
//! `dv_j += p_ij do_i`, `dp_ij = do_i . v_j`, `ds_ij = p_ij (dp_ij - do_i . o_i)`,
//! `dq_i += scale ds_ij k_j`, `dk_j += scale ds_ij q_i`.
//!
//! Work is split over the batch: each parallel task owns one sample's rows of the output and
//! of the gradient, so tasks never write to the same memory.

use crate::dtype::Float;
use rayon::prelude::*;

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Batch.
    pub b: usize,
    /// Sequence length.
    pub t: usize,
    /// Heads.
    pub h: usize,
    /// Width of one head.
    pub dh: usize,
}

impl AttnDims {
    fn d(&self) -> usize {
        self.h * self.dh
    }
    /// Offset of `[t, c, h, 0]` inside one sample's `[T, 3, H, dh]` block.
    #[inline(always)]
    fn at(&self, t: usize, c: usize, h: usize) -> usize {
        ((t * 3 + c) * self.h + h) * self.dh
    }
}

/// `a . b` in 8 lanes.
#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; 8];
    let full = n / 8 * 8;
    for (ca, cb) in a[..full].chunks_exact(8).zip(b[..full].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut tail = T::ZERO;
    for k in full..n {
        tail += a[k] * b[k];
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `y += alpha * x`.
#[inline(always)]
fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Forward: returns the output `[B, T, D]` and the log-sum-exp of every score row
/// `[B, H, T]`.
pub fn forward<T: Float>(qkv: &[T], dims: AttnDims, causal: bool, scale: T) -> (Vec<T>, Vec<T>) {
    let AttnDims { b, t, h, dh } = dims;
    let d = dims.d();
    let mut out = vec![T::ZERO; b * t * d];
    let mut lse = vec![T::ZERO; b * h * t];
    if out.is_empty() {
        return (out, lse);
    }
    out.par_chunks_mut(t * d)
        .zip(lse.par_chunks_mut(h * t))
        .enumerate()
        .for_each(|(bi, (ob, lb))| {
            let x = &qkv[bi * t * 3 * d..(bi + 1) * t * 3 * d];
            super::simd::dispatch(
                #[inline(always)]
                || {
                    let mut s = vec![T::ZERO; t];
                    for hh in 0..h {
                        for i in 0..t {
                            let q = &x[dims.at(i, 0, hh)..][..dh];
                            let n = if causal { i + 1 } else { t };
                            let mut m = T::c(f64::NEG_INFINITY);
                            for (j, sj) in s[..n].iter_mut().enumerate() {
                                *sj = dot(q, &x[dims.at(j, 1, hh)..][..dh]) * scale;
                                m = m.max(*sj);
                            }
                            let mut l = T::ZERO;
                            for sj in &mut s[..n] {
                                *sj = (*sj - m).exp();
                                l += *sj;
                            }
                            let o = &mut ob[(i * h + hh) * dh..][..dh];
                            let inv = T::ONE / l;
                            for (j, &p) in s[..n].iter().enumerate() {
                                axpy(o, p * inv, &x[dims.at(j, 2, hh)..][..dh]);
                            }
                            lb[hh * t + i] = m + l.ln();
                        }
                    }
                },
            )
        });
    (out, lse)
}

/// Backward: the gradient `[B, T, 3, H, dh]` of the packed input, from the input, the forward's
/// output and log-sum-exp, and the output's gradient `dout` `[B, T, D]`.
pub fn backward<T: Float>(
    qkv: &[T],
    out: &[T],
    lse: &[T],
    dout: &[T],
    dims: AttnDims,
    causal: bool,
    scale: T,
) -> Vec<T> {
    let AttnDims { b, t, h, dh } = dims;
    let d = dims.d();
    let mut grad = vec![T::ZERO; b * t * 3 * d];
    if grad.is_empty() {
        return grad;
    }
    grad.par_chunks_mut(t * 3 * d)
        .enumerate()
        .for_each(|(bi, gb)| {
            let x = &qkv[bi * t * 3 * d..(bi + 1) * t * 3 * d];
            let o = &out[bi * t * d..(bi + 1) * t * d];
            let go = &dout[bi * t * d..(bi + 1) * t * d];
            let lb = &lse[bi * h * t..(bi + 1) * h * t];
            super::simd::dispatch(
                #[inline(always)]
                || {
                    let mut dq = vec![T::ZERO; dh];
                    for hh in 0..h {
                        for i in 0..t {
                            let q = &x[dims.at(i, 0, hh)..][..dh];
                            let goi = &go[(i * h + hh) * dh..][..dh];
                            let di = dot(goi, &o[(i * h + hh) * dh..][..dh]);
                            let li = lb[hh * t + i];
                            let n = if causal { i + 1 } else { t };
                            dq.iter_mut().for_each(|v| *v = T::ZERO);
                            for j in 0..n {
                                let k = &x[dims.at(j, 1, hh)..][..dh];
                                let v = &x[dims.at(j, 2, hh)..][..dh];
                                let p = (dot(q, k) * scale - li).exp();
                                let ds = p * (dot(goi, v) - di) * scale;
                                axpy(&mut gb[dims.at(j, 2, hh)..][..dh], p, goi);
                                axpy(&mut gb[dims.at(j, 1, hh)..][..dh], ds, q);
                                axpy(&mut dq, ds, k);
                            }
                            gb[dims.at(i, 0, hh)..][..dh].copy_from_slice(&dq);
                        }
                    }
                },
            )
        });
    grad
}
