//! Fused multi-head self-attention on packed projections, forward and backward.
//!
//! Layout: the input is the output of one `[D, 3D]` projection, contiguous `[B, T, 3, H, dh]`
//! (queries, keys, values of head `h` at `[b, t, 0|1|2, h, ..]`, `D = H * dh`); the output is
//! contiguous `[B, T, H, dh]` = `[B, T, D]`, ready for the output projection, so no head is
//! ever split out or permuted into a copy: every product below reads the heads in place
//! through their strides (row stride `3D` in the input, `D` in the output).
//!
//! Forward, per sample and head: `S = Q Kᵀ` (a GEMM), then per query row `i` over the keys it
//! sees (`j <= i` when causal) `P_ij = softmax(scale * S_i)_j` and the row's log-sum-exp
//! `lse_i` (kept for the backward), then `O = P V` (a GEMM). The `T x T` probabilities live in
//! one per-task scratch buffer and are never stored: the backward recomputes
//! `P_ij = exp(scale * S_ij - lse_i)` (FlashAttention's scheme) and runs
//! `dP = dO Vᵀ`, `dS = P ∘ (dP - rowsum(dO ∘ O)) * scale`, `dV = Pᵀ dO`, `dQ = dS K`,
//! `dK = dSᵀ Q`, each a GEMM ([`Gemm`]: the packed AVX2/AVX-512 kernel for f32).
//!
//! Causal attention runs in blocks of [`ROWS`] query rows: block `[r0, r1)` only multiplies
//! keys `0..r1`, and the transposed products for key block `[c0, c1)` only read query rows
//! `c0..T`, so the masked upper triangle is mostly skipped rather than computed and zeroed.
//! Work is split over the batch: each parallel task owns one sample's rows of the output and
//! of the gradient, so tasks never write to the same memory; the GEMMs inside a task are too
//! small to fork again.
//!
//! In f32, the products follow the calling thread's bf16 setting
//! ([`super::gemm::with_bf16_products`]), which the tasks take over: inside it, on a CPU with
//! AVX-512 BF16, every product rounds its operands (queries, keys, values, probabilities,
//! output gradients, score gradients) to bf16 and adds in f32, as the GPU's tensor-core
//! kernels (`kernels/attention_mma.cu`) do; the softmax and the score gradients stay f32.

use super::gemm::{take_bf16_products, Bf16Scope};
use super::matmul::Gemm;
use crate::dtype::Float;
use rayon::prelude::*;

/// Query rows per causal block.
pub const ROWS: usize = 32;

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

/// Maximum in 8 lanes (`-inf` for an empty slice; a NaN may or may not win).
#[inline(always)]
fn max<T: Float>(s: &[T]) -> T {
    let mut acc = [T::NEG_INF; 8];
    let full = s.len() / 8 * 8;
    for c in s[..full].chunks_exact(8) {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let tail = s[full..].iter().fold(T::NEG_INF, |a, &v| a.max(v));
    acc.iter().fold(tail, |a, &v| a.max(v))
}

/// Row blocks `[r0, r1)` of the query rows with the number of keys they see: one block of all
/// `t` rows and keys, or, when causal, blocks of [`ROWS`] rows seeing keys `0..r1`.
fn blocks(t: usize, causal: bool) -> impl Iterator<Item = (usize, usize, usize)> {
    let step = if causal { ROWS } else { t.max(1) };
    (0..t).step_by(step).map(move |r0| {
        let r1 = (r0 + step).min(t);
        (r0, r1, if causal { r1 } else { t })
    })
}

/// `C = A·B` on raw strided operands (`C` row-major with row stride `rsc`).
///
/// # Safety
/// As [`Gemm::gemm`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn mm<T: Gemm>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    (rsa, csa): (usize, usize),
    b: *const T,
    (rsb, csb): (usize, usize),
    c: *mut T,
    rsc: usize,
) {
    T::gemm(
        m,
        k,
        n,
        a,
        rsa as isize,
        csa as isize,
        b,
        rsb as isize,
        csb as isize,
        c,
        rsc as isize,
    );
}

/// `S[r0..r0 + rows, 0..nk] = Q[r0.., :] K[0..nk, :]ᵀ` for the head whose queries and keys
/// start at offsets `q` and `k` of the sample's packed input `x` (row stride `3D`), into the
/// rows of the `[T, T]` scratch `s`.
#[allow(clippy::too_many_arguments)]
fn scores<T: Gemm>(
    x: &[T],
    (q, k): (usize, usize),
    s: &mut [T],
    dims: AttnDims,
    r0: usize,
    rows: usize,
    nk: usize,
) {
    let (t, rs) = (dims.t, 3 * dims.d());
    // SAFETY: query rows `r0..r0 + rows` and key rows `0..nk` (< T) of the head lie inside `x`
    // at row stride `3D`; rows `r0..r0 + rows` of `s` (row stride `T`) lie inside `s`, which
    // aliases nothing else.
    unsafe {
        mm(
            rows,
            dims.dh,
            nk,
            x[q + r0 * rs..].as_ptr(),
            (rs, 1),
            x[k..].as_ptr(),
            (1, rs),
            s[r0 * t..].as_mut_ptr(),
            t,
        );
    }
}

/// The forward of one sample: `x` its `[T, 3, H, dh]` input, `ob` its `[T, D]` output, `lb`
/// its `[H, T]` log-sum-exp, `p` a `[T, T]` scratch.
#[allow(clippy::too_many_arguments)]
fn forward_sample<T: Gemm>(
    x: &[T],
    ob: &mut [T],
    lb: &mut [T],
    p: &mut [T],
    dims: AttnDims,
    causal: bool,
    scale: T,
) {
    let AttnDims { t, h, dh, .. } = dims;
    let (d, rs) = (dims.d(), 3 * dims.d());
    for hh in 0..h {
        let (q, k, v) = (dims.at(0, 0, hh), dims.at(0, 1, hh), dims.at(0, 2, hh));
        for (r0, r1, nk) in blocks(t, causal) {
            let rows = r1 - r0;
            scores(x, (q, k), p, dims, r0, rows, nk);
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for i in r0..r1 {
                        let n = if causal { i + 1 } else { t };
                        let row = &mut p[i * t..i * t + nk];
                        let m = max(&row[..n]) * scale;
                        row[..n]
                            .iter_mut()
                            .for_each(|v| *v = (*v * scale - m).exp());
                        row[n..].iter_mut().for_each(|v| *v = T::ZERO);
                        let l = sum(&row[..n]);
                        let inv = T::ONE / l;
                        row[..n].iter_mut().for_each(|v| *v *= inv);
                        lb[hh * t + i] = m + l.ln();
                    }
                },
            );
            // SAFETY: rows `r0..r1` of the scratch (stride `T`), value rows `0..nk` of the input
            // (stride `3D`) and the output's rows (stride `D`) lie inside their slices; the
            // scratch and the output alias nothing else.
            unsafe {
                mm(
                    rows,
                    nk,
                    dh,
                    p[r0 * t..].as_ptr(),
                    (t, 1),
                    x[v..].as_ptr(),
                    (rs, 1),
                    ob[r0 * d + hh * dh..].as_mut_ptr(),
                    d,
                );
            }
        }
    }
}

/// Forward: returns the output `[B, T, D]` and the log-sum-exp of every score row
/// `[B, H, T]`.
pub fn forward<T: Gemm>(qkv: &[T], dims: AttnDims, causal: bool, scale: T) -> (Vec<T>, Vec<T>) {
    let AttnDims { b, t, h, .. } = dims;
    let d = dims.d();
    let mut out = vec![T::ZERO; b * t * d];
    let mut lse = vec![T::ZERO; b * h * t];
    if out.is_empty() {
        return (out, lse);
    }
    // The calling thread's bf16 setting goes to the tasks, which run the GEMMs.
    let (bf16, _off) = take_bf16_products();
    out.par_chunks_mut(t * d)
        .zip(lse.par_chunks_mut(h * t))
        .enumerate()
        .for_each_init(
            || vec![T::ZERO; t * t],
            |p, (bi, (ob, lb))| {
                let _on = Bf16Scope::enter(bf16);
                let x = &qkv[bi * t * 3 * d..(bi + 1) * t * 3 * d];
                forward_sample(x, ob, lb, p, dims, causal, scale);
            },
        );
    (out, lse)
}

/// The backward of one sample: `x`, `o`, `go`, `lb` its input, output, output gradient and
/// log-sum-exp; `gb` its `[T, 3, H, dh]` input gradient (written whole); `p`, `ds` `[T, T]`
/// scratch.
#[allow(clippy::too_many_arguments)]
fn backward_sample<T: Gemm>(
    x: &[T],
    o: &[T],
    go: &[T],
    lb: &[T],
    gb: &mut [T],
    (p, ds): (&mut [T], &mut [T]),
    dims: AttnDims,
    causal: bool,
    scale: T,
) {
    let AttnDims { t, h, dh, .. } = dims;
    let (d, rs) = (dims.d(), 3 * dims.d());
    for hh in 0..h {
        let (q, k, v) = (dims.at(0, 0, hh), dims.at(0, 1, hh), dims.at(0, 2, hh));
        let gh = hh * dh;
        for (r0, r1, nk) in blocks(t, causal) {
            let rows = r1 - r0;
            // S = Q Kᵀ and dP = dO Vᵀ for this row block.
            scores(x, (q, k), p, dims, r0, rows, nk);
            // SAFETY: `dO` rows `r0..r1` at stride `D` and value rows `0..nk` at stride `3D` lie
            // inside their slices; rows of `ds` (stride `T`) likewise; `p`, `ds` and `gb` are
            // distinct buffers.
            unsafe {
                mm(
                    rows,
                    dh,
                    nk,
                    go[r0 * d + gh..].as_ptr(),
                    (d, 1),
                    x[v..].as_ptr(),
                    (1, rs),
                    ds[r0 * t..].as_mut_ptr(),
                    t,
                );
            }
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for i in r0..r1 {
                        let n = if causal { i + 1 } else { t };
                        let di = dot(&go[i * d + gh..][..dh], &o[i * d + gh..][..dh]);
                        let li = lb[hh * t + i];
                        let pr = &mut p[i * t..(i + 1) * t];
                        let dr = &mut ds[i * t..(i + 1) * t];
                        for (pj, dj) in pr[..n].iter_mut().zip(dr[..n].iter_mut()) {
                            let pv = (*pj * scale - li).exp();
                            *pj = pv;
                            *dj = pv * (*dj - di) * scale;
                        }
                        pr[n..].iter_mut().for_each(|v| *v = T::ZERO);
                        dr[n..].iter_mut().for_each(|v| *v = T::ZERO);
                    }
                },
            );
            // SAFETY: as above. dQ = dS K for this row block.
            unsafe {
                mm(
                    rows,
                    nk,
                    dh,
                    ds[r0 * t..].as_ptr(),
                    (t, 1),
                    x[k..].as_ptr(),
                    (rs, 1),
                    gb[q + r0 * rs..].as_mut_ptr(),
                    rs,
                );
            }
        }
        // dV = Pᵀ dO and dK = dSᵀ Q, by key blocks: keys `c0..c1` are seen by rows `c0..T`
        // only when causal (the rows above are zero in `p` and `ds`).
        for (c0, c1, _) in blocks(t, causal) {
            let (cols, r0) = (c1 - c0, if causal { c0 } else { 0 });
            // SAFETY: as above; `Pᵀ` and `dSᵀ` are read through swapped strides.
            unsafe {
                mm(
                    cols,
                    t - r0,
                    dh,
                    p[r0 * t + c0..].as_ptr(),
                    (1, t),
                    go[r0 * d + gh..].as_ptr(),
                    (d, 1),
                    gb[v + c0 * rs..].as_mut_ptr(),
                    rs,
                );
                mm(
                    cols,
                    t - r0,
                    dh,
                    ds[r0 * t + c0..].as_ptr(),
                    (1, t),
                    x[q + r0 * rs..].as_ptr(),
                    (rs, 1),
                    gb[k + c0 * rs..].as_mut_ptr(),
                    rs,
                );
            }
        }
    }
}

/// Backward: the gradient `[B, T, 3, H, dh]` of the packed input, from the input, the forward's
/// output and log-sum-exp, and the output's gradient `dout` `[B, T, D]`.
pub fn backward<T: Gemm>(
    qkv: &[T],
    out: &[T],
    lse: &[T],
    dout: &[T],
    dims: AttnDims,
    causal: bool,
    scale: T,
) -> Vec<T> {
    let AttnDims { b, t, h, .. } = dims;
    let d = dims.d();
    let mut grad = vec![T::ZERO; b * t * 3 * d];
    if grad.is_empty() || d == 0 {
        return grad;
    }
    let (bf16, _off) = take_bf16_products();
    grad.par_chunks_mut(t * 3 * d).enumerate().for_each_init(
        || (vec![T::ZERO; t * t], vec![T::ZERO; t * t]),
        |(p, ds), (bi, gb)| {
            let _on = Bf16Scope::enter(bf16);
            let x = &qkv[bi * t * 3 * d..(bi + 1) * t * 3 * d];
            let o = &out[bi * t * d..(bi + 1) * t * d];
            let go = &dout[bi * t * d..(bi + 1) * t * d];
            let lb = &lse[bi * h * t..(bi + 1) * h * t];
            backward_sample(x, o, go, lb, gb, (p, ds), dims, causal, scale);
        },
    );
    grad
}
