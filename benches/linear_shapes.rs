//! The GEMMs of a linear layer in the GPT-mini step (4096 tokens, d = 128, MLP 512), through
//! `Tensor::matmul` with the operands' real layouts: forward `x·Wᵀ` (W read transposed), input
//! gradient `dy·W`, weight gradient `dyᵀ·x` (k = 4096 tokens). Criterion reports FLOP/s
//! (`Throughput::Elements(2mkn)`).
//!
//! Run: `cargo bench --bench linear_shapes` (threads: `RAYON_NUM_THREADS`). The same shapes in
//! PyTorch, for a ratio from the same session: `python3 scripts/torch_linear_shapes.py`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use selfsup_tensor::{DType, Generator, Tensor};

/// `(name, m, k, n, a transposed, b transposed)` for `C[m, n] = op(A)·op(B)`.
pub const SHAPES: [(&str, usize, usize, usize, bool, bool); 7] = [
    ("fwd_qkv_x.Wt", 4096, 128, 384, false, true),
    ("fwd_fc1_x.Wt", 4096, 128, 512, false, true),
    ("fwd_fc2_x.Wt", 4096, 512, 128, false, true),
    ("dx_qkv_dy.W", 4096, 384, 128, false, false),
    ("dx_fc2_dy.W", 4096, 128, 512, false, false),
    ("dW_qkv_dyT.x", 384, 4096, 128, true, false),
    ("dW_fc2_dyT.x", 128, 4096, 512, true, false),
];

fn operand(rows: usize, cols: usize, transposed: bool, g: &mut Generator) -> Tensor {
    if transposed {
        let t = Tensor::randn(&[cols, rows], 0.0, 1.0, DType::F32, g).expect("randn");
        t.t().expect("transpose")
    } else {
        Tensor::randn(&[rows, cols], 0.0, 1.0, DType::F32, g).expect("randn")
    }
}

fn bench(c: &mut Criterion) {
    let mut g = Generator::new(0);
    let mut grp = c.benchmark_group("linear_shapes");
    for (name, m, k, n, at, bt) in SHAPES {
        let a = operand(m, k, at, &mut g);
        let b = operand(k, n, bt, &mut g);
        grp.throughput(Throughput::Elements((2 * m * k * n) as u64));
        grp.bench_function(name, |bn| {
            bn.iter(|| black_box(a.matmul(&b).expect("matmul")))
        });
    }
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
