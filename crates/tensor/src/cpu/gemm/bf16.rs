//! bf16 products with f32 accumulation on CPUs with AVX-512 BF16 (`vdpbf16ps`): the CPU's
//! GEMM at [`MatmulPrecision::Bf16`](crate::precision::MatmulPrecision), about twice the f32
//! kernel's rate (one instruction multiplies and adds two k-steps).
//!
//! Both operands are first converted to *pairs*: `u32` words holding two consecutive k-steps
//! rounded to bf16 (to nearest even, as `vcvtneps2bf16` does: denormals become zero, NaN stays
//! NaN), the lower k in the low half, and a zero past an odd `k`. A becomes an `m × ⌈k/2⌉`
//! matrix of pairs and B a `⌈k/2⌉ × n` one, each laid out along the source's contiguous axis,
//! and the f32 driver (`driver.rs`) runs on them unchanged: its packing only moves 32-bit words,
//! so it packs pairs as it packs floats, and the [`kernel`] here reads one k-step of its A
//! sliver as `MR` pairs and of its B sliver as `NR` pairs, which it broadcasts. The tile and
//! its store are the AVX-512 kernel's (`MR × NR` = 32 × 12 in 24 zmm accumulators).
//!
//! Lane `i` of `vdpbf16ps` adds `a₂ᵢ₊₁·b₂ᵢ₊₁` then `a₂ᵢ·b₂ᵢ` to its accumulator, each product
//! exact in f32, so the result is that of the f32 kernel on the rounded operands up to the
//! order of the additions (and the flushing of denormal products).

use super::avx512::{self, MR, MV, NR};
use super::driver::SendPtr;
use super::Bias;
use core::arch::x86_64::*;
use rayon::prelude::*;
use std::cell::Cell;

/// Whether the CPU has AVX-512F and AVX-512 BF16 (detected once).
pub(crate) fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    })
}

/// `x` rounded to bf16 as `vcvtneps2bf16` rounds it: to nearest even, denormals to a signed
/// zero, NaN to a quiet NaN; the bits of the bf16.
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let u = x.to_bits();
    if x.is_nan() {
        return (u >> 16) | 0x40;
    }
    if u & 0x7f80_0000 == 0 {
        return (u >> 16) & 0x8000;
    }
    (u + 0x7fff + ((u >> 16) & 1)) >> 16
}

/// Elements below which the conversion runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Converts the `len × kc` block whose element `(i, p)` is at `src + i·s_len + p·s_k` into pairs
/// at `dst` (pair `(i, q)` holds k-steps `2q` and `2q + 1`), and returns the pair matrix's
/// strides `(along i, along q)`: k-pairs contiguous when the source is contiguous along k,
/// else `i` contiguous when the source is contiguous along `i`, else k-pairs contiguous.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; every `(i, p)`, `i < len`, `p < kc`, must be
/// readable, and `dst` writable for `len · ⌈kc/2⌉` words.
pub(super) unsafe fn to_pairs(
    len: usize,
    kc: usize,
    src: *const f32,
    s_len: isize,
    s_k: isize,
    dst: *mut u32,
) -> (isize, isize) {
    let kp = kc.div_ceil(2);
    let parallel = len * kc >= PARALLEL_MIN && rayon::current_num_threads() > 1;
    // Shared by the conversion's tasks, which write disjoint rows (or k-pairs) of `dst`.
    let src = SendPtr(src);
    let dst = SendPtr(dst);
    if s_k == 1 || s_len != 1 {
        // Row `i` of pairs at `dst + i·kp`.
        let row = move |i: usize| {
            let from = src.get().offset(i as isize * s_len);
            let to = dst.get().add(i * kp);
            if s_k == 1 {
                row_pairs(kc, from, to);
            } else {
                for q in 0..kp {
                    let lo = bf16_bits(*from.offset(2 * q as isize * s_k));
                    let hi = if 2 * q + 1 < kc {
                        bf16_bits(*from.offset((2 * q + 1) as isize * s_k))
                    } else {
                        0
                    };
                    *to.add(q) = lo | hi << 16;
                }
            }
        };
        if parallel {
            (0..len).into_par_iter().for_each(row);
        } else {
            (0..len).for_each(row);
        }
        (kp as isize, 1)
    } else {
        // k-pair `q` of every row at `dst + q·len`, from source rows `2q` and `2q + 1`.
        let pair = move |q: usize| {
            let lo = src.get().offset(2 * q as isize * s_k);
            let hi = (2 * q + 1 < kc).then(|| lo.offset(s_k));
            interleave(len, lo, hi, dst.get().add(q * len));
        };
        if parallel {
            (0..kp).into_par_iter().for_each(pair);
        } else {
            (0..kp).for_each(pair);
        }
        (1, len as isize)
    }
}

/// The `⌈kc/2⌉` pairs of one row that is contiguous along k.
///
/// # Safety
/// As for [`to_pairs`]: `src` readable for `kc` floats, `dst` writable for `⌈kc/2⌉` words.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn row_pairs(kc: usize, src: *const f32, dst: *mut u32) {
    let mut p = 0;
    while p < kc {
        // 32 k-steps (fewer at the end: masked, the missing ones read as zero) become 16 pairs:
        // the conversion puts the first 16 in the low half, the next 16 in the high half, which
        // in memory order is the 32 bf16 values in order, i.e. consecutive pairs.
        let n = (kc - p).min(32);
        let m_lo = (1u32 << n.min(16)).wrapping_sub(1) as u16;
        let m_hi = if n > 16 {
            ((1u32 << (n - 16)) - 1) as u16
        } else {
            0
        };
        let lo = _mm512_maskz_loadu_ps(m_lo, src.add(p));
        let hi = _mm512_maskz_loadu_ps(m_hi, src.add(p + 16));
        let pairs: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        let words = n.div_ceil(2);
        let m = (1u32 << words).wrapping_sub(1) as u16;
        _mm512_mask_storeu_epi32(dst.add(p / 2) as *mut i32, m, pairs);
        p += 32;
    }
}

/// Pairs of `len` rows from two source rows contiguous along `i` (k-steps `2q` at `lo` and
/// `2q + 1` at `hi`, or zero without one).
///
/// # Safety
/// `lo` (and `hi`) readable for `len` floats, `dst` writable for `len` words.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn interleave(len: usize, lo: *const f32, hi: Option<*const f32>, dst: *mut u32) {
    let mut i = 0;
    while i < len {
        let n = (len - i).min(16);
        let m = (1u32 << n).wrapping_sub(1) as u16;
        let l: __m256i =
            core::mem::transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, lo.add(i))));
        let mut w = _mm512_cvtepu16_epi32(l);
        if let Some(hi) = hi {
            let h: __m256i =
                core::mem::transmute(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, hi.add(i))));
            w = _mm512_or_si512(w, _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
        }
        _mm512_mask_storeu_epi32(dst.add(i) as *mut i32, m, w);
        i += 16;
    }
}

/// The `MR × NR` tile of `A·B` over `kp` k-pairs, in accumulators: the f32 kernel's loop
/// (`avx512::accumulate`) with one `vdpbf16ps` per accumulator and pair. B packed
/// (`ROWS == false`: pair-step `q` at `b + q·NR`) or read in place from `NR` rows of pairs
/// (`ROWS == true`: pair `(q, j)` at `b + j·ldb + q`).
///
/// # Safety
/// As for [`kernel`].
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn accumulate<const ROWS: bool>(
    kp: usize,
    a: *const u32,
    b: *const u32,
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
    for _ in 0..kp {
        for v in 0..MV {
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(20 * MR + 16 * v) as *const i8);
        }
        let mut av = [_mm512_setzero_si512(); MV];
        for (v, x) in av.iter_mut().enumerate() {
            *x = _mm512_loadu_si512(a.add(16 * v) as *const _);
        }
        for (j, col) in acc.iter_mut().enumerate() {
            let w = if ROWS {
                *rows[j / 3].add((j % 3) * ldb)
            } else {
                *b.add(j)
            };
            let bj: __m512bh = core::mem::transmute(_mm512_set1_epi32(w as i32));
            for (x, s) in col.iter_mut().zip(av) {
                *x = _mm512_dpbf16_ps(*x, core::mem::transmute::<__m512i, __m512bh>(s), bj);
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

/// Computes the top-left `mr × nr` part of `C ← α·A·B + bias + β·C` for one micro-tile from
/// slivers of pairs: `a` an `MR`-row sliver over `kp` pair-steps, `b` a packed `NR`-column one,
/// or, when `ldb > 0`, `NR` rows of pairs in place (pair `(q, j)` at `b + j·ldb + q`). The
/// pointers are typed `f32` for the driver, which only moves the words. Otherwise as
/// `avx512::kernel`.
///
/// # Safety
/// AVX-512F and AVX-512 BF16 must be available; otherwise as `avx512::kernel`, in words.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel(
    kp: usize,
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
    avx512::prefetch_tile(c, rsc, csc, nr);
    let (a, b) = (a as *const u32, b as *const u32);
    let acc = if ldb == 0 {
        accumulate::<false>(kp, a, b, 0)
    } else {
        accumulate::<true>(kp, a, b, ldb)
    };
    avx512::store(&acc, alpha, beta, c, rsc, csc, mr, nr, bias);
}

thread_local! {
    /// Per-thread buffer for the operands' pairs, reused across calls.
    static PAIRS: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// `C ← α·A·B + bias + β·C` with bf16 products (conventions of `super::sgemm`; `k > 0`).
///
/// # Safety
/// As for `super::sgemm`, and [`available`] must be true.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    bias: Bias,
) {
    let kp = k.div_ceil(2);
    let (a_len, b_len) = (m * kp, n * kp);
    // Moved out of the cell for the call: a nested call on this thread (rayon work stealing)
    // gets its own buffer.
    let mut buf = PAIRS.take();
    if buf.len() < a_len + b_len {
        buf = vec![0; a_len + b_len];
    }
    let pa = buf.as_mut_ptr();
    let pb = pa.add(a_len);
    let (rpa, cpa) = to_pairs(m, k, a, rsa, csa, pa);
    // B's columns are the "rows" of its conversion (element (j, p) at b + j·csb + p·rsb).
    let (cpb, rpb) = to_pairs(n, k, b, csb, rsb, pb);
    super::packed_sgemm::<super::driver::Bf16>(
        m,
        kp,
        n,
        alpha,
        pa as *const f32,
        rpa,
        cpa,
        pb as *const f32,
        rpb,
        cpb,
        beta,
        c,
        rsc,
        csc,
        bias,
    );
    PAIRS.set(buf);
}
