//! The joint-embedding methods end to end on tiny backbones: they build, train for a few
//! steps with finite losses and give embeddings; stop-gradients stop; EMA targets move only by
//! the EMA formula; the MoCo queue takes the new keys and wraps; the DINO centre follows its EMA.

use std::collections::HashMap;

use selfsup_nn::schedule::cosine_momentum;
use selfsup_nn::Module;
use selfsup_ssl::loss::negative_cosine;
use selfsup_ssl::methods::{Dino, MocoV2, Simsiam};
use selfsup_ssl::{
    build, InputKind, MethodConfig, MethodName, OptimConfig, Progress, SslBatch, SslMethod, Trainer,
};
use selfsup_tensor::{DType, Generator, Tensor};

const JOINT: [MethodName; 7] = [
    MethodName::MocoV2,
    MethodName::MocoV3,
    MethodName::Byol,
    MethodName::Simsiam,
    MethodName::BarlowTwins,
    MethodName::Vicreg,
    MethodName::Dino,
];

fn tiny(m: MethodName) -> MethodConfig {
    let mut c = MethodConfig::for_method(m);
    c.backbone.widths = vec![4, 8, 16];
    c.proj_hidden = 32;
    c.proj_dim = 16;
    c.pred_hidden = 16;
    c.queue_size = 20;
    c.dino_out_dim = 32;
    c.local_crops = 2;
    c
}

/// Random views of 8 images as `kind` asks for them.
fn batch(kind: &InputKind, g: &mut Generator) -> SslBatch {
    let sizes: Vec<usize> = match *kind {
        InputKind::Views { count } => vec![28; count],
        InputKind::MultiCrop { local, local_size } => {
            let mut s = vec![28, 28];
            s.extend(std::iter::repeat_n(local_size, local));
            s
        }
        ref other => panic!("not a joint-embedding input: {other:?}"),
    };
    SslBatch::from_views(
        sizes
            .iter()
            .map(|&s| Tensor::randn(&[8, 1, s, s], 0.0, 1.0, DType::F32, g).unwrap())
            .collect(),
    )
}

fn values(params: &[(String, Tensor)]) -> HashMap<String, Vec<f32>> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec::<f32>().unwrap()))
        .collect()
}

#[test]
fn every_joint_method_trains_three_steps_with_finite_loss() {
    for m in JOINT {
        let mut g = Generator::new(1);
        let method = build(&tiny(m), &mut g).unwrap();
        assert_eq!(method.name(), m);
        let kind = method.input();
        let mut trainer = Trainer::new(method, &OptimConfig::default(), 3, 0).unwrap();
        for _ in 0..3 {
            let st = trainer.train_step(&batch(&kind, &mut g)).unwrap();
            assert!(st.loss.is_finite(), "{m}: loss {}", st.loss);
            let (a, b) = st.embeddings.as_ref().expect("embeddings");
            assert_eq!(a.shape(), &[8, 16], "{m}");
            assert_eq!(b.as_ref().expect("second view").shape(), &[8, 16], "{m}");
            assert!(!a.requires_grad(), "{m}: embeddings must be detached");
            assert!(st.diagnostics().unwrap().is_some());
        }
    }
}

#[test]
fn dino_asks_for_multi_crop_and_rejects_missing_views() {
    let mut g = Generator::new(2);
    let mut method = build(&tiny(MethodName::Dino), &mut g).unwrap();
    assert_eq!(
        method.input(),
        InputKind::MultiCrop {
            local: 2,
            local_size: 12
        }
    );
    let two = batch(&InputKind::Views { count: 2 }, &mut g);
    let p = Progress { step: 0, total: 1 };
    let err = method.forward(&two, p, &mut g).unwrap_err().to_string();
    assert!(err.contains("4 image views"), "{err}");
}

#[test]
fn no_gradient_reaches_a_target_network() {
    for m in [
        MethodName::MocoV2,
        MethodName::MocoV3,
        MethodName::Byol,
        MethodName::Dino,
    ] {
        let mut g = Generator::new(3);
        let mut method = build(&tiny(m), &mut g).unwrap();
        method.set_train(true);
        let b = batch(&method.input(), &mut g);
        let out = method
            .forward(&b, Progress { step: 0, total: 10 }, &mut g)
            .unwrap();
        out.loss.backward().unwrap();
        let params = method.params();
        assert!(params.iter().any(|(n, _)| n.starts_with("target.")), "{m}");
        for (n, t) in &params {
            if n.starts_with("target.") {
                assert!(t.grad().is_none(), "{m}: {n} has a gradient");
            }
        }
        // The online encoder does get gradients (the check above is not vacuous).
        assert!(params
            .iter()
            .any(|(n, t)| n.starts_with("encoder.") && t.grad().is_some()));
        // And the optimiser never sees the target.
        assert!(method
            .trainable_params()
            .iter()
            .all(|(n, _)| !n.starts_with("target.")));
    }
}

#[test]
fn ema_targets_move_exactly_by_the_ema_formula() {
    let total = 4;
    for m in [
        MethodName::MocoV2,
        MethodName::MocoV3,
        MethodName::Byol,
        MethodName::Dino,
    ] {
        let cfg = tiny(m);
        let mut g = Generator::new(4);
        let method = build(&cfg, &mut g).unwrap();
        let kind = method.input();
        let mut trainer = Trainer::new(method, &OptimConfig::default(), total, 0).unwrap();
        // At the start the target equals the online network.
        let all = values(&trainer.method.params());
        for (n, v) in &all {
            if let Some(online) = n.strip_prefix("target.") {
                assert_eq!(v, &all[online], "{m}: {n} is not a copy at the start");
            }
        }
        for step in 0..2u64 {
            let before = values(&trainer.method.params());
            trainer.train_step(&batch(&kind, &mut g)).unwrap();
            let after = values(&trainer.method.params());
            let mom = if m == MethodName::MocoV2 {
                cfg.momentum
            } else {
                cosine_momentum(cfg.momentum, step, total)
            };
            let mut moved = false;
            for (n, new) in &after {
                let Some(online) = n.strip_prefix("target.") else {
                    continue;
                };
                let old = &before[n];
                for ((nw, od), on) in new.iter().zip(old).zip(&after[online]) {
                    let want = mom * *od as f64 + (1.0 - mom) * *on as f64;
                    assert!(
                        (*nw as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                        "{m} step {step}: {n}: {nw} vs {want}"
                    );
                    moved |= nw != od;
                }
            }
            assert!(moved, "{m}: the target did not move");
        }
    }
}

#[test]
fn simsiam_gradient_equals_the_one_with_constant_targets() {
    let cfg = tiny(MethodName::Simsiam);
    let mut g = Generator::new(5);
    let mut s = Simsiam::new(&cfg, &mut g).unwrap();
    s.set_train(true);
    let b = batch(&InputKind::Views { count: 2 }, &mut g);
    let p = Progress { step: 0, total: 1 };
    s.forward(&b, p, &mut g).unwrap().loss.backward().unwrap();
    let grads: Vec<Vec<f32>> = s
        .params()
        .iter()
        .map(|(_, t)| {
            t.grad()
                .map(|g| g.to_vec::<f32>().unwrap())
                .unwrap_or_default()
        })
        .collect();
    s.zero_grad();
    // The same loss with the targets rebuilt as fresh constants: no graph behind them at all.
    let manual = |detach: bool| {
        let x = Tensor::concat(&[&b.views[0], &b.views[1]], 0).unwrap();
        let z = s.projector.forward(&s.encoder.embed(&x).unwrap()).unwrap();
        let pr = s.predictor.forward(&z).unwrap();
        let zt = if detach {
            Tensor::from_vec(z.to_vec::<f32>().unwrap(), z.shape()).unwrap()
        } else {
            z.clone()
        };
        let l = negative_cosine(&pr.narrow(0, 0, 8).unwrap(), &zt.narrow(0, 8, 8).unwrap())
            .unwrap()
            .add(
                &negative_cosine(&pr.narrow(0, 8, 8).unwrap(), &zt.narrow(0, 0, 8).unwrap())
                    .unwrap(),
            )
            .unwrap()
            .mul_scalar(0.5)
            .unwrap();
        l.backward().unwrap();
        let out: Vec<Vec<f32>> = s
            .params()
            .iter()
            .map(|(_, t)| {
                t.grad()
                    .map(|g| g.to_vec::<f32>().unwrap())
                    .unwrap_or_default()
            })
            .collect();
        s.zero_grad();
        out
    };
    let max_diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
            .fold(0.0f32, f32::max)
    };
    let with_constants = manual(true);
    assert!(max_diff(&grads, &with_constants) < 1e-5);
    // Without the stop-gradient the gradient is different (so the comparison can fail).
    let without = manual(false);
    assert!(max_diff(&grads, &without) > 1e-4);
}

#[test]
fn moco_queue_takes_the_new_keys_and_wraps() {
    let cfg = tiny(MethodName::MocoV2); // queue of 20, 16 keys per step of 8 images
    let mut g = Generator::new(6);
    let mut m = MocoV2::new(&cfg, &mut g).unwrap();
    m.set_train(true);
    assert!(m.buffers().iter().any(|(n, _)| n == "queue"));
    assert!(m.buffers().iter().any(|(n, _)| n == "queue_ptr"));
    let rows = |t: &Tensor| -> Vec<Vec<f32>> {
        t.to_vec::<f32>()
            .unwrap()
            .chunks(16)
            .map(|r| r.to_vec())
            .collect()
    };
    let q0 = rows(&m.queue);
    let mut keys = Vec::new();
    for step in 0..2 {
        let b = batch(&InputKind::Views { count: 2 }, &mut g);
        let p = Progress { step, total: 2 };
        m.forward(&b, p, &mut g).unwrap();
        let x = Tensor::concat(&[&b.views[0], &b.views[1]], 0).unwrap();
        keys.push(rows(
            &m.target
                .forward(&x)
                .unwrap()
                .l2_normalize(-1, 1e-12)
                .unwrap(),
        ));
        m.after_step(p).unwrap();
    }
    let q = rows(&m.queue);
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
    // Step 0 wrote rows 0..16; step 1 wrote rows 16..20 and wrapped to 0..12.
    for r in 0..12 {
        assert!(close(&q[r], &keys[1][4 + r]), "row {r}");
    }
    for r in 12..16 {
        assert!(close(&q[r], &keys[0][r]), "row {r}");
    }
    for r in 16..20 {
        assert!(close(&q[r], &keys[1][r - 16]), "row {r}");
        assert!(!close(&q[r], &q0[r]));
    }
    assert_eq!(m.queue_ptr.to_vec::<i64>().unwrap(), vec![12]);
    // Every row is a unit vector.
    for r in &q {
        let n: f32 = r.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
    // More keys than the queue holds: only the last 20 are kept, in order from the pointer.
    let many = Tensor::randn(&[25, 16], 0.0, 1.0, DType::F32, &mut g).unwrap();
    m.enqueue(&many).unwrap();
    let mr = rows(&many);
    let q = rows(&m.queue);
    for i in 0..20 {
        assert!(close(&q[(12 + i) % 20], &mr[5 + i]));
    }
    assert_eq!(m.queue_ptr.to_vec::<i64>().unwrap(), vec![12]);
    assert!(m.enqueue(&Tensor::zeros(&[2, 3], DType::F32)).is_err());
    // A pointer out of range (an edited checkpoint) wraps: 45 is row 5 of 20.
    m.queue_ptr
        .assign(&Tensor::from_vec(vec![45i64], &[1]).unwrap())
        .unwrap();
    let two = Tensor::randn(&[2, 16], 0.0, 1.0, DType::F32, &mut g).unwrap();
    m.enqueue(&two).unwrap();
    let (tr, q) = (rows(&two), rows(&m.queue));
    assert!(close(&q[5], &tr[0]) && close(&q[6], &tr[1]));
    assert_eq!(m.queue_ptr.to_vec::<i64>().unwrap(), vec![7]);
}

#[test]
fn dino_centre_moves_by_its_ema() {
    let cfg = tiny(MethodName::Dino);
    let mut g = Generator::new(7);
    let mut d = Dino::new(&cfg, &mut g).unwrap();
    d.set_train(true);
    assert!(d.buffers().iter().any(|(n, _)| n == "center"));
    for step in 0..2 {
        let b = batch(&d.input(), &mut g);
        let p = Progress { step, total: 2 };
        let c0 = d.center.to_vec::<f32>().unwrap();
        d.forward(&b, p, &mut g).unwrap();
        let x = Tensor::concat(&[&b.views[0], &b.views[1]], 0).unwrap();
        let t = d.teacher(&x).unwrap().to_vec::<f32>().unwrap();
        d.after_step(p).unwrap();
        let c1 = d.center.to_vec::<f32>().unwrap();
        let k = cfg.dino_out_dim;
        let mut moved = false;
        for j in 0..k {
            let mean: f64 = (0..16).map(|i| t[i * k + j] as f64).sum::<f64>() / 16.0;
            let want = cfg.center_momentum * c0[j] as f64 + (1.0 - cfg.center_momentum) * mean;
            assert!(
                (c1[j] as f64 - want).abs() < 1e-6,
                "{j}: {} vs {want}",
                c1[j]
            );
            moved |= c1[j] != c0[j];
        }
        assert!(moved);
    }
}
