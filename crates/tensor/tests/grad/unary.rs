//! Gradient checks of the elementwise unary ops and scalar variants.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{Result, Tensor};

type UnaryFn = fn(&Tensor) -> Result<Tensor>;

/// (name, op, input domain: 0 = any real away from 0, 1 = positive)
fn ops() -> Vec<(&'static str, UnaryFn, u8)> {
    vec![
        ("neg", |x| x.neg(), 0),
        ("exp", |x| x.exp(), 0),
        ("log", |x| x.log(), 1),
        ("sqrt", |x| x.sqrt(), 1),
        ("rsqrt", |x| x.rsqrt(), 1),
        ("abs", |x| x.abs(), 0),
        ("relu", |x| x.relu(), 0),
        ("leaky_relu", |x| x.leaky_relu(0.1), 0),
        ("gelu_erf", |x| x.gelu(), 0),
        ("gelu_tanh", |x| x.gelu_tanh(), 0),
        ("sigmoid", |x| x.sigmoid(), 0),
        ("tanh", |x| x.tanh(), 0),
        ("silu", |x| x.silu(), 0),
        ("clamp", |x| x.clamp(-0.5, 0.7), 0),
        ("sqr", |x| x.sqr(), 0),
        ("recip", |x| x.recip(), 0),
        ("add_scalar", |x| x.add_scalar(1.5), 0),
        ("mul_scalar", |x| x.mul_scalar(-2.5), 0),
        ("pow_scalar", |x| x.pow_scalar(2.5), 1),
        ("div_scalar", |x| x.div_scalar(3.0), 0),
    ]
}

fn input(shape: &[usize], seed: u64, domain: u8) -> Tensor {
    match domain {
        1 => uniform(shape, seed, 0.3, 3.0),
        // Keep clamp's inputs off its bounds by more than the FD step.
        _ => away_from_zero(shape, seed),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    #[test]
    fn grad_unary_ops(shape in shape(3, 4), v in variant(), seed in 0u64..1000) {
        for (name, op, domain) in ops() {
            let x = input(&leaf_shape(&shape, v), seed, domain);
            let r = selfsup_tensor::gradcheck::check_grad(|xs| op(&view(&xs[0], v)?), &[x.clone()]).unwrap();
            prop_assert!(r.max_error < TOL, "{name}: {r:?}");
            let e = f32_vs_f64(|xs| op(&view(&xs[0], v)?), &[x]).unwrap();
            prop_assert!(e < 1e-5, "{name}: f32 differs from f64 by {e}");
        }
    }

    #[test]
    fn grad_unary_input_used_twice(shape in shape(3, 4), seed in 0u64..1000) {
        let x = away_from_zero(&shape, seed);
        assert_grad(|xs| xs[0].tanh()?.mul(&xs[0])?.add(&xs[0].exp()?), &[x])?;
    }
}
