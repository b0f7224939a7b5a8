//! Fused layer norm: gradient checks with and without affine parameters on ranks 1-3 and
//! non-contiguous inputs; forward against the composed form; f32 against f64; error messages.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{DType, Result, Tensor};

/// The composed reference: `(x - mean) / sqrt(var + eps) * w + b` over the last axis.
fn composed(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let mean = x.mean(&[-1], true)?;
    let xc = x.sub(&mean)?;
    let var = xc.sqr()?.mean(&[-1], true)?;
    let mut y = xc.mul(&var.add_scalar(eps)?.rsqrt()?)?;
    if let Some(w) = w {
        y = y.mul(w)?;
    }
    if let Some(b) = b {
        y = y.add(b)?;
    }
    Ok(y)
}

#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    weight: bool,
    bias: bool,
    v: Variant,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(1usize..=4, 0..=2),
        2usize..=20,
        (any::<bool>(), any::<bool>()),
        variant(),
        0u64..1000,
    )
        .prop_map(|(lead, d, (weight, bias), v, seed)| {
            let mut shape = lead;
            shape.push(d);
            Case {
                shape,
                weight,
                bias,
                v,
                seed,
            }
        })
}

fn inputs(cs: &Case) -> Vec<Tensor> {
    let d = *cs.shape.last().unwrap();
    let mut v = vec![uniform(&leaf_shape(&cs.shape, cs.v), cs.seed, -2.0, 2.0)];
    if cs.weight {
        v.push(away_from_zero(&[d], cs.seed + 1));
    }
    if cs.bias {
        v.push(uniform(&[d], cs.seed + 2, -0.5, 0.5));
    }
    v
}

fn run(cs: &Case, xs: &[Tensor], fused: bool) -> Result<Tensor> {
    let x = view(&xs[0], cs.v)?;
    let w = cs.weight.then(|| &xs[1]);
    let b = cs.bias.then(|| &xs[if cs.weight { 2 } else { 1 }]);
    if fused {
        x.layer_norm(w, b, 1e-3)
    } else {
        composed(&x, w, b, 1e-3)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn grad_layer_norm(cs in case()) {
        let ins = inputs(&cs);
        assert_grad(|xs| run(&cs, xs, true), &ins)?;
        let fused = run(&cs, &ins, true).unwrap().to_vec::<f64>().unwrap();
        let reference = run(&cs, &ins, false).unwrap().to_vec::<f64>().unwrap();
        for (a, b) in fused.iter().zip(&reference) {
            prop_assert!((a - b).abs() < 1e-12, "{cs:?}: fused {a} vs composed {b}");
        }
        let e = f32_vs_f64(|xs| run(&cs, xs, true), &ins).unwrap();
        prop_assert!(e < 1e-4, "{cs:?}: f32 vs f64 {e}");
    }
}

#[test]
fn many_rows_in_parallel_match_the_composed_form() {
    // More rows than one parallel task holds, so several tasks and the cross-task sum of the
    // parameter gradients are exercised.
    let x = uniform(&[300, 24], 5, -3.0, 3.0).requires_grad_();
    let w = away_from_zero(&[24], 6).requires_grad_();
    let b = uniform(&[24], 7, -1.0, 1.0).requires_grad_();
    let g = uniform(&[300, 24], 8, -1.0, 1.0);
    let fused = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap();
    fused
        .mul(&g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grads: Vec<Vec<f64>> = [&x, &w, &b]
        .iter()
        .map(|t| t.grad().unwrap().to_vec::<f64>().unwrap())
        .collect();
    let (x2, w2, b2) = (
        x.detach().requires_grad_(),
        w.detach().requires_grad_(),
        b.detach().requires_grad_(),
    );
    let reference = composed(&x2, Some(&w2), Some(&b2), 1e-5).unwrap();
    reference
        .mul(&g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (got, t) in grads.iter().zip([&x2, &w2, &b2]) {
        let want = t.grad().unwrap().to_vec::<f64>().unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
    }
}

#[test]
fn bad_inputs_name_the_problem() {
    let x = Tensor::zeros(&[4, 3], DType::F64);
    let w = Tensor::ones(&[2], DType::F64);
    let e = x.layer_norm(Some(&w), None, 1e-5).unwrap_err();
    assert!(
        e.to_string().contains("weight has shape [2], expected [3]"),
        "{e}"
    );
    let e = x.layer_norm(None, None, f64::NAN).unwrap_err();
    assert!(e.to_string().contains("eps"), "{e}");
    let w32 = Tensor::ones(&[3], DType::F32);
    assert!(x.layer_norm(Some(&w32), None, 1e-5).is_err());
}

/// `layer_norm_as` is `layer_norm` then a cast, in values and gradients (the gradient check of
/// `layer_norm` covers the rest): f64 to f64 is `layer_norm` itself, f64 to f32 and f32 to
/// bf16 round its output once and widen the output gradient exactly; it checks its arguments
/// as `layer_norm` does.
#[test]
fn layer_norm_as_is_layer_norm_then_a_cast() {
    let x = uniform(&[5, 7], 3, -2.0, 2.0);
    let w = away_from_zero(&[7], 4);
    let b = uniform(&[7], 5, -0.5, 0.5);
    let g = uniform(&[5, 7], 6, -1.0, 1.0);
    for (from, out) in [
        (DType::F64, DType::F64),
        (DType::F64, DType::F32),
        (DType::F32, DType::BF16),
    ] {
        let leaves = || -> Vec<Tensor> {
            [&x, &w, &b]
                .iter()
                .map(|t| t.to_dtype(from).unwrap().requires_grad_())
                .collect()
        };
        let (a, c) = (leaves(), leaves());
        let ya = a[0]
            .layer_norm_as(Some(&a[1]), Some(&a[2]), 1e-5, out)
            .unwrap();
        let yc = c[0]
            .layer_norm(Some(&c[1]), Some(&c[2]), 1e-5)
            .unwrap()
            .to_dtype(out)
            .unwrap();
        assert_eq!(ya.dtype(), out);
        assert_eq!(
            ya.to_vec_f64().unwrap(),
            yc.to_vec_f64().unwrap(),
            "{from:?} -> {out:?}"
        );
        let seed = g.to_dtype(out).unwrap();
        ya.backward_with(Some(&seed), false).unwrap();
        yc.backward_with(Some(&seed), false).unwrap();
        for (p, q) in a.iter().zip(&c) {
            assert_eq!(
                p.grad().unwrap().to_vec_f64().unwrap(),
                q.grad().unwrap().to_vec_f64().unwrap(),
                "{from:?} -> {out:?} gradient"
            );
        }
    }
    let e = x
        .layer_norm_as(
            Some(&Tensor::ones(&[2], DType::F64)),
            None,
            1e-5,
            DType::F32,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("weight has shape [2], expected [7]"),
        "{e}"
    );
    let e = x.layer_norm_as(None, None, 1e-5, DType::I64).unwrap_err();
    assert!(e.to_string().contains("must be a float dtype"), "{e}");
}
