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

/// How the windows along one axis are made: the rule a device kernel evaluates in place of
/// the lists of [`PoolWindows`], which are made from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisWindows {
    /// [`sliding_windows`]`(len, kernel, stride, pad)`.
    Sliding {
        /// Input length.
        len: usize,
        /// Taps per window.
        kernel: usize,
        /// Step between window starts.
        stride: usize,
        /// Implicit padding before the first element (clipped away).
        pad: usize,
    },
    /// [`adaptive_windows`]`(len, out)`: PyTorch's adaptive bins (one bin over the whole axis
    /// when `out` is 1).
    Adaptive {
        /// Input length.
        len: usize,
        /// Number of bins.
        out: usize,
    },
}

impl AxisWindows {
    /// Input length of the axis.
    pub fn len(&self) -> usize {
        match *self {
            AxisWindows::Sliding { len, .. } | AxisWindows::Adaptive { len, .. } => len,
        }
    }

    /// Whether the input axis is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The windows, half-open input ranges, one per output position.
    pub fn windows(&self) -> Vec<(usize, usize)> {
        match *self {
            AxisWindows::Sliding {
                len,
                kernel,
                stride,
                pad,
            } => sliding_windows(len, kernel, stride, pad),
            AxisWindows::Adaptive { len, out } => adaptive_windows(len, out),
        }
    }

    /// The output positions whose windows contain input position `r` (`r < len`), as a
    /// half-open range (windows are ordered: both ends never decrease). The gradient kernels
    /// on the GPU gather over it (`kernels/pool.cu` computes it the same way), so each input's
    /// gradient is summed in output order, as the CPU's scatter adds it.
    pub fn covering(&self, r: usize, out: usize) -> (usize, usize) {
        let (lo, hi) = match *self {
            // i * stride - pad <= r < i * stride - pad + kernel (the clipping to 0..len never
            // changes this for 0 <= r < len).
            AxisWindows::Sliding {
                kernel,
                stride,
                pad,
                ..
            } => {
                let first = (r + pad + 1).saturating_sub(kernel).div_ceil(stride);
                (first, (r + pad) / stride + 1)
            }
            // floor(i len / out) <= r < ceil((i + 1) len / out)
            AxisWindows::Adaptive { len, out } => (r * out / len, ((r + 1) * out).div_ceil(len)),
        };
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }
}

/// The input window of every output position, per axis (half-open ranges, clipped to the input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolWindows {
    /// Input row range of each output row.
    pub rows: Vec<(usize, usize)>,
    /// Input column range of each output column.
    pub cols: Vec<(usize, usize)>,
    /// The rules `rows` and `cols` are made from.
    pub rules: (AxisWindows, AxisWindows),
}

impl PoolWindows {
    /// The windows of a pooling whose rows and columns follow `rows` and `cols`.
    pub fn new(rows: AxisWindows, cols: AxisWindows) -> PoolWindows {
        PoolWindows {
            rows: rows.windows(),
            cols: cols.windows(),
            rules: (rows, cols),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `covering` against a search of every window, for every small sliding and adaptive axis.
    #[test]
    fn covering_is_the_set_of_windows_holding_each_input() {
        let mut rules = Vec::new();
        for len in 1..12 {
            for out in 1..15 {
                rules.push(AxisWindows::Adaptive { len, out });
            }
            for kernel in 1..6 {
                for stride in 1..5 {
                    for pad in 0..=kernel / 2 {
                        if len + 2 * pad >= kernel {
                            rules.push(AxisWindows::Sliding {
                                len,
                                kernel,
                                stride,
                                pad,
                            });
                        }
                    }
                }
            }
        }
        assert!(rules.len() > 500);
        for rule in rules {
            let win = rule.windows();
            for r in 0..rule.len() {
                let holding: Vec<usize> = (0..win.len())
                    .filter(|&i| win[i].0 <= r && r < win[i].1)
                    .collect();
                let (lo, hi) = rule.covering(r, win.len());
                assert_eq!((lo..hi).collect::<Vec<_>>(), holding, "{rule:?}, input {r}");
            }
        }
    }

    #[test]
    fn pool_windows_are_made_from_their_rules() {
        let w = PoolWindows::new(
            AxisWindows::Sliding {
                len: 7,
                kernel: 3,
                stride: 2,
                pad: 1,
            },
            AxisWindows::Adaptive { len: 5, out: 3 },
        );
        assert_eq!(w.rows, vec![(0, 2), (1, 4), (3, 6), (5, 7)]);
        assert_eq!(w.cols, vec![(0, 2), (1, 4), (3, 5)]);
    }
}
