//! NT-Xent against hand-computed values and an independent loop, with gradient checks; collapse
//! diagnostics on healthy and collapsed embeddings.

use proptest::prelude::*;
use selfsup_ssl::diagnostics::diagnostics;
use selfsup_ssl::loss::nt_xent;
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::{DType, Generator, Tensor};

#[test]
fn nt_xent_of_orthogonal_and_identical_embeddings() {
    // Views identical, the two images orthogonal: each anchor sees its positive at cos 1 and the
    // two other rows at cos 0, so loss = log(1 + 2 exp(-1/T)).
    let z = Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], &[4, 2]).unwrap();
    let t = 0.5;
    let want = (1.0 + 2.0 * (-1.0f64 / t).exp()).ln();
    assert!((nt_xent(&z, t).unwrap().item().unwrap() - want).abs() < 1e-12);
    // All rows identical: every candidate is equally similar: loss = log(2N - 1).
    let same = Tensor::ones(&[6, 3], DType::F64);
    assert!((nt_xent(&same, 0.2).unwrap().item().unwrap() - 5f64.ln()).abs() < 1e-12);
    assert!(nt_xent(&Tensor::ones(&[3, 2], DType::F64), 0.5)
        .unwrap_err()
        .to_string()
        .contains("[2N, D]"));
    assert!(nt_xent(&same, 0.0).is_err());
}

/// The loss written as a plain loop over anchors, in f64.
fn reference(z: &[f64], m: usize, d: usize, t: f64) -> f64 {
    let norm: Vec<Vec<f64>> = (0..m)
        .map(|i| {
            let r = &z[i * d..(i + 1) * d];
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / t;
    let mut total = 0.0;
    for i in 0..m {
        let p = (i + m / 2) % m;
        let denom: f64 = (0..m)
            .filter(|&k| k != i)
            .map(|k| dot(&norm[i], &norm[k]).exp())
            .sum();
        total += -(dot(&norm[i], &norm[p]).exp() / denom).ln();
    }
    total / m as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn grad_nt_xent_matches_reference_and_finite_differences(n in 1usize..5, d in 1usize..6, seed in 0u64..1000, t in prop_oneof![Just(0.1), Just(0.5), Just(1.0)]) {
        let z = Tensor::randn(&[2 * n, d], 0.0, 1.0, DType::F64, &mut Generator::new(seed)).unwrap();
        let got = nt_xent(&z, t).unwrap().item().unwrap();
        let want = reference(&z.to_vec::<f64>().unwrap(), 2 * n, d, t);
        prop_assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "{got} vs {want}");
        let r = check_grad(|xs| nt_xent(&xs[0], t), &[z]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }
}

#[test]
fn diagnostics_tell_healthy_from_collapsed() {
    let mut g = Generator::new(3);
    let d = 16;
    let healthy = Tensor::randn(&[256, d], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let h = diagnostics(&healthy, None).unwrap();
    assert!((h.embedding_std - 0.25).abs() < 0.03, "{h:?}");
    assert!(
        h.effective_rank > 14.0 && h.effective_rank <= 16.0 + 1e-9,
        "{h:?}"
    );
    assert!(!h.collapsed());
    // Everything on one direction plus tiny noise: collapsed.
    let dir = Tensor::randn(&[1, d], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let noise = Tensor::randn(&[256, d], 0.0, 1e-4, DType::F64, &mut g).unwrap();
    let c = diagnostics(
        &dir.broadcast_to(&[256, d]).unwrap().add(&noise).unwrap(),
        None,
    )
    .unwrap();
    assert!(c.collapsed(), "{c:?}");
    assert!(c.summary().contains("COLLAPSED"));
    // Rank-2 embeddings: effective rank near 2 (dimensional collapse).
    let basis = Tensor::randn(&[2, d], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let coef = Tensor::randn(&[256, 2], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let r2 = diagnostics(&coef.matmul(&basis).unwrap(), None).unwrap();
    assert!(
        r2.effective_rank < 2.05 && r2.effective_rank > 1.2,
        "{r2:?}"
    );
    // Alignment: identical pairs 0; uniformity of healthy is well below that of collapsed.
    let a = diagnostics(&healthy, Some(&healthy)).unwrap();
    assert!(a.alignment.unwrap().abs() < 1e-12);
    assert!(
        h.uniformity < c.uniformity - 1.0,
        "{} vs {}",
        h.uniformity,
        c.uniformity
    );
}
