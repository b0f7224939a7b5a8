//! Optimisers against hand-computed steps, convergence on a convex quadratic, freezing,
//! clipping, schedules and EMA.

use selfsup_nn::optim::{
    clip_grad_norm, trainable, Adam, AdamConfig, Lars, LarsConfig, Optimizer, ParamGroup, Sgd,
    SgdConfig,
};
use selfsup_nn::schedule::{cosine_momentum, ema_update, LrSchedule};
use selfsup_nn::{Linear, Module, Sequential};
use selfsup_tensor::{DType, Generator, Tensor};

fn param(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap().requires_grad_()
}

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>().unwrap()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
}

/// Sets grad = p (the gradient of p^2 / 2) and steps.
fn step_on_half_square(opt: &mut dyn Optimizer, p: &Tensor) {
    p.set_grad(Some(p.detach().copy().unwrap()));
    opt.step().unwrap();
}

#[test]
fn sgd_momentum_and_nesterov_match_hand_computed_steps() {
    let p = param(&[1.0], &[1]);
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[0.9]);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[0.72]);

    let p = param(&[1.0], &[1]);
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[0.81]);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[0.5751]);

    let p = param(&[1.0], &[1]);
    let cfg = SgdConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], cfg);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[0.89]);
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn adam_and_adamw_match_hand_computed_steps() {
    let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8, 0.1);
    let p = param(&[1.0, -2.0], &[2]);
    let mut opt = Adam::new(
        vec![("p".into(), p.clone())],
        AdamConfig {
            lr,
            ..Default::default()
        },
    );
    let (mut m, mut v, mut x) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
    for t in 1..=3 {
        step_on_half_square(&mut opt, &p);
        for i in 0..2 {
            let g = x[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            x[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
        }
        close(&vals(&p), &x);
    }
    // AdamW, first step: decay then the Adam step with the undecayed gradient.
    let p = param(&[1.0], &[1]);
    let cfg = AdamConfig {
        lr,
        weight_decay: 0.1,
        ..AdamConfig::adamw()
    };
    let mut opt = Adam::adamw(vec![("p".into(), p.clone())], cfg);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[1.0 * (1.0 - 0.01) - 0.1 / (1.0 + 1e-8)]);
    // Adam with L2 decay: the gradient is 1 + 0.1 = 1.1, and the normalised step is ~lr.
    let p = param(&[1.0], &[1]);
    let cfg = AdamConfig {
        lr,
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = Adam::new(vec![("p".into(), p.clone())], cfg);
    step_on_half_square(&mut opt, &p);
    close(&vals(&p), &[1.0 - 0.1 * 1.1 / (1.1 + 1e-8)]);
}

#[test]
fn lars_trust_ratio_and_1d_exclusion() {
    let w = param(&[3.0, 4.0], &[1, 2]);
    let b = param(&[1.0], &[1]);
    let cfg = LarsConfig {
        lr: 1.0,
        momentum: 0.9,
        weight_decay: 0.5,
        eta: 0.001,
        exclude_1d: true,
    };
    let mut opt = Lars::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg);
    w.set_grad(Some(
        Tensor::from_slice(&[0.6f64 - 1.5, 0.8 - 2.0], &[1, 2]).unwrap(),
    ));
    b.set_grad(Some(Tensor::from_slice(&[0.5f64], &[1]).unwrap()));
    opt.step().unwrap();
    // d = g + 0.5 w = [0.6, 0.8] (norm 1); ratio = 0.001 * 5 / 1.
    close(&vals(&w), &[3.0 - 0.003, 4.0 - 0.004]);
    // The bias gets neither decay nor adaptation: plain SGD step.
    close(&vals(&b), &[0.5]);
    w.set_grad(Some(Tensor::from_slice(&[0.0f64, 0.0], &[1, 2]).unwrap()));
    b.set_grad(Some(Tensor::from_slice(&[0.0f64], &[1]).unwrap()));
    opt.step().unwrap();
    // Momentum carries the previous update (decay term only for w: d = 0.5 w, rescaled).
    close(&vals(&b), &[0.5 - 0.9 * 0.5]);
}

/// The fused LARS step (contiguous parameters) and the composed one (a transposed view, which
/// the fused kernel does not take) give the same parameters and momenta.
#[test]
fn lars_fused_and_composed_steps_agree() {
    let mut g = Generator::new(11);
    let w0 = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let b0 = Tensor::randn(&[4], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let grads: Vec<(Tensor, Tensor)> = (0..3)
        .map(|_| {
            (
                Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut g).unwrap(),
                Tensor::randn(&[4], 0.0, 1.0, DType::F64, &mut g).unwrap(),
            )
        })
        .collect();
    let cfg = LarsConfig {
        lr: 0.5,
        weight_decay: 0.05,
        eta: 0.02,
        ..Default::default()
    };
    let run = |strided: bool| {
        let w = if strided {
            // The same values, stored transposed: a non-contiguous parameter.
            w0.t()
                .unwrap()
                .copy()
                .unwrap()
                .t()
                .unwrap()
                .requires_grad_()
        } else {
            w0.copy().unwrap().requires_grad_()
        };
        assert_eq!(w.is_contiguous(), !strided);
        let b = b0.copy().unwrap().requires_grad_();
        let mut opt = Lars::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            cfg.clone(),
        );
        for (gw, gb) in &grads {
            w.set_grad(Some(gw.clone()));
            b.set_grad(Some(gb.clone()));
            opt.step().unwrap();
        }
        (vals(&w), vals(&b))
    };
    let (fused, composed) = (run(false), run(true));
    assert_ne!(fused.0, vals(&w0));
    close(&fused.0, &composed.0);
    close(&fused.1, &composed.1);
}

/// f(p) = sum_i c_i (p_i - t_i)^2, minimised at t.
fn quadratic_converges(
    make: impl Fn(Vec<(String, Tensor)>) -> Box<dyn Optimizer>,
    steps: u64,
    sched: Option<LrSchedule>,
    tol: f64,
) {
    let target = Tensor::from_slice(&[1.5f64, -2.0, 0.5, 3.0], &[2, 2]).unwrap();
    let c = Tensor::from_slice(&[1.0f64, 2.0, 0.5, 1.5], &[2, 2]).unwrap();
    let p = param(&[1.0, 1.0, 1.0, 1.0], &[2, 2]);
    let mut opt = make(vec![("p".into(), p.clone())]);
    for s in 0..steps {
        if let Some(sc) = &sched {
            opt.set_lr(sc.lr(s));
        }
        opt.zero_grad();
        p.sub(&target)
            .unwrap()
            .sqr()
            .unwrap()
            .mul(&c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
    }
    let err: f64 = vals(&p)
        .iter()
        .zip(vals(&target))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < tol, "max error {err}");
}

#[test]
fn optimisers_converge_on_a_convex_quadratic() {
    quadratic_converges(
        |ps| {
            Box::new(Sgd::new(
                ps,
                SgdConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            ))
        },
        300,
        None,
        1e-6,
    );
    quadratic_converges(
        |ps| {
            Box::new(Sgd::new(
                ps,
                SgdConfig {
                    lr: 0.05,
                    momentum: 0.9,
                    nesterov: true,
                    ..Default::default()
                },
            ))
        },
        300,
        None,
        1e-6,
    );
    let cos = LrSchedule::WarmupCosine {
        lr: 0.1,
        warmup: 10,
        total: 1000,
        final_lr: 0.0,
    };
    quadratic_converges(
        |ps| Box::new(Adam::new(ps, AdamConfig::default())),
        1000,
        Some(cos.clone()),
        1e-3,
    );
    quadratic_converges(
        |ps| {
            Box::new(Adam::adamw(
                ps,
                AdamConfig {
                    weight_decay: 0.0,
                    ..AdamConfig::adamw()
                },
            ))
        },
        1000,
        Some(cos),
        1e-3,
    );
    let cos = LrSchedule::WarmupCosine {
        lr: 1.0,
        warmup: 0,
        total: 1500,
        final_lr: 0.0,
    };
    quadratic_converges(
        |ps| {
            Box::new(Lars::new(
                ps,
                LarsConfig {
                    lr: 1.0,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            ))
        },
        1500,
        Some(cos),
        2e-2,
    );
}

#[test]
fn frozen_parameters_do_not_change() {
    let mut g = Generator::new(3);
    let net = Sequential::new()
        .push(Linear::new(3, 4, true, DType::F64, &mut g).unwrap())
        .push(Linear::new(4, 2, true, DType::F64, &mut g).unwrap());
    let before: Vec<Vec<f64>> = net.params().iter().map(|(_, t)| vals(t)).collect();
    let mut opt = Adam::new(net.params(), AdamConfig::default());
    assert_eq!(opt.freeze("0."), 2);
    let mut sgd = Sgd::new(trainable(net.params(), &["0."]), SgdConfig::default());
    let x = Tensor::randn(&[5, 3], 0.0, 1.0, DType::F64, &mut g).unwrap();
    for _ in 0..3 {
        net.zero_grad();
        net.forward(&x)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
        sgd.step().unwrap();
    }
    let after: Vec<Vec<f64>> = net.params().iter().map(|(_, t)| vals(t)).collect();
    assert_eq!(before[0], after[0]);
    assert_eq!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
    assert_ne!(before[3], after[3]);
}

#[test]
fn parameter_groups_have_their_own_lr() {
    let a = param(&[1.0], &[1]);
    let b = param(&[1.0], &[1]);
    let groups = vec![
        ParamGroup::new(vec![("a".into(), a.clone())], 0.1, 0.0),
        ParamGroup::new(vec![("b".into(), b.clone())], 0.2, 0.1),
    ];
    let mut opt = Sgd::with_groups(groups, SgdConfig::default()).unwrap();
    a.set_grad(Some(Tensor::from_slice(&[1.0f64], &[1]).unwrap()));
    b.set_grad(Some(Tensor::from_slice(&[1.0f64], &[1]).unwrap()));
    opt.step().unwrap();
    close(&vals(&a), &[0.9]);
    close(&vals(&b), &[1.0 - 0.2 * 1.1]);
}

#[test]
fn clipping_scales_to_the_right_norm() {
    let a = param(&[0.0, 0.0], &[2]);
    let b = param(&[0.0], &[1]);
    a.set_grad(Some(Tensor::from_slice(&[3.0f64, 4.0], &[2]).unwrap()));
    b.set_grad(Some(Tensor::from_slice(&[12.0f64], &[1]).unwrap()));
    let ps = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let total = clip_grad_norm(&ps, 100.0).unwrap();
    assert!((total - 13.0).abs() < 1e-12);
    assert_eq!(vals(&b.grad().unwrap()), vec![12.0]);
    let total = clip_grad_norm(&ps, 1.3).unwrap();
    assert!((total - 13.0).abs() < 1e-12);
    let ga = vals(&a.grad().unwrap());
    let gb = vals(&b.grad().unwrap());
    let n = (ga[0] * ga[0] + ga[1] * ga[1] + gb[0] * gb[0]).sqrt();
    assert!((n - 1.3).abs() < 1e-6, "{n}");
    assert!((ga[0] / ga[1] - 0.75).abs() < 1e-12);
    assert!(clip_grad_norm(&ps, 0.0).is_err());
}

#[test]
fn schedules() {
    let s = LrSchedule::WarmupCosine {
        lr: 1.0,
        warmup: 10,
        total: 110,
        final_lr: 0.1,
    };
    assert!((s.lr(0) - 0.1).abs() < 1e-12);
    assert!((s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(10) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.55).abs() < 1e-12);
    assert!((s.lr(110) - 0.1).abs() < 1e-12);
    assert!((s.lr(500) - 0.1).abs() < 1e-12);
    let s = LrSchedule::Step {
        lr: 1.0,
        step_size: 10,
        gamma: 0.5,
    };
    assert_eq!((s.lr(9), s.lr(10), s.lr(25)), (1.0, 0.5, 0.25));
    assert_eq!(LrSchedule::Constant { lr: 0.3 }.lr(1000), 0.3);
    assert!((cosine_momentum(0.996, 0, 100) - 0.996).abs() < 1e-15);
    assert!((cosine_momentum(0.996, 50, 100) - 0.998).abs() < 1e-12);
    assert_eq!(cosine_momentum(0.996, 100, 100), 1.0);
}

#[test]
fn ema_update_moves_target_towards_online() {
    let t = param(&[1.0, 2.0], &[2]);
    let o = param(&[3.0, 6.0], &[2]);
    ema_update(&[("w".into(), t.clone())], &[("w".into(), o.clone())], 0.75).unwrap();
    close(&vals(&t), &[1.5, 3.0]);
    assert!(ema_update(&[("w".into(), t.clone())], &[("v".into(), o)], 0.5).is_err());
}

#[test]
fn adam_counts_steps_per_parameter() {
    let a = param(&[1.0], &[1]);
    let b = param(&[1.0], &[1]);
    let cfg = AdamConfig {
        lr: 0.1,
        ..Default::default()
    };
    let mut opt = Adam::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], cfg);
    a.set_grad(Some(Tensor::from_slice(&[1.0f64], &[1]).unwrap()));
    opt.step().unwrap();
    opt.zero_grad();
    b.set_grad(Some(Tensor::from_slice(&[1.0f64], &[1]).unwrap()));
    opt.step().unwrap();
    // b's first update is a full first step (bias-corrected with t = 1), whatever the global count.
    close(&vals(&b), &[1.0 - 0.1 / (1.0 + 1e-8)]);
    assert_eq!(opt.state()["b.step"].to_vec::<i64>().unwrap(), vec![1]);
    assert_eq!(opt.state()["a.step"].to_vec::<i64>().unwrap(), vec![1]);
    assert_eq!(opt.step_count(), 2);
    // State for an unknown parameter is refused.
    let bad = vec![("c.exp_avg".to_string(), Tensor::zeros(&[1], DType::F64))];
    assert!(opt.load_state(bad).is_err());
}

#[test]
fn set_train_reaches_nested_layers() {
    let mut g = Generator::new(1);
    let mut net = Sequential::new()
        .push(Linear::new(2, 3, true, DType::F64, &mut g).unwrap())
        .push(selfsup_nn::BatchNorm::new_1d(3, true, DType::F64));
    let x = Tensor::randn(&[4, 2], 0.0, 1.0, DType::F64, &mut g).unwrap();
    net.forward(&x).unwrap();
    let names: Vec<String> = net.buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    );
    net.eval();
    let before = vals(&net.buffers()[0].1);
    net.forward(&x).unwrap();
    assert_eq!(vals(&net.buffers()[0].1), before);
}

/// A `[3, 4]` parameter stored contiguously, and the same values as a transposed (strided)
/// leaf, which the optimisers cannot update with the fused in-place kernels.
fn twin_params() -> (Tensor, Tensor) {
    let v: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) * 0.3).collect();
    let a = param(&v, &[3, 4]);
    let vt: Vec<f64> = (0..12).map(|i| v[(i % 3) * 4 + i / 3]).collect();
    let b = Tensor::from_slice(&vt, &[4, 3])
        .unwrap()
        .t()
        .unwrap()
        .requires_grad_();
    assert!(!b.is_contiguous());
    assert_eq!(vals(&a), vals(&b.contiguous().unwrap()));
    (a, b)
}

#[test]
fn fused_and_composed_updates_agree() {
    type Make = fn(Tensor) -> Box<dyn Optimizer>;
    let makers: [(&str, Make); 5] = [
        ("adam l2", |p| {
            Box::new(Adam::new(
                vec![("p".into(), p)],
                AdamConfig {
                    lr: 0.05,
                    weight_decay: 0.1,
                    ..Default::default()
                },
            ))
        }),
        ("adamw", |p| {
            Box::new(Adam::adamw(
                vec![("p".into(), p)],
                AdamConfig {
                    lr: 0.05,
                    weight_decay: 0.1,
                    ..AdamConfig::adamw()
                },
            ))
        }),
        ("sgd", |p| {
            Box::new(Sgd::new(
                vec![("p".into(), p)],
                SgdConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            ))
        }),
        ("sgd momentum wd", |p| {
            Box::new(Sgd::new(
                vec![("p".into(), p)],
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    dampening: 0.1,
                    weight_decay: 0.01,
                    ..Default::default()
                },
            ))
        }),
        ("sgd nesterov", |p| {
            Box::new(Sgd::new(
                vec![("p".into(), p)],
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    ..Default::default()
                },
            ))
        }),
    ];
    for (what, make) in makers {
        let (a, b) = twin_params();
        let (mut oa, mut ob) = (make(a.clone()), make(b.clone()));
        for step in 0..4 {
            // The gradient of sum(p^3) / 3 plus a step-dependent tilt.
            let g = a
                .detach()
                .sqr()
                .unwrap()
                .add_scalar(step as f64 * 0.1)
                .unwrap();
            a.set_grad(Some(g.copy().unwrap()));
            b.set_grad(Some(g.copy().unwrap()));
            oa.step().unwrap();
            ob.step().unwrap();
            let (va, vb) = (vals(&a), vals(&b.contiguous().unwrap()));
            for (x, y) in va.iter().zip(&vb) {
                assert!(
                    (x - y).abs() < 1e-12,
                    "{what} step {step}: {va:?} vs {vb:?}"
                );
            }
        }
    }
}
