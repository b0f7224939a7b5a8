//! One optimiser step over the parameters of a CIFAR ResNet-18 (11.2M f32 scalars in 62
//! tensors): the fused multi-tensor LARS step (`Tensor::lars_steps_`) beside the same update
//! written as composed tensor ops (what `nn::Lars` ran before session 19, and still runs for
//! strided parameters), with the fused SGD and Adam steps over the same buffers for scale.
//!
//! Run: `cargo bench --bench optim`. Criterion reports throughput in parameters/s.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use selfsup_tensor::ops::optim::{AdamItem, AdamStep, LarsItem, LarsStep, SgdItem, SgdStep};
use selfsup_tensor::{DType, Generator, Tensor};

/// The parameter shapes of a CIFAR ResNet-18 (3x3 stem, no max-pool, 10-way head): each
/// convolution's weight, each BatchNorm's scale and shift, the 1x1 shortcut convolutions and
/// the head.
fn resnet18_shapes() -> Vec<Vec<usize>> {
    let mut v = vec![vec![64, 3, 3, 3], vec![64], vec![64]];
    let mut cin = 64;
    for (stage, &c) in [64usize, 128, 256, 512].iter().enumerate() {
        for block in 0..2 {
            let first = block == 0;
            v.extend([vec![c, if first { cin } else { c }, 3, 3], vec![c], vec![c]]);
            v.extend([vec![c, c, 3, 3], vec![c], vec![c]]);
            if first && stage > 0 {
                v.extend([vec![c, cin, 1, 1], vec![c], vec![c]]);
            }
        }
        cin = c;
    }
    v.extend([vec![10, 512], vec![10]]);
    v
}

/// The LARS update as composed ops, as `nn::Lars` writes it for parameters the fused step
/// does not take.
fn lars_composed(p: &Tensor, g: &Tensor, mu: &Tensor, h: &LarsStep) {
    let mut d = g.clone();
    if h.adapt {
        d = d.add(&p.mul_scalar(h.weight_decay).unwrap()).unwrap();
        let norm = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
        };
        let (pn, dn) = (norm(p), norm(&d));
        let both = pn
            .gt_scalar(0.0)
            .unwrap()
            .mul(&dn.gt_scalar(0.0).unwrap())
            .unwrap();
        let ratio = pn
            .mul_scalar(h.eta)
            .unwrap()
            .div(&dn.clamp(f64::MIN_POSITIVE, f64::INFINITY).unwrap())
            .unwrap();
        let one = Tensor::ones_like(&pn).unwrap();
        let f = ratio
            .where_(&both, &one)
            .unwrap()
            .to_dtype(d.dtype())
            .unwrap();
        d = d.mul(&f).unwrap();
    }
    mu.assign(&mu.mul_scalar(h.momentum).unwrap().add(&d).unwrap())
        .unwrap();
    p.assign(&p.sub(&mu.mul_scalar(h.lr).unwrap()).unwrap())
        .unwrap();
}

fn bench(c: &mut Criterion) {
    let mut gen = Generator::new(0);
    let shapes = resnet18_shapes();
    let make = |gen: &mut Generator| -> Vec<Tensor> {
        shapes
            .iter()
            .map(|s| Tensor::randn(s, 0.0, 0.05, DType::F32, gen).unwrap())
            .collect()
    };
    let (ps, gs) = (make(&mut gen), make(&mut gen));
    let zeros = || -> Vec<Tensor> { ps.iter().map(|p| p.zeros_like().unwrap()).collect() };
    let (ms, vs) = (zeros(), zeros());
    let total: usize = ps.iter().map(|p| p.numel()).sum();
    let lars: Vec<LarsStep> = ps
        .iter()
        .map(|p| LarsStep {
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 1e-6,
            eta: 1e-3,
            adapt: p.rank() > 1,
        })
        .collect();

    let mut grp = c.benchmark_group("optimizer_step_resnet18");
    grp.throughput(Throughput::Elements(total as u64));
    grp.sample_size(20);
    grp.bench_function("lars/fused", |b| {
        b.iter(|| {
            let items: Vec<LarsItem> = (0..ps.len())
                .map(|i| LarsItem {
                    param: &ps[i],
                    grad: &gs[i],
                    momentum_buf: &ms[i],
                    step: lars[i],
                })
                .collect();
            Tensor::lars_steps_(black_box(&items)).unwrap()
        })
    });
    grp.bench_function("lars/composed", |b| {
        b.iter(|| {
            for i in 0..ps.len() {
                lars_composed(&ps[i], &gs[i], &ms[i], &lars[i]);
            }
        })
    });
    grp.bench_function("sgd/fused", |b| {
        b.iter(|| {
            let items: Vec<SgdItem> = (0..ps.len())
                .map(|i| SgdItem {
                    param: &ps[i],
                    grad: &gs[i],
                    momentum_buf: Some(&ms[i]),
                    step: SgdStep {
                        lr: 1e-4,
                        momentum: 0.9,
                        dampening: 0.0,
                        weight_decay: 1e-6,
                        nesterov: false,
                        first: false,
                    },
                })
                .collect();
            Tensor::sgd_steps_(black_box(&items)).unwrap()
        })
    });
    grp.bench_function("adam/fused", |b| {
        b.iter(|| {
            let items: Vec<AdamItem> = (0..ps.len())
                .map(|i| AdamItem {
                    param: &ps[i],
                    grad: &gs[i],
                    m: &ms[i],
                    v: &vs[i],
                    step: AdamStep {
                        lr: 1e-6,
                        beta1: 0.9,
                        beta2: 0.999,
                        eps: 1e-8,
                        weight_decay: 0.0,
                        decoupled: true,
                        step: 10,
                    },
                })
                .collect();
            Tensor::adam_steps_(black_box(&items)).unwrap()
        })
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
