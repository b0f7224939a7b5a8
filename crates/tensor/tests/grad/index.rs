//! Gradient checks of index_select/embedding, gather, one_hot and the losses (with the fused
//! linear head and cross-entropy).

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Tensor};

fn ids(n: usize, below: usize, seed: u64) -> Tensor {
    let mut p = Philox::new(seed, 5);
    Tensor::from_vec(
        (0..n)
            .map(|_| p.below(below as u64) as i64)
            .collect::<Vec<i64>>(),
        &[n],
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn grad_index_select_and_embedding(s in shape(3, 4), n in 1usize..7, axis_pick in 0usize..3, seed in 0u64..1000) {
        let axis = axis_pick % s.len();
        let x = uniform(&s, seed, -1.0, 1.0);
        // Repeated indices check that the backward accumulates.
        let id = ids(n, s[axis], seed);
        assert_grad(|xs| xs[0].index_select(axis as isize, &id)?.sqr(), &[x])?;
        let table = uniform(&[5, 3], seed, -1.0, 1.0);
        let tok = ids(6, 5, seed + 1).reshape(&[2, 3]).unwrap();
        assert_grad(|xs| xs[0].embedding(&tok)?.sqr(), &[table])?;
    }

    #[test]
    fn grad_gather(s in shape(3, 4), axis_pick in 0usize..3, seed in 0u64..1000) {
        let axis = axis_pick % s.len();
        let x = uniform(&s, seed, -1.0, 1.0);
        let mut is = s.clone();
        is[axis] = s[axis] + 1; // more picks than rows: duplicates accumulate
        if s.len() > 1 { let o = (axis + 1) % s.len(); is[o] = s[o].max(2) - 1; }
        let n: usize = is.iter().product();
        let id = ids(n, s[axis], seed).reshape(&is).unwrap();
        assert_grad(|xs| xs[0].gather(axis as isize, &id)?.sqr(), &[x])?;
    }

    #[test]
    fn grad_cross_entropy(n in 1usize..6, c in 2usize..6, smooth in prop_oneof![Just(0.0), Just(0.1)], ignore in any::<bool>(), seed in 0u64..1000) {
        let logits = uniform(&[n, c], seed, -2.0, 2.0);
        let mut t = ids(n, c, seed).to_vec::<i64>().unwrap();
        if ignore && n > 1 { t[0] = -100; }
        let t = Tensor::from_vec(t, &[n]).unwrap();
        let opts = CrossEntropy { ignore_index: Some(-100), label_smoothing: smooth, mean: true };
        assert_grad(|xs| xs[0].cross_entropy_with(&t, &opts), &[logits.clone()])?;
        // Against the composite definition.
        let fused = logits.cross_entropy_with(&t, &opts).unwrap().item().unwrap();
        let lp = logits.log_softmax(1).unwrap().to_vec::<f64>().unwrap();
        let tv = t.to_vec::<i64>().unwrap();
        let (mut total, mut count) = (0.0, 0.0);
        for r in 0..n {
            if tv[r] == -100 { continue; }
            let row = &lp[r * c..(r + 1) * c];
            total += -(1.0 - smooth) * row[tv[r] as usize] - smooth * row.iter().sum::<f64>() / c as f64;
            count += 1.0;
        }
        prop_assert!((fused - total / count).abs() < 1e-12, "{fused} vs {}", total / count);
    }

    #[test]
    fn grad_linear_cross_entropy(n in 1usize..6, k in 1usize..5, c in 2usize..6, bias in any::<bool>(), tx in any::<bool>(), smooth in prop_oneof![Just(0.0), Just(0.1)], ignore in any::<bool>(), seed in 0u64..1000) {
        // x optionally stored transposed (a strided view).
        let x = uniform(&if tx { [k, n] } else { [n, k] }, seed, -1.0, 1.0);
        let w = uniform(&[c, k], seed + 1, -1.0, 1.0);
        let b = uniform(&[c], seed + 2, -1.0, 1.0);
        let mut t = ids(n, c, seed).to_vec::<i64>().unwrap();
        if ignore && n > 1 { t[0] = -100; }
        let t = Tensor::from_vec(t, &[n]).unwrap();
        let opts = CrossEntropy { ignore_index: Some(-100), label_smoothing: smooth, mean: true };
        let view = |x: &Tensor| if tx { x.t() } else { Ok(x.clone()) };
        let f = |xs: &[Tensor]| Ok(view(&xs[0])?.linear_cross_entropy(&xs[1], bias.then_some(&xs[2]), &t, &opts)?.0);
        assert_grad(f, &[x.clone(), w.clone(), b.clone()])?;
        // The composition's loss, and its logits without a gradient.
        let (loss, logits) = view(&x).unwrap().linear_cross_entropy(&w, bias.then_some(&b), &t, &opts).unwrap();
        let z = view(&x).unwrap().linear(&w, bias.then_some(&b)).unwrap();
        prop_assert!(!logits.requires_grad());
        prop_assert_eq!(logits.to_vec::<f64>().unwrap(), z.to_vec::<f64>().unwrap());
        prop_assert_eq!(loss.item().unwrap(), z.cross_entropy_with(&t, &opts).unwrap().item().unwrap());
    }

    #[test]
    fn grad_mse_l2_normalize_cosine(s in shape(3, 4), v in variant(), seed in 0u64..1000) {
        let a = uniform(&leaf_shape(&s, v), seed, -1.0, 1.0);
        let b = uniform(&s, seed + 1, -1.0, 1.0);
        assert_grad(|xs| view(&xs[0], v)?.mse_loss(&xs[1]), &[a.clone(), b.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.l2_normalize(-1, 1e-8), &[a.clone()])?;
        assert_grad(|xs| view(&xs[0], v)?.cosine_similarity(&xs[1], -1, 1e-8), &[a, b])?;
    }

    #[test]
    fn grad_dropout_with_fixed_generator(s in shape(3, 4), seed in 0u64..1000) {
        let x = uniform(&s, seed, -1.0, 1.0);
        assert_grad(|xs| xs[0].dropout(0.3, true, &mut selfsup_tensor::Generator::new(seed))?.sqr(), &[x])?;
    }
}

#[test]
fn index_errors_are_clear() {
    let x = Tensor::zeros(&[3, 2], DType::F32);
    let bad = Tensor::from_vec(vec![0i64, 3], &[2]).unwrap();
    assert_eq!(
        x.index_select(0, &bad).unwrap_err().to_string(),
        "index_select: index 3 is out of range for size 3"
    );
    let logits = Tensor::zeros(&[2, 4], DType::F32);
    let t = Tensor::from_vec(vec![1i64, 4], &[2]).unwrap();
    assert_eq!(
        logits.cross_entropy(&t).unwrap_err().to_string(),
        "cross_entropy: index 4 is out of range for size 4"
    );
    let e = logits
        .cross_entropy(&Tensor::from_vec(vec![1i64], &[1]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 4]") && e.contains("[1]"), "{e}");
}

#[test]
fn dropout_keeps_expected_fraction_and_is_reproducible() {
    let x = Tensor::ones(&[10_000], DType::F32);
    let a = x
        .dropout(0.25, true, &mut selfsup_tensor::Generator::new(9))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let b = x
        .dropout(0.25, true, &mut selfsup_tensor::Generator::new(9))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(a, b);
    let kept = a.iter().filter(|&&v| v > 0.0).count() as f64 / 1e4;
    assert!((kept - 0.75).abs() < 0.02, "{kept}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(
        x.dropout(0.25, false, &mut selfsup_tensor::Generator::new(9))
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0; 10_000]
    );
}

#[test]
fn linear_cross_entropy_errors_name_the_shapes() {
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32);
    let t = Tensor::from_vec(vec![0i64, 1, 2, 0], &[4]).unwrap();
    let opts = CrossEntropy::default();
    assert_eq!(
        z(&[4, 3]).linear_cross_entropy(&z(&[5, 2]), None, &t, &opts).unwrap_err().to_string(),
        "linear_cross_entropy: needs input [N, in], weight [classes, in] and targets [N], got [4, 3], [5, 2] and [4]"
    );
    assert!(z(&[3, 3])
        .linear_cross_entropy(&z(&[5, 3]), None, &t, &opts)
        .is_err());
    assert!(z(&[4, 3])
        .linear_cross_entropy(&z(&[5, 3]), Some(&z(&[4])), &t, &opts)
        .is_err());
    let bad = Tensor::from_vec(vec![0i64, 1, 9, 0], &[4]).unwrap();
    assert!(z(&[4, 3])
        .linear_cross_entropy(&z(&[5, 3]), None, &bad, &opts)
        .is_err());
    let (loss, logits) = z(&[4, 3])
        .linear_cross_entropy(&z(&[5, 3]), None, &t, &opts)
        .unwrap();
    assert_eq!(logits.shape(), &[4, 5]);
    assert!((loss.item().unwrap() - 5f64.ln()).abs() < 1e-6);
}
