//! 2-D pooling kernels (NCHW): max pooling (with argmax indices for backward) and average
//! pooling over arbitrary window lists (sliding windows with padding, adaptive bins, or one
//! window over the whole plane).
//!
//! Layouts: input `[planes, H, W]` and output `[planes, OH, OW]`, contiguous, where
//! `planes = N * C`. A pooling is described by [`PoolWindows`]: output row `i` covers input rows
//! `rows[i].0..rows[i].1` (already clipped to the input, so padding is never read) and likewise
//! for columns. Max-pool indices are positions `iy * W + ix` inside the plane. Planes are
//! processed in parallel; each output (or input-gradient) plane is written by one task.

use crate::dtype::Float;
use rayon::prelude::*;

/// Minimum elements per rayon task.
const MIN_TASK: usize = 1 << 12;

/// The input window of every output position, per axis (half-open ranges, clipped to the input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolWindows {
    /// Input row range of each output row.
    pub rows: Vec<(usize, usize)>,
    /// Input column range of each output column.
    pub cols: Vec<(usize, usize)>,
}

/// Sliding windows along one axis of length `len`: window `i` starts at `i * stride - pad`, has
/// `kernel` taps, and is clipped to `0..len`; there are `(len + 2 pad - kernel) / stride + 1`.
pub fn sliding_windows(
    len: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Vec<(usize, usize)> {
    let out = (len + 2 * pad - kernel) / stride + 1;
    (0..out)
        .map(|i| {
            let start = i * stride;
            (
                start.saturating_sub(pad).min(len),
                (start + kernel).saturating_sub(pad).min(len),
            )
        })
        .collect()
}

/// PyTorch's adaptive bins: bin `i` of `out` over `len` is `floor(i len / out)..ceil((i + 1) len
/// / out)`.
pub fn adaptive_windows(len: usize, out: usize) -> Vec<(usize, usize)> {
    (0..out)
        .map(|i| (i * len / out, ((i + 1) * len).div_ceil(out)))
        .collect()
}

/// Runs `f(plane_index, out_plane)` over `out` split into planes of `plane` elements, in
/// parallel when there is enough work.
fn for_planes<T: Send>(out: &mut [T], plane: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if plane == 0 {
        return;
    }
    let min = MIN_TASK.div_ceil(plane).max(1);
    out.par_chunks_mut(plane)
        .with_min_len(min)
        .enumerate()
        .for_each(|(i, o)| f(i, o));
}

/// Max pooling of `x` (`[planes, h, w]`): the maxima (`[planes, OH, OW]`) and the in-plane
/// position of each (NaN wins; among equal values the first in row-major order).
pub fn max_pool_forward<T: Float>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    win: &PoolWindows,
) -> (Vec<T>, Vec<u32>) {
    let (oh, ow) = (win.rows.len(), win.cols.len());
    let op = oh * ow;
    let mut y = vec![T::ZERO; planes * op];
    let mut idx = vec![0u32; planes * op];
    if op == 0 {
        return (y, idx);
    }
    let mut pairs: Vec<(&mut [T], &mut [u32])> = y.chunks_mut(op).zip(idx.chunks_mut(op)).collect();
    let min = MIN_TASK.div_ceil(op).max(1);
    pairs
        .par_iter_mut()
        .with_min_len(min)
        .enumerate()
        .for_each(|(p, (yp, ip))| {
            let xp = &x[p * h * w..(p + 1) * h * w];
            for (i, &(r0, r1)) in win.rows.iter().enumerate() {
                for (j, &(c0, c1)) in win.cols.iter().enumerate() {
                    let mut best = T::NEG_INF;
                    let mut at = r0 * w + c0;
                    'win: for r in r0..r1 {
                        for c in c0..c1 {
                            let v = xp[r * w + c];
                            if v > best || v.is_nan() {
                                best = v;
                                at = r * w + c;
                                if v.is_nan() {
                                    break 'win;
                                }
                            }
                        }
                    }
                    yp[i * ow + j] = best;
                    ip[i * ow + j] = at as u32;
                }
            }
        });
    (y, idx)
}

/// Gradient of max pooling: `dx[p, idx] += dy[p, o]` for every output `o`; `dx` is
/// `[planes, h * w]`.
pub fn max_pool_backward<T: Float>(dy: &[T], idx: &[u32], planes: usize, hw: usize) -> Vec<T> {
    let mut dx = vec![T::ZERO; planes * hw];
    if planes == 0 {
        return dx;
    }
    let op = dy.len() / planes;
    for_planes(&mut dx, hw, |p, dxp| {
        for (&g, &i) in dy[p * op..(p + 1) * op]
            .iter()
            .zip(&idx[p * op..(p + 1) * op])
        {
            dxp[i as usize] += g;
        }
    });
    dx
}

/// The divisor of window (`rows`, `cols`): `fixed` if given, else the clipped window's area.
#[inline]
fn divisor(fixed: Option<usize>, rows: (usize, usize), cols: (usize, usize)) -> usize {
    fixed.unwrap_or((rows.1 - rows.0) * (cols.1 - cols.0))
}

/// Average pooling of `x` (`[planes, h, w]`): each output is its window's sum divided by
/// `fixed_divisor` (e.g. `kh * kw` when padding counts) or, if `None`, by the window's area.
pub fn avg_pool_forward<T: Float>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    win: &PoolWindows,
    fixed_divisor: Option<usize>,
) -> Vec<T> {
    let (oh, ow) = (win.rows.len(), win.cols.len());
    let mut y = vec![T::ZERO; planes * oh * ow];
    for_planes(&mut y, oh * ow, |p, yp| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for (i, &rows) in win.rows.iter().enumerate() {
            for (j, &cols) in win.cols.iter().enumerate() {
                let mut s = T::ZERO;
                for r in rows.0..rows.1 {
                    for &v in &xp[r * w + cols.0..r * w + cols.1] {
                        s += v;
                    }
                }
                let d = divisor(fixed_divisor, rows, cols).max(1);
                yp[i * ow + j] = s / T::c(d as f64);
            }
        }
    });
    y
}

/// Gradient of [`avg_pool_forward`]: every input in a window receives the window's output
/// gradient divided by the same divisor; `dx` is `[planes, h, w]`.
pub fn avg_pool_backward<T: Float>(
    dy: &[T],
    planes: usize,
    h: usize,
    w: usize,
    win: &PoolWindows,
    fixed_divisor: Option<usize>,
) -> Vec<T> {
    let (oh, ow) = (win.rows.len(), win.cols.len());
    let mut dx = vec![T::ZERO; planes * h * w];
    for_planes(&mut dx, h * w, |p, dxp| {
        let dyp = &dy[p * oh * ow..(p + 1) * oh * ow];
        for (i, &rows) in win.rows.iter().enumerate() {
            for (j, &cols) in win.cols.iter().enumerate() {
                let d = divisor(fixed_divisor, rows, cols).max(1);
                let g = dyp[i * ow + j] / T::c(d as f64);
                for r in rows.0..rows.1 {
                    for v in &mut dxp[r * w + cols.0..r * w + cols.1] {
                        *v += g;
                    }
                }
            }
        }
    });
    dx
}
