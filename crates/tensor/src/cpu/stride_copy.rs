//! Short strided row copies for im2col and col2im: `dst[k] = src[k * s]` (gather) and
//! `dst[k * s] += src[k]` (scatter-add), over the 7- to 28-element segments a convolution's
//! output rows make, one call per kernel tap (all its output rows), with im2col's padding
//! zeros written in the same pass ([`gather_rows_padded`]).
//!
//! The common strided case, f32 with stride 2 (every downsampling convolution), runs on
//! AVX-512 with masked loads (zero where the kernel reads padding) and one two-register permute
//! per 16 elements, so a row of up to 16 is a handful of instructions instead of two fills and
//! a scalar loop with a bounds check per element; other strides and types run plain loops
//! (stride 1 is a copy). Nothing outside the elements named is read or written: masks, not
//! over-long loads, cover the ends. Measured in the SimCLR step (docs/performance.md, session
//! 21): im2col 1.4x and col2im 2.2x faster at stride 2.

use crate::dtype::{DType, Float};

/// `dst[k] = src[k * s]` for every `k < dst.len()`.
///
/// # Panics
/// If `src` is shorter than `(dst.len() - 1) * s + 1` (and `dst` is not empty).
#[inline]
pub fn gather<T: Float>(dst: &mut [T], src: &[T], s: usize) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!(
        src.len() > (n - 1) * s,
        "stride_copy::gather: source too short"
    );
    if s == 1 {
        dst.copy_from_slice(&src[..n]);
        return;
    }
    for (k, d) in dst.iter_mut().enumerate() {
        *d = src[k * s];
    }
}

/// `dst[k * s] += src[k]` for every `k < src.len()`.
///
/// # Panics
/// If `dst` is shorter than `(src.len() - 1) * s + 1` (and `src` is not empty).
#[inline]
pub fn scatter_add<T: Float>(dst: &mut [T], src: &[T], s: usize) {
    let n = src.len();
    if n == 0 {
        return;
    }
    assert!(
        dst.len() > (n - 1) * s,
        "stride_copy::scatter_add: destination too short"
    );
    if s == 1 {
        for (d, &v) in dst[..n].iter_mut().zip(src) {
            *d += v;
        }
        return;
    }
    for (k, &v) in src.iter().enumerate() {
        dst[k * s] += v;
    }
}

/// Whole output rows of an im2col tap: row `i` of `dst` (at `i * dst_stride`, `width`
/// elements) gets `src[i * src_stride + (j - lo) * s]` at columns `lo <= j < hi` and zero at
/// the others (where the kernel reads padding).
///
/// # Panics
/// If either slice is too short for the rows it is given, or `lo >= hi` or `hi > width`.
pub fn gather_rows_padded<T: Float>(
    dst: &mut [T],
    dst_stride: usize,
    src: &[T],
    src_stride: usize,
    rows: usize,
    (lo, hi, width): (usize, usize, usize),
    s: usize,
) {
    assert!(
        lo < hi && hi <= width,
        "stride_copy::gather_rows_padded: columns {lo}..{hi} of {width}"
    );
    if rows == 0 {
        return;
    }
    let len = hi - lo;
    assert!(
        dst.len() >= (rows - 1) * dst_stride + width
            && src.len() > (rows - 1) * src_stride + (len - 1) * s,
        "stride_copy::gather_rows_padded: slices too short for {rows} rows of {width}"
    );
    #[cfg(target_arch = "x86_64")]
    if s == 2 && T::DTYPE == DType::F32 && avx512() {
        // SAFETY: T is f32; each row's `width` destination elements and its source elements
        // for columns lo..hi lie inside the slices (asserted); the kernel touches no others.
        unsafe {
            let (d, sp) = (dst.as_mut_ptr() as *mut f32, src.as_ptr() as *const f32);
            gather2_padded_rows_f32(d, dst_stride, sp, src_stride, rows, (lo, hi, width));
        }
        return;
    }
    for i in 0..rows {
        let out = &mut dst[i * dst_stride..i * dst_stride + width];
        out[..lo].fill(T::ZERO);
        out[hi..].fill(T::ZERO);
        gather(&mut out[lo..hi], &src[i * src_stride..], s);
    }
}

/// # Safety
/// As [`gather2_padded_f32`] for each row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather2_padded_rows_f32(
    dst: *mut f32,
    dst_stride: usize,
    src: *const f32,
    src_stride: usize,
    rows: usize,
    (lo, hi, width): (usize, usize, usize),
) {
    for i in 0..rows {
        gather2_padded_f32(
            dst.add(i * dst_stride),
            src.add(i * src_stride),
            lo,
            hi,
            width,
        );
    }
}

/// One padded output row (see [`gather_rows_padded`]), stride 2: the source is read through
/// `src - 2 lo` (not dereferenced outside columns lo..hi: those lanes are masked off and come
/// out zero).
///
/// # Safety
/// AVX-512F; `dst` writable for `width` f32; `src` readable for `2(hi - lo - 1) + 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gather2_padded_f32(dst: *mut f32, src: *const f32, lo: usize, hi: usize, width: usize) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let base = src.wrapping_sub(2 * lo);
    let mut c = 0;
    while c < width {
        // Source lanes 2(j - c) for the valid columns j of this chunk: one contiguous range
        // [first, last] of the 32 lanes (odd lanes inside it lie between valid sources).
        let j0 = lo.max(c);
        let j1 = hi.min(c + 16);
        let (ma, mb) = if j0 < j1 {
            let (first, last) = (2 * (j0 - c), 2 * (j1 - 1 - c));
            let range = ((1u64 << (last + 1)) - 1) & !((1u64 << first) - 1);
            (range as u16, (range >> 16) as u16)
        } else {
            (0, 0)
        };
        let a = _mm512_maskz_loadu_ps(ma, base.wrapping_add(2 * c));
        let b = _mm512_maskz_loadu_ps(mb, base.wrapping_add(2 * c + 16));
        let v = _mm512_permutex2var_ps(a, even, b);
        if width - c >= 16 {
            _mm512_storeu_ps(dst.add(c), v);
        } else {
            _mm512_mask_storeu_ps(dst.add(c), low_bits(width - c), v);
        }
        c += 16;
    }
}

/// [`scatter_add`] over `rows` rows of `len` source elements: source row `i` starts at
/// `i * src_stride` of `src`, its destination at `i * dst_stride` of `dst` (a col2im tap).
///
/// # Panics
/// If either slice is too short for the rows it is given.
pub fn scatter_add_rows<T: Float>(
    dst: &mut [T],
    dst_stride: usize,
    src: &[T],
    src_stride: usize,
    (rows, len): (usize, usize),
    s: usize,
) {
    if rows == 0 || len == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * src_stride + len
            && dst.len() > (rows - 1) * dst_stride + (len - 1) * s,
        "stride_copy::scatter_add_rows: slices too short for {rows} rows of {len}"
    );
    #[cfg(target_arch = "x86_64")]
    if s == 2 && T::DTYPE == DType::F32 && avx512() {
        // SAFETY: T is f32; each row's `len` source elements and the destination elements they
        // add to lie inside the slices (asserted); the kernel touches no others.
        unsafe {
            let (d, sp) = (dst.as_mut_ptr() as *mut f32, src.as_ptr() as *const f32);
            scatter_add2_rows_f32(d, dst_stride, sp, src_stride, rows, len);
        }
        return;
    }
    for i in 0..rows {
        scatter_add(
            &mut dst[i * dst_stride..],
            &src[i * src_stride..i * src_stride + len],
            s,
        );
    }
}

/// # Safety
/// AVX-512F; every row's `len` source and `2(len - 1) + 1` destination elements in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_add2_rows_f32(
    dst: *mut f32,
    dst_stride: usize,
    src: *const f32,
    src_stride: usize,
    rows: usize,
    len: usize,
) {
    for i in 0..rows {
        scatter_add2_f32(dst.add(i * dst_stride), src.add(i * src_stride), len);
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    super::simd::level() == super::simd::Level::Avx512
}

/// The low `count` bits set (count <= 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn low_bits(count: usize) -> u16 {
    ((1u32 << count.min(16)) - 1) as u16
}

/// # Safety
/// AVX-512F; `dst` readable and writable for `2(n - 1) + 1` f32, `src` readable for `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn scatter_add2_f32(dst: *mut f32, src: *const f32, n: usize) {
    use std::arch::x86_64::*;
    // (s, 0) interleaved: lanes 2j take s[j] (j < 8, or 8 + j for the high half), odd lanes
    // take lane 0 of the zero register.
    let lo = _mm512_setr_epi32(0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16);
    let hi = _mm512_setr_epi32(8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16);
    let zero = _mm512_setzero_ps();
    let mut k = 0;
    while k < n {
        let m = (n - k).min(16);
        let s = _mm512_maskz_loadu_ps(low_bits(m), src.add(k));
        // Destination elements 2k ..= 2k + 2(m - 1); the odd ones in between get + 0.
        let count = 2 * m - 1;
        let (m0, m1) = (low_bits(count), low_bits(count.saturating_sub(16)));
        let (p0, p1) = (dst.wrapping_add(2 * k), dst.wrapping_add(2 * k + 16));
        let d0 = _mm512_add_ps(
            _mm512_maskz_loadu_ps(m0, p0),
            _mm512_permutex2var_ps(s, lo, zero),
        );
        _mm512_mask_storeu_ps(p0, m0, d0);
        if m1 != 0 {
            let d1 = _mm512_add_ps(
                _mm512_maskz_loadu_ps(m1, p1),
                _mm512_permutex2var_ps(s, hi, zero),
            );
            _mm512_mask_storeu_ps(p1, m1, d1);
        }
        k += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to 40 and strides 1-3, f32 and f64, against the plain loops; the
    /// elements around the touched ones stay as they were.
    #[test]
    fn gather_and_scatter_add_match_plain_loops() {
        for s in 1..=3usize {
            for n in 0..=40usize {
                let len = if n == 0 { 0 } else { (n - 1) * s + 1 };
                let src: Vec<f32> = (0..len + 5).map(|i| i as f32 * 0.5 - 3.0).collect();
                // Gather from an offset so the source starts unaligned.
                let mut dst = vec![7.0f32; n + 3];
                gather(&mut dst[1..1 + n], &src[1..1 + len], s);
                let want: Vec<f32> = (0..n).map(|k| src[1 + k * s]).collect();
                assert_eq!(&dst[1..1 + n], &want[..], "gather s={s} n={n}");
                assert!(dst[0] == 7.0 && dst[n + 1] == 7.0 && dst[n + 2] == 7.0);
                let d64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
                let mut g64 = vec![0.0f64; n];
                gather(&mut g64, &d64[1..1 + len], s);
                assert_eq!(g64, want.iter().map(|&v| v as f64).collect::<Vec<_>>());

                let add: Vec<f32> = (0..n).map(|k| 100.0 + k as f32).collect();
                let mut out: Vec<f32> = (0..len + 4).map(|i| i as f32).collect();
                let mut expect = out.clone();
                for (k, &v) in add.iter().enumerate() {
                    expect[1 + k * s] += v;
                }
                scatter_add(&mut out[1..1 + len], &add, s);
                assert_eq!(out, expect, "scatter_add s={s} n={n}");
            }
        }
    }

    /// The row form of the scatter-add gives the single-row results row by row, strides 1-3,
    /// and leaves everything between the rows alone.
    #[test]
    fn scatter_add_rows_matches_row_by_row_calls() {
        for s in 1..=3usize {
            for (rows, len) in [(1, 1), (3, 7), (4, 14), (2, 17), (5, 33)] {
                let (ds, ss) = ((len - 1) * s + 4, len + 3);
                let base: Vec<f32> = (0..(rows - 1) * ds + (len - 1) * s + 1)
                    .map(|i| (i as f32).sin())
                    .collect();
                let add: Vec<f32> = (0..(rows - 1) * ss + len).map(|i| i as f32).collect();
                let mut got = base.clone();
                scatter_add_rows(&mut got, ds, &add, ss, (rows, len), s);
                let mut want = base.clone();
                for i in 0..rows {
                    scatter_add(&mut want[i * ds..], &add[i * ss..i * ss + len], s);
                }
                assert_eq!(got, want, "scatter_add_rows s={s} rows={rows} len={len}");
                let base64: Vec<f64> = base.iter().map(|&v| v as f64).collect();
                let add64: Vec<f64> = add.iter().map(|&v| v as f64).collect();
                let mut got64 = base64.clone();
                scatter_add_rows(&mut got64, ds, &add64, ss, (rows, len), s);
                let mut want64 = base64;
                for i in 0..rows {
                    scatter_add(&mut want64[i * ds..], &add64[i * ss..i * ss + len], s);
                }
                assert_eq!(got64, want64);
            }
        }
    }

    /// Padded rows: zeros outside the valid columns, the gather inside, for every valid range
    /// of widths 1-40, strides 1-3, f32 and f64.
    #[test]
    fn padded_rows_are_zero_outside_the_valid_columns() {
        for s in 1..=3usize {
            for width in 1..=40usize {
                for (lo, hi) in [
                    (0, width),
                    (1.min(width - 1), width),
                    (0, width.div_ceil(2)),
                ]
                .into_iter()
                .chain((width > 2).then_some((1, width - 1)))
                {
                    let (rows, ds) = (3, width + 2);
                    let ss = (hi - lo - 1) * s + 5;
                    let src: Vec<f32> = (0..(rows - 1) * ss + (hi - lo - 1) * s + 1)
                        .map(|i| 1.0 + i as f32)
                        .collect();
                    let mut got = vec![-1.0f32; (rows - 1) * ds + width];
                    gather_rows_padded(&mut got, ds, &src, ss, rows, (lo, hi, width), s);
                    let mut want = vec![-1.0f32; got.len()];
                    for i in 0..rows {
                        for j in 0..width {
                            want[i * ds + j] = if (lo..hi).contains(&j) {
                                src[i * ss + (j - lo) * s]
                            } else {
                                0.0
                            };
                        }
                    }
                    assert_eq!(got, want, "s={s} width={width} lo={lo} hi={hi}");
                    let src64: Vec<f64> = src.iter().map(|&v| v as f64).collect();
                    let mut got64 = vec![-1.0f64; got.len()];
                    gather_rows_padded(&mut got64, ds, &src64, ss, rows, (lo, hi, width), s);
                    assert_eq!(got64, want.iter().map(|&v| v as f64).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "source too short")]
    fn a_short_source_panics_instead_of_reading_past_it() {
        let mut dst = [0f32; 4];
        gather(&mut dst, &[1.0; 6], 2);
    }
}
