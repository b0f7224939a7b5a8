//! Packing of strided operand blocks into the sliver layout the micro-kernel reads.
//!
//! A `len × kc` block whose element `(i, p)` sits at `src + i·s_len + p·s_k` is copied into
//! `ceil(len / W)` slivers of `W × kc`; sliver `s` starts at `dst + s·sliver_stride(W, kc)` and
//! stores element `(s·W + r, p)` at offset `p·W + r` (k-major, so one k-step of a sliver is `W`
//! contiguous values). Rows past `len` in the last sliver are zero-filled.
//!
//! Slivers are [`SLIVER_PAD`] floats apart: with `W·kc` a multiple of 4 KiB (32 × 512 floats is
//! 64 KiB), every sliver would start in the same L1 set, and packing row by row writes to all of
//! them at once. A blocks are packed with
//! `W = MR` (`i` = row of A), B blocks with `W = NR` (`i` = column of B).
//!
//! When the source is contiguous along `i` each k-step is a plain copy; when it is contiguous
//! along k (a transposing pack) 16 × 16 tiles are transposed in AVX-512 registers, or 8 × 8
//! tiles in AVX2 registers on CPUs without AVX-512.

use core::arch::x86_64::*;
use core::ptr;

/// Floats between the end of one packed sliver and the start of the next (one cache line, so
/// consecutive slivers start in different L1 sets; see the module header).
const SLIVER_PAD: usize = 16;

/// Floats from the start of one packed `W × kc` sliver to the start of the next.
#[allow(non_snake_case)]
pub(super) const fn sliver_stride(W: usize, kc: usize) -> usize {
    W * kc + SLIVER_PAD
}

/// Packs a strided `len × kc` block into `W`-wide slivers (layout in the module header).
///
/// `avx512` selects the AVX-512 transposing path (else AVX2).
///
/// # Safety
/// AVX-512F (when `avx512`) or AVX2 must be available; every `(i, p)` with `i < len`, `p < kc`
/// must address a readable `f32` through `src`, and `dst` must be valid for
/// `len.div_ceil(W) · sliver_stride(W, kc)` writes that do not overlap the source.
#[allow(clippy::too_many_arguments)]
#[allow(non_snake_case)]
pub(super) unsafe fn pack(
    W: usize,
    avx512: bool,
    len: usize,
    kc: usize,
    src: *const f32,
    s_len: isize,
    s_k: isize,
    dst: *mut f32,
) {
    if s_len == 1 {
        // Each k-step of every sliver is contiguous in the source: walk k outer, so each
        // source row segment is read once, in memory order (see `copy_rows`).
        match W {
            6 => copy_rows::<6>(len, kc, src, s_k, dst),
            12 => copy_rows::<12>(len, kc, src, s_k, dst),
            16 => copy_rows::<16>(len, kc, src, s_k, dst),
            32 => copy_rows::<32>(len, kc, src, s_k, dst),
            _ => copy_rows_any(W, len, kc, src, s_k, dst),
        }
        return;
    }
    for s in 0..len.div_ceil(W) {
        let rows = W.min(len - s * W);
        let from = src.offset((s * W) as isize * s_len);
        let to = dst.add(s * sliver_stride(W, kc));
        if s_k == 1 {
            if avx512 {
                pack_transposed(W, rows, kc, from, s_len, to);
            } else {
                match (W, rows == W) {
                    (6, true) => pack_transposed_full_avx2::<6>(kc, from, s_len, to),
                    (16, true) => pack_transposed_full_avx2::<16>(kc, from, s_len, to),
                    _ => pack_transposed_avx2(W, rows, kc, from, s_len, to),
                }
            }
        } else {
            // General strides: walk each source row along k, scattering by `W`.
            for r in 0..rows {
                let f = from.offset(r as isize * s_len);
                for p in 0..kc {
                    *to.add(p * W + r) = *f.offset(p as isize * s_k);
                }
            }
            if rows < W {
                for p in 0..kc {
                    ptr::write_bytes(to.add(p * W + rows), 0, W - rows);
                }
            }
        }
    }
}

/// Rows ahead that [`copy_rows`] prefetches: the next row segment usually starts in another
/// page, where the hardware prefetcher has to start over.
const ROW_PREFETCH: usize = 4;

/// Packs a `len × kc` block whose k-steps are contiguous rows (element `(i, p)` at
/// `src + i + p·s_k`) into `W`-wide slivers, k outer: each row segment of `len` floats is read
/// once, front to back, and its `W`-float pieces go to the slivers' k-step `p`. (Walking one
/// sliver at a time instead reads `W` floats from each of `kc` rows, a new page every row or
/// two, and measured 13% of a `[512, 4096] · [4096, 128]` product.) Rows past `len` in the last
/// sliver are zero-filled.
///
/// # Safety
/// AVX2 must be available (it is wherever either micro-kernel runs); every `(i, p)` with
/// `i < len`, `p < kc` must be readable, and `dst` writable for
/// `len.div_ceil(W) · sliver_stride(W, kc)` floats not overlapping the source.
#[target_feature(enable = "avx2")]
unsafe fn copy_rows<const W: usize>(
    len: usize,
    kc: usize,
    src: *const f32,
    s_k: isize,
    dst: *mut f32,
) {
    let full = len / W;
    let rem = len % W;
    let sliver = sliver_stride(W, kc);
    for p in 0..kc {
        // A prefetch never faults, so rows past the block's end are harmless.
        let ahead = src.wrapping_offset((p + ROW_PREFETCH) as isize * s_k) as *const i8;
        for line in (0..len * 4).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
        }
        let row = src.offset(p as isize * s_k);
        let to = dst.add(p * W);
        for s in 0..full {
            let f = row.add(s * W) as *const [f32; W];
            (to.add(s * sliver) as *mut [f32; W]).write_unaligned(f.read_unaligned());
        }
        if rem > 0 {
            let t = to.add(full * sliver);
            ptr::copy_nonoverlapping(row.add(full * W), t, rem);
            ptr::write_bytes(t.add(rem), 0, W - rem);
        }
    }
}

/// [`copy_rows`] for a width that is not a compile-time constant.
///
/// # Safety
/// As for [`copy_rows`].
#[allow(non_snake_case)]
unsafe fn copy_rows_any(
    W: usize,
    len: usize,
    kc: usize,
    src: *const f32,
    s_k: isize,
    dst: *mut f32,
) {
    for p in 0..kc {
        let row = src.offset(p as isize * s_k);
        for s in 0..len.div_ceil(W) {
            let rows = W.min(len - s * W);
            let t = dst.add(s * sliver_stride(W, kc) + p * W);
            ptr::copy_nonoverlapping(row.add(s * W), t, rows);
            ptr::write_bytes(t.add(rows), 0, W - rows);
        }
    }
}

/// Packs one `W`-wide sliver from `rows ≤ W` source rows that are contiguous along k (row `r`
/// at `src + r·s_len`), transposing 16 × 16 tiles in registers; rows `rows..W` become zero.
///
/// # Safety
/// AVX-512F must be available; rows `0..rows` of `src` must be readable for `kc` floats and
/// `dst` writable for `W · kc` floats.
#[target_feature(enable = "avx512f")]
#[allow(non_snake_case)]
unsafe fn pack_transposed(
    W: usize,
    rows: usize,
    kc: usize,
    src: *const f32,
    s_len: isize,
    dst: *mut f32,
) {
    for g in (0..W).step_by(16) {
        let lanes = W.min(g + 16) - g;
        let valid = rows.saturating_sub(g).min(16);
        let store_mask = ((1u32 << lanes) - 1) as u16;
        for p in (0..kc).step_by(16) {
            let np = (kc - p).min(16);
            let load_mask = ((1u32 << np) - 1) as u16;
            let mut t = [_mm512_setzero_ps(); 16];
            for (i, x) in t.iter_mut().enumerate().take(valid) {
                *x = _mm512_maskz_loadu_ps(load_mask, src.offset((g + i) as isize * s_len).add(p));
            }
            transpose16(&mut t);
            for (q, x) in t.iter().enumerate().take(np) {
                _mm512_mask_storeu_ps(dst.add((p + q) * W + g), store_mask, *x);
            }
        }
    }
}

/// Like [`pack_transposed`] with 8 × 8 tiles in AVX2 registers.
///
/// # Safety
/// AVX2 must be available; rows `0..rows` of `src` must be readable for `kc` floats and `dst`
/// writable for `W · kc` floats.
#[target_feature(enable = "avx2")]
#[allow(non_snake_case)]
unsafe fn pack_transposed_avx2(
    W: usize,
    rows: usize,
    kc: usize,
    src: *const f32,
    s_len: isize,
    dst: *mut f32,
) {
    for g in (0..W).step_by(8) {
        let lanes = W.min(g + 8) - g;
        let valid = rows.saturating_sub(g).min(8);
        for p in (0..kc).step_by(8) {
            let np = (kc - p).min(8);
            let load_mask = lane_mask(np);
            if p % 16 == 0 {
                prefetch_next_sliver(src, W, g, valid, s_len, p);
            }
            let mut t = [_mm256_setzero_ps(); 8];
            for (i, x) in t.iter_mut().enumerate().take(valid) {
                let row = src.offset((g + i) as isize * s_len).add(p);
                *x = if np == 8 {
                    _mm256_loadu_ps(row)
                } else {
                    _mm256_maskload_ps(row, load_mask)
                };
            }
            transpose8(&mut t);
            for (q, x) in t.iter().enumerate().take(np) {
                let d = dst.add((p + q) * W + g);
                if lanes == 8 {
                    _mm256_storeu_ps(d, *x);
                } else {
                    store_first(d, *x, lanes);
                }
            }
        }
    }
}

/// Prefetches, for rows `g..g + rows` of the sliver at `src` (rows `s_len` apart), the cache
/// line at k-offset `p` of the row `W` further on: the next sliver's, which the caller packs
/// next. Strided row starts defeat the hardware prefetcher, and without this most of a
/// transposing pack's time is spent waiting on its loads. A prefetch never faults, so rows past
/// the end of the operand are harmless (and the addresses are formed with wrapping arithmetic).
#[inline(always)]
#[allow(non_snake_case)]
fn prefetch_next_sliver(src: *const f32, W: usize, g: usize, rows: usize, s_len: isize, p: usize) {
    for i in 0..rows {
        let next = src
            .wrapping_offset((W + g + i) as isize * s_len)
            .wrapping_add(p);
        // SAFETY: SSE is part of x86-64, and a prefetch reads nothing architecturally.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(next as *const i8) };
    }
}

/// [`pack_transposed_avx2`] for a full sliver of a width known at compile time (the AVX2
/// kernel's `NR = 6` and `MR = 16`): the row count, lane count and store widths are constants,
/// so the inner loop has no branches; a k tail that is not a multiple of 8 takes the general
/// path.
///
/// # Safety
/// As for [`pack_transposed_avx2`] with `rows == W`.
#[target_feature(enable = "avx2")]
unsafe fn pack_transposed_full_avx2<const W: usize>(
    kc: usize,
    src: *const f32,
    s_len: isize,
    dst: *mut f32,
) {
    let body = kc / 8 * 8;
    for g in (0..W).step_by(8) {
        let lanes = W.min(g + 8) - g;
        let row = |i: usize| src.offset((g + i) as isize * s_len);
        for p in (0..body).step_by(8) {
            if p % 16 == 0 {
                prefetch_next_sliver(src, W, g, lanes, s_len, p);
            }
            let mut t = [_mm256_setzero_ps(); 8];
            for (i, x) in t.iter_mut().enumerate().take(lanes) {
                *x = _mm256_loadu_ps(row(i).add(p));
            }
            transpose8(&mut t);
            for (q, x) in t.iter().enumerate() {
                let d = dst.add((p + q) * W + g);
                if lanes == 8 {
                    _mm256_storeu_ps(d, *x);
                } else {
                    store_first(d, *x, lanes);
                }
            }
        }
    }
    if body < kc {
        pack_transposed_avx2(W, W, kc - body, src.add(body), s_len, dst.add(body * W));
    }
}

/// Stores the first `n < 8` lanes of `x` at `d` with plain 128/64/32-bit stores (masked stores
/// are microcoded and slow on AMD Zen, and a `memcpy` of a runtime length is a call).
///
/// # Safety
/// AVX must be available and `d` writable for `n` floats.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_first(d: *mut f32, x: __m256, n: usize) {
    let (mut v, mut d, mut n) = (_mm256_castps256_ps128(x), d, n);
    if n >= 4 {
        _mm_storeu_ps(d, v);
        v = _mm256_extractf128_ps::<1>(x);
        d = d.add(4);
        n -= 4;
    }
    if n >= 2 {
        _mm_storel_epi64(d as *mut __m128i, _mm_castps_si128(v));
        v = _mm_movehl_ps(v, v);
        d = d.add(2);
        n -= 2;
    }
    if n == 1 {
        _mm_store_ss(d, v);
    }
}

/// An AVX2 lane mask selecting the first `n ≤ 8` lanes.
#[target_feature(enable = "avx2")]
fn lane_mask(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
}

/// Transposes an 8 × 8 tile held as 8 row vectors (row `i` becomes column `i`).
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(r: &mut [__m256; 8]) {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
    r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
    r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
    r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
    r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
    r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
    r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
    r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
}

/// Transposes a 16 × 16 tile held as 16 row vectors (row `i` becomes column `i`).
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // Interleave pairs of rows, then pairs of pairs: `u[4g + c]` holds, in 128-bit lane `l`,
    // column `4l + c` of rows `4g..4g + 4`.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let [r0, r1, r2, r3] = [r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]];
        let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(r0, r1));
        let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(r0, r1));
        let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(r2, r3));
        let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(r2, r3));
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // Gather the four 128-bit lanes of each column: lanes (0, 2) then (1, 3) of two sources.
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        r[8 + c] = _mm512_shuffle_f32x4::<0xdd>(v0, v2);
        r[4 + c] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        r[12 + c] = _mm512_shuffle_f32x4::<0xdd>(v1, v3);
    }
}
