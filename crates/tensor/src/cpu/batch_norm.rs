//! Fused batch normalisation with an optional ReLU, forward and backward, over contiguous data
//! viewed as `[N, C, S]` (channel axis 1, `S` the product of the spatial axes; `S = 1` for
//! `[N, C]`).
//!
//! Forward: `y = act(x * scale[c] + shift[c])` with `scale = w / sqrt(var + eps)` and
//! `shift = b - mean * scale`, one read of `x` and one write of `y` (the statistics take two
//! more reads in training). Backward: two per-channel sums over the masked gradient `g`
//! (`sum g` and `sum g * xhat`), then one pass writing `dx`. Reductions run in parallel over
//! channels, with each `S`-long row summed in 16 lanes and rows accumulated in f64; the
//! elementwise passes run in parallel over images and write their output exactly once
//! (no zero-fill).

use super::lanes::lanes_sum_pair3;
use crate::dtype::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The shape of a batch-norm problem: `n` images, `c` channels, `s` values per channel and
/// image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnGeom {
    /// Batch size (axis 0).
    pub n: usize,
    /// Channels (axis 1).
    pub c: usize,
    /// Values per channel and image (product of the remaining axes).
    pub s: usize,
}

impl BnGeom {
    /// Values per channel over the whole batch (`n * s`).
    pub fn per_channel(&self) -> usize {
        self.n * self.s
    }

    /// Total number of values.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.s
    }
}

/// Per-channel sums `sum_i f(ch, x_i)` for every channel.
fn channel_sums<T: Float>(x: &[T], g: BnGeom, f: impl Fn(usize, T) -> T + Sync) -> Vec<f64> {
    let BnGeom { n, c, s } = g;
    if s == 1 {
        // [N, C]: accumulate across rows, vectorised over channels.
        let mut acc = vec![0.0f64; c];
        for row in x[..n * c].chunks_exact(c) {
            for (ch, (a, &v)) in acc.iter_mut().zip(row).enumerate() {
                *a += f(ch, v).to_f64();
            }
        }
        return acc;
    }
    channel_pair_sums((x, x, x), g, |ch, v, _, _| (f(ch, v), T::ZERO)).0
}

/// Images per partial sum in the per-channel reductions: fixed, not tied to the thread count,
/// so the sums come out the same for any number of threads.
const SUM_IMAGES: usize = 16;

/// Per-channel sums of the pairs `f(ch, a_i, b_i, c_i)` over three same-shaped `[N, C, S]`
/// operands. Each task walks [`SUM_IMAGES`] whole images in memory order (one vectorised row
/// sum per channel and image, accumulated in f64, all under one SIMD dispatch); the partial
/// sums are then added in image order. (Walking one channel across all images instead reads
/// `N` scattered rows per channel and pays a dispatch per row: 2-4x slower for short rows.)
fn channel_pair_sums<T: Float>(
    (a, b, c3): (&[T], &[T], &[T]),
    g: BnGeom,
    f: impl Fn(usize, T, T, T) -> (T, T) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let BnGeom { n, c, s } = g;
    let img = c * s;
    let partials: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(SUM_IMAGES))
        .into_par_iter()
        .map(|t| {
            let (mut p, mut q) = (vec![0.0f64; c], vec![0.0f64; c]);
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for i in t * SUM_IMAGES..((t + 1) * SUM_IMAGES).min(n) {
                        let r = i * img..(i + 1) * img;
                        let (ai, bi, ci) = (&a[r.clone()], &b[r.clone()], &c3[r]);
                        for ch in 0..c {
                            let rr = ch * s..(ch + 1) * s;
                            let (u, v) = lanes_sum_pair3(
                                &ai[rr.clone()],
                                &bi[rr.clone()],
                                &ci[rr],
                                |x, y, z| f(ch, x, y, z),
                            );
                            p[ch] += u.to_f64();
                            q[ch] += v.to_f64();
                        }
                    }
                },
            );
            (p, q)
        })
        .collect();
    let (mut p, mut q) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (pp, qq) in partials {
        for ch in 0..c {
            p[ch] += pp[ch];
            q[ch] += qq[ch];
        }
    }
    (p, q)
}

/// Batch mean and biased variance of every channel (two passes: the mean, then the mean
/// squared deviation from it).
pub fn stats<T: Float>(x: &[T], g: BnGeom) -> (Vec<T>, Vec<T>) {
    let m = g.per_channel().max(1) as f64;
    let sums = channel_sums(x, g, |_, v| v);
    let mean: Vec<T> = sums.iter().map(|&s| T::c(s / m)).collect();
    let sq = channel_sums(x, g, |ch, v| {
        let d = v - mean[ch];
        d * d
    });
    let var = sq.iter().map(|&v| T::c(v / m)).collect();
    (mean, var)
}

/// Writes every element of a fresh vector of length `len` through `fill`, which is handed
/// disjoint `[C * S]` image chunks in parallel together with the image index.
fn write_images<T: Float>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if chunk == 0 {
        return out;
    }
    if len >= super::strided::PAR_THRESHOLD {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, o)| fill(i, o));
    } else {
        spare
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, o)| fill(i, o));
    }
    // SAFETY: `fill` wrote every element of every chunk (each caller writes its whole chunk).
    unsafe { out.set_len(len) };
    out
}

/// `y = act(x * scale[c] + shift[c])`, ReLU when `relu`.
pub fn apply<T: Float>(x: &[T], g: BnGeom, scale: &[T], shift: &[T], relu: bool) -> Vec<T> {
    let BnGeom { c, s, .. } = g;
    write_images(g.numel(), c * s, |img, o| {
        let xi = &x[img * c * s..(img + 1) * c * s];
        for ch in 0..c {
            let (k, b) = (scale[ch], shift[ch]);
            let xr = &xi[ch * s..(ch + 1) * s];
            let orow = &mut o[ch * s..(ch + 1) * s];
            super::simd::dispatch(
                #[inline(always)]
                || {
                    for (d, &v) in orow.iter_mut().zip(xr) {
                        let z = v * k + b;
                        d.write(if relu && z < T::ZERO { T::ZERO } else { z });
                    }
                },
            );
        }
    })
}

/// Per-channel `(sum g, sum g * xhat)` of the masked gradient `g = dy * [y > 0 if relu]`,
/// with `xhat = (x - mean) * invstd`.
pub fn grad_sums<T: Float>(
    x: &[T],
    dy: &[T],
    y: Option<&[T]>,
    g: BnGeom,
    mean: &[T],
    invstd: &[T],
) -> (Vec<f64>, Vec<f64>) {
    let BnGeom { n, c, s } = g;
    let masked = |yv: T, d: T| if yv > T::ZERO { d } else { T::ZERO };
    let per_channel = |ch: usize| -> (f64, f64) {
        let (mu, is) = (mean[ch], invstd[ch]);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for img in 0..n {
            let o = (img * c + ch) * s;
            let (xr, dr) = (&x[o..o + s], &dy[o..o + s]);
            let (a, b) = super::simd::dispatch(
                #[inline(always)]
                || match y {
                    Some(y) => lanes_sum_pair3(&y[o..o + s], dr, xr, |yv, dv, xv| {
                        let gv = masked(yv, dv);
                        (gv, gv * (xv - mu))
                    }),
                    None => lanes_sum_pair3(dr, dr, xr, |dv, _, xv| (dv, dv * (xv - mu))),
                },
            );
            sg += a.to_f64();
            sgx += b.to_f64();
        }
        (sg, sgx * is.to_f64())
    };
    if s == 1 {
        return (0..c).map(per_channel).unzip();
    }
    let (sg, sgx) = match y {
        Some(y) => channel_pair_sums((y, dy, x), g, |ch, yv, dv, xv| {
            let gv = masked(yv, dv);
            (gv, gv * (xv - mean[ch]))
        }),
        None => channel_pair_sums((dy, dy, x), g, |ch, dv, _, xv| (dv, dv * (xv - mean[ch]))),
    };
    let sgx = sgx
        .iter()
        .zip(invstd)
        .map(|(&v, is)| v * is.to_f64())
        .collect();
    (sg, sgx)
}

/// The input gradient. Training (`batch_stats`): `dx = k (g - sum_g / M - xhat sum_gx / M)`;
/// evaluation: `dx = k g`; `k = w * invstd` per channel, `g` masked by `y > 0` when `y` is given.
#[allow(clippy::too_many_arguments)]
pub fn grad_input<T: Float>(
    x: &[T],
    dy: &[T],
    y: Option<&[T]>,
    g: BnGeom,
    mean: &[T],
    invstd: &[T],
    k: &[T],
    sums: Option<(&[f64], &[f64])>,
) -> Vec<T> {
    let BnGeom { c, s, .. } = g;
    let m = g.per_channel().max(1) as f64;
    // dx = a * g + b * (x - mean) + d, per channel; b = d = 0 in evaluation mode.
    let a = k.to_vec();
    let (b, d): (Vec<T>, Vec<T>) = match sums {
        Some((sg, sgx)) => (0..c)
            .map(|ch| {
                let kk = k[ch].to_f64();
                let is = invstd[ch].to_f64();
                (T::c(-kk * is * sgx[ch] / m), T::c(-kk * sg[ch] / m))
            })
            .unzip(),
        None => (vec![T::ZERO; c], vec![T::ZERO; c]),
    };
    write_images(g.numel(), c * s, |img, o| {
        let base = img * c * s;
        for ch in 0..c {
            let r = base + ch * s..base + (ch + 1) * s;
            let (xr, dr) = (&x[r.clone()], &dy[r.clone()]);
            let orow = &mut o[ch * s..(ch + 1) * s];
            let (aa, bb, dd, mu) = (a[ch], b[ch], d[ch], mean[ch]);
            super::simd::dispatch(
                #[inline(always)]
                || match y {
                    Some(y) => {
                        for ((o, (&xv, &dv)), &yv) in
                            orow.iter_mut().zip(xr.iter().zip(dr)).zip(&y[r.clone()])
                        {
                            let gv = if yv > T::ZERO { dv } else { T::ZERO };
                            o.write(aa * gv + bb * (xv - mu) + dd);
                        }
                    }
                    None => {
                        for (o, (&xv, &dv)) in orow.iter_mut().zip(xr.iter().zip(dr)) {
                            o.write(aa * dv + bb * (xv - mu) + dd);
                        }
                    }
                },
            );
        }
    })
}
