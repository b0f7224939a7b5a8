//! AVX2 + FMA micro-kernel: one `MR × NR` = 16 × 6 tile of `C ← α·A·B + β·C` from packed
//! slivers, for CPUs without AVX-512 (e.g. AMD Zen 2/3, Intel before Skylake-X).
//!
//! Same sliver layout as the AVX-512 kernel (see `pack.rs`): one k-step of A is `MR` contiguous
//! floats (two ymm vectors), one k-step of B is `NR` floats that are broadcast. The tile lives in
//! 12 ymm accumulators (each holds 8 consecutive rows of one column of C), leaving registers for
//! the two A vectors and one broadcast.

use super::Bias;
use core::arch::x86_64::*;

/// Rows of C per micro-tile (two ymm vectors).
pub(super) const MR: usize = 16;
/// Columns of C per micro-tile.
pub(super) const NR: usize = 6;

/// Computes the top-left `mr × nr` part of `C ← α·A·B + bias + β·C` for one micro-tile.
///
/// `a` is a packed `MR × kc` sliver and `b` a packed `kc × NR` sliver (zero-padded past
/// `mr` / `nr`); element `(i, j)` of C is at `c + i·rsc + j·csc`; `bias` points at this tile's
/// first row / column entries. When `beta == 0`, C is not read.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `a` and `b` must be valid for `kc·MR` and `kc·NR` reads;
/// every `(i, j)` with `i < mr ≤ MR`, `j < nr ≤ NR` must address a writable element of C, and a
/// non-null bias must be readable for `mr` (rows) / `nr` (columns) floats.
#[allow(clippy::too_many_arguments)]
#[inline]
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
) {
    if kc >= UNROLL_MIN_KC {
        tile::<4>(kc, alpha, a, b, beta, c, rsc, csc, mr, nr, bias)
    } else {
        tile::<1>(kc, alpha, a, b, beta, c, rsc, csc, mr, nr, bias)
    }
}

/// Depth from which [`kernel`] runs four k-steps per loop iteration. Zen 3, session 18: with
/// both loops in one test binary, alternating, SGEMM n = 256-2048 ran 5-12% faster with two
/// threads and 0-11% with one, and two or eight steps per iteration were 2-4% below four, as
/// was prefetching A on top. Unrolled at every depth, the SimCLR step measured 6-7% slower
/// (14-16 alternating rounds; its convolutions run many products with k = 9-64), so short
/// blocks keep the one-step loop: then SimCLR 1.05x, GPT 0.99x, SGEMM n = 512-1024 1.02-1.03x
/// (medians of per-round ratios, `selfsup bench`, 10-20 rounds).
const UNROLL_MIN_KC: usize = 128;

/// [`kernel`] with `U` k-steps per iteration of its main loop (separate functions, so the
/// short-k one keeps the compact code that suits it).
///
/// # Safety
/// As for [`kernel`].
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const U: usize>(
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
) {
    if rsc == 1 {
        // Start fetching the tile of C now so its read at the end does not stall: with k
        // split into blocks, every block after the first reads C back, often from L3.
        for j in 0..nr {
            let cj = c.offset(j as isize * csc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(cj);
            _mm_prefetch::<_MM_HINT_T0>(cj.wrapping_add(4 * MR - 4));
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; NR];
    let mut a = a;
    let mut b = b;
    // One k-step: the rank-1 update of the tile from column `u` of the A sliver and row `u`
    // of the B sliver (a macro, so it is expanded in place inside this target-feature function).
    macro_rules! step {
        ($u:expr) => {{
            let a0 = _mm256_loadu_ps(a.add(MR * $u));
            let a1 = _mm256_loadu_ps(a.add(MR * $u + 8));
            for (j, col) in acc.iter_mut().enumerate() {
                let bj = _mm256_broadcast_ss(&*b.add(NR * $u + j));
                col[0] = _mm256_fmadd_ps(a0, bj, col[0]);
                col[1] = _mm256_fmadd_ps(a1, bj, col[1]);
            }
        }};
    }
    for _ in 0..kc / U {
        for u in 0..U {
            step!(u);
        }
        a = a.add(U * MR);
        b = b.add(U * NR);
    }
    for _ in 0..kc % U {
        step!(0);
        a = a.add(MR);
        b = b.add(NR);
    }

    let valpha = _mm256_set1_ps(alpha);
    if rsc == 1 && mr == MR {
        let vbeta = _mm256_set1_ps(beta);
        let mut row_bias = [_mm256_setzero_ps(); 2];
        if !bias.rows.is_null() {
            for (v, r) in row_bias.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(bias.rows.add(8 * v));
            }
        }
        for (j, col) in acc.iter().enumerate().take(nr) {
            let cj = c.offset(j as isize * csc);
            for (v, x) in col.iter().enumerate() {
                let p = cj.add(8 * v);
                let mut r = _mm256_mul_ps(*x, valpha);
                if !bias.rows.is_null() {
                    r = _mm256_add_ps(r, row_bias[v]);
                }
                if !bias.cols.is_null() {
                    r = _mm256_add_ps(r, _mm256_set1_ps(*bias.cols.add(j)));
                }
                if beta != 0.0 {
                    r = _mm256_fmadd_ps(_mm256_loadu_ps(p), vbeta, r);
                }
                _mm256_storeu_ps(p, r);
            }
        }
    } else {
        let mut tile = [[0f32; MR]; NR];
        for (t, col) in tile.iter_mut().zip(acc) {
            for (v, x) in col.into_iter().enumerate() {
                _mm256_storeu_ps(t.as_mut_ptr().add(8 * v), _mm256_mul_ps(x, valpha));
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
