//! Gather/scatter kernels on contiguous data viewed as `[outer, dim, inner]`:
//! `index_select` copies rows `ids` of the middle axis; `index_add` adds rows back at `ids`
//! (the embedding backward); `gather`/`scatter_add` index the middle axis per element.

use crate::dtype::Float;
use rayon::prelude::*;

/// `out[o, j, :] = x[o, ids[j], :]`.
pub fn index_select<T: Copy + Send + Sync + Default>(
    x: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    ids: &[usize],
) -> Vec<T> {
    let n = ids.len();
    let mut out = vec![T::default(); outer * n * inner];
    if inner == 0 {
        return out;
    }
    let body = |o: usize, chunk: &mut [T]| {
        for (j, row) in chunk.chunks_mut(inner).enumerate() {
            let s = (o * dim + ids[j]) * inner;
            row.copy_from_slice(&x[s..s + inner]);
        }
    };
    if out.len() >= 1 << 15 && outer > 1 {
        out.par_chunks_mut(n * inner)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    } else {
        out.chunks_mut((n * inner).max(1))
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    }
    out
}

/// `out[o, ids[j], :] += src[o, j, :]` (duplicates accumulate, in order).
pub fn index_add<T: Float>(
    out: &mut [T],
    outer: usize,
    dim: usize,
    inner: usize,
    ids: &[usize],
    src: &[T],
) {
    let n = ids.len();
    if inner == 0 {
        return;
    }
    let body = |o: usize, chunk: &mut [T]| {
        for (j, &id) in ids.iter().enumerate() {
            let s = (o * n + j) * inner;
            for (d, &v) in chunk[id * inner..(id + 1) * inner]
                .iter_mut()
                .zip(&src[s..s + inner])
            {
                *d += v;
            }
        }
    };
    if outer > 1 && out.len() >= 1 << 15 {
        out.par_chunks_mut(dim * inner)
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    } else {
        let _ = outer;
        out.chunks_mut((dim * inner).max(1))
            .enumerate()
            .for_each(|(o, c)| body(o, c));
    }
}

/// For `ids` of shape `[outer, n, inner]` (contiguous): `out[o, j, i] = x[o, ids[o, j, i], i]`
/// where `x` is `[outer, dim, inner]` with the given strides `(so, sd, si)`.
pub fn gather<T: Copy + Default>(
    x: &[T],
    x_off: usize,
    (so, sd, si): (usize, usize, usize),
    outer: usize,
    n: usize,
    inner: usize,
    ids: &[usize],
) -> Vec<T> {
    let mut out = vec![T::default(); outer * n * inner];
    for o in 0..outer {
        for j in 0..n {
            for i in 0..inner {
                let k = (o * n + j) * inner + i;
                out[k] = x[x_off + o * so + ids[k] * sd + i * si];
            }
        }
    }
    out
}

/// The adjoint of [`gather`] into a contiguous `[outer, dim, inner]` buffer.
pub fn scatter_add<T: Float>(
    out: &mut [T],
    dim: usize,
    outer: usize,
    n: usize,
    inner: usize,
    ids: &[usize],
    src: &[T],
) {
    for o in 0..outer {
        for j in 0..n {
            for i in 0..inner {
                let k = (o * n + j) * inner + i;
                out[(o * dim + ids[k]) * inner + i] += src[k];
            }
        }
    }
}
