//! Elementwise add/mul/gelu at 1M f32 elements, softmax over rows, and row reductions
//! (layernorm-like mean/var) and columns (bias gradients), through the Tensor API. Each is measured beside a plain
//! single-threaded Rust loop over the same data in the same run, as the peer to quote against.
//!
//! Run: `cargo bench --bench elementwise`. Criterion reports throughput in bytes/s (inputs read
//! plus output written).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use selfsup_tensor::{DType, Generator, Tensor};

const N: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(0);
    let a = Tensor::randn(&[N], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let b = Tensor::randn(&[N], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let (av, bv) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());

    let mut grp = c.benchmark_group("elementwise_1M");
    grp.throughput(Throughput::Bytes((3 * N * 4) as u64));
    grp.bench_function("add/selfsup", |bn| {
        bn.iter(|| black_box(a.add(&b).unwrap()))
    });
    grp.bench_function("add/plain_loop", |bn| {
        bn.iter(|| black_box(av.iter().zip(&bv).map(|(x, y)| x + y).collect::<Vec<f32>>()))
    });
    grp.bench_function("mul/selfsup", |bn| {
        bn.iter(|| black_box(a.mul(&b).unwrap()))
    });
    grp.throughput(Throughput::Bytes((2 * N * 4) as u64));
    grp.bench_function("gelu/selfsup", |bn| {
        bn.iter(|| black_box(a.gelu().unwrap()))
    });
    grp.bench_function("gelu/plain_loop", |bn| {
        bn.iter(|| {
            black_box(
                av.iter()
                    .map(|&x| 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)))
                    .collect::<Vec<f32>>(),
            )
        })
    });
    grp.finish();

    let rows = a.reshape(&[N / 1024, 1024]).unwrap();
    let mut grp = c.benchmark_group("rows_1024x1024");
    grp.throughput(Throughput::Bytes((2 * N * 4) as u64));
    grp.bench_function("softmax/selfsup", |bn| {
        bn.iter(|| black_box(rows.softmax(-1).unwrap()))
    });
    grp.bench_function("softmax/plain_loop", |bn| {
        bn.iter(|| {
            let mut out = vec![0f32; N];
            for (o, r) in out.chunks_mut(1024).zip(av.chunks(1024)) {
                let m = r.iter().fold(f32::NEG_INFINITY, |p, &q| p.max(q));
                let mut s = 0.0;
                for (oi, &x) in o.iter_mut().zip(r) {
                    *oi = (x - m).exp();
                    s += *oi;
                }
                o.iter_mut().for_each(|v| *v /= s);
            }
            black_box(out)
        })
    });
    grp.throughput(Throughput::Bytes((N * 4) as u64));
    grp.bench_function("mean_var/selfsup", |bn| {
        bn.iter(|| {
            black_box((
                rows.mean(&[-1], true).unwrap(),
                rows.var(&[-1], false, true).unwrap(),
            ))
        })
    });
    grp.bench_function("sum_rows/selfsup", |bn| {
        bn.iter(|| black_box(rows.sum(&[-1], false).unwrap()))
    });
    grp.bench_function("sum_rows/plain_loop", |bn| {
        bn.iter(|| {
            black_box(
                av.chunks(1024)
                    .map(|r| r.iter().sum::<f32>())
                    .collect::<Vec<f32>>(),
            )
        })
    });
    // Column sums (a bias gradient: sum over the batch rows).
    grp.bench_function("sum_cols/selfsup", |bn| {
        bn.iter(|| black_box(rows.sum(&[0], false).unwrap()))
    });
    grp.bench_function("sum_cols/plain_loop", |bn| {
        bn.iter(|| {
            let mut acc = vec![0f32; 1024];
            for r in av.chunks(1024) {
                for (a, v) in acc.iter_mut().zip(r) {
                    *a += v;
                }
            }
            black_box(acc)
        })
    });
    grp.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
