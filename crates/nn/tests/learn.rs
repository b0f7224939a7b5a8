//! A two-layer MLP learns a small generated classification task.

use selfsup_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use selfsup_nn::{Mlp, MlpConfig, Module};
use selfsup_tensor::{DType, Generator, Tensor};

/// Four Gaussian blobs at (±1, ±1), labelled XOR-style (not linearly separable).
pub fn xor_blobs(n: usize, g: &mut Generator) -> (Tensor, Tensor) {
    let mut p = g.fork();
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = (p.bernoulli(0.5), p.bernoulli(0.5));
        let cx = if a { 1.0 } else { -1.0 };
        let cy = if b { 1.0 } else { -1.0 };
        x.push((cx + 0.25 * p.normal_f64()) as f32);
        x.push((cy + 0.25 * p.normal_f64()) as f32);
        y.push((a ^ b) as i64);
    }
    (
        Tensor::from_vec(x, &[n, 2]).unwrap(),
        Tensor::from_vec(y, &[n]).unwrap(),
    )
}

fn accuracy(m: &Mlp, x: &Tensor, y: &Tensor) -> f64 {
    let pred = m
        .forward(x)
        .unwrap()
        .argmax(-1, false)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    let y = y.to_vec::<i64>().unwrap();
    pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
}

fn train(opt_of: impl Fn(&Mlp) -> Box<dyn Optimizer>) -> f64 {
    let mut g = Generator::new(11);
    let (x, y) = xor_blobs(256, &mut g);
    let m = Mlp::new(&MlpConfig::new(2, 32, 2, 2), DType::F32, &mut g).unwrap();
    let mut opt = opt_of(&m);
    for _ in 0..300 {
        opt.zero_grad();
        m.forward(&x)
            .unwrap()
            .cross_entropy(&y)
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
    }
    accuracy(&m, &x, &y)
}

#[test]
fn mlp_learns_xor_blobs_with_sgd() {
    let acc = train(|m| {
        Box::new(Sgd::new(
            m.params(),
            SgdConfig {
                lr: 0.2,
                momentum: 0.9,
                ..Default::default()
            },
        ))
    });
    assert!(acc >= 0.99, "accuracy {acc}");
}

#[test]
fn mlp_learns_xor_blobs_with_adamw() {
    let acc = train(|m| {
        Box::new(Adam::adamw(
            m.params(),
            AdamConfig {
                lr: 1e-2,
                ..AdamConfig::adamw()
            },
        ))
    });
    assert!(acc >= 0.99, "accuracy {acc}");
}
