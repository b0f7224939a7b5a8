//! Gradient checks of the broadcasting binary ops and where/masked_fill.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::{Result, Tensor};

/// An output shape and two operand shapes that broadcast to it.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        shape(3, 4),
        prop::collection::vec(any::<bool>(), 3),
        prop::collection::vec(any::<bool>(), 3),
        0usize..2,
        0usize..2,
    )
        .prop_map(|(s, ma, mb, da, db)| {
            let a: Vec<usize> = s
                .iter()
                .zip(&ma)
                .map(|(&d, &m)| if m { 1 } else { d })
                .collect();
            let b: Vec<usize> = s
                .iter()
                .zip(&mb)
                .map(|(&d, &m)| if m { 1 } else { d })
                .collect();
            let da = da.min(a.len() - 1);
            let db = db.min(b.len() - 1);
            (a[da..].to_vec(), b[db..].to_vec())
        })
}

type BinFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn ops() -> Vec<(&'static str, BinFn, bool)> {
    // (name, op, needs positive lhs)
    vec![
        ("add", |a, b| a.add(b), false),
        ("sub", |a, b| a.sub(b), false),
        ("mul", |a, b| a.mul(b), false),
        ("div", |a, b| a.div(b), false),
        ("pow", |a, b| a.pow(b), true),
        ("maximum", |a, b| a.maximum(b), false),
        ("minimum", |a, b| a.minimum(b), false),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn grad_binary_broadcast((sa, sb) in broadcast_pair(), va in variant(), vb in variant(), seed in 0u64..1000) {
        for (name, op, pos) in ops() {
            let a = if pos { uniform(&leaf_shape(&sa, va), seed, 0.5, 2.0) } else { away_from_zero(&leaf_shape(&sa, va), seed) };
            // The rhs is kept away from 0 (div's gradient grows like 1/b^2, where central
            // differences lose precision) and drawn from another stream than the lhs, so
            // maximum/minimum have no exact ties.
            let b = away_from_zero(&leaf_shape(&sb, vb), seed + 1);
            let r = selfsup_tensor::gradcheck::check_grad(|xs| op(&view(&xs[0], va)?, &view(&xs[1], vb)?), &[a, b]).unwrap();
            prop_assert!(r.max_error < TOL, "{name} {sa:?} {sb:?}: {r:?}");
        }
    }

    #[test]
    fn grad_binary_same_input_twice(s in shape(3, 4), seed in 0u64..1000) {
        let x = away_from_zero(&s, seed);
        assert_grad(|xs| xs[0].mul(&xs[0])?.div(&xs[0].abs()?.add_scalar(1.0)?), &[x])?;
    }

    #[test]
    fn grad_where_and_masked_fill((sa, sb) in broadcast_pair(), seed in 0u64..1000) {
        let a = away_from_zero(&sa, seed);
        let b = away_from_zero(&sb, seed + 7);
        assert_grad(|xs| {
            let cond = xs[0].gt(&xs[1])?.detach();
            xs[0].where_(&cond, &xs[1].mul_scalar(2.0)?)
        }, &[a.clone(), b])?;
        assert_grad(|xs| xs[0].masked_fill(&xs[0].gt_scalar(0.0)?, 3.0), &[a])?;
    }
}

#[test]
fn broadcast_error_names_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3], selfsup_tensor::DType::F32);
    let b = Tensor::zeros(&[4], selfsup_tensor::DType::F32);
    let e = a.add(&b).unwrap_err().to_string();
    assert_eq!(e, "add: shapes [2, 3] and [4] cannot be broadcast together");
    let c = Tensor::zeros(&[2, 3], selfsup_tensor::DType::F64);
    assert!(a
        .mul(&c)
        .unwrap_err()
        .to_string()
        .contains("dtype mismatch"));
}
