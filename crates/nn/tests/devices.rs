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
