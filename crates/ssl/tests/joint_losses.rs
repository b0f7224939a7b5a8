//! The joint-embedding losses (InfoNCE with a queue and in-batch, BYOL, negative cosine,
//! Barlow Twins, VICReg, DINO) against hand-computed values and straightforward f64 loop
//! implementations, with finite-difference gradient checks on proptest-drawn small shapes.

use proptest::prelude::*;
use selfsup_ssl::loss::{
    barlow_twins, byol_loss, dino_center, dino_loss, info_nce_batch, info_nce_queue,
    negative_cosine, vicreg, VicregWeights, BARLOW_EPS, VICREG_EPS,
};
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::{DType, Generator, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

fn rows(x: &Tensor) -> Vec<Vec<f64>> {
    let d = x.shape()[1];
    x.to_vec::<f64>()
        .unwrap()
        .chunks(d)
        .map(|r| r.to_vec())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn unit(a: &[f64]) -> Vec<f64> {
    let n = dot(a, a).sqrt();
    a.iter().map(|x| x / n).collect()
}

fn cos(a: &[f64], b: &[f64]) -> f64 {
    dot(&unit(a), &unit(b))
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut Generator::new(seed)).unwrap()
}

fn item(x: Tensor) -> f64 {
    x.item().unwrap()
}

// ---------- hand-computed values ----------

#[test]
fn info_nce_hand_values() {
    // q = k = e1, one negative e2: logits [1/T, 0] -> log(1 + exp(-1/T)).
    let tt = 0.2;
    let e1 = t(&[1.0, 0.0], &[1, 2]);
    let e2 = t(&[0.0, 1.0], &[1, 2]);
    let want = (1.0 + (-1.0f64 / tt).exp()).ln();
    assert!((item(info_nce_queue(&e1, &e1, &e2, tt).unwrap()) - want).abs() < 1e-12);
    // Scaling q and k does not matter (they are normalised).
    let big = t(&[3.0, 0.0], &[1, 2]);
    assert!((item(info_nce_queue(&big, &e1, &e2, tt).unwrap()) - want).abs() < 1e-12);
    // In-batch: two orthogonal pairs, each query sees its key at cos 1 and the other at 0.
    let q = t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
    assert!((item(info_nce_batch(&q, &q, tt).unwrap()) - want).abs() < 1e-12);
    // Errors: shape mismatch, queue width, temperature.
    assert!(info_nce_queue(&e1, &q, &e2, tt).is_err());
    assert!(info_nce_queue(&e1, &e1, &t(&[1.0, 0.0, 0.0], &[1, 3]), tt).is_err());
    assert!(info_nce_batch(&q, &q, 0.0).is_err());
}

#[test]
fn byol_and_negative_cosine_hand_values() {
    let z = t(&[1.0, 2.0, -1.0, 0.5], &[2, 2]);
    let neg = z.neg().unwrap();
    let ortho = t(&[-2.0, 1.0, -0.5, -1.0], &[2, 2]);
    assert!(item(byol_loss(&z.mul_scalar(3.0).unwrap(), &z).unwrap()).abs() < 1e-12);
    assert!((item(byol_loss(&neg, &z).unwrap()) - 4.0).abs() < 1e-12);
    assert!((item(byol_loss(&ortho, &z).unwrap()) - 2.0).abs() < 1e-12);
    assert!((item(negative_cosine(&z, &z).unwrap()) + 1.0).abs() < 1e-12);
    assert!((item(negative_cosine(&neg, &z).unwrap()) - 1.0).abs() < 1e-12);
    assert!(item(negative_cosine(&ortho, &z).unwrap()).abs() < 1e-12);
    assert!(byol_loss(&z, &t(&[1.0, 2.0], &[1, 2])).is_err());
}

#[test]
fn barlow_twins_is_zero_on_identical_decorrelated_views() {
    // Columns with mean 0, biased variance 1 and zero correlation: C = I / (1 + eps).
    let z = t(&[1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0, -1.0], &[4, 2]);
    let got = item(barlow_twins(&z, &z, 5e-3).unwrap());
    let c = 1.0 / (1.0 + BARLOW_EPS);
    assert!((got - 2.0 * (1.0 - c) * (1.0 - c)).abs() < 1e-15, "{got}");
    assert!(got < 1e-9);
    // Second view: the first column flipped: C = diag(-c, c): on-diagonal (1 + c)^2.
    let flipped = t(&[-1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0], &[4, 2]);
    let got = item(barlow_twins(&z, &flipped, 5e-3).unwrap());
    assert!((got - ((1.0 + c).powi(2) + (1.0 - c).powi(2))).abs() < 1e-12);
    // Second view: the columns swapped: C = [[0, c], [c, 0]]: 2 + lambda * 2 c^2.
    let swapped = t(&[1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0], &[4, 2]);
    let got = item(barlow_twins(&z, &swapped, 0.5).unwrap());
    assert!((got - (2.0 + 0.5 * 2.0 * c * c)).abs() < 1e-12, "{got}");
    assert!(barlow_twins(&t(&[1.0, 2.0], &[1, 2]), &t(&[1.0, 2.0], &[1, 2]), 0.1).is_err());
    assert!(barlow_twins(&z, &z, -1.0).is_err());
}

#[test]
fn vicreg_on_constant_and_hand_made_embeddings() {
    // Constant embeddings: invariance 0, covariance 0, each dimension's std is sqrt(eps):
    // variance term 1 - sqrt(eps) per dimension, times the weight.
    let z = Tensor::full(0.7, &[5, 3], DType::F64);
    let w = VicregWeights::default();
    let r = vicreg(&z, &z, &w).unwrap();
    let hinge = 1.0 - VICREG_EPS.sqrt();
    assert!((item(r.variance.clone()) - hinge).abs() < 1e-12);
    assert!(item(r.invariance.clone()).abs() < 1e-15);
    assert!(item(r.covariance.clone()).abs() < 1e-15);
    assert!((item(r.loss) - 25.0 * hinge).abs() < 1e-10);
    // Two uncorrelated columns with large variance: no variance or covariance penalty, the
    // invariance term is the mean squared difference.
    let a = t(&[3.0, 3.0, 3.0, -3.0, -3.0, 3.0, -3.0, -3.0], &[4, 2]);
    let b = a.add_scalar(0.5).unwrap();
    let r = vicreg(&a, &b, &w).unwrap();
    assert!(item(r.variance.clone()).abs() < 1e-15);
    assert!(item(r.covariance.clone()).abs() < 1e-15);
    assert!((item(r.invariance) - 0.25).abs() < 1e-12);
    assert!((item(r.loss) - 25.0 * 0.25).abs() < 1e-12);
    // Perfectly correlated columns x, 2x (n = 2, unbiased): cov = [[2, 4], [4, 8]] for x = ±1:
    // off-diagonal squares 2 * 16 / d(2) = 16 per branch.
    let c = t(&[1.0, 2.0, -1.0, -2.0], &[2, 2]);
    let r = vicreg(&c, &c, &w).unwrap();
    assert!((item(r.covariance) - 32.0).abs() < 1e-12);
}

#[test]
fn dino_hand_values_and_centre() {
    // Uniform student: every pair's cross-entropy is log K whatever the teacher.
    let k = 5;
    let s = Tensor::zeros(&[3, k], DType::F64);
    let teach = randn(&[3, k], 1);
    let c = Tensor::zeros(&[1, k], DType::F64);
    let got = item(
        dino_loss(
            &[s.clone(), s.clone(), s.clone()],
            &[teach.clone(), teach.clone()],
            &c,
            0.1,
            0.04,
        )
        .unwrap(),
    );
    assert!((got - (k as f64).ln()).abs() < 1e-12);
    // Centre: m c + (1 - m) mean over all rows of both teacher outputs.
    let c0 = t(&[1.0, 2.0], &[1, 2]);
    let t1 = t(&[0.0, 0.0, 2.0, 4.0], &[2, 2]);
    let t2 = t(&[4.0, 8.0, 2.0, 0.0], &[2, 2]);
    let got = dino_center(&c0, &[t1, t2], 0.9)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    // mean rows = [2, 3]
    assert!((got[0] - (0.9 + 0.2)).abs() < 1e-12 && (got[1] - (1.8 + 0.3)).abs() < 1e-12);
    assert!(dino_loss(
        std::slice::from_ref(&s),
        std::slice::from_ref(&teach),
        &c,
        0.1,
        0.04
    )
    .is_err());
    assert!(dino_loss(
        &[s.clone(), s],
        &[teach],
        &Tensor::zeros(&[1, 2], DType::F64),
        0.1,
        0.04
    )
    .is_err());
}

// ---------- f64 loop references ----------

fn ref_info_nce_queue(q: &Tensor, k: &Tensor, queue: &Tensor, tt: f64) -> f64 {
    let (q, k, queue) = (rows(q), rows(k), rows(queue));
    let mut total = 0.0;
    for i in 0..q.len() {
        let mut logits = vec![cos(&q[i], &k[i]) / tt];
        for n in &queue {
            logits.push(dot(&unit(&q[i]), n) / tt);
        }
        let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
        total += lse - logits[0];
    }
    total / q.len() as f64
}

fn ref_info_nce_batch(q: &Tensor, k: &Tensor, tt: f64) -> f64 {
    let (q, k) = (rows(q), rows(k));
    let mut total = 0.0;
    for i in 0..q.len() {
        let logits: Vec<f64> = k.iter().map(|kj| cos(&q[i], kj) / tt).collect();
        let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
        total += lse - logits[i];
    }
    total / q.len() as f64
}

fn columns(x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..x[0].len())
        .map(|j| x.iter().map(|r| r[j]).collect())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn ref_barlow(a: &Tensor, b: &Tensor, lambda: f64) -> f64 {
    let std = |c: Vec<f64>| -> Vec<f64> {
        let m = mean(&c);
        let var = c.iter().map(|x| (x - m).powi(2)).sum::<f64>() / c.len() as f64;
        c.iter()
            .map(|x| (x - m) / (var + BARLOW_EPS).sqrt())
            .collect()
    };
    let ca: Vec<Vec<f64>> = columns(&rows(a)).into_iter().map(std).collect();
    let cb: Vec<Vec<f64>> = columns(&rows(b)).into_iter().map(std).collect();
    let n = a.shape()[0] as f64;
    let mut loss = 0.0;
    for (i, x) in ca.iter().enumerate() {
        for (j, y) in cb.iter().enumerate() {
            let c = dot(x, y) / n;
            loss += if i == j {
                (1.0 - c).powi(2)
            } else {
                lambda * c * c
            };
        }
    }
    loss
}

fn ref_vicreg(a: &Tensor, b: &Tensor, w: &VicregWeights) -> f64 {
    let (ra, rb) = (rows(a), rows(b));
    let (n, d) = (ra.len(), ra[0].len());
    let mut inv = 0.0;
    for i in 0..n {
        for j in 0..d {
            inv += (ra[i][j] - rb[i][j]).powi(2);
        }
    }
    inv /= (n * d) as f64;
    let branch = |r: &[Vec<f64>]| -> (f64, f64) {
        let cols = columns(r);
        let centred: Vec<Vec<f64>> = cols
            .iter()
            .map(|c| {
                let m = mean(c);
                c.iter().map(|x| x - m).collect()
            })
            .collect();
        let mut var = 0.0;
        let mut cov = 0.0;
        for i in 0..d {
            for j in 0..d {
                let c = dot(&centred[i], &centred[j]) / (n as f64 - 1.0);
                if i == j {
                    var += (1.0 - (c + VICREG_EPS).sqrt()).max(0.0);
                } else {
                    cov += c * c;
                }
            }
        }
        (var / d as f64, cov / d as f64)
    };
    let (va, ca) = branch(&ra);
    let (vb, cb) = branch(&rb);
    w.sim * inv + w.var * (va + vb) / 2.0 + w.cov * (ca + cb)
}

fn ref_dino(student: &[Tensor], teacher: &[Tensor], c: &Tensor, ts: f64, tt: f64) -> f64 {
    let c = c.to_vec::<f64>().unwrap();
    let softmax = |x: &[f64]| -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    };
    let mut total = 0.0;
    let mut pairs = 0;
    for (i, tv) in teacher.iter().enumerate() {
        for (v, sv) in student.iter().enumerate() {
            if v == i {
                continue;
            }
            let (tr, sr) = (rows(tv), rows(sv));
            let mut ce = 0.0;
            for (trow, srow) in tr.iter().zip(&sr) {
                let q = softmax(
                    &trow
                        .iter()
                        .zip(&c)
                        .map(|(x, cc)| (x - cc) / tt)
                        .collect::<Vec<_>>(),
                );
                let p = softmax(&srow.iter().map(|x| x / ts).collect::<Vec<_>>());
                ce -= q.iter().zip(&p).map(|(a, b)| a * b.ln()).sum::<f64>();
            }
            total += ce / tr.len() as f64;
            pairs += 1;
        }
    }
    total / pairs as f64
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() < 1e-9 * (1.0 + want.abs())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    #[test]
    fn info_nce_matches_loops_and_gradients(n in 1usize..5, d in 1usize..5, kq in 1usize..5, seed in 0u64..1000, tt in prop_oneof![Just(0.1), Just(0.5)]) {
        let q = randn(&[n, d], seed);
        let k = randn(&[n, d], seed + 1);
        let queue = randn(&[kq, d], seed + 2).l2_normalize(-1, 1e-12).unwrap();
        let got = item(info_nce_queue(&q, &k, &queue, tt).unwrap());
        let want = ref_info_nce_queue(&q, &k, &queue, tt);
        prop_assert!(close(got, want), "{got} vs {want}");
        let got = item(info_nce_batch(&q, &k, tt).unwrap());
        let want = ref_info_nce_batch(&q, &k, tt);
        prop_assert!(close(got, want), "{got} vs {want}");
        let r = check_grad(|x| info_nce_queue(&x[0], &x[1], &x[2], tt), &[q.clone(), k.clone(), queue]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
        let r = check_grad(|x| info_nce_batch(&x[0], &x[1], tt), &[q, k]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }

    #[test]
    fn cosine_losses_match_loops_and_gradients(n in 1usize..5, d in 1usize..5, seed in 0u64..1000) {
        let p = randn(&[n, d], seed);
        let z = randn(&[n, d], seed + 7);
        let (rp, rz) = (rows(&p), rows(&z));
        let mean_cos = (0..n).map(|i| cos(&rp[i], &rz[i])).sum::<f64>() / n as f64;
        prop_assert!(close(item(byol_loss(&p, &z).unwrap()), 2.0 - 2.0 * mean_cos));
        prop_assert!(close(item(negative_cosine(&p, &z).unwrap()), -mean_cos));
        let r = check_grad(|x| byol_loss(&x[0], &x[1]), &[p.clone(), z.clone()]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
        let r = check_grad(|x| negative_cosine(&x[0], &x[1]), &[p, z]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }

    #[test]
    fn barlow_twins_matches_loop_and_gradients(n in 2usize..6, d in 1usize..5, seed in 0u64..1000, lambda in prop_oneof![Just(0.0), Just(5e-3), Just(0.7)]) {
        let a = randn(&[n, d], seed);
        let b = randn(&[n, d], seed + 3);
        let got = item(barlow_twins(&a, &b, lambda).unwrap());
        let want = ref_barlow(&a, &b, lambda);
        prop_assert!(close(got, want), "{got} vs {want}");
        let r = check_grad(|x| barlow_twins(&x[0], &x[1], lambda), &[a, b]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }

    #[test]
    fn vicreg_matches_loop_and_gradients(n in 2usize..6, d in 1usize..5, seed in 0u64..1000, scale in prop_oneof![Just(0.3), Just(3.0)]) {
        // scale 0.3: the variance hinge is active; 3.0: mostly inactive.
        let a = randn(&[n, d], seed).mul_scalar(scale).unwrap();
        let b = randn(&[n, d], seed + 5).mul_scalar(scale).unwrap();
        let w = VicregWeights { sim: 25.0, var: 25.0, cov: 1.0 };
        let got = item(vicreg(&a, &b, &w).unwrap().loss);
        let want = ref_vicreg(&a, &b, &w);
        prop_assert!(close(got, want), "{got} vs {want}");
        let r = check_grad(|x| Ok(vicreg(&x[0], &x[1], &w).unwrap().loss), &[a, b]).unwrap();
        prop_assert!(r.max_error < 1e-6 * 25.0, "{r:?}");
    }

    #[test]
    fn dino_matches_loop_and_gradients(n in 1usize..4, k in 2usize..6, locals in 0usize..3, seed in 0u64..1000) {
        let student: Vec<Tensor> = (0..2 + locals).map(|v| randn(&[n, k], seed + v as u64)).collect();
        let teacher: Vec<Tensor> = (0..2).map(|v| randn(&[n, k], seed + 100 + v as u64)).collect();
        let c = randn(&[1, k], seed + 200).mul_scalar(0.1).unwrap();
        let (ts, tt) = (0.5, 0.2);
        let got = item(dino_loss(&student, &teacher, &c, ts, tt).unwrap());
        let want = ref_dino(&student, &teacher, &c, ts, tt);
        prop_assert!(close(got, want), "{got} vs {want}");
        let r = check_grad(|x| dino_loss(x, &teacher, &c, ts, tt), &student).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }
}

#[test]
fn dino_sends_no_gradient_to_the_teacher_or_centre() {
    let s: Vec<Tensor> = (0..3).map(|v| randn(&[2, 4], v).requires_grad_()).collect();
    let te: Vec<Tensor> = (0..2)
        .map(|v| randn(&[2, 4], 10 + v).requires_grad_())
        .collect();
    let c = randn(&[1, 4], 20).requires_grad_();
    dino_loss(&s, &te, &c, 0.1, 0.04)
        .unwrap()
        .backward()
        .unwrap();
    assert!(s.iter().all(|x| x.grad().is_some()));
    assert!(te.iter().all(|x| x.grad().is_none()));
    assert!(c.grad().is_none());
}
