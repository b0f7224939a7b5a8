//! Tests for `sgemm` (and its packed AVX-512 and AVX2 paths at every size, where the CPU has them) against a naive triple loop
//! accumulating in f64, over odd shapes, strided/transposed/reversed layouts, α/β combinations,
//! `β = 0` with NaN-filled C, calls from inside rayon tasks, and thread-count determinism.

use super::*;

/// Signature shared by the public entry point and the packed path.
type Gemm = unsafe fn(
    usize,
    usize,
    usize,
    f32,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    f32,
    *mut f32,
    isize,
    isize,
    Bias,
);

/// How an implementation rounds its operands before multiplying them (the reference does the
/// same): not at all, or to bf16.
type Round = fn(f32) -> f32;

fn exact(x: f32) -> f32 {
    x
}

/// `x` as the bf16 path rounds it.
#[cfg(target_arch = "x86_64")]
fn to_bf16(x: f32) -> f32 {
    f32::from_bits(bf16::bf16_bits(x) << 16)
}

/// [`sgemm_biased`] inside `with_bf16_products(true, ..)`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_bf16(
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
    with_bf16_products(true, || {
        assert!(bf16_products());
        sgemm_biased(
            m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, bias,
        )
    })
}

/// The implementations under test: the public dispatcher (with its bias) and, where the CPU
/// allows, the packed AVX-512 and AVX2 paths forced at every size, and the bf16 products
/// (AVX-512 BF16; every size).
fn impls() -> Vec<(&'static str, Gemm, Round)> {
    let mut v: Vec<(&'static str, Gemm, Round)> = vec![("sgemm", sgemm_biased, exact)];
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        v.push(("packed-avx512", packed_sgemm::<driver::Avx512>, exact));
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        v.push(("packed-avx2", packed_sgemm::<driver::Avx2>, exact));
    }
    #[cfg(target_arch = "x86_64")]
    if bf16_available() {
        v.push(("packed-bf16", sgemm_bf16, to_bf16));
    } else {
        println!("the bf16 GEMM is not tested: this CPU has no AVX-512 BF16");
    }
    v
}

/// 64-bit LCG (Knuth's MMIX constants) for reproducible test data.
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.next_u32() as usize % (hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major with padded rows.
    Row,
    /// Column-major with padded columns.
    Col,
    /// Neither stride is 1.
    Strided,
    /// Row-major with rows in reverse order (negative row stride).
    RevRow,
}

const LAYOUTS: [Layout; 4] = [Layout::Row, Layout::Col, Layout::Strided, Layout::RevRow];

/// A strided `rows × cols` view into an owned buffer that also holds padding.
struct Mat {
    data: Vec<f32>,
    off: usize,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
}

impl Mat {
    /// A matrix in `layout` whose whole buffer (padding included) is random.
    fn new(rows: usize, cols: usize, layout: Layout, rng: &mut Lcg) -> Mat {
        let (r, c) = (rows as isize, cols as isize);
        let (rs, cs, off, len) = match layout {
            Layout::Row => (c + 3, 1, 0, rows * (cols + 3)),
            Layout::Col => (1, r + 2, 0, cols * (rows + 2)),
            Layout::Strided => (2 * c + 1, 2, 0, rows * (2 * cols + 1)),
            Layout::RevRow => (-c, 1, rows.saturating_sub(1) * cols, rows * cols),
        };
        let data = (0..len.max(1)).map(|_| rng.f32()).collect();
        Mat {
            data,
            off,
            rs,
            cs,
            rows,
            cols,
        }
    }
    fn idx(&self, i: usize, j: usize) -> usize {
        (self.off as isize + i as isize * self.rs + j as isize * self.cs) as usize
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.data[self.idx(i, j)]
    }
    fn ptr(&self) -> *const f32 {
        self.data.as_ptr().wrapping_add(self.off)
    }
    fn ptr_mut(&mut self) -> *mut f32 {
        self.data.as_mut_ptr().wrapping_add(self.off)
    }
}

/// One test problem.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    la: Layout,
    lb: Layout,
    lc: Layout,
    seed: u64,
    /// Add a per-row bias (`m` values) / a per-column bias (`n` values).
    bias: (bool, bool),
}

/// The per-row and per-column bias vectors of `case` (empty when it has none).
fn biases(case: &Case) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Lcg(case.seed ^ 0xb1a5);
    let mut v = |len: usize, on: bool| -> Vec<f32> {
        if on {
            (0..len).map(|_| 4.0 * rng.f32()).collect()
        } else {
            Vec::new()
        }
    };
    (v(case.m, case.bias.0), v(case.n, case.bias.1))
}

/// Runs `case` through `gemm` and returns C's whole buffer.
fn run(gemm: Gemm, case: Case) -> (Mat, Mat, Mat, Vec<f32>) {
    let mut rng = Lcg(case.seed);
    let a = Mat::new(case.m, case.k, case.la, &mut rng);
    let b = Mat::new(case.k, case.n, case.lb, &mut rng);
    let c0 = Mat::new(case.m, case.n, case.lc, &mut rng);
    let mut c = Mat {
        data: c0.data.clone(),
        ..c0
    };
    if case.beta == 0.0 {
        // β = 0 must not read C: poison the view (padding keeps its values).
        for i in 0..c.rows {
            for j in 0..c.cols {
                let x = c.idx(i, j);
                c.data[x] = f32::NAN;
            }
        }
    }
    let (rsc, csc) = (c.rs, c.cs);
    let cp = c.ptr_mut();
    let (rows, cols) = biases(&case);
    let ptr = |v: &Vec<f32>| {
        if v.is_empty() {
            std::ptr::null()
        } else {
            v.as_ptr()
        }
    };
    let bias = Bias {
        rows: ptr(&rows),
        cols: ptr(&cols),
    };
    // SAFETY: every view is in bounds of its buffer by construction.
    unsafe {
        gemm(
            case.m,
            case.k,
            case.n,
            case.alpha,
            a.ptr(),
            a.rs,
            a.cs,
            b.ptr(),
            b.rs,
            b.cs,
            case.beta,
            cp,
            rsc,
            csc,
            bias,
        );
    }
    (a, b, c0, c.data)
}

/// Checks `gemm` on `case` against the f64 reference on operands rounded by `round`, and that
/// C's padding is untouched.
fn check(name: &str, gemm: Gemm, round: Round, case: Case) {
    let (a, b, c0, out) = run(gemm, case);
    let (rows, cols) = biases(&case);
    let mut in_view = vec![false; out.len()];
    for i in 0..case.m {
        for j in 0..case.n {
            let x = c0.idx(i, j);
            in_view[x] = true;
            let (mut dot, mut mag) = (0f64, 0f64);
            for p in 0..case.k {
                let t = round(a.get(i, p)) as f64 * round(b.get(p, j)) as f64;
                dot += t;
                mag += t.abs();
            }
            let (alpha, beta) = (case.alpha as f64, case.beta as f64);
            let mut want = alpha * dot;
            mag *= alpha.abs();
            if case.beta != 0.0 {
                let old = c0.data[x] as f64;
                want += beta * old;
                mag += (beta * old).abs();
            }
            for bias in [rows.get(i), cols.get(j)].into_iter().flatten() {
                want += *bias as f64;
                mag += bias.abs() as f64;
            }
            let tol = 2.0 * (case.k as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-30;
            let got = out[x] as f64;
            assert!(
                (got - want).abs() <= tol,
                "{name} {case:?}: C[{i},{j}] = {got}, want {want} (tol {tol})"
            );
        }
    }
    for (x, (&o, &v)) in out.iter().zip(&c0.data).enumerate() {
        if !in_view[x] {
            assert_eq!(
                o.to_bits(),
                v.to_bits(),
                "{name} {case:?}: padding {x} written"
            );
        }
    }
}

fn case(m: usize, k: usize, n: usize, layouts: (Layout, Layout, Layout)) -> Case {
    Case {
        m,
        k,
        n,
        alpha: 1.0,
        beta: 0.0,
        la: layouts.0,
        lb: layouts.1,
        lc: layouts.2,
        seed: (m * 10007 + k * 101 + n) as u64,
        bias: (false, false),
    }
}

#[test]
fn odd_shapes_1_to_70() {
    for (name, gemm, round) in impls() {
        for m in 1..=70 {
            let shapes = [
                (1, 1),
                (m, 3),
                (17, m),
                ((m * 13) % 70 + 1, (m * 7) % 70 + 1),
            ];
            for (s, &(k, n)) in shapes.iter().enumerate() {
                let l = (
                    LAYOUTS[m % 4],
                    LAYOUTS[(m + s) % 4],
                    LAYOUTS[(m / 4 + s) % 4],
                );
                check(name, gemm, round, case(m, k, n, l));
                check(name, gemm, round, case(n, k, m, l));
            }
        }
    }
}

#[test]
fn all_layout_combinations() {
    for (name, gemm, round) in impls() {
        for &la in &LAYOUTS {
            for &lb in &LAYOUTS {
                for &lc in &LAYOUTS {
                    check(name, gemm, round, case(37, 29, 45, (la, lb, lc)));
                    check(name, gemm, round, case(70, 65, 33, (la, lb, lc)));
                }
            }
        }
    }
}

#[test]
fn tile_and_block_edges() {
    let l = (Layout::Row, Layout::Row, Layout::Row);
    for (name, gemm, round) in impls() {
        for &(m, k, n) in &[
            (31, 5, 11),
            (32, 5, 12),
            (33, 5, 13),
            (20, 127, 9),
            (20, 130, 9),
            (64, 255, 24),
            (65, 256, 25),
            (96, 257, 36),
            (16, 513, 7),
            (64, 511, 24),
            (40, 1025, 13),
            (257, 3, 12),
        ] {
            check(name, gemm, round, case(m, k, n, l));
            check(
                name,
                gemm,
                round,
                case(m, k, n, (Layout::Col, Layout::Col, Layout::Col)),
            );
        }
    }
}

#[test]
fn one_row_block_packing_its_own_b_slivers() {
    // m within one row block and enough flops for several tasks: each task packs its own B,
    // one sliver at a time just before use (the transposing full-sliver path, with a k tail
    // that is not a multiple of 8) or, when B's k-steps are contiguous rows, all its slivers
    // of a k block at once (three k blocks, the last one short, in the last shape), run on a
    // 2-thread pool so the columns are split between tasks even on a 1-core machine.
    on_threads(2, || {
        for (name, gemm, round) in impls() {
            for &lb in &LAYOUTS {
                for &(m, k, n) in &[(64, 131, 700), (40, 64, 1200), (17, 260, 500)] {
                    check(
                        name,
                        gemm,
                        round,
                        case(m, k, n, (Layout::Row, lb, Layout::Row)),
                    );
                }
                // Row-major C is computed as Cᵀ = Bᵀ·Aᵀ: a column-major A has contiguous rows.
                for &la in &[Layout::Row, Layout::Col] {
                    check(
                        name,
                        gemm,
                        round,
                        case(33, 1100, 300, (la, lb, Layout::Row)),
                    );
                }
            }
        }
    });
}

#[test]
fn around_300() {
    let shapes = [
        (300, 301, 299),
        (257, 513, 129),
        (299, 300, 301),
        (5, 600, 310),
    ];
    for (name, gemm, round) in impls() {
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            let mut c = case(
                m,
                k,
                n,
                (LAYOUTS[s], LAYOUTS[(s + 1) % 4], LAYOUTS[(s + 2) % 4]),
            );
            c.alpha = 0.75;
            c.beta = -0.5;
            check(name, gemm, round, c);
            check(
                name,
                gemm,
                round,
                case(m, k, n, (Layout::Row, Layout::Col, Layout::Row)),
            );
        }
    }
}

#[test]
fn several_row_blocks_on_a_large_l2() {
    // More rows than one A block holds even when the block is sized from a 2 MiB L2 (512 rows,
    // 1024 at k <= KC/2), with the rows split over a 2-thread pool; C column-major and
    // row-major (then the problem is transposed, so the rows are C's columns).
    on_threads(2, || {
        for (name, gemm, round) in impls() {
            for &(m, k, n, lc) in &[
                (1100, 600, 40, Layout::Col),
                (1090, 100, 30, Layout::Col),
                (36, 530, 1100, Layout::Row),
            ] {
                let mut c = case(m, k, n, (Layout::Row, Layout::Col, lc));
                c.beta = 0.5;
                check(name, gemm, round, c);
            }
        }
    });
}

#[test]
fn several_column_blocks() {
    // k large enough that the packed B panel is split into several column blocks.
    let mut c = case(40, 4100, 1100, (Layout::Row, Layout::Row, Layout::Row));
    c.beta = 1.0;
    for (name, gemm, round) in impls() {
        check(name, gemm, round, c);
    }
}

#[test]
fn alpha_beta_combinations() {
    for (name, gemm, round) in impls() {
        for &alpha in &[1.0, -0.5, 0.0, 2.5] {
            for &beta in &[0.0, 1.0, -1.5] {
                for &(m, k, n) in &[(9, 7, 5), (67, 45, 50), (130, 70, 90)] {
                    let mut c = case(m, k, n, (Layout::Col, Layout::Row, Layout::Strided));
                    c.alpha = alpha;
                    c.beta = beta;
                    check(name, gemm, round, c);
                    c.lc = Layout::Row;
                    check(name, gemm, round, c);
                }
            }
        }
    }
}

#[test]
fn empty_dimensions() {
    for (name, gemm, round) in impls() {
        for &(m, k, n) in &[(0, 5, 4), (4, 5, 0), (0, 0, 0), (6, 0, 7), (70, 0, 33)] {
            for &beta in &[0.0, 2.0] {
                let mut c = case(m, k, n, (Layout::Row, Layout::Col, Layout::Row));
                c.beta = beta;
                check(name, gemm, round, c);
            }
        }
    }
}

#[test]
fn bias_on_rows_or_columns_in_every_orientation() {
    // The bias is added as each tile is stored with the first k block: tile edges (m, n not
    // multiples of the tile), several k blocks (k = 1100), C row- or column-major (the packed
    // path transposes the problem, and the bias with it), strided C (the scratch-tile store),
    // the tiny-product fallback (3 × 2 × 3), and 2 threads (split rows or columns).
    let shapes = [(3, 2, 3), (45, 70, 29), (70, 1100, 33), (300, 64, 70)];
    let layouts = [
        (Layout::Row, Layout::Col, Layout::Row),
        (Layout::Col, Layout::Row, Layout::Col),
        (Layout::Row, Layout::Row, Layout::Strided),
    ];
    on_threads(2, || {
        for (name, gemm, round) in impls() {
            for &(m, k, n) in &shapes {
                for &l in &layouts {
                    for bias in [(true, false), (false, true), (true, true)] {
                        let mut c = case(m, k, n, l);
                        c.bias = bias;
                        check(name, gemm, round, c);
                        if name != "sgemm" {
                            // The kernels add the bias before β·C (the dispatcher's fallback
                            // pre-fills C, so it takes a bias with β = 0 only).
                            c.beta = 0.5;
                            check(name, gemm, round, c);
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn randomized() {
    let mut rng = Lcg(0x5eed);
    let scalars = [0.0, 1.0, -1.0, 0.5, 3.0];
    for (name, gemm, round) in impls() {
        for _ in 0..150 {
            let c = Case {
                m: rng.range(1, 150),
                k: rng.range(1, 150),
                n: rng.range(1, 150),
                alpha: scalars[rng.range(1, 4)],
                beta: scalars[rng.range(0, 4)],
                la: LAYOUTS[rng.range(0, 3)],
                lb: LAYOUTS[rng.range(0, 3)],
                lc: LAYOUTS[rng.range(0, 3)],
                seed: rng.next_u32() as u64,
                bias: (false, false),
            };
            check(name, gemm, round, c);
        }
    }
}

#[test]
fn callable_from_rayon_tasks() {
    use rayon::prelude::*;
    for (name, gemm, round) in impls() {
        (0..8usize).into_par_iter().for_each(|t| {
            let c = case(
                100 + t,
                90,
                120 - t,
                (Layout::Row, Layout::Row, Layout::Row),
            );
            check(name, gemm, round, c);
        });
    }
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let c = case(300, 700, 260, (Layout::Row, Layout::Col, Layout::Row));
    for (name, gemm, _) in impls() {
        let (.., first) = run(gemm, c);
        let (.., again) = run(gemm, c);
        let (.., single) = on_threads(1, || run(gemm, c));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first), bits(&again), "{name}: run to run");
        if name.starts_with("packed") {
            assert_eq!(bits(&first), bits(&single), "{name}: 1 thread vs pool");
        }
    }
}

#[test]
fn shared_b_panel_packed_on_first_use_by_any_thread() {
    // Several row blocks share one packed B panel, whose slivers the threads pack as they first
    // reach them (B contiguous along k), or in a pass of its own (B row-major). Repeated on
    // pools of 2 and 3 threads (uneven shares of the slivers, a partial last one, several k
    // blocks): every run must match the reference and be bit-identical to the 1-thread result.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (name, gemm, round) in impls() {
        for lb in [Layout::Col, Layout::Row] {
            let mut c = case(1100, 600, 101, (Layout::Row, lb, Layout::Col));
            c.beta = 0.5;
            let (.., single) = on_threads(1, || run(gemm, c));
            for threads in [2, 3] {
                for _ in 0..4 {
                    on_threads(threads, || check(name, gemm, round, c));
                    let (.., pooled) = on_threads(threads, || run(gemm, c));
                    if name.starts_with("packed") {
                        assert_eq!(bits(&single), bits(&pooled), "{name} {lb:?} {threads}");
                    }
                }
            }
        }
    }
}

#[test]
fn dgemm_delegates() {
    let (m, k, n) = (5, 4, 3);
    let a: Vec<f64> = (0..m * k).map(|x| x as f64).collect();
    let b: Vec<f64> = (0..k * n).map(|x| (x as f64) * 0.5).collect();
    let mut c = vec![f64::NAN; m * n];
    // SAFETY: row-major views of exactly-sized buffers.
    unsafe {
        dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            assert_eq!(c[i * n + j], want);
        }
    }
}

#[test]
fn row_block_from_the_l2_size_is_whole_slivers_within_bounds() {
    use driver::MicroKernel;
    fn check<K: MicroKernel>(name: &str) {
        let mc = driver::mc_rows::<K>();
        println!("{name}: {mc} rows per A block");
        assert_eq!(mc % K::MR, 0, "{name}: {mc}");
        assert!((K::MC / 2..=4 * K::MC).contains(&mc), "{name}: {mc}");
    }
    check::<driver::Avx512>("avx512");
    check::<driver::Avx2>("avx2");
    check::<driver::Bf16>("bf16");
    // The L1 geometry that decides whether B is read in place (printed; plausible if known).
    let l1 = driver::l1d_geometry();
    println!("L1d (sets, ways): {l1:?}");
    if let Some((sets, ways)) = l1 {
        assert!(sets.is_power_of_two() && (1..=32).contains(&ways), "{l1:?}");
    }
}

/// Values whose bf16 rounding is a corner case: ties to even both ways, a carry into the
/// exponent, overflow to infinity, infinities, NaNs (quietened, sign kept), denormals (to zero),
/// zeros of both signs.
#[cfg(target_arch = "x86_64")]
const ROUNDING_CORNERS: [u32; 16] = [
    0x3f80_8000, // 1 + 2^-8: a tie, rounds down to even
    0x3f81_8000, // a tie that rounds up to even
    0x3f80_8001, // just past a tie
    0x3fff_ffff, // carries into the exponent
    0x7f7f_ffff, // the largest f32: to infinity
    0xff7f_8000, // rounds to -infinity
    0x7f80_0000,
    0xff80_0000,
    0x7f80_0001, // a signalling NaN
    0xffc1_2345,
    0x0000_0001, // denormals
    0x807f_ffff,
    0x0080_0000, // the smallest normal
    0x0000_0000,
    0x8000_0000,
    0xbe99_999a,
];

#[test]
#[cfg(target_arch = "x86_64")]
fn bf16_pairs_match_the_scalar_rounding_in_every_layout() {
    if !bf16_available() {
        println!("skipped: this CPU has no AVX-512 BF16");
        return;
    }
    let mut rng = Lcg(7);
    for (len, kc) in [(1, 1), (3, 5), (16, 33), (17, 64), (40, 31), (5, 70)] {
        // Corner values first, then random ones.
        let vals: Vec<f32> = (0..len * kc)
            .map(|x| match ROUNDING_CORNERS.get(x) {
                Some(&u) => f32::from_bits(u),
                None => 100.0 * rng.f32(),
            })
            .collect();
        let want = |i: usize, q: usize, at: &dyn Fn(usize, usize) -> f32| -> u32 {
            let lo = bf16::bf16_bits(at(i, 2 * q));
            let hi = if 2 * q + 1 < kc {
                bf16::bf16_bits(at(i, 2 * q + 1))
            } else {
                0
            };
            lo | hi << 16
        };
        // The same values along k (rows), along i (columns) and with neither stride 1.
        for (s_len, s_k) in [(kc as isize, 1), (1, len as isize), (2 * kc as isize, 2)] {
            let mut src = vec![0f32; (len * kc * 2).max(1)];
            for i in 0..len {
                for p in 0..kc {
                    src[(i as isize * s_len + p as isize * s_k) as usize] = vals[i * kc + p];
                }
            }
            let at = |i: usize, p: usize| vals[i * kc + p];
            let mut dst = vec![0u32; len * kc.div_ceil(2)];
            // SAFETY: the views lie in `src`; `dst` holds len · ⌈kc/2⌉ words.
            let (ri, rq) =
                unsafe { bf16::to_pairs(len, kc, src.as_ptr(), s_len, s_k, dst.as_mut_ptr()) };
            for i in 0..len {
                for q in 0..kc.div_ceil(2) {
                    let got = dst[(i as isize * ri + q as isize * rq) as usize];
                    assert_eq!(
                        got,
                        want(i, q, &at),
                        "len {len} kc {kc} strides ({s_len}, {s_k}): pair ({i}, {q})"
                    );
                }
            }
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn bf16_products_flush_denormal_operands_and_keep_nan() {
    if !bf16_available() {
        println!("skipped: this CPU has no AVX-512 BF16");
        return;
    }
    // A 1 × 2 by 2 × 1 product: [1e-39 (denormal), 2] · [1e30, 3] = 6 in bf16 (the denormal
    // term, 1e-9 in f32, is dropped), and a NaN operand gives NaN.
    for (a, want) in [([1e-39f32, 2.0], 6.0f32), ([f32::NAN, 2.0], f32::NAN)] {
        let b = [1e30f32, 3.0];
        let mut c = [0f32];
        // SAFETY: row-major 1 × 2, 2 × 1 and 1 × 1 buffers.
        unsafe {
            with_bf16_products(true, || {
                sgemm(
                    1,
                    2,
                    1,
                    1.0,
                    a.as_ptr(),
                    2,
                    1,
                    b.as_ptr(),
                    1,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    1,
                    1,
                )
            })
        };
        assert!(
            c[0] == want || (want.is_nan() && c[0].is_nan()),
            "{a:?}: {}",
            c[0]
        );
    }
}

#[test]
fn the_bf16_setting_is_scoped_and_taken_by_code_that_waits_on_the_pool() {
    let hw = bf16_available();
    assert!(!bf16_products());
    with_bf16_products(true, || {
        assert_eq!(bf16_products(), hw);
        {
            // Taken: this thread, waiting on the pool, runs other jobs without it.
            let (on, _off) = take_bf16_products();
            assert_eq!(on, hw);
            assert!(!bf16_products());
            // A task takes it back for its own GEMMs.
            let _task = Bf16Scope::enter(on);
            assert_eq!(bf16_products(), hw);
        }
        assert_eq!(bf16_products(), hw);
        with_bf16_products(false, || assert!(!bf16_products()));
        assert_eq!(bf16_products(), hw);
    });
    assert!(!bf16_products());
}

#[test]
fn b_rows_crowd_the_l1_only_when_more_share_a_set_than_it_has_ways() {
    // 12 rows (the AVX-512 sliver) 4 KiB apart share one of 64 sets: too many for 8 ways, not
    // for 12; 2 KiB apart they fill two sets with 6 each; 4 bytes past 4 KiB they still share
    // one set (each row starts one float further into its line); 1 KiB apart, 3 a set.
    assert!(driver::crowds(1024, 12, 64, 8));
    assert!(!driver::crowds(1024, 12, 64, 12));
    assert!(!driver::crowds(512, 12, 64, 8));
    assert!(driver::crowds(1025, 12, 64, 8));
    assert!(!driver::crowds(256, 12, 64, 8));
    assert!(!driver::crowds(1024, 6, 64, 8));
    assert!(driver::crowds(2048, 12, 64, 8));
}

/// Runs `f` on a fresh rayon pool of `n` threads (so splits over threads are exercised even
/// on a 1-core machine).
fn on_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("a rayon pool")
        .install(f)
}

#[test]
fn b_with_rows_one_or_several_l1_ways_apart() {
    // B column-major with its rows (the kernel's in-place B slivers) 4, 6 and 8 KiB apart,
    // several k blocks, a partial last sliver.
    for (name, gemm, round) in impls() {
        for &k in &[1024, 1536, 2048] {
            let mut c = case(37, k, 29, (Layout::Row, Layout::Col, Layout::Col));
            c.beta = 0.5;
            check(name, gemm, round, c);
        }
    }
}
