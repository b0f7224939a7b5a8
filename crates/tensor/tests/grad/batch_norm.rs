//! Fused batch norm (+ ReLU): gradient checks in training and evaluation mode, with and
//! without affine parameters and ReLU, on ranks 2-4 and non-contiguous inputs; forward against
//! the composed form; f32 against f64; error messages.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{Result, Tensor};

/// The composed reference: `(x - mean) / sqrt(var + eps) * w + b`, then ReLU.
fn composed(
    x: &Tensor,
    stats: Option<(&Tensor, &Tensor)>,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let c = x.shape()[1];
    let mut bshape = vec![1; x.rank()];
    bshape[1] = c;
    let axes: Vec<isize> = (0..x.rank() as isize).filter(|&a| a != 1).collect();
    let (mean, var) = match stats {
        Some((m, v)) => (m.reshape(&bshape)?, v.reshape(&bshape)?),
        None => {
            let m = x.mean(&axes, true)?;
            let v = x.sub(&m)?.sqr()?.mean(&axes, true)?;
            (m, v)
        }
    };
    let mut y = x.sub(&mean)?.mul(&var.add_scalar(eps)?.rsqrt()?)?;
    if let Some(w) = w {
        y = y.mul(&w.reshape(&bshape)?)?;
    }
    if let Some(b) = b {
        y = y.add(&b.reshape(&bshape)?)?;
    }
    if relu {
        y = y.relu()?;
    }
    Ok(y)
}

#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    training: bool,
    relu: bool,
    affine: bool,
    v: Variant,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..=3,
            1usize..=3,
            prop::collection::vec(1usize..=3, 0..=2),
        ),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        variant(),
        0u64..1000,
    )
        .prop_map(|((n, c, rest), (training, relu, affine), v, seed)| {
            let mut shape = vec![n.max(2), c];
            shape.extend(rest);
            Case {
                shape,
                training,
                relu,
                affine,
                v,
                seed,
            }
        })
}

/// The inputs of a case: x (as a leaf for `view`), then w, b, then mean, var in eval mode.
fn inputs(cs: &Case) -> Vec<Tensor> {
    let c = cs.shape[1];
    let mut v = vec![uniform(&leaf_shape(&cs.shape, cs.v), cs.seed, -2.0, 2.0)];
    if cs.affine {
        v.push(away_from_zero(&[c], cs.seed + 1));
        v.push(uniform(&[c], cs.seed + 2, -0.5, 0.5));
    }
    if !cs.training {
        v.push(uniform(&[c], cs.seed + 3, -0.5, 0.5));
        v.push(uniform(&[c], cs.seed + 4, 0.3, 2.0));
    }
    v
}

/// Runs the fused op (or the composed reference) on the inputs of a case.
fn run(cs: &Case, xs: &[Tensor], fused: bool) -> Result<Tensor> {
    let x = view(&xs[0], cs.v)?;
    let (w, b) = if cs.affine {
        (Some(&xs[1]), Some(&xs[2]))
    } else {
        (None, None)
    };
    let k = if cs.affine { 3 } else { 1 };
    let stats = (!cs.training).then(|| (&xs[k], &xs[k + 1]));
    let eps = 1e-3;
    if !fused {
        return composed(&x, stats, w, b, eps, cs.relu);
    }
    match stats {
        None => Ok(x.batch_norm_train(w, b, eps, cs.relu)?.0),
        Some((m, v)) => x.batch_norm_eval(m, v, w, b, eps, cs.relu),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn grad_batch_norm(cs in case()) {
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
fn batch_statistics_are_mean_and_biased_variance() {
    let x = Tensor::from_vec(
        vec![1.0f64, 2.0, 10.0, 20.0, 3.0, 6.0, 30.0, 60.0],
        &[2, 2, 2],
    )
    .unwrap();
    let (_, mean, var) = x.batch_norm_train(None, None, 1e-5, false).unwrap();
    assert_eq!(mean.to_vec::<f64>().unwrap(), vec![3.0, 30.0]);
    // Channel 0: 1, 2, 3, 6 around 3 -> (4 + 1 + 0 + 9) / 4.
    let v = var.to_vec::<f64>().unwrap();
    assert!(
        (v[0] - 3.5).abs() < 1e-12 && (v[1] - 350.0).abs() < 1e-9,
        "{v:?}"
    );
}

#[test]
fn large_f32_batch_matches_f64_statistics() {
    // Many values with a large common offset: the f64 row accumulation keeps the mean exact
    // enough that the normalised output has mean ~0 and variance ~1.
    let n = 64;
    let s = 28 * 28;
    let data: Vec<f32> = (0..n * 2 * s)
        .map(|i| 1000.0 + ((i * 7919) % 1013) as f32 * 0.01)
        .collect();
    let x = Tensor::from_vec(data, &[n, 2, 28, 28]).unwrap();
    let (y, _, _) = x.batch_norm_train(None, None, 0.0, false).unwrap();
    let y = y.to_vec_f64().unwrap();
    let m = y.iter().sum::<f64>() / y.len() as f64;
    let v = y.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / y.len() as f64;
    assert!(
        m.abs() < 1e-3 && (v - 1.0).abs() < 1e-3,
        "mean {m}, var {v}"
    );
}

#[test]
fn bad_inputs_name_the_problem() {
    let x = Tensor::zeros(&[4, 3], selfsup_tensor::DType::F64);
    let w = Tensor::ones(&[2], selfsup_tensor::DType::F64);
    let e = x.batch_norm_train(Some(&w), None, 1e-5, false).unwrap_err();
    assert!(
        e.to_string().contains("weight has shape [2], expected [3]"),
        "{e}"
    );
    let e = Tensor::zeros(&[1, 3], selfsup_tensor::DType::F64)
        .batch_norm_train(None, None, 1e-5, false)
        .unwrap_err();
    assert!(
        e.to_string().contains("more than one value per channel"),
        "{e}"
    );
    let e = Tensor::zeros(&[4], selfsup_tensor::DType::F64)
        .batch_norm_train(None, None, 1e-5, false)
        .unwrap_err();
    assert!(e.to_string().contains("rank >= 2"), "{e}");
    let e = x.batch_norm_train(None, None, -1.0, false).unwrap_err();
    assert!(e.to_string().contains("eps"), "{e}");
}

#[test]
fn long_spatial_rows_match_the_composed_form() {
    // 5 x 7 = 35 values per channel and image: two full 16-lane chunks and a tail, which the
    // small proptest shapes never reach, and 20 images: two partial per-channel sums (16
    // images each); training mode with ReLU and affine parameters, and evaluation mode
    // without ReLU.
    for (training, relu) in [(true, true), (false, false), (true, false)] {
        let cs = Case {
            shape: vec![20, 2, 5, 7],
            training,
            relu,
            affine: true,
            v: Variant::Plain,
            seed: 11,
        };
        let ins: Vec<Tensor> = inputs(&cs).iter().map(|t| t.requires_grad_()).collect();
        let g = uniform(&cs.shape, 12, -1.0, 1.0);
        let grads = |fused: bool| -> Vec<Vec<f64>> {
            let xs: Vec<Tensor> = ins.iter().map(|t| t.detach().requires_grad_()).collect();
            let y = run(&cs, &xs, fused).unwrap();
            y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y.to_vec::<f64>().unwrap()];
            out.extend(
                xs.iter()
                    .map(|t| t.grad().unwrap().to_vec::<f64>().unwrap()),
            );
            out
        };
        let (fused, reference) = (grads(true), grads(false));
        for (k, (a, b)) in fused.iter().zip(&reference).enumerate() {
            for (u, v) in a.iter().zip(b) {
                assert!((u - v).abs() < 1e-10, "{cs:?} output/grad {k}: {u} vs {v}");
            }
        }
    }
}
