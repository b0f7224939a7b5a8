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
//! Each head is first copied out of the packed input into contiguous `[T, dh]` rows and
//! `[dh, T]` transposes, so that every inner loop is a contiguous `y += a * x` (the scores of
//! one query are `dh` such updates of length `T`; no horizontal sums). Work is split over the
//! batch: each parallel task owns one sample's rows of the output and of the gradient, so tasks
//! never write to the same memory.

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

/// `y += alpha * x` (fused multiply-adds).
#[inline(always)]
fn axpy<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = alpha.mul_add(xi, *yi);
    }
}

/// Sum in 8 lanes.
#[inline(always)]
fn sum<T: Float>(s: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let full = s.len() / 8 * 8;
    for c in s[..full].chunks_exact(8) {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter()
        .fold(s[full..].iter().fold(T::ZERO, |a, &v| a + v), |a, &v| a + v)
}

/// Keys scored for query row `i`: all `t`, or `0..=i` when causal, rounded up to a multiple of
/// 8 (at most `t`) so that the score loops have no scalar tail; the extra keys are masked.
#[inline(always)]
fn span(i: usize, t: usize, causal: bool) -> (usize, usize) {
    let n = if causal { i + 1 } else { t };
    (n, n.div_ceil(8).saturating_mul(8).min(t))
}

/// One head of one sample, copied out of the packed input: `q`, `k`, `v` row-major `[T, dh]`
/// and `kt`, `vt` transposed `[dh, T]`, so that every inner loop is a contiguous
/// `y += a * x` (scores of a query row against all keys are `dh` such updates of length `T`,
/// with no horizontal sums).
struct Head<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    kt: Vec<T>,
    vt: Vec<T>,
}

impl<T: Float> Head<T> {
    fn new(dims: AttnDims) -> Self {
        let n = dims.t * dims.dh;
        Head {
            q: vec![T::ZERO; n],
            k: vec![T::ZERO; n],
            v: vec![T::ZERO; n],
            kt: vec![T::ZERO; n],
            vt: vec![T::ZERO; n],
        }
    }

    #[inline(always)]
    fn load(&mut self, x: &[T], dims: AttnDims, h: usize) {
        let (t, dh) = (dims.t, dims.dh);
        for j in 0..t {
            self.q[j * dh..][..dh].copy_from_slice(&x[dims.at(j, 0, h)..][..dh]);
            let k = &x[dims.at(j, 1, h)..][..dh];
            let v = &x[dims.at(j, 2, h)..][..dh];
            self.k[j * dh..][..dh].copy_from_slice(k);
            self.v[j * dh..][..dh].copy_from_slice(v);
            for c in 0..dh {
                self.kt[c * t + j] = k[c];
                self.vt[c * t + j] = v[c];
            }
        }
    }
}

/// `s[..n] = scale * sum_c a[c] * mt[c, ..n]` for `mt` `[dh, T]`.
#[inline(always)]
fn row_times<T: Float>(s: &mut [T], a: &[T], mt: &[T], t: usize, scale: T) {
    s.iter_mut().for_each(|v| *v = T::ZERO);
    let n = s.len();
    for (c, &ac) in a.iter().enumerate() {
        axpy(s, ac, &mt[c * t..c * t + n]);
    }
    s.iter_mut().for_each(|v| *v *= scale);
}

/// `y[..dh] += alpha * x[..dh]` for one head row: with `N > 0` the width is the constant `N`
/// (`dh == N`), so the loop is fully unrolled; `N == 0` handles any width.
#[inline(always)]
fn axpy_row<T: Float, const N: usize>(y: &mut [T], alpha: T, x: &[T], dh: usize) {
    if N > 0 {
        let (y, x) = (&mut y[..N], &x[..N]);
        for k in 0..N {
            y[k] = alpha.mul_add(x[k], y[k]);
        }
    } else {
        axpy(&mut y[..dh], alpha, &x[..dh]);
    }
}

/// Runs `$body` with the const generic `$n` set to the head width when it is a common one
/// (16, 32, 64), 0 otherwise.
macro_rules! with_width {
    ($dh:expr, $f:ident :: <$t:ty> ($($arg:expr),*)) => {
        match $dh {
            16 => $f::<$t, 16>($($arg),*),
            32 => $f::<$t, 32>($($arg),*),
            64 => $f::<$t, 64>($($arg),*),
            _ => $f::<$t, 0>($($arg),*),
        }
    };
}

/// The forward of one sample: `x` its `[T, 3, H, dh]` input, `ob` its `[T, D]` output, `lb`
/// its `[H, T]` log-sum-exp.
#[inline(always)]
fn forward_sample<T: Float, const N: usize>(
    x: &[T],
    ob: &mut [T],
    lb: &mut [T],
    dims: AttnDims,
    causal: bool,
    scale: T,
) {
    let AttnDims { t, h, dh, .. } = dims;
    let mut s = vec![T::ZERO; t];
    let mut hd = Head::new(dims);
    for hh in 0..h {
        hd.load(x, dims, hh);
        for i in 0..t {
            let (n, n8) = span(i, t, causal);
            let s = &mut s[..n8];
            row_times(s, &hd.q[i * dh..][..dh], &hd.kt, t, scale);
            let m = s[..n].iter().fold(T::NEG_INF, |m, &v| m.max(v));
            s.iter_mut().for_each(|v| *v = (*v - m).exp());
            s[n..].iter_mut().for_each(|v| *v = T::ZERO);
            let l = sum(s);
            let o = &mut ob[(i * h + hh) * dh..][..dh];
            let inv = T::ONE / l;
            for (j, &p) in s[..n].iter().enumerate() {
                axpy_row::<T, N>(o, p * inv, &hd.v[j * dh..], dh);
            }
            lb[hh * t + i] = m + l.ln();
        }
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
                || with_width!(dh, forward_sample::<T>(x, ob, lb, dims, causal, scale)),
            )
        });
    (out, lse)
}

/// The backward of one sample: `x`, `o`, `go`, `lb` its input, output, output gradient and
/// log-sum-exp; `gb` its `[T, 3, H, dh]` input gradient (written whole).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_sample<T: Float, const N: usize>(
    x: &[T],
    o: &[T],
    go: &[T],
    lb: &[T],
    gb: &mut [T],
    dims: AttnDims,
    causal: bool,
    scale: T,
) {
    let AttnDims { t, h, dh, .. } = dims;
    let mut hd = Head::new(dims);
    let (mut p, mut dp) = (vec![T::ZERO; t], vec![T::ZERO; t]);
    let (mut dk, mut dv) = (vec![T::ZERO; t * dh], vec![T::ZERO; t * dh]);
    for hh in 0..h {
        hd.load(x, dims, hh);
        dk.iter_mut().for_each(|v| *v = T::ZERO);
        dv.iter_mut().for_each(|v| *v = T::ZERO);
        for i in 0..t {
            let (n, n8) = span(i, t, causal);
            let q = &hd.q[i * dh..][..dh];
            let goi = &go[(i * h + hh) * dh..][..dh];
            let di = dot(goi, &o[(i * h + hh) * dh..][..dh]);
            let li = lb[hh * t + i];
            let (p, dp) = (&mut p[..n8], &mut dp[..n8]);
            row_times(p, q, &hd.kt, t, scale);
            p.iter_mut().for_each(|v| *v = (*v - li).exp());
            p[n..].iter_mut().for_each(|v| *v = T::ZERO);
            row_times(dp, goi, &hd.vt, t, T::ONE);
            // dp becomes ds * scale.
            for (dpj, &pj) in dp.iter_mut().zip(p.iter()) {
                *dpj = pj * (*dpj - di) * scale;
            }
            let dq = &mut gb[dims.at(i, 0, hh)..][..dh];
            for j in 0..n {
                axpy_row::<T, N>(dq, dp[j], &hd.k[j * dh..], dh);
                axpy_row::<T, N>(&mut dk[j * dh..], dp[j], q, dh);
                axpy_row::<T, N>(&mut dv[j * dh..], p[j], goi, dh);
            }
        }
        for j in 0..t {
            gb[dims.at(j, 1, hh)..][..dh].copy_from_slice(&dk[j * dh..][..dh]);
            gb[dims.at(j, 2, hh)..][..dh].copy_from_slice(&dv[j * dh..][..dh]);
        }
    }
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
                    with_width!(
                        dh,
                        backward_sample::<T>(x, o, go, lb, gb, dims, causal, scale)
                    )
                },
            )
        });
    grad
}
