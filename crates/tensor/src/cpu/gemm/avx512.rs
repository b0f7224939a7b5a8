//! AVX-512 micro-kernel: one `MR × NR` tile of `C ← α·A·B + β·C` from packed slivers.
//!
//! Inputs (see `pack.rs`): the A sliver is `MR × kc`, stored k-major (`a[p·MR + i]`), so one
//! k-step of A is `MR / 16` contiguous zmm vectors; the B sliver is `kc × NR`, stored k-major
//! (`b[p·NR + j]`), so one k-step of B is `NR` scalars that are broadcast. The tile lives in
//! `NR · MR / 16` zmm accumulators (each holds 16 consecutive rows of one column of C), so C is
//! written with vector stores when its row stride is 1 and through a scratch tile otherwise.
//! A bias ([`Bias`]) is added as the tile is written, so C never has to be pre-filled with it.

use super::Bias;
use core::arch::x86_64::*;

/// Rows of C per micro-tile (two zmm vectors).
pub(super) const MR: usize = 32;
/// Columns of C per micro-tile.
pub(super) const NR: usize = 12;
/// k-steps ahead at which the kernel prefetches its A sliver.
const A_PREFETCH: usize = 20;
/// zmm vectors per column of the tile.
pub(super) const MV: usize = MR / 16;

/// The `MR × NR` tile of `A·B` over `kc` k-steps, in accumulators (see [`kernel`]): B packed
/// (`ROWS == false`: k-step `p` at `b + p·NR`) or read in place from `NR` rows contiguous along
/// k (`ROWS == true`: element `(p, j)` at `b + j·ldb + p`; the rows are walked through four
/// pointers, three rows apart, so each broadcast is one load with a register offset).
///
/// # Safety
/// As for [`kernel`].
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate<const ROWS: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
) -> [[__m512; MV]; NR] {
    let mut acc = [[_mm512_setzero_ps(); MV]; NR];
    let mut a = a;
    let mut b = b;
    let mut rows = [b; NR / 3];
    if ROWS {
        for (q, r) in rows.iter_mut().enumerate() {
            *r = b.add(3 * q * ldb);
        }
    }
    for _ in 0..kc {
        // The A sliver streams from L2: fetch its lines A_PREFETCH k-steps ahead.
        for v in 0..MV {
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_PREFETCH * MR + 16 * v) as *const i8);
        }
        let mut av = [_mm512_setzero_ps(); MV];
        for (v, x) in av.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(a.add(16 * v));
        }
        for (j, col) in acc.iter_mut().enumerate() {
            let bj = if ROWS {
                _mm512_set1_ps(*rows[j / 3].add((j % 3) * ldb))
            } else {
                _mm512_set1_ps(*b.add(j))
            };
            for (x, s) in col.iter_mut().zip(av) {
                *x = _mm512_fmadd_ps(s, bj, *x);
            }
        }
        a = a.add(MR);
        if ROWS {
            for r in rows.iter_mut() {
                *r = r.add(1);
            }
        } else {
            b = b.add(NR);
        }
    }
    acc
}

/// Computes the top-left `mr × nr` part of `C ← α·A·B + bias + β·C` for one micro-tile.
///
/// `a` is a packed `MR × kc` sliver and `b` a packed `kc × NR` sliver (zero-padded past
/// `mr` / `nr`), or, when `ldb > 0`, `NR` rows of B's source that are contiguous along k
/// (element `(p, j)` at `b + j·ldb + p`, all `NR` of them valid); element `(i, j)` of C is at
/// `c + i·rsc + j·csc`; `bias` points at this tile's first row / column entries. When
/// `beta == 0`, C is not read.
///
/// # Safety
/// The CPU must support AVX-512F; `a` and `b` must be valid for `kc·MR` and `kc·NR` reads
/// (`b + j·ldb + p` for `j < NR`, `p < kc` when `ldb > 0`); every
/// `(i, j)` with `i < mr ≤ MR`, `j < nr ≤ NR` must address a writable element of C, and a
/// non-null bias must be readable for `mr` (rows) / `nr` (columns) floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel(
    kc: usize,
    alpha: f32,
    a: *const f32,
    b: *const f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    mr: usize,
    nr: usize,
    bias: Bias,
    ldb: usize,
) {
    prefetch_tile(c, rsc, csc, nr);
    let acc = if ldb == 0 {
        accumulate::<false>(kc, a, b, 0)
    } else {
        accumulate::<true>(kc, a, b, ldb)
    };
    store(&acc, alpha, beta, c, rsc, csc, mr, nr, bias);
}

/// Starts fetching the `mr × nr` tile of C at `c` (when its row stride is 1), so that its read
/// by [`store`] after the k loop does not stall.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn prefetch_tile(c: *mut f32, rsc: isize, csc: isize, nr: usize) {
    if rsc == 1 {
        for j in 0..nr {
            let cj = c.offset(j as isize * csc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(cj);
            _mm_prefetch::<_MM_HINT_T0>(cj.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(cj.wrapping_add(4 * MR - 4));
        }
    }
}

/// Writes the top-left `mr × nr` part of `α·acc + bias + β·C` to C (accumulator `acc[j][v]`
/// holds rows `16 v .. 16 v + 16` of column `j`); C is not read when `beta == 0`.
///
/// # Safety
/// As for [`kernel`]'s C and bias.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store(
    acc: &[[__m512; MV]; NR],
    alpha: f32,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    mr: usize,
    nr: usize,
    bias: Bias,
) {
    let valpha = _mm512_set1_ps(alpha);
    if rsc == 1 {
        let vbeta = _mm512_set1_ps(beta);
        let mut masks = [0u16; MV];
        let mut row_bias = [_mm512_setzero_ps(); MV];
        for (v, mask) in masks.iter_mut().enumerate() {
            let rows = mr.saturating_sub(16 * v).min(16);
            *mask = ((1u32 << rows) - 1) as u16;
            if !bias.rows.is_null() {
                row_bias[v] = _mm512_maskz_loadu_ps(*mask, bias.rows.add(16 * v));
            }
        }
        for (j, col) in acc.iter().enumerate() {
            if j < nr {
                let cj = c.offset(j as isize * csc);
                for (v, x) in col.iter().enumerate() {
                    let p = cj.add(16 * v);
                    let mut r = _mm512_mul_ps(*x, valpha);
                    if !bias.rows.is_null() {
                        r = _mm512_add_ps(r, row_bias[v]);
                    }
                    if !bias.cols.is_null() {
                        r = _mm512_add_ps(r, _mm512_set1_ps(*bias.cols.add(j)));
                    }
                    if beta != 0.0 {
                        r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(masks[v], p), vbeta, r);
                    }
                    _mm512_mask_storeu_ps(p, masks[v], r);
                }
            }
        }
    } else {
        let mut tile = [[0f32; MR]; NR];
        for (t, col) in tile.iter_mut().zip(acc.iter()) {
            for (v, x) in col.iter().enumerate() {
                _mm512_storeu_ps(t.as_mut_ptr().add(16 * v), _mm512_mul_ps(*x, valpha));
            }
        }
        for (j, t) in tile.iter().enumerate().take(nr) {
            for (i, &x) in t.iter().enumerate().take(mr) {
                let x = bias.add(x, i, j);
                let p = c.offset(i as isize * rsc + j as isize * csc);
                *p = if beta == 0.0 { x } else { x + beta * *p };
            }
        }
    }
}
