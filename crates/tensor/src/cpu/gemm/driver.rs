//! Goto/BLIS-style blocked driver for `C ← α·A·B + β·C` (f32), generic over the micro-kernel
//! ([`Avx512`]: 32 × 12, [`Avx2`]: 16 × 6, or [`Bf16`]: 32 × 12 on bf16 pairs) and its blocking.
//!
//! A is `m × k`, B is `k × n`, C is `m × n`; element `(i, j)` of X sits at `x + i·rsx + j·csx`.
//! The caller orients the problem so that C's row stride is (ideally) 1: the kernel's vectors
//! run down columns of C.
//! A [`Bias`] (per row or per column of C) is added by the kernel as it stores the first k block.
//!
//! Loop nest, for each column block `jc` of `NC` columns (NC chosen so the packed panel of B
//! for all of k stays within `B_PANEL_MAX` floats; layout: k block `p0` at
//! `p0 / KC · n_sl · sliver_stride(NR, KC)`, sliver `s` of it `s · sliver_stride(NR, kc)` further):
//! 1. split the rows of the C block into `≤ MC`-row tasks (a multiple of the thread count), or,
//!    when all rows fit one block, split its columns (NR slivers) across the threads (or still
//!    its rows, when A is much the larger operand);
//! 2. with several row tasks, the B block is packed once into a shared panel: sliver by sliver
//!    on first use by whichever task reaches it first, each thread starting on its own share
//!    ([`PackOnce`]), or, when B's rows are contiguous, in a pass of its own before the
//!    products, split over the rayon pool by slivers; with a single row task, each task packs
//!    its own B slivers instead: all of a k block at once when B's rows are contiguous, else
//!    one sliver just before use; either way, when B is contiguous along k, the AVX-512 kernel
//!    reads its full slivers in place and only a partial last sliver is packed;
//! 3. each task walks the k blocks, packs its `≤ MC × KC` block of A into a thread-local buffer
//!    (L2-resident) and runs the kernel over its tiles, B sliver outer (L1-resident), A sliver
//!    inner.
//!
//! Each element of C is produced by exactly one task, accumulating over k in a fixed order, so
//! results are bit-identical for any thread count.

use super::pack::{pack, sliver_stride};
use super::Bias;
use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::LocalKey;

/// A micro-kernel and the blocking that suits the caches of the CPUs that run it.
pub(super) trait MicroKernel {
    /// Rows of C per micro-tile (the vector dimension).
    const MR: usize;
    /// Columns of C per micro-tile (broadcast operands).
    const NR: usize;
    /// Depth of a k block: a B sliver of `KC·NR` floats should stay in L1d.
    const KC: usize;
    /// Rows of A per task block: `MC·KC` floats should stay in L2.
    const MC: usize;
    /// Whether packing may use AVX-512.
    const AVX512: bool;
    /// Whether the kernel can read a full B sliver in place from `NR` rows contiguous along k
    /// (its `ldb` argument); otherwise `ldb` is always 0.
    const DIRECT_B: bool;
    /// Whether a task fetches the next B sliver of a shared packed panel into L2 while the
    /// kernel works through the current one.
    const PREFETCH_NEXT_B: bool;
    /// One micro-tile (see `avx512::kernel` / `avx2::kernel` for the contract).
    ///
    /// # Safety
    /// As for the kernel named.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
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
    );
}

/// The AVX-512 kernel (32 × 12). KC = 512: B sliver 24 KiB in a 48 KiB L1d (512 measured 0–8 %
/// faster than 256 at n = 512–2048 on Zen 5); MC = 256: 512 KiB of A in a 1 MiB L2 (the
/// fallback: [`mc_rows`] sizes it from the L2 the CPU reports).
pub(super) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = super::avx512::MR;
    const NR: usize = super::avx512::NR;
    const KC: usize = 512;
    const MC: usize = 256;
    const AVX512: bool = true;
    const DIRECT_B: bool = true;
    // Measured slower on Sapphire Rapids (docs/performance.md, session 11).
    const PREFETCH_NEXT_B: bool = false;
    unsafe fn run(
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
        super::avx512::kernel(kc, alpha, a, b, beta, c, rsc, csc, mr, nr, bias, ldb)
    }
}

/// The AVX2 + FMA kernel (16 × 6). KC = 256: B sliver 6 KiB and A sliver 16 KiB in a 32 KiB
/// L1d; MC = 256: 256 KiB of A in a 512 KiB L2 (Zen 3; the fallback of [`mc_rows`]).
pub(super) struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = super::avx2::MR;
    const NR: usize = super::avx2::NR;
    const KC: usize = 256;
    const MC: usize = 256;
    const AVX512: bool = false;
    // Reading B in place measured 5-19% slower than packing it on the GPT step's GEMMs on
    // Zen 3 (the activations come from DRAM in six strided streams), 3% faster only on square
    // SGEMM at n = 256-512 (docs/performance.md, session 12).
    const DIRECT_B: bool = false;
    // SGEMM n = 2048 on one thread, Zen 3: 87.8 -> 89.4 GFLOP/s.
    const PREFETCH_NEXT_B: bool = true;
    unsafe fn run(
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
        debug_assert_eq!(ldb, 0, "the AVX2 kernel reads packed B only");
        super::avx2::kernel(kc, alpha, a, b, beta, c, rsc, csc, mr, nr, bias)
    }
}
/// The AVX-512 BF16 kernel (32 × 12) on operands converted to bf16 pairs (`bf16.rs`): k counts
/// pairs, so KC = 256 pairs covers the f32 kernel's 512 k-steps in the same 24 KiB B sliver.
pub(super) struct Bf16;

impl MicroKernel for Bf16 {
    const MR: usize = super::avx512::MR;
    const NR: usize = super::avx512::NR;
    const KC: usize = 256;
    const MC: usize = 256;
    const AVX512: bool = true;
    const DIRECT_B: bool = true;
    const PREFETCH_NEXT_B: bool = false;
    unsafe fn run(
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
        super::bf16::kernel(kc, alpha, a, b, beta, c, rsc, csc, mr, nr, bias, ldb)
    }
}

/// Upper bound, in floats, for the packed panel of B (16 MiB, half the shared L3).
const B_PANEL_MAX: usize = 4 << 20;
/// Flops below which an extra thread is not worth its fork/join and packing cost.
const MIN_FLOPS_PER_THREAD: usize = 1 << 22;

/// Per-core L2 size in bytes as the CPU reports it (`cpuid` leaf 0x8000_0006, which Intel and
/// AMD both fill), read once; `None` when the leaf is missing or reports nothing.
fn l2_bytes() -> Option<usize> {
    static L2: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        use core::arch::x86_64::__cpuid;
        // Leaf 0x8000_0006 is read only when the highest extended leaf reaches it.
        if __cpuid(0x8000_0000).eax < 0x8000_0006 {
            return None;
        }
        let kib = (__cpuid(0x8000_0006).ecx >> 16) as usize;
        (kib > 0).then_some(kib * 1024)
    })
}

/// Rows of A per task block for kernel `K` on this CPU: the packed `MC × KC` block of A fills
/// at most half of the per-core L2 (the rest holds B's panel and C), in whole `MR`-row slivers,
/// between `K::MC / 2` and `4 · K::MC`; `K::MC` when the L2 size is unknown. On a 2 MiB L2
/// (Sapphire Rapids) the AVX-512 kernel gets 512 rows: SGEMM n = 512 with 2 threads went from
/// 200-256 to 272 GFLOP/s (docs/performance.md, session 10).
pub(super) fn mc_rows<K: MicroKernel>() -> usize {
    match l2_bytes() {
        Some(l2) => {
            let rows = l2 / 2 / (K::KC * std::mem::size_of::<f32>()) / K::MR * K::MR;
            rows.clamp(K::MC / 2, 4 * K::MC)
        }
        None => K::MC,
    }
}

/// The L1 data cache as the CPU reports it, read once: `(sets, ways)` for 64-byte lines, from
/// AMD's cpuid leaf 0x8000_0005 or Intel's leaf 4; `None` when neither says.
pub(super) fn l1d_geometry() -> Option<(usize, usize)> {
    static L1: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *L1.get_or_init(|| {
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        // AMD: ECX = size in KiB (31:24), ways (23:16; 0xff fully associative), line bytes (7:0).
        if __cpuid(0x8000_0000).eax >= 0x8000_0005 {
            let ecx = __cpuid(0x8000_0005).ecx;
            let (kib, ways, line) = (ecx >> 24, (ecx >> 16) & 0xff, ecx & 0xff);
            if kib > 0 && ways > 0 && ways != 0xff && line == 64 {
                return Some((kib as usize * 1024 / 64 / ways as usize, ways as usize));
            }
        }
        // Intel: leaf 4 lists the caches; the level-1 data cache (type 1) gives its ways,
        // line size and sets.
        if __cpuid(0).eax >= 4 {
            for sub in 0..8 {
                let r = __cpuid_count(4, sub);
                let (kind, level) = (r.eax & 0x1f, (r.eax >> 5) & 7);
                if kind == 0 {
                    break;
                }
                if kind == 1 && level == 1 {
                    let ways = (r.ebx >> 22) as usize + 1;
                    let line = (r.ebx & 0xfff) as usize + 1;
                    return (line == 64).then_some((r.ecx as usize + 1, ways));
                }
            }
        }
        None
    })
}

/// Whether `rows` rows `ld` floats apart, read at the same k-offset, put more lines into one
/// L1 set than it has ways (so reading them in place evicts each other). With a 4 KiB row
/// stride all 12 of an AVX-512 B sliver's rows share one of the 64 sets: on Zen 4 (8 ways)
/// SGEMM 2 threads n = 1024 / 2048 ran at 126 / 129 GFLOP/s in place and 170 / 165 packed, the
/// bf16 kernel's pairs at n = 2048 232 against 323 (one process, alternating); with 6 rows a
/// set (a 2 KiB stride) in place stayed ahead (179 against 171). On 12-way L1s (Zen 5,
/// Sapphire Rapids) 12 rows fit, and in place measured faster (session 11). `false` when the
/// CPU does not report its L1.
fn rows_crowd_l1(ld: usize, rows: usize) -> bool {
    l1d_geometry().is_some_and(|(sets, ways)| crowds(ld, rows, sets, ways))
}

/// [`rows_crowd_l1`] for an L1 of `sets` sets of `ways` 64-byte lines.
pub(super) fn crowds(ld: usize, rows: usize, sets: usize, ways: usize) -> bool {
    // Rows per set, counted for the first rows of each set (a sliver has at most 32 rows).
    let mut first = [0usize; 32];
    let mut count = [0usize; 32];
    let mut used = 0;
    for r in 0..rows.min(32) {
        let set = (r * ld * 4 / 64) % sets.max(1);
        match first[..used].iter().position(|&s| s == set) {
            Some(i) => count[i] += 1,
            None => {
                first[used] = set;
                count[used] = 1;
                used += 1;
            }
        }
    }
    count[..used].iter().any(|&c| c > ways)
}

/// Whether kernel `K` reads full B slivers in place for B with strides `(rsb, csb)`: it can,
/// B's columns are contiguous along k and its rows are not, and they do not crowd the L1.
fn reads_b_in_place<K: MicroKernel>(rsb: isize, csb: isize) -> bool {
    K::DIRECT_B && rsb == 1 && csb > 1 && !rows_crowd_l1(csb as usize, K::NR)
}

/// Floats of slack so a scratch buffer can be aligned to a 64-byte cache line.
const ALIGN_SLACK: usize = 16;

thread_local! {
    /// Per-thread packed-A scratch, reused across calls.
    static A_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Per-thread packed-B scratch (used by the calling thread), reused across calls.
    static B_BUF: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// A packed B sliver shared by several tasks, packed by whichever reaches it first: the others
/// use it once it is done, waiting if it is being packed (packing never waits on anything, so
/// the wait is short and cannot deadlock). No separate packing pass, so no fork/join and no
/// barrier before the first product, and the thread that packs a sliver uses it while it is
/// still in its L1.
struct PackOnce(AtomicU8);

impl PackOnce {
    const EMPTY: u8 = 0;
    const BUSY: u8 = 1;
    const DONE: u8 = 2;

    fn new() -> Self {
        PackOnce(AtomicU8::new(Self::EMPTY))
    }

    /// Whether the sliver is packed (its contents visible to this thread).
    fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::DONE
    }

    /// Runs `pack` if no task has started it, else waits until the task that did is done.
    fn run(&self, pack: impl FnOnce()) {
        if self.is_done() {
            return;
        }
        if self
            .0
            .compare_exchange(
                Self::EMPTY,
                Self::BUSY,
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .is_ok()
        {
            pack();
            self.0.store(Self::DONE, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while !self.is_done() {
            if spins < 1 << 10 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // The packing thread was descheduled: give it the core.
                std::thread::yield_now();
            }
        }
    }
}

/// A raw pointer that may cross rayon task boundaries; the driver guarantees disjoint writes.
#[derive(Clone, Copy)]
pub(super) struct SendPtr<T>(pub(super) T);
// SAFETY: only used for buffers whose concurrent accesses are disjoint or read-only.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T: Copy> SendPtr<T> {
    /// The wrapped pointer (a method, so closures capture the whole `Send` wrapper).
    pub(super) fn get(self) -> T {
        self.0
    }
}

/// Runs `f` on a 64-byte-aligned scratch area of `len` floats taken from this thread's cache.
///
/// The buffer is moved out of the thread-local cell for the duration, so a nested call on the
/// same thread (rayon work stealing while this call waits) gets its own buffer.
fn with_scratch<R>(
    key: &'static LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(*mut f32) -> R,
) -> R {
    let mut buf = key.take();
    if buf.len() < len + ALIGN_SLACK {
        buf = vec![0.0; len + ALIGN_SLACK];
    }
    let off = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    let r = f(buf[off..].as_mut_ptr());
    key.set(buf);
    r
}

/// Runs `f(0..count)`: inline on this thread when `threads == 1` (no rayon round trip, which
/// from outside the pool would cost a cross-thread hand-off), else on the current rayon pool.
fn for_each_task(threads: usize, count: usize, f: impl Fn(usize) + Send + Sync) {
    if threads == 1 || count == 1 {
        (0..count).for_each(f);
    } else {
        (0..count).into_par_iter().for_each(f);
    }
}

/// Start and end of part `t` of `total` items split into `parts` near-equal contiguous ranges.
fn split(total: usize, parts: usize, t: usize) -> (usize, usize) {
    (t * total / parts, (t + 1) * total / parts)
}

/// Blocked, packed, multithreaded `C ← α·A·B + bias + β·C` (layouts in the module header).
///
/// # Safety
/// The CPU must support the kernel's instructions; `m, k, n > 0`; A, B must be readable and C writable at every
/// in-range index, and distinct `(i, j)` must address distinct elements of C.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<K: MicroKernel>(
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
    let flops = m.saturating_mul(n).saturating_mul(k).saturating_mul(2);
    let threads = rayon::current_num_threads()
        .min(flops / MIN_FLOPS_PER_THREAD)
        .max(1);
    let nc_max = ((B_PANEL_MAX / k).max(K::NR) / K::NR * K::NR).min(n.div_ceil(K::NR) * K::NR);
    let (a, b, c) = (SendPtr(a), SendPtr(b), SendPtr(c));
    let bias = SendPtr(bias);

    // The packed B panel of a column block: k block `p0` at `(p0 / KC) · n_sl · sliver_stride(NR,
    // KC)` (only the last block is shorter), sliver `s` of it `s · sliver_stride(NR, kc)` further.
    let k_blocks = k.div_ceil(K::KC);
    let panel_len = nc_max.div_ceil(K::NR) * (K::NR * k + k_blocks * sliver_stride(0, 0));
    with_scratch(&B_BUF, panel_len, |bp| {
        let bp = SendPtr(bp);
        // Whether the kernel reads full B slivers in place (see `direct_b` below); the same for
        // every column block.
        let in_place_b = reads_b_in_place::<K>(rsb, csb);
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let n_sl = nc.div_ceil(K::NR);
            let b = SendPtr(b.get().offset(jc as isize * csb));
            let c = SendPtr(c.get().offset(jc as isize * csc));

            // Split rows into ≤ mc blocks, a multiple of the thread count when there are enough;
            // when all rows fit one block, split columns instead. A row block's packed A is
            // `MC·KC` floats at full depth ([`mc_rows`]); at k ≤ KC/2 the same L2 budget holds twice the rows,
            // which keeps products like `Wᵀ·xᵀ` with W `[≤ 512, 128]` in one row block whose
            // tasks pack their own B slivers just before use (no separate packing pass), as long
            // as there are enough column slivers to share among the threads.
            let m_sl = m.div_ceil(K::MR);
            let mc = if 2 * k <= K::KC && n_sl >= threads {
                2 * mc_rows::<K>()
            } else {
                mc_rows::<K>()
            };
            let m_parts = if m <= mc {
                // One row block; with several threads, split its rows anyway when A is much
                // the larger operand: splitting columns instead makes every task pack all of
                // A (dW of a linear layer, `[128, 4096] · [4096, 512]` with 2 threads: 226 ->
                // 237-239 GFLOP/s). Not for square blocks: there the separate pass that packs
                // B costs more (n = 256: 277 -> 220-225).
                // When the kernel reads B in place there is no such pass, and a square block of
                // at least 8 slivers per thread splits its rows too (n = 512: 293-316 -> 313-315
                // GFLOP/s; at n = 256, 4 slivers per thread, it lost: 286-307 -> 270-274).
                let wide = if in_place_b && m_sl >= 8 * threads {
                    m >= n
                } else {
                    m >= 2 * n
                };
                if threads > 1 && wide && m_sl >= 2 * threads {
                    threads
                } else {
                    1
                }
            } else {
                m.div_ceil(mc)
                    .div_ceil(threads)
                    .saturating_mul(threads)
                    .min(m_sl)
            };
            let n_parts = threads.div_ceil(m_parts).min(n_sl);
            // With a single row block each B sliver is used by one task only, which then packs
            // it itself (no separate packing pass and no extra fork/join).
            let b_in_tasks = m_parts == 1;
            // When B's rows (its k-steps) are contiguous, a sliver holds `NR` floats of each of
            // `kc` rows: packed one sliver at a time, every sliver misses on a new line of every
            // row, each a short hop ahead of the last (the prefetcher cannot hide that). Such a
            // task packs all its slivers of a k block at once instead, row by row (dW of a
            // linear layer, `[384, 4096] · [4096, 128]`: 127 -> 137-141 GFLOP/s on one thread,
            // with the sliver padding of `pack`).
            let b_rows = csb == 1;
            // When B's columns are contiguous along k, the kernel reads full B slivers in place
            // (`NR` rows of the source, `kc` floats of each) and only a last, partial sliver is
            // packed: the activations of `x·Wᵀ` and of `dy·W` need no transposing pass (GPT
            // step +5.7%), nor does `A·B` with both row-major (SGEMM 2 threads n = 1024, 2048:
            // 290 -> 309-313 GFLOP/s; docs/performance.md, session 11). Not where the `NR` rows
            // crowd the L1 ([`rows_crowd_l1`]).
            let direct_b = in_place_b;
            // Slivers the shared pass below packs: all of them, or only a partial last one.
            let packed_from = if direct_b { nc / K::NR } else { 0 };
            // Slivers of the shared panel that are packed on first use rather than in a pass of
            // their own (see `PackOnce`), with several threads and B's rows not contiguous (a
            // sliver then packs from `NR` streams at no extra cost). SGEMM 2 threads, Zen 3,
            // the same process alternating both ways: n = 512 / 1024 / 2048 +0.4-3.3% / +1.6-
            // 1.7% / +1.1%; on one thread it measured 0.8% slower (no barrier to save there).
            let lazy_b = threads > 1 && !b_in_tasks && !b_rows && packed_from < n_sl;
            let flags: Vec<PackOnce> = if lazy_b {
                (0..k_blocks * n_sl).map(|_| PackOnce::new()).collect()
            } else {
                Vec::new()
            };
            let flags = &flags;
            if !b_in_tasks && !lazy_b && packed_from < n_sl {
                // Pack this column block of B, every k block, split by slivers.
                let b_parts = threads.min(n_sl - packed_from);
                for_each_task(threads, b_parts, |t| {
                    let (s0, s1) = split(n_sl - packed_from, b_parts, t);
                    let (s0, s1) = (s0 + packed_from, s1 + packed_from);
                    let cols = (s1 * K::NR).min(nc) - s0 * K::NR;
                    for p0 in (0..k).step_by(K::KC) {
                        let kc = K::KC.min(k - p0);
                        pack(
                            K::NR,
                            K::AVX512,
                            cols,
                            kc,
                            b.get()
                                .offset(p0 as isize * rsb + (s0 * K::NR) as isize * csb),
                            csb,
                            rsb,
                            bp.get().add(
                                p0 / K::KC * n_sl * sliver_stride(K::NR, K::KC)
                                    + s0 * sliver_stride(K::NR, kc),
                            ),
                        );
                    }
                });
            }
            for_each_task(threads, m_parts * n_parts, |t| {
                let (is0, is1) = split(m_sl, m_parts, t / n_parts);
                let (js0, js1) = split(n_sl, n_parts, t % n_parts);
                let i0 = is0 * K::MR;
                let mc = (is1 * K::MR).min(m) - i0;
                // Packed A (`MR`-row slivers, a multiple of 16 floats, so what follows stays
                // 64-byte aligned), then, when this task packs its own B, one sliver of it.
                let a_len = (is1 - is0) * sliver_stride(K::MR, K::KC.min(k));
                let b_len = match (b_in_tasks, b_rows) {
                    (false, _) => 0,
                    (true, false) => sliver_stride(K::NR, K::KC.min(k)),
                    (true, true) => (js1 - js0) * sliver_stride(K::NR, K::KC.min(k)),
                };
                with_scratch(&A_BUF, a_len + b_len, |ap| {
                    let own_b = ap.add(a_len);
                    for p0 in (0..k).step_by(K::KC) {
                        let kc = K::KC.min(k - p0);
                        // The bias goes in with the first k block, which also applies β.
                        let (beta, first) = if p0 == 0 { (beta, true) } else { (1.0, false) };
                        pack(
                            K::MR,
                            K::AVX512,
                            mc,
                            kc,
                            a.get().offset(i0 as isize * rsa + p0 as isize * csa),
                            rsa,
                            csa,
                            ap,
                        );
                        if b_in_tasks && b_rows {
                            // This task's slivers of the k block, packed in one pass along
                            // B's rows (see `b_rows`).
                            let j0 = js0 * K::NR;
                            pack(
                                K::NR,
                                K::AVX512,
                                (js1 * K::NR).min(nc) - j0,
                                kc,
                                b.get().offset(p0 as isize * rsb + j0 as isize * csb),
                                csb,
                                rsb,
                                own_b,
                            );
                        }
                        let bk = bp
                            .get()
                            .add(p0 / K::KC * n_sl * sliver_stride(K::NR, K::KC));
                        // With the panel packed on first use, each thread starts on its own share of
                        // the slivers (the one it packs) and then moves on to the others', which
                        // are packed by then: no thread waits on another before it can start.
                        let len = js1 - js0;
                        let start = if lazy_b {
                            let w = rayon::current_thread_index().unwrap_or(0) % threads;
                            w * len / threads
                        } else {
                            0
                        };
                        let order = |idx: usize| js0 + (start + idx) % len;
                        for idx in 0..len {
                            let s = order(idx);
                            let j = s * K::NR;
                            let nr = K::NR.min(nc - j);
                            // A sliver this task packs itself is packed just before use, into
                            // a buffer that stays in L1 while every A sliver passes over it.
                            let direct = direct_b && nr == K::NR;
                            // This sliver of B in the source, and packing it into `dst`.
                            let src = b.get().offset(p0 as isize * rsb + j as isize * csb);
                            let pack_to = |dst| pack(K::NR, K::AVX512, nr, kc, src, csb, rsb, dst);
                            let bs = if b_in_tasks && b_rows {
                                own_b.add((s - js0) * sliver_stride(K::NR, kc)) as *const f32
                            } else if direct {
                                src
                            } else if b_in_tasks {
                                pack_to(own_b);
                                own_b as *const f32
                            } else {
                                let dst = bk.add(s * sliver_stride(K::NR, kc));
                                if lazy_b {
                                    flags[p0 / K::KC * n_sl + s].run(|| pack_to(dst));
                                }
                                dst as *const f32
                            };
                            // The next sliver of the shared panel (likely in L3 or DRAM by
                            // now), fetched into L2 a few lines per kernel call.
                            // When it is yet to be packed, its source columns are fetched
                            // instead (when contiguous along k), ready for the `pack` above:
                            // without that, each sliver packed on first use waits on its reads.
                            let next = (idx + 1 < len)
                                .then(|| order(idx + 1))
                                .filter(|&s1| !b_in_tasks && (!direct_b || s1 >= packed_from));
                            let (fetch, col_lines, fetch_cols) = match next {
                                Some(s1) if lazy_b && !flags[p0 / K::KC * n_sl + s1].is_done() => {
                                    if rsb == 1 {
                                        // `kc` floats per column, on one more line when the
                                        // column does not start on one.
                                        let src = b.get().offset(
                                            p0 as isize * rsb + (s1 * K::NR) as isize * csb,
                                        );
                                        (Some(src as *const i8), kc.div_ceil(16) + 1, true)
                                    } else {
                                        (None, 0, false)
                                    }
                                }
                                Some(s1) if K::PREFETCH_NEXT_B => (
                                    Some(bk.add(s1 * sliver_stride(K::NR, kc)) as *const i8),
                                    (K::NR * kc).div_ceil(16),
                                    false,
                                ),
                                _ => (None, 0, false),
                            };
                            let next_cols = next.map_or(0, |s1| K::NR.min(nc - s1 * K::NR));
                            let lines = if fetch_cols {
                                next_cols * col_lines
                            } else {
                                col_lines
                            };
                            let per_call = lines.div_ceil(mc.div_ceil(K::MR));
                            for i in (0..mc).step_by(K::MR) {
                                if let Some(nb) = fetch {
                                    let l0 = i / K::MR * per_call;
                                    for l in l0..(l0 + per_call).min(lines) {
                                        let at = if fetch_cols {
                                            (l / col_lines) as isize * csb * 4
                                                + 64 * (l % col_lines) as isize
                                        } else {
                                            64 * l as isize
                                        };
                                        // SAFETY: a prefetch reads nothing architecturally.
                                        _mm_prefetch::<_MM_HINT_T1>(nb.wrapping_offset(at));
                                    }
                                }
                                K::run(
                                    kc,
                                    alpha,
                                    ap.add(i / K::MR * sliver_stride(K::MR, kc)),
                                    bs,
                                    beta,
                                    c.get().offset((i0 + i) as isize * rsc + j as isize * csc),
                                    rsc,
                                    csc,
                                    K::MR.min(mc - i),
                                    nr,
                                    if first {
                                        bias.get().at(i0 + i, jc + j)
                                    } else {
                                        Bias::NONE
                                    },
                                    if direct { csb as usize } else { 0 },
                                );
                            }
                        }
                    }
                });
            });
        }
    });
}
