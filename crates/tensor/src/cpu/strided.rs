//! Elementwise maps over strided operands: `out[i] = f(a[i], b[i], ...)` where every operand
//! has been broadcast to the output shape (stride 0 on repeated axes). Adjacent axes that are
//! contiguous in every operand are merged, so the inner loop runs over the longest possible
//! unit-stride run, compiled for the widest detected instruction set, where the compiler
//! vectorises it. Output is always contiguous row-major.

use crate::layout::{merge_dims, numel, Layout};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Below this many output elements a map runs on the calling thread.
pub const PAR_THRESHOLD: usize = 1 << 15;
/// Target elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// Walks the outer (all but last) merged axes, tracking one offset per operand.
struct Walker<const N: usize> {
    shape: Vec<usize>,
    strides: [Vec<usize>; N],
    idx: Vec<usize>,
    offs: [usize; N],
}

impl<const N: usize> Walker<N> {
    fn new(outer: &[usize], strides: [Vec<usize>; N], base: [usize; N], row: usize) -> Self {
        let mut idx = vec![0; outer.len()];
        let mut r = row;
        for d in (0..outer.len()).rev() {
            idx[d] = r % outer[d];
            r /= outer[d];
        }
        let mut offs = base;
        for k in 0..N {
            for d in 0..outer.len() {
                offs[k] += idx[d] * strides[k][d];
            }
        }
        Walker {
            shape: outer.to_vec(),
            strides,
            idx,
            offs,
        }
    }

    #[inline]
    fn advance(&mut self) {
        for d in (0..self.shape.len()).rev() {
            self.idx[d] += 1;
            for k in 0..N {
                self.offs[k] += self.strides[k][d];
            }
            if self.idx[d] < self.shape[d] {
                return;
            }
            for k in 0..N {
                self.offs[k] -= self.strides[k][d] * self.shape[d];
            }
            self.idx[d] = 0;
        }
    }
}

/// The unit-stride inner loop, compiled for the widest detected instruction set.
#[inline(always)]
fn map_unit<T: Copy, O, F: Fn([T; N]) -> O, const N: usize>(
    row: &mut [MaybeUninit<O>],
    sl: [&[T]; N],
    f: &F,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{level, Level};
        match level() {
            // SAFETY: the features were detected at run time.
            Level::Avx512 => return unsafe { map_unit_avx512(row, sl, f) },
            Level::Avx2 => return unsafe { map_unit_avx2(row, sl, f) },
            Level::Portable => {}
        }
    }
    map_unit_body(row, sl, f)
}

#[inline(always)]
fn map_unit_body<T: Copy, O, F: Fn([T; N]) -> O, const N: usize>(
    row: &mut [MaybeUninit<O>],
    sl: [&[T]; N],
    f: &F,
) {
    let n = row.len();
    let sl: [&[T]; N] = std::array::from_fn(|k| &sl[k][..n]);
    for (i, o) in row.iter_mut().enumerate() {
        o.write(f(std::array::from_fn(|k| sl[k][i])));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn map_unit_avx512<T: Copy, O, F: Fn([T; N]) -> O, const N: usize>(
    row: &mut [MaybeUninit<O>],
    sl: [&[T]; N],
    f: &F,
) {
    map_unit_body(row, sl, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_unit_avx2<T: Copy, O, F: Fn([T; N]) -> O, const N: usize>(
    row: &mut [MaybeUninit<O>],
    sl: [&[T]; N],
    f: &F,
) {
    map_unit_body(row, sl, f)
}

/// `out = f(srcs...)` elementwise over `shape`; each source's layout must already have `shape`.
pub fn map_n<T, O, F, const N: usize>(shape: &[usize], srcs: [(&[T], &Layout); N], f: F) -> Vec<O>
where
    T: Copy + Send + Sync,
    O: Copy + Send + Sync + Default,
    F: Fn([T; N]) -> O + Sync + Send,
{
    let n = numel(shape);
    let mut out: Vec<O> = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let strides: [&[usize]; N] = std::array::from_fn(|k| srcs[k].1.strides());
    let (ms, mst) = merge_dims(shape, &strides);
    let inner = ms[ms.len() - 1];
    let outer = &ms[..ms.len() - 1];
    let inner_st: [usize; N] = std::array::from_fn(|k| mst[k][ms.len() - 1]);
    let outer_st: [Vec<usize>; N] = std::array::from_fn(|k| mst[k][..ms.len() - 1].to_vec());
    let base: [usize; N] = std::array::from_fn(|k| srcs[k].1.offset());
    let data: [&[T]; N] = std::array::from_fn(|k| srcs[k].0);
    let unit = inner_st.iter().all(|&s| s == 1);
    // Operands broadcast along the inner axis (stride 0, e.g. `x - mean` with a `[n, 1]` mean)
    // are splatted into a row buffer so the row still runs through the vector loop.
    let splat = !unit && inner >= 8 && inner_st.iter().all(|&s| s <= 1);
    // Every element is written exactly once below (rows tile the output), so the buffer is
    // never zero-filled first.
    let process = |row0: usize, chunk: &mut [MaybeUninit<O>]| {
        let mut w = Walker::new(outer, outer_st.clone(), base, row0);
        let mut bufs: [Vec<T>; N] = std::array::from_fn(|_| Vec::new());
        for row in chunk.chunks_mut(inner) {
            if unit {
                let sl: [&[T]; N] = std::array::from_fn(|k| &data[k][w.offs[k]..w.offs[k] + inner]);
                map_unit(row, sl, &f);
            } else if splat {
                for k in 0..N {
                    if inner_st[k] == 0 {
                        bufs[k].clear();
                        bufs[k].resize(inner, data[k][w.offs[k]]);
                    }
                }
                let sl: [&[T]; N] = std::array::from_fn(|k| {
                    if inner_st[k] == 0 {
                        &bufs[k][..]
                    } else {
                        &data[k][w.offs[k]..w.offs[k] + inner]
                    }
                });
                map_unit(row, sl, &f);
            } else {
                for (i, o) in row.iter_mut().enumerate() {
                    o.write(f(std::array::from_fn(|k| {
                        data[k][w.offs[k] + i * inner_st[k]]
                    })));
                }
            }
            w.advance();
        }
    };
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PAR_THRESHOLD && outer.is_empty() {
        // One long row (every operand contiguous, or uniformly strided, after merging): split
        // the row itself, or the whole map would be one task on one thread.
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(c, ch)| {
            let start = c * CHUNK;
            if unit {
                let sl: [&[T]; N] =
                    std::array::from_fn(|k| &data[k][base[k] + start..][..ch.len()]);
                map_unit(ch, sl, &f);
            } else {
                for (i, o) in ch.iter_mut().enumerate() {
                    o.write(f(std::array::from_fn(|k| {
                        data[k][base[k] + (start + i) * inner_st[k]]
                    })));
                }
            }
        });
    } else if n >= PAR_THRESHOLD {
        let rows_per = (CHUNK / inner).max(1);
        spare
            .par_chunks_mut(rows_per * inner)
            .enumerate()
            .for_each(|(c, ch)| process(c * rows_per, ch));
    } else {
        process(0, spare);
    }
    // SAFETY: `process` wrote all `n` elements (the chunks cover the output exactly).
    unsafe { out.set_len(n) };
    out
}

/// The elements a layout selects as one contiguous slice: borrowed when the layout already is
/// contiguous, copied otherwise.
pub fn contiguous_slice<'a, T: Copy + Send + Sync + Default>(
    src: &'a [T],
    l: &Layout,
) -> std::borrow::Cow<'a, [T]> {
    if l.is_contiguous() {
        std::borrow::Cow::Borrowed(&src[l.offset()..l.offset() + l.numel()])
    } else {
        std::borrow::Cow::Owned(map_n(l.shape(), [(src, l)], |[x]| x))
    }
}

/// A contiguous copy of the elements a layout selects.
pub fn to_contiguous<T: Copy + Send + Sync + Default>(src: &[T], l: &Layout) -> Vec<T> {
    if l.is_contiguous() {
        return src[l.offset()..l.offset() + l.numel()].to_vec();
    }
    map_n(l.shape(), [(src, l)], |[x]| x)
}

/// Copies `src` (layout `ls`) into `dst` at the positions of layout `ld` (same shape).
pub fn copy_into<T: Copy + Send + Sync>(dst: &mut [T], ld: &Layout, src: &[T], ls: &Layout) {
    let shape = ls.shape();
    if numel(shape) == 0 {
        return;
    }
    let (ms, mst) = merge_dims(shape, &[ld.strides(), ls.strides()]);
    let inner = ms[ms.len() - 1];
    let outer = &ms[..ms.len() - 1];
    let (sd, ss) = (mst[0][ms.len() - 1], mst[1][ms.len() - 1]);
    let rows = numel(outer);
    let mut w = Walker::new(
        outer,
        [
            mst[0][..ms.len() - 1].to_vec(),
            mst[1][..ms.len() - 1].to_vec(),
        ],
        [ld.offset(), ls.offset()],
        0,
    );
    for _ in 0..rows {
        let [od, os] = w.offs;
        if sd == 1 && ss == 1 {
            dst[od..od + inner].copy_from_slice(&src[os..os + inner]);
        } else {
            for i in 0..inner {
                dst[od + i * sd] = src[os + i * ss];
            }
        }
        w.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_handles_broadcast_and_permute() {
        let a: Vec<f64> = (0..6).map(|x| x as f64).collect(); // [2,3]
        let la = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap(); // [3,2]
        let b = vec![10.0, 20.0];
        let lb = Layout::contiguous(&[2]).broadcast_to(&[3, 2]).unwrap();
        let out = map_n(&[3, 2], [(&a[..], &la), (&b[..], &lb)], |[x, y]| x + y);
        assert_eq!(out, vec![10.0, 23.0, 11.0, 24.0, 12.0, 25.0]);
    }

    #[test]
    fn inner_broadcast_rows_match_elementwise() {
        // x [3, 20] minus a per-row value [3, 1] broadcast along the inner axis (stride 0),
        // and a per-row value minus x, and both broadcast operands at once.
        let x: Vec<f32> = (0..60).map(|v| v as f32 * 0.5).collect();
        let lx = Layout::contiguous(&[3, 20]);
        let m = vec![1.0f32, 2.0, 3.0];
        let lm = Layout::contiguous(&[3, 1]).broadcast_to(&[3, 20]).unwrap();
        let out = map_n(&[3, 20], [(&x[..], &lx), (&m[..], &lm)], |[a, b]| a - b);
        let out2 = map_n(&[3, 20], [(&m[..], &lm), (&x[..], &lx)], |[a, b]| a - b);
        let out3 = map_n(&[3, 20], [(&m[..], &lm), (&m[..], &lm)], |[a, b]| a * b);
        for r in 0..3 {
            for c in 0..20 {
                let i = r * 20 + c;
                assert_eq!(out[i], x[i] - m[r]);
                assert_eq!(out2[i], m[r] - x[i]);
                assert_eq!(out3[i], m[r] * m[r]);
            }
        }
    }

    #[test]
    fn parallel_map_matches_serial_order() {
        let n = PAR_THRESHOLD * 3 + 7;
        let a: Vec<f32> = (0..n).map(|x| x as f32).collect();
        let l = Layout::contiguous(&[n]);
        let out = map_n(&[n], [(&a[..], &l)], |[x]| x * 2.0);
        assert!(out.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32));
        let l2 = Layout::contiguous(&[3, n / 3]).permute(&[1, 0]).unwrap();
        let a2 = &a[..3 * (n / 3)];
        let out2 = map_n(l2.shape(), [(a2, &l2)], |[x]| x);
        assert_eq!(out2[1], (n / 3) as f32);
    }

    #[test]
    fn one_long_row_is_split_across_tasks() {
        // Long enough for several chunks, with a tail: a contiguous operand beside one with
        // offset and stride 3 (a column of an [m, 3] block) and one broadcast scalar; merged,
        // each is a single row, which the map splits into pieces.
        let m = PAR_THRESHOLD * 2 + 5;
        let a: Vec<f64> = (0..m).map(|x| x as f64).collect();
        let la = Layout::contiguous(&[m]);
        let b: Vec<f64> = (0..3 * m).map(|x| x as f64 * 0.5).collect();
        let lb = Layout::new(vec![m], vec![3], 1);
        let c = [7.0f64];
        let lc = Layout::new(vec![m], vec![0], 0);
        let out = map_n(
            &[m],
            [(&a[..], &la), (&b[..], &lb), (&c[..], &lc)],
            |[x, y, z]| x + y * z,
        );
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, i as f64 + (3 * i + 1) as f64 * 0.5 * 7.0, "element {i}");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let out2 = pool.install(|| map_n(&[m], [(&a[..], &la)], |[x]| x + 1.0));
        assert!(out2.iter().enumerate().all(|(i, &v)| v == i as f64 + 1.0));
    }
}
