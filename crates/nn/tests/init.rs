//! Initialisers: bounds, spreads, determinism; module utilities.

use selfsup_nn::init::{self, FanMode};
use selfsup_nn::schedule::ema_update;
use selfsup_nn::{Linear, Mlp, MlpConfig, Module};
use selfsup_tensor::{DType, Generator};

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, std, v.iter().fold(0.0f64, |m, x| m.max(x.abs())))
}

#[test]
fn linear_default_init_is_pytorch_uniform() {
    let mut g = Generator::new(0);
    let l = Linear::new(64, 128, true, DType::F32, &mut g).unwrap();
    let b = 1.0 / 8.0;
    let (_, std, max) = stats(&l.weight.to_vec_f64().unwrap());
    assert!(max <= b);
    assert!((std - b / 3f64.sqrt()).abs() < 0.005, "{std}");
    let (_, _, max) = stats(&l.bias.as_ref().unwrap().to_vec_f64().unwrap());
    assert!(max <= b);
}

#[test]
fn initialisers_have_the_right_spread_and_are_deterministic() {
    let shape = [200, 100];
    let mut g = Generator::new(1);
    let w = init::kaiming_normal(&shape, 0.0, FanMode::FanIn, DType::F64, &mut g).unwrap();
    let (m, s, _) = stats(&w.to_vec_f64().unwrap());
    assert!(
        m.abs() < 0.01 && (s - (2.0f64 / 100.0).sqrt()).abs() < 0.005,
        "{m} {s}"
    );
    let w = init::kaiming_uniform(&shape, 0.0, FanMode::FanOut, DType::F64, &mut g).unwrap();
    let (_, s, max) = stats(&w.to_vec_f64().unwrap());
    assert!(max <= (6.0f64 / 200.0).sqrt() && (s - (2.0f64 / 200.0).sqrt()).abs() < 0.005);
    let w = init::xavier_uniform(&shape, 1.0, DType::F64, &mut g).unwrap();
    let (_, s, max) = stats(&w.to_vec_f64().unwrap());
    assert!(max <= (6.0f64 / 300.0).sqrt() && (s - (2.0f64 / 300.0).sqrt()).abs() < 0.005);
    let w = init::xavier_normal(&shape, 2.0, DType::F64, &mut g).unwrap();
    let (_, s, _) = stats(&w.to_vec_f64().unwrap());
    assert!((s - 2.0 * (2.0f64 / 300.0).sqrt()).abs() < 0.01);
    let w = init::trunc_normal(&shape, 0.0, 1.0, -0.5, 1.0, DType::F32, &mut g).unwrap();
    assert!(w
        .to_vec_f64()
        .unwrap()
        .iter()
        .all(|x| (-0.5..=1.0).contains(x)));
    assert!(init::trunc_normal(&shape, 0.0, 1.0, 1.0, -1.0, DType::F32, &mut g).is_err());
    assert!(init::fans(&[3]).is_err());
    assert_eq!(init::fans(&[8, 4, 3, 3]).unwrap(), (36, 72));
    let a = init::kaiming_uniform(
        &shape,
        0.0,
        FanMode::FanIn,
        DType::F32,
        &mut Generator::new(5),
    )
    .unwrap();
    let b = init::kaiming_uniform(
        &shape,
        0.0,
        FanMode::FanIn,
        DType::F32,
        &mut Generator::new(5),
    )
    .unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    assert_eq!(
        init::ones(&[2], DType::F32).to_vec::<f32>().unwrap(),
        vec![1.0, 1.0]
    );
    assert_eq!(
        init::zeros(&[2], DType::F32).to_vec::<f32>().unwrap(),
        vec![0.0, 0.0]
    );
}

#[test]
fn copy_from_then_ema_builds_a_target_network() {
    let mut g = Generator::new(2);
    let mut cfg = MlpConfig::new(4, 8, 3, 2);
    cfg.batch_norm = true;
    let online = Mlp::new(&cfg, DType::F32, &mut g).unwrap();
    let target = Mlp::new(&cfg, DType::F32, &mut g).unwrap();
    target.copy_from(&online).unwrap();
    for ((_, a), (_, b)) in online.params().iter().zip(target.params()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        assert!(!a.same_storage(&b));
    }
    ema_update(&target.params(), &online.params(), 0.99).unwrap();
    let other = Mlp::new(&MlpConfig::new(4, 8, 2, 2), DType::F32, &mut g).unwrap();
    let msg = other.copy_from(&online).unwrap_err().to_string();
    assert!(msg.contains("fc.1.weight"), "{msg}");
}
