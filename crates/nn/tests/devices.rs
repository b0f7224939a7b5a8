//! Modules on a GPU: `Module::to_device` moves every parameter and buffer, and a training step
//! there (forward in training mode, backward, Adam, SGD or LARS) matches the same step on the
//! CPU. Skips,
//! saying why, where no GPU is usable.

use selfsup_nn::optim::{Adam, AdamConfig, Lars, LarsConfig, Optimizer, Sgd, SgdConfig};
use selfsup_nn::{Module, SmallCnn};
use selfsup_tensor::{DType, Device, Generator, Tensor};

/// The first usable GPU, or `None` after printing why there is none.
fn gpu(test: &str) -> Option<Device> {
    match Device::Cuda(0).check() {
        Ok(()) => Some(Device::Cuda(0)),
        Err(e) => {
            eprintln!("{test}: skipped on GPU: {e}");
            None
        }
    }
}

fn close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let (x, y) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(x.len(), y.len(), "{what}");
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            (p - q).abs() <= tol * (1.0 + q.abs()),
            "{what}[{i}]: GPU {p} vs CPU {q}"
        );
    }
}

/// Asserts `max |a - b| <= tol * max |b|`: agreement relative to the tensor's scale.
fn scaled(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let (x, y) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(x.len(), y.len(), "{what}");
    let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = x
        .iter()
        .zip(&y)
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        err <= tol * scale,
        "{what}: largest difference {err} against scale {scale}"
    );
}

type MakeOptimizer = fn(Vec<(String, Tensor)>) -> Box<dyn Optimizer>;

#[test]
fn a_small_cnn_trains_on_the_gpu_as_on_the_cpu() {
    let Some(dev) = gpu("SmallCnn on GPU") else {
        return;
    };
    let makers: [(&str, MakeOptimizer); 3] = [
        ("adam", |ps| Box::new(Adam::new(ps, AdamConfig::default()))),
        ("sgd", |ps| {
            let cfg = SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 1e-4,
                ..SgdConfig::default()
            };
            Box::new(Sgd::new(ps, cfg))
        }),
        ("lars", |ps| {
            let cfg = LarsConfig {
                lr: 0.5,
                weight_decay: 1e-4,
                eta: 0.02,
                ..LarsConfig::default()
            };
            Box::new(Lars::new(ps, cfg))
        }),
    ];
    for (name, make) in makers {
        trains_alike(dev, name, make);
    }
}

fn trains_alike(dev: Device, opt_name: &str, make: MakeOptimizer) {
    let build = || SmallCnn::with_widths(1, &[8, 16], DType::F32, &mut Generator::new(3)).unwrap();
    let (mut on_gpu, on_cpu) = (build(), build());
    on_gpu.to_device(dev).unwrap();
    for (n, t) in on_gpu.params().into_iter().chain(on_gpu.buffers()) {
        assert_eq!(t.device(), dev, "{n} moved");
    }
    let x = Tensor::randn(
        &[6, 1, 12, 12],
        0.0,
        1.0,
        DType::F32,
        &mut Generator::new(4),
    )
    .unwrap();
    let mut opt_g = make(on_gpu.params());
    let mut opt_c = make(on_cpu.params());
    for step in 0..3 {
        let yg = on_gpu.forward(&x.to_device(dev).unwrap()).unwrap();
        let yc = on_cpu.forward(&x).unwrap();
        close(&format!("{opt_name} step {step} output"), &yg, &yc, 1e-4);
        yg.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        yc.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        opt_g.step().unwrap();
        opt_c.step().unwrap();
        opt_g.zero_grad();
        opt_c.zero_grad();
    }
    for ((n, a), (_, b)) in on_gpu
        .params()
        .into_iter()
        .zip(on_cpu.params())
        .chain(on_gpu.buffers().into_iter().zip(on_cpu.buffers()))
    {
        close(&format!("{opt_name} {n}"), &a, &b, 1e-3);
    }
}

/// A transformer block at bf16 matmul precision on a GPU, where its pre-norms write their
/// consumers' bf16 operands (`LayerNorm::forward_as`) and the attention and MLP run fused,
/// gives the output and parameter gradients of the same block composed on the GPU (the
/// fusions off, the norms' outputs f32) and on the CPU, to within bf16 rounding; with a key
/// padding mask (the attention composed, its bf16 input widened) too.
#[test]
fn a_transformer_block_at_bf16_matches_its_composition() {
    use selfsup_nn::{Activation, TransformerBlock};
    use selfsup_tensor::ops::fusion::{with_gpu_fusion, GpuFusion};
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    let Some(dev) = gpu("TransformerBlock at bf16 on GPU") else {
        return;
    };
    let build = || {
        TransformerBlock::new(
            32,
            2,
            4,
            Activation::Gelu,
            DType::F32,
            &mut Generator::new(7),
        )
        .unwrap()
    };
    let x = Tensor::randn(&[2, 9, 32], 0.0, 1.0, DType::F32, &mut Generator::new(8)).unwrap();
    let g = Tensor::randn(&[2, 9, 32], 0.0, 1.0, DType::F32, &mut Generator::new(9)).unwrap();
    let mut pad = vec![0.0f32; 18];
    pad[8] = 1.0;
    pad[17] = 1.0;
    let pad = Tensor::from_vec(pad, &[2, 9]).unwrap();
    // Output and parameter gradients of one forward and backward on `d` at bf16 precision.
    let step = |d: Device, fusion: GpuFusion, padded: bool| {
        let mut block = build();
        block.to_device(d).unwrap();
        let mask = pad.to_device(d).unwrap();
        with_matmul_precision(MatmulPrecision::Bf16, || {
            with_gpu_fusion(fusion, || {
                let y = block
                    .forward(&x.to_device(d).unwrap(), !padded, padded.then_some(&mask))
                    .unwrap();
                y.mul(&g.to_device(d).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let grads: Vec<(String, Tensor)> = block
                    .params()
                    .into_iter()
                    .map(|(n, p)| (n, p.grad().expect("gradient")))
                    .collect();
                (y, grads)
            })
        })
    };
    for padded in [false, true] {
        let (y, gs) = step(dev, GpuFusion::Fused, padded);
        for (what, (yr, gr)) in [
            ("composed", step(dev, GpuFusion::Composed, padded)),
            ("CPU", step(Device::Cpu, GpuFusion::Fused, padded)),
        ] {
            let what = format!("padded {padded} vs {what}");
            // The branches' sum (the residual subtracted), relative to its largest element:
            // about 0.3% on the emulator.
            let branches = |y: &Tensor| y.sub(&x.to_device(y.device()).unwrap()).unwrap();
            scaled(
                &format!("{what}: output"),
                &branches(&y),
                &branches(&yr),
                1e-2,
            );
            // The weights' gradients sum 18 rows of terms that differ by bf16 roundings: up
            // to about 0.8% of their scale on the emulator.
            for ((n, a), (_, b)) in gs.iter().zip(&gr) {
                scaled(&format!("{what}: {n}"), a, b, 2e-2);
            }
        }
    }
}

/// A GPT trained on a GPU at bf16 matmul precision with AdamW reads its weights' kept bf16
/// copies, which the optimiser writes as it updates the weights (`selfsup_tensor`'s parameter
/// shadows): after each step its logits are the bits of the same model on fresh buffers
/// holding the trained parameters (whose forward casts them anew), with GELU's tanh form in
/// the MLP's epilogues and the head tied to the token embedding.
#[test]
fn a_gpt_at_bf16_reads_current_weights_after_every_step() {
    use selfsup_nn::{Activation, TextConfig, TextTransformer};
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    let Some(dev) = gpu("bf16 GPT training") else {
        return;
    };
    let cfg = TextConfig {
        vocab: 13,
        context: 8,
        layers: 2,
        heads: 2,
        dim: 16,
        mlp_ratio: 4,
        causal: true,
        tied: true,
        dropout: 0.0,
        activation: Activation::GeluTanh,
    };
    let build = || {
        let mut m = TextTransformer::new(&cfg, DType::F32, &mut Generator::new(5)).unwrap();
        m.to_device(dev).unwrap();
        m
    };
    let m = build();
    let tokens: Vec<i64> = (0..18).map(|i| (i * 5 % 13) as i64).collect();
    let seq = Tensor::from_vec(tokens, &[2, 9])
        .unwrap()
        .to_device(dev)
        .unwrap();
    let ids = seq.narrow(1, 0, 8).unwrap();
    let targets = seq.narrow(1, 1, 8).unwrap().reshape(&[16]).unwrap();
    let mut opt = Adam::adamw(
        m.params(),
        AdamConfig {
            lr: 1e-2,
            ..AdamConfig::adamw()
        },
    );
    with_matmul_precision(MatmulPrecision::Bf16, || {
        let mut losses = Vec::new();
        for step in 0..4 {
            let y = m.forward(&ids).unwrap();
            let fresh = build();
            for ((_, a), (_, b)) in fresh.params().into_iter().zip(m.params()) {
                a.assign(&b).unwrap();
            }
            let y_fresh = fresh.forward(&ids).unwrap();
            close(&format!("step {step}: logits"), &y, &y_fresh, 0.0);
            let loss = y
                .reshape(&[16, 13])
                .unwrap()
                .cross_entropy(&targets)
                .unwrap();
            losses.push(loss.item().unwrap());
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
        }
        assert!(losses[3] < losses[0], "the loss falls: {losses:?}");
    });
}
