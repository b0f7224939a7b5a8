//! Shared strategies and helpers for the gradient-check suite.

use proptest::prelude::*;
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{Result, Tensor};

/// The suite's bar for `|analytic - numeric| / max(1, |numeric|)`.
pub const TOL: f64 = 1e-6;

/// How an input reaches the op: as it is, through a permutation, or as a strided slice.
#[derive(Clone, Copy, Debug)]
pub enum Variant {
    Plain,
    Permuted,
    Sliced,
}

pub fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::Plain),
        Just(Variant::Permuted),
        Just(Variant::Sliced)
    ]
}

pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..=max_dim, 1..=max_rank)
}

/// The shape of the leaf that `view` turns into `shape`.
pub fn leaf_shape(shape: &[usize], v: Variant) -> Vec<usize> {
    match v {
        Variant::Plain => shape.to_vec(),
        Variant::Permuted => shape.iter().rev().copied().collect(),
        Variant::Sliced => {
            let mut s = shape.to_vec();
            if let Some(l) = s.last_mut() {
                *l += 2;
            }
            s
        }
    }
}

/// The view of a leaf that has the wanted shape (non-contiguous for Permuted/Sliced).
pub fn view(x: &Tensor, v: Variant) -> Result<Tensor> {
    match v {
        Variant::Plain => Ok(x.clone()),
        Variant::Permuted => {
            let p: Vec<usize> = (0..x.rank()).rev().collect();
            x.permute(&p)
        }
        Variant::Sliced => {
            let last = x.shape()[x.rank() - 1];
            x.narrow(-1, 1, last - 2)
        }
    }
}

/// Uniform values in `[lo, hi)` from a seed.
pub fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    let mut p = Philox::new(seed, 17);
    Tensor::from_vec(
        (0..n)
            .map(|_| p.uniform_range(lo, hi))
            .collect::<Vec<f64>>(),
        shape,
    )
    .unwrap()
}

/// Values with magnitude in `[0.2, 2)` and random sign: away from the kinks at 0.
pub fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let mut p = Philox::new(seed, 23);
    Tensor::from_vec(
        (0..n)
            .map(|_| {
                let m = p.uniform_range(0.2, 2.0);
                if p.bernoulli(0.5) {
                    m
                } else {
                    -m
                }
            })
            .collect::<Vec<f64>>(),
        shape,
    )
    .unwrap()
}

/// Distinct values (a shuffled ramp): no ties for max/min.
pub fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut p = Philox::new(seed, 29);
    let perm = p.permutation(n);
    Tensor::from_vec(
        perm.into_iter()
            .map(|i| i as f64 * 0.37 - n as f64 * 0.1)
            .collect::<Vec<f64>>(),
        shape,
    )
    .unwrap()
}

/// Runs a gradient check and fails the proptest case with the report if it is off.
pub fn assert_grad<F: Fn(&[Tensor]) -> Result<Tensor>>(
    f: F,
    inputs: &[Tensor],
) -> std::result::Result<(), TestCaseError> {
    let r = check_grad(f, inputs)
        .map_err(|e| TestCaseError::fail(format!("check_grad failed: {e}")))?;
    prop_assert!(r.max_error < TOL, "gradient mismatch: {r:?}");
    Ok(())
}
