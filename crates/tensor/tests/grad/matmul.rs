//! Gradient checks of matmul: 2-D, batched, broadcast batch axes, transposed views, 1-D; of
//! linear and of the two-layer perceptron `mlp2`.

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{MlpActivation, Tensor};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn grad_matmul_batched_broadcast(m in 1usize..5, k in 1usize..5, n in 1usize..5, ba in 0usize..3, bb in 0usize..3, ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000) {
        // Batch shapes [] / [1] / [2] broadcast against each other.
        let batch = |b: usize| -> Vec<usize> { match b { 0 => vec![], 1 => vec![1], _ => vec![2] } };
        let (mut sa, mut sb) = (batch(ba), batch(bb));
        // Store transposed when asked, and transpose back inside the function (a strided view).
        sa.extend(if ta { [k, m] } else { [m, k] });
        sb.extend(if tb { [n, k] } else { [k, n] });
        let a = uniform(&sa, seed, -1.0, 1.0);
        let b = uniform(&sb, seed + 1, -1.0, 1.0);
        let f = |xs: &[Tensor]| {
            let a = if ta { xs[0].t()? } else { xs[0].clone() };
            let b = if tb { xs[1].t()? } else { xs[1].clone() };
            a.matmul(&b)
        };
        assert_grad(f, &[a.clone(), b.clone()])?;
        let e = f32_vs_f64(f, &[a, b]).unwrap();
        prop_assert!(e < 1e-5, "f32 vs f64: {e}");
    }

    #[test]
    fn grad_linear_strided_with_and_without_bias(n in 1usize..6, k in 1usize..6, out in 1usize..5, tx in any::<bool>(), tw in any::<bool>(), bias in any::<bool>(), seed in 0u64..1000) {
        // x [n, k] and weight [out, k], each optionally stored transposed (a strided view).
        let x = uniform(&if tx { [k, n] } else { [n, k] }, seed, -1.0, 1.0);
        let w = uniform(&if tw { [k, out] } else { [out, k] }, seed + 1, -1.0, 1.0);
        // The bias is a strided view too: every other element of a [2 * out] buffer.
        let b = uniform(&[2 * out], seed + 2, -1.0, 1.0);
        let f = |xs: &[Tensor]| {
            let x = if tx { xs[0].t()? } else { xs[0].clone() };
            let w = if tw { xs[1].t()? } else { xs[1].clone() };
            let b = xs[2].reshape(&[out, 2])?.select(1, 0)?;
            x.linear(&w, bias.then_some(&b))
        };
        assert_grad(f, &[x.clone(), w.clone(), b.clone()])?;
        let e = f32_vs_f64(f, &[x.clone(), w.clone(), b.clone()]).unwrap();
        prop_assert!(e < 1e-5, "f32 vs f64: {e}");
        // Same values as the composed form.
        let fused = f(&[x.clone(), w.clone(), b.clone()]).unwrap().to_vec_f64().unwrap();
        let xv = if tx { x.t().unwrap() } else { x };
        let wv = if tw { w.t().unwrap() } else { w };
        let mut composed = xv.matmul(&wv.t().unwrap()).unwrap();
        if bias {
            composed = composed.add(&b.reshape(&[out, 2]).unwrap().select(1, 0).unwrap()).unwrap();
        }
        for (a, c) in fused.iter().zip(composed.to_vec_f64().unwrap()) {
            prop_assert!((a - c).abs() < 1e-12, "{a} vs {c}");
        }
    }

    #[test]
    fn grad_mlp2_strided_every_activation(n in 1usize..5, k in 1usize..5, hid in 1usize..6, out in 1usize..4, act in 0usize..6, tx in any::<bool>(), biases in 0usize..4, seed in 0u64..1000) {
        let act = [MlpActivation::Relu, MlpActivation::Gelu, MlpActivation::GeluTanh, MlpActivation::Silu, MlpActivation::Tanh, MlpActivation::Sigmoid][act];
        let (b1, b2) = (biases & 1 == 1, biases & 2 == 2);
        // x optionally stored transposed; the second weight a strided view (every other
        // column of a wider buffer).
        let x = uniform(&if tx { [k, n] } else { [n, k] }, seed, -1.0, 1.0);
        let w1 = uniform(&[hid, k], seed + 1, -1.0, 1.0);
        let w2 = uniform(&[out, 2 * hid], seed + 2, -1.0, 1.0);
        let bv1 = uniform(&[hid], seed + 3, -1.0, 1.0);
        let bv2 = uniform(&[out], seed + 4, -1.0, 1.0);
        let parts = |xs: &[Tensor]| -> selfsup_tensor::Result<[Tensor; 3]> {
            let x = if tx { xs[0].t()? } else { xs[0].clone() };
            let w2 = xs[2].reshape(&[out, hid, 2])?.select(2, 1)?;
            Ok([x, xs[1].clone(), w2])
        };
        let f = |xs: &[Tensor]| {
            let [x, w1, w2] = parts(xs)?;
            x.mlp2(&w1, b1.then_some(&xs[3]), act, &w2, b2.then_some(&xs[4]))
        };
        let inputs = [x, w1, w2, bv1, bv2];
        // Finite differences step over relu's kink; its f32-vs-f64 and composition checks stay.
        if act != MlpActivation::Relu {
            assert_grad(f, &inputs)?;
        }
        let e = f32_vs_f64(f, &inputs).unwrap();
        prop_assert!(e < 1e-5, "f32 vs f64: {e}");
        // The values of the composition it stands for.
        let fused = f(&inputs).unwrap().to_vec_f64().unwrap();
        let [x, w1, w2] = parts(&inputs).unwrap();
        let h = x.linear(&w1, b1.then_some(&inputs[3])).unwrap();
        let composed = act.apply(&h).unwrap().linear(&w2, b2.then_some(&inputs[4])).unwrap();
        for (a, c) in fused.iter().zip(composed.to_vec_f64().unwrap()) {
            prop_assert!((a - c).abs() < 1e-12, "{a} vs {c}");
        }
    }

    #[test]
    fn grad_linear_and_mlp2_with_a_residual(n in 1usize..5, k in 1usize..5, hid in 1usize..5, out in 1usize..4, tr in any::<bool>(), bias in any::<bool>(), seed in 0u64..1000) {
        // The residual optionally stored transposed (a strided view); its gradient is the
        // output's, checked by finite differences with the others'.
        let x = uniform(&[n, k], seed, -1.0, 1.0);
        let w1 = uniform(&[hid, k], seed + 1, -1.0, 1.0);
        let w2 = uniform(&[out, hid], seed + 2, -1.0, 1.0);
        let b1 = uniform(&[hid], seed + 3, -1.0, 1.0);
        let b2 = uniform(&[out], seed + 4, -1.0, 1.0);
        let r = uniform(&if tr { [out, n] } else { [n, out] }, seed + 5, -1.0, 1.0);
        // Stored transposed, or (when n is even) as [2, n / 2, out]: the result takes its shape.
        let res = |t: &Tensor| if tr { t.t() } else if n % 2 == 0 { t.reshape(&[2, n / 2, t.dim(-1)?]) } else { Ok(t.clone()) };
        let lin = |xs: &[Tensor]| xs[0].linear_residual(&xs[1], bias.then_some(&xs[2]), &res(&xs[3])?);
        let ins = [x.clone(), w1.clone(), b1.clone(), uniform(&if tr { [hid, n] } else { [n, hid] }, seed + 6, -1.0, 1.0)];
        assert_grad(lin, &ins)?;
        let e = f32_vs_f64(lin, &ins).unwrap();
        prop_assert!(e < 1e-5, "linear_residual f32 vs f64: {e}");
        let act = MlpActivation::Gelu;
        let mlp = |xs: &[Tensor]| {
            xs[0].mlp2_residual(&xs[1], Some(&xs[2]), act, &xs[3], bias.then_some(&xs[4]), &res(&xs[5])?)
        };
        let ins = [x, w1, b1, w2, b2, r];
        assert_grad(mlp, &ins)?;
        let e = f32_vs_f64(mlp, &ins).unwrap();
        prop_assert!(e < 1e-5, "mlp2_residual f32 vs f64: {e}");
        // The values of the sum it stands for.
        let fused = mlp(&ins).unwrap().to_vec_f64().unwrap();
        let composed = ins[0]
            .mlp2(&ins[1], Some(&ins[2]), act, &ins[3], bias.then_some(&ins[4])).unwrap()
            .reshape(res(&ins[5]).unwrap().shape()).unwrap()
            .add(&res(&ins[5]).unwrap()).unwrap();
        for (a, c) in fused.iter().zip(composed.to_vec_f64().unwrap()) {
            prop_assert!((a - c).abs() < 1e-12, "{a} vs {c}");
        }
    }

    #[test]
    fn grad_matmul_vectors_and_reuse(k in 1usize..6, n in 1usize..5, seed in 0u64..1000) {
        let v = uniform(&[k], seed, -1.0, 1.0);
        let w = uniform(&[k, n], seed + 2, -1.0, 1.0);
        assert_grad(|xs| xs[0].matmul(&xs[1]), &[v.clone(), w.clone()])?;
        assert_grad(|xs| xs[1].t()?.matmul(&xs[0]), &[v.clone(), w])?;
        let sq = uniform(&[k, k], seed + 3, -1.0, 1.0);
        assert_grad(|xs| xs[0].matmul(&xs[0]), &[sq])?;
    }
}

#[test]
fn linear_errors_name_the_shapes() {
    let x = Tensor::zeros(&[4, 3], selfsup_tensor::DType::F32);
    let w = Tensor::zeros(&[2, 5], selfsup_tensor::DType::F32);
    assert_eq!(
        x.linear(&w, None).unwrap_err().to_string(),
        "linear: weight [2, 5] does not fit input [4, 3]: expected [out, 3]"
    );
    let w = Tensor::zeros(&[2, 3], selfsup_tensor::DType::F32);
    let b = Tensor::zeros(&[3], selfsup_tensor::DType::F32);
    assert_eq!(
        x.linear(&w, Some(&b)).unwrap_err().to_string(),
        "linear: bias [3] does not fit weight [2, 3]: expected [2]"
    );
    let x3 = Tensor::zeros(&[1, 4, 3], selfsup_tensor::DType::F32);
    assert!(x3.linear(&w, None).is_err());
}

#[test]
fn mlp2_errors_name_the_shapes() {
    let z = |s: &[usize]| Tensor::zeros(s, selfsup_tensor::DType::F32);
    let (x, w1, w2) = (z(&[4, 3]), z(&[5, 3]), z(&[2, 5]));
    let gelu = MlpActivation::Gelu;
    assert_eq!(
        x.mlp2(&z(&[5, 4]), None, gelu, &w2, None)
            .unwrap_err()
            .to_string(),
        "mlp2: first weight [5, 4] does not fit input [4, 3]: expected [hidden, 3]"
    );
    assert_eq!(
        x.mlp2(&w1, None, gelu, &z(&[2, 4]), None)
            .unwrap_err()
            .to_string(),
        "mlp2: second weight [2, 4] does not fit first weight [5, 3]: expected [out, 5]"
    );
    assert_eq!(
        x.mlp2(&w1, Some(&z(&[3])), gelu, &w2, None)
            .unwrap_err()
            .to_string(),
        "mlp2: first bias [3] does not fit: expected [5]"
    );
    assert_eq!(
        x.mlp2(&w1, None, gelu, &w2, Some(&z(&[5])))
            .unwrap_err()
            .to_string(),
        "mlp2: second bias [5] does not fit: expected [2]"
    );
    assert!(z(&[1, 4, 3]).mlp2(&w1, None, gelu, &w2, None).is_err());
    let w64 = Tensor::zeros(&[5, 3], selfsup_tensor::DType::F64);
    assert!(x.mlp2(&w64, None, gelu, &w2, None).is_err());
    assert_eq!(x.mlp2(&w1, None, gelu, &w2, None).unwrap().shape(), &[4, 2]);
}

#[test]
fn matmul_values_and_errors() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]).unwrap();
    assert_eq!(
        a.matmul(&b).unwrap().to_vec::<f32>().unwrap(),
        vec![4.0, 5.0, 10.0, 11.0]
    );
    let big = Tensor::zeros(&[32, 64], selfsup_tensor::DType::F32);
    let bad = Tensor::zeros(&[65, 10], selfsup_tensor::DType::F32);
    assert_eq!(
        big.matmul(&bad).unwrap_err().to_string(),
        "matmul: lhs [32, 64] and rhs [65, 10] do not agree on the inner dimension"
    );
    // A larger product against a naive loop (exercises the parallel batch path).
    let (bs, m, k, n) = (4, 33, 47, 29);
    let x = uniform(&[bs, m, k], 1, -1.0, 1.0)
        .to_dtype(selfsup_tensor::DType::F32)
        .unwrap();
    let y = uniform(&[k, n], 2, -1.0, 1.0)
        .to_dtype(selfsup_tensor::DType::F32)
        .unwrap();
    let z = x.matmul(&y).unwrap().to_vec::<f32>().unwrap();
    let (xv, yv) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    for bi in 0..bs {
        for i in 0..m {
            for j in 0..n {
                let r: f64 = (0..k)
                    .map(|p| xv[(bi * m + i) * k + p] as f64 * yv[p * n + j] as f64)
                    .sum();
                assert!((z[(bi * m + i) * n + j] as f64 - r).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn residual_ops_name_a_residual_that_does_not_fit() {
    let z = |s: &[usize]| Tensor::zeros(s, selfsup_tensor::DType::F32);
    let (x, w1, w2) = (z(&[4, 3]), z(&[5, 3]), z(&[2, 5]));
    assert_eq!(
        x.linear_residual(&w1, None, &z(&[4, 2]))
            .unwrap_err()
            .to_string(),
        "linear: residual [4, 2] does not fit the output: expected [4, 5], or [.., 5] with 4 rows"
    );
    let gelu = MlpActivation::Gelu;
    assert_eq!(
        x.mlp2_residual(&w1, None, gelu, &w2, None, &z(&[2, 4]))
            .unwrap_err()
            .to_string(),
        "mlp2: residual [2, 4] does not fit the output: expected [4, 2], or [.., 2] with 4 rows"
    );
    let r64 = Tensor::zeros(&[4, 5], selfsup_tensor::DType::F64);
    assert!(x.linear_residual(&w1, None, &r64).is_err());
    assert_eq!(
        x.linear_residual(&w1, None, &z(&[4, 5])).unwrap().shape(),
        &[4, 5]
    );
    // A residual [.., out] holding the rows gives the result its shape.
    assert_eq!(
        x.linear_residual(&w1, None, &z(&[2, 2, 5]))
            .unwrap()
            .shape(),
        &[2, 2, 5]
    );
    assert!(x.linear_residual(&w1, None, &z(&[2, 3, 5])).is_err());
}
