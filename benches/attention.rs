//! Self-attention of the reference GPT step (batch 32, context 128, 4 heads of 32, causal):
//! the fused `Tensor::attention_qkv` against the composed ops (per-head select / permute,
//! two batched matmuls, mask, softmax) in the same run, forward alone and forward + backward;
//! and the fused op at f32 against bf16 matmul precision (bf16 products on CPUs with AVX-512
//! BF16, f32 elsewhere), at that shape and at GPT-2 small's (batch 1, context 1024, 12 heads
//! of 64).
//!
//! Run: `cargo bench --bench attention`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Generator, Tensor};

const B: usize = 32;
const T: usize = 128;
const H: usize = 4;
const DH: usize = 32;

/// The composed form, as `nn::MultiHeadAttention` runs it with a mask or dropout.
fn composed(x: &Tensor, mask: &Tensor) -> Tensor {
    let qkv = x
        .reshape(&[B, T, 3, H, DH])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap();
    let (q, k, v) = (
        qkv.select(0, 0).unwrap(),
        qkv.select(0, 1).unwrap(),
        qkv.select(0, 2).unwrap(),
    );
    q.matmul(&k.transpose(-2, -1).unwrap())
        .unwrap()
        .mul_scalar(1.0 / (DH as f64).sqrt())
        .unwrap()
        .masked_fill(mask, -1e9)
        .unwrap()
        .softmax(-1)
        .unwrap()
        .matmul(&v)
        .unwrap()
        .permute(&[0, 2, 1, 3])
        .unwrap()
        .reshape(&[B, T, H * DH])
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(0);
    let x = Tensor::randn(&[B, T, 3 * H * DH], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let m: Vec<f32> = (0..T * T)
        .map(|i| if i % T > i / T { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(m, &[T, T]).unwrap();
    let mut grp = c.benchmark_group("attention_gpt_step");
    grp.sample_size(10);
    grp.bench_function("forward/fused", |bn| {
        bn.iter(|| black_box(x.attention_qkv(H, true).unwrap()))
    });
    grp.bench_function("forward/composed", |bn| {
        bn.iter(|| black_box(composed(&x, &mask)))
    });
    grp.bench_function("forward_backward/fused", |bn| {
        bn.iter(|| black_box(fused_step(&x, H)))
    });
    grp.bench_function("forward_backward/composed", |bn| {
        bn.iter(|| {
            let xr = x.detach().requires_grad_();
            composed(&xr, &mask).sum_all().unwrap().backward().unwrap();
            black_box(xr.grad())
        })
    });
    grp.finish();
}

/// Forward + backward of the fused op on `x` with `h` heads, causal.
fn fused_step(x: &Tensor, h: usize) -> Option<Tensor> {
    let xr = x.detach().requires_grad_();
    xr.attention_qkv(h, true)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    xr.grad()
}

fn bench_precision(c: &mut Criterion) {
    let mut g = Generator::new(1);
    let shapes = [("gpt_step", B, T, H, DH), ("gpt2", 1, 1024, 12, 64)];
    for (name, b, t, h, dh) in shapes {
        let x = Tensor::randn(&[b, t, 3 * h * dh], 0.0, 1.0, DType::F32, &mut g).unwrap();
        let mut grp = c.benchmark_group(format!("attention_precision_{name}"));
        grp.sample_size(10);
        for (label, p) in [
            ("f32", MatmulPrecision::F32),
            ("bf16", MatmulPrecision::Bf16),
        ] {
            grp.bench_function(format!("forward_backward/{label}"), |bn| {
                bn.iter(|| with_matmul_precision(p, || black_box(fused_step(&x, h))))
            });
        }
        grp.finish();
    }
}

criterion_group!(benches, bench, bench_precision);
criterion_main!(benches);
