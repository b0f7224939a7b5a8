//! SGEMM throughput: `selfsup_tensor::cpu::gemm::sgemm` vs `matrixmultiply::sgemm` on square
//! row-major `n × n` problems (`C ← A·B`, β = 0), n = 256, 512, 1024, 2048.
//!
//! Criterion reports elements/s with `Throughput::Elements(2n³)`, i.e. FLOP/s. After each size
//! a plain line `sgemm n=… ours=… GFLOP/s matrixmultiply=… GFLOP/s ratio=…` is printed from the
//! medians of alternated timed calls (ours, then matrixmultiply, round after round), which
//! keeps the comparison fair on a noisy machine. Threads: ours uses the rayon pool
//! (`RAYON_NUM_THREADS`), matrixmultiply its own (`MATMUL_NUM_THREADS`, default: physical cores).
//! On a CPU with AVX-512 BF16 ours is also timed with bf16 products (`ours-bf16`: the same f32
//! operands, rounded to bf16 by the GEMM, f32 accumulation), alternated with the others, and
//! the line adds `ours_bf16=… GFLOP/s bf16/f32=…`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// Square row-major operands and output for one size.
struct Problem {
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Problem {
    fn new(n: usize) -> Problem {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let a = (0..n * n).map(|_| next()).collect();
        let b = (0..n * n).map(|_| next()).collect();
        Problem {
            n,
            a,
            b,
            c: vec![0.0; n * n],
        }
    }

    fn ours(&mut self) {
        let n = self.n;
        let s = n as isize;
        // SAFETY: all three buffers hold n·n row-major elements.
        unsafe {
            selfsup_tensor::cpu::gemm::sgemm(
                n,
                n,
                n,
                1.0,
                self.a.as_ptr(),
                s,
                1,
                self.b.as_ptr(),
                s,
                1,
                0.0,
                self.c.as_mut_ptr(),
                s,
                1,
            );
        }
        black_box(&mut self.c);
    }

    /// [`Problem::ours`] with bf16 products.
    fn ours_bf16(&mut self) {
        selfsup_tensor::cpu::gemm::with_bf16_products(true, || self.ours());
    }

    fn matrixmultiply(&mut self) {
        let n = self.n;
        let s = n as isize;
        // SAFETY: all three buffers hold n·n row-major elements.
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                self.a.as_ptr(),
                s,
                1,
                self.b.as_ptr(),
                s,
                1,
                0.0,
                self.c.as_mut_ptr(),
                s,
                1,
            );
        }
        black_box(&mut self.c);
    }
}

/// Seconds per call of `f`, timed over a batch of `reps` calls.
fn time_batch(reps: usize, f: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates timed batches of ours, ours with bf16 products (where the CPU has them) and
/// matrixmultiply; prints GFLOP/s from the medians.
fn alternated(p: &mut Problem) {
    let flops = 2.0 * (p.n as f64).powi(3);
    let bf16 = selfsup_tensor::cpu::gemm::bf16_available();
    let once = time_batch(1, &mut || p.ours()).max(1e-6);
    let reps = ((0.02 / once) as usize).max(1);
    let rounds = if p.n >= 2048 { 9 } else { 21 };
    let (mut ours, mut ours_bf16, mut mm) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(time_batch(reps, &mut || p.ours()));
        if bf16 {
            ours_bf16.push(time_batch(reps, &mut || p.ours_bf16()));
        }
        mm.push(time_batch(reps, &mut || p.matrixmultiply()));
    }
    let (g_ours, g_mm) = (flops / median(ours) / 1e9, flops / median(mm) / 1e9);
    let with_bf16 = if bf16 {
        let g = flops / median(ours_bf16) / 1e9;
        format!(" ours_bf16={g:.1} GFLOP/s bf16/f32={:.2}", g / g_ours)
    } else {
        String::new()
    };
    println!(
        "sgemm n={} ours={:.1} GFLOP/s matrixmultiply={:.1} GFLOP/s ratio={:.2}{with_bf16}",
        p.n,
        g_ours,
        g_mm,
        g_ours / g_mm
    );
}

fn sgemm(c: &mut Criterion) {
    println!(
        "rayon threads={} MATMUL_NUM_THREADS={}",
        rayon::current_num_threads(),
        std::env::var("MATMUL_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    for n in SIZES {
        let mut p = Problem::new(n);
        let mut g = c.benchmark_group(format!("sgemm_{n}"));
        g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        g.warm_up_time(Duration::from_secs(1));
        if n >= 2048 {
            g.sample_size(10).measurement_time(Duration::from_secs(4));
        } else {
            g.sample_size(30).measurement_time(Duration::from_secs(3));
        }
        g.bench_function("ours", |bch| bch.iter(|| p.ours()));
        if selfsup_tensor::cpu::gemm::bf16_available() {
            g.bench_function("ours-bf16", |bch| bch.iter(|| p.ours_bf16()));
        }
        g.bench_function("matrixmultiply", |bch| bch.iter(|| p.matrixmultiply()));
        g.finish();
        alternated(&mut p);
    }
}

criterion_group!(benches, sgemm);
criterion_main!(benches);
