//! Conv2d kernels on the reference SmallCnn's three layers at batch 512 (f32, NCHW, 3x3,
//! padding 1, no bias): 1->32 stride 1 on 28x28, 32->64 stride 2 on 28x28, 64->128 stride 2 on
//! 14x14. Times forward, input gradient and weight gradient of each layer with criterion
//! (throughput in elements/s is FLOP/s: one element per FLOP), then prints a table with
//! GFLOP/s (`2 N C_out OH OW C_in k k / groups` per pass), the per-pass sums over the layers,
//! and the time to allocate and write a fresh output-sized buffer (the memory floor of a
//! forward pass that returns a new tensor).
//!
//! Run: `cargo bench -p selfsup-benches --bench conv` (`RAYON_NUM_THREADS` unset).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use selfsup_tensor::cpu::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvGeom,
};

const BATCH: usize = 512;

/// The three SmallCnn conv layers: (name, C_in, C_out, input size, stride).
const LAYERS: [(&str, usize, usize, usize, usize); 3] = [
    ("conv1 1->32 s1 28x28", 1, 32, 28, 1),
    ("conv2 32->64 s2 28x28", 32, 64, 28, 2),
    ("conv3 64->128 s2 14x14", 64, 128, 14, 2),
];

fn geom(c_in: usize, c_out: usize, size: usize, stride: usize) -> ConvGeom {
    let o = (size + 2 - 3) / stride + 1;
    ConvGeom {
        n: BATCH,
        c_in,
        h: size,
        w: size,
        c_out,
        kh: 3,
        kw: 3,
        oh: o,
        ow: o,
        stride: (stride, stride),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median seconds of `reps` runs of `f` after one warm-up run.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut table = Vec::new();
    for (name, c_in, c_out, size, stride) in LAYERS {
        let g = geom(c_in, c_out, size, stride);
        let x = data(g.n * g.in_image(), 1);
        let w = data(g.c_out * g.col_rows(), 2);
        let dy = data(g.n * g.out_image(), 3);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function("forward", |b| {
            b.iter(|| black_box(conv2d_forward(&x, &w, None, &g)))
        });
        group.bench_function("backward_input", |b| {
            b.iter(|| black_box(conv2d_backward_input(&dy, &w, &g)))
        });
        group.bench_function("backward_weight", |b| {
            b.iter(|| black_box(conv2d_backward_weight(&x, &dy, &g)))
        });
        group.finish();
        let fwd = median_secs(7, || drop(black_box(conv2d_forward(&x, &w, None, &g))));
        let bin = median_secs(7, || drop(black_box(conv2d_backward_input(&dy, &w, &g))));
        let bw = median_secs(7, || drop(black_box(conv2d_backward_weight(&x, &dy, &g))));
        let floor = median_secs(7, || {
            let mut v = vec![0f32; g.n * g.out_image()];
            v.iter_mut().for_each(|e| *e = 1.0);
            drop(black_box(v));
        });
        table.push((name, g.flops(), fwd, bin, bw, floor));
    }
    c.final_summary();
    println!("\nbatch {BATCH}, f32, median of 7 runs (ms and GFLOP/s):");
    println!(
        "| layer | GFLOP per pass | forward | backward-input | backward-weight | allocate + write output |\n| --- | --- | --- | --- | --- | --- |"
    );
    let (mut sf, mut sb) = (0.0, 0.0);
    for (name, flops, f, bi, bw, floor) in &table {
        let cell = |t: f64| format!("{:.1} ms ({:.0} GFLOP/s)", t * 1e3, flops / t / 1e9);
        println!(
            "| {name} | {:.2} | {} | {} | {} | {:.1} ms |",
            flops / 1e9,
            cell(*f),
            cell(*bi),
            cell(*bw),
            floor * 1e3
        );
        sf += f;
        sb += bi + bw;
    }
    println!(
        "sum over the 3 layers: forward {:.1} ms, backward (input + weight) {:.1} ms",
        sf * 1e3,
        sb * 1e3
    );
}
