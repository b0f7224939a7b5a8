//! Evaluation protocols: confusion matrix, kNN, linear probe, PCA / t-SNE, label subsets,
//! fine-tuning and the supervised baseline.

use selfsup_data::ImageDataset;
use selfsup_nn::Module;
use selfsup_ssl::eval::baselines::pixel_features;
use selfsup_ssl::eval::*;
use selfsup_ssl::{BackboneConfig, Encoder};
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{Generator, Tensor};

fn t2(v: &[f64], n: usize, d: usize) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(f, &[n, d]).unwrap()
}

#[test]
fn confusion_matrix_counts_accuracy_recall() {
    let truth = [0, 0, 1, 1, 2, 2, 2];
    let pred = [0, 1, 1, 1, 2, 0, 2];
    let m = ConfusionMatrix::from_predictions(&truth, &pred, 3).unwrap();
    assert_eq!(m.counts, vec![1, 1, 0, 0, 2, 0, 1, 0, 2]);
    assert!((m.accuracy() - 5.0 / 7.0).abs() < 1e-12);
    let r = m.per_class_recall();
    assert!((r[0] - 0.5).abs() < 1e-12 && (r[1] - 1.0).abs() < 1e-12);
    assert!((r[2] - 2.0 / 3.0).abs() < 1e-12);
    let md = m.to_markdown(Some(&["a", "b", "c"]));
    assert!(md.contains("| c | 1 | 0 | 2 | 66.7% |"), "{md}");
    assert!(ConfusionMatrix::from_predictions(&[0, 1], &[0], 2).is_err());
    assert!(ConfusionMatrix::from_predictions(&[0, 3], &[0, 1], 2).is_err());
    assert_eq!(ConfusionMatrix::new(2).accuracy(), 0.0);
}

/// Unit vectors at the given angles.
fn at_angles(a: &[f64]) -> Tensor {
    let v: Vec<f64> = a.iter().flat_map(|t| [t.cos(), t.sin()]).collect();
    t2(&v, a.len(), 2)
}

#[test]
fn knn_hand_example_weighting_changes_the_vote() {
    // One class-0 neighbour right at the query, two class-1 neighbours 0.5 rad away, two far
    // class-0 points that only vote if k is ignored.
    let train = at_angles(&[0.3, 0.8, -0.2, 2.8, 3.1]);
    let labels = [0, 1, 1, 0, 0];
    // Scaling must not matter (cosine similarity).
    let test = t2(&[3.0 * 0.3f64.cos(), 3.0 * 0.3f64.sin()], 1, 2);
    let weighted = KnnConfig {
        k: 3,
        temperature: 0.07,
        center: false,
    };
    let flat = KnnConfig {
        k: 3,
        temperature: 1e6,
        center: false,
    };
    assert_eq!(
        knn_classify(&train, &labels, &test, 2, &weighted).unwrap(),
        vec![0]
    );
    assert_eq!(
        knn_classify(&train, &labels, &test, 2, &flat).unwrap(),
        vec![1]
    );
    // With every point voting (k = 5) the flat vote goes 3 to 2 for class 0.
    let all = KnnConfig {
        k: 5,
        temperature: 1e6,
        center: false,
    };
    assert_eq!(
        knn_classify(&train, &labels, &test, 2, &all).unwrap(),
        vec![0]
    );
    assert!(knn_classify(&train, &labels[..4], &test, 2, &flat).is_err());
    assert!(knn_classify(&train, &[0, 1, 2, 0, 0], &test, 2, &flat).is_err());
}

#[test]
fn knn_center_equals_classifying_centred_rows() {
    let mut r = Philox::new(11, 0);
    let (n, m, d, classes) = (300, 120, 6, 4);
    // All-positive features (as after ReLU + pooling) with a class-dependent direction.
    let labels: Vec<usize> = (0..n).map(|_| r.below(classes as u64) as usize).collect();
    let row = |r: &mut Philox, c: usize| -> Vec<f64> {
        (0..d)
            .map(|j| 3.0 + if j % classes == c { 0.6 } else { 0.0 } + 0.5 * r.normal_f64().abs())
            .collect()
    };
    let train: Vec<f64> = labels.iter().flat_map(|&c| row(&mut r, c)).collect();
    let test: Vec<f64> = (0..m)
        .flat_map(|_| {
            let c = r.below(classes as u64) as usize;
            row(&mut r, c)
        })
        .collect();
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| train[i * d + j]).sum::<f64>() / n as f64)
        .collect();
    let shift =
        |v: &[f64]| -> Vec<f64> { v.iter().enumerate().map(|(i, x)| x - mean[i % d]).collect() };
    let cfg = |center| KnnConfig {
        k: 10,
        temperature: 0.1,
        center,
    };
    let centred = knn_classify(
        &t2(&train, n, d),
        &labels,
        &t2(&test, m, d),
        classes,
        &cfg(true),
    )
    .unwrap();
    let by_hand = knn_classify(
        &t2(&shift(&train), n, d),
        &labels,
        &t2(&shift(&test), m, d),
        classes,
        &cfg(false),
    )
    .unwrap();
    let agree = centred.iter().zip(&by_hand).filter(|(a, b)| a == b).count();
    assert!(agree >= m - 1, "{agree}/{m} agree");
    // And centring is not a no-op on these rows.
    let plain = knn_classify(
        &t2(&train, n, d),
        &labels,
        &t2(&test, m, d),
        classes,
        &cfg(false),
    )
    .unwrap();
    assert_ne!(plain, centred);
}

#[test]
fn knn_select_checks_its_grid() {
    let train = at_angles(&[0.1, 0.2, 1.6, 1.7, 0.15, 1.65, 0.12, 1.62, 0.18, 1.68]);
    let labels = [0, 0, 1, 1, 0, 1, 0, 1, 0, 1];
    assert!(knn_select(&train, &labels, 2, &[], &[0.1], false, 0).is_err());
    assert!(knn_select(&train, &labels, 2, &[3], &[], false, 0).is_err());
    assert!(knn_select(&train, &labels, 2, &[3], &[-1.0], false, 0).is_err());
    // Two clean clusters: every pair is perfect, so the first one wins.
    let s = knn_select(&train, &labels, 2, &[1, 3], &[0.05, 0.5], false, 0).unwrap();
    assert_eq!((s.k, s.temperature, s.val_accuracy), (1, 0.05, 1.0));
}

/// Brute-force weighted kNN in f64.
fn knn_reference(
    train: &[f64],
    labels: &[usize],
    test: &[f64],
    d: usize,
    classes: usize,
    k: usize,
    t: f64,
) -> Vec<usize> {
    let unit = |r: &[f64]| {
        let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        r.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    let tr: Vec<Vec<f64>> = train.chunks(d).map(unit).collect();
    test.chunks(d)
        .map(|q| {
            let q = unit(q);
            let mut s: Vec<(f64, usize)> = tr
                .iter()
                .enumerate()
                .map(|(j, r)| (r.iter().zip(&q).map(|(a, b)| a * b).sum(), j))
                .collect();
            s.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            let mut votes = vec![0.0; classes];
            for &(sim, j) in &s[..k] {
                votes[labels[j]] += (sim / t).exp();
            }
            let mut best = 0;
            for c in 1..classes {
                if votes[c] > votes[best] {
                    best = c;
                }
            }
            best
        })
        .collect()
}

#[test]
fn knn_matches_brute_force_reference() {
    let mut r = Philox::new(7, 0);
    let (n, m, d, classes) = (700, 300, 8, 5);
    let train: Vec<f64> = (0..n * d).map(|_| r.normal_f64()).collect();
    let test: Vec<f64> = (0..m * d).map(|_| r.normal_f64()).collect();
    let labels: Vec<usize> = (0..n).map(|_| r.below(classes as u64) as usize).collect();
    // Round through f32 so both sides see the same inputs.
    let rd = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>();
    let (train, test) = (rd(&train), rd(&test));
    for (k, t) in [(1, 0.07), (20, 0.07), (7, 0.5)] {
        let got = knn_classify(
            &t2(&train, n, d),
            &labels,
            &t2(&test, m, d),
            classes,
            &KnnConfig {
                k,
                temperature: t,
                center: false,
            },
        )
        .unwrap();
        let want = knn_reference(&train, &labels, &test, d, classes, k, t);
        let agree = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        // f32 vs f64 similarities may swap an exact near-tie at the k-th place; nothing more.
        assert!(agree >= m - 1, "k={k}: {agree}/{m} agree");
    }
}

/// Gaussian blobs: `n` rows of `d` dims, class `c` centred at `sep * e_c`.
fn blobs(n: usize, d: usize, classes: usize, sep: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let mut r = Philox::new(seed, 1);
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        for j in 0..d {
            x.push(r.normal_f64() + if j == c { sep } else { 0.0 });
        }
        y.push(c);
    }
    (x, y)
}

#[test]
fn logistic_regression_separates_separable_data() {
    let (x, y) = blobs(300, 6, 3, 12.0, 3);
    let probe = LinearProbe::fit(&t2(&x, 300, 6), &y, 3, &LinearConfig::default()).unwrap();
    let pred = probe.predict(&t2(&x, 300, 6)).unwrap();
    assert_eq!(pred, y);
    assert!(probe.val_accuracy == 1.0);
    assert_eq!(probe.l2_scores.len(), LinearConfig::default().l2.len());
    assert_eq!(probe.folds, 5);
}

/// Gradient of `mean CE + l2/2 |W|^2` at `(w [d, c], b [c])` on rows `x`, in f64.
fn reference_grad(
    x: &[f64],
    y: &[usize],
    w: &[f64],
    b: &[f64],
    d: usize,
    c: usize,
    l2: f64,
) -> Vec<f64> {
    let n = y.len();
    let mut g = vec![0.0; d * c + c];
    for i in 0..n {
        let row = &x[i * d..(i + 1) * d];
        let z: Vec<f64> = (0..c)
            .map(|k| b[k] + (0..d).map(|j| row[j] * w[j * c + k]).sum::<f64>())
            .collect();
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
        for k in 0..c {
            let r = (z[k] - mx).exp() / s - if k == y[i] { 1.0 } else { 0.0 };
            for j in 0..d {
                g[j * c + k] += r * row[j] / n as f64;
            }
            g[d * c + k] += r / n as f64;
        }
    }
    for j in 0..d * c {
        g[j] += l2 * w[j];
    }
    g
}

#[test]
fn logistic_regression_reaches_the_optimum() {
    // Noisy, overlapping classes: the optimum is interior and depends on l2.
    let (n, d, c) = (150, 5, 3);
    let (x, _) = blobs(n, d, c, 1.0, 11);
    let mut r = Philox::new(5, 5);
    let y: Vec<usize> = (0..n)
        .map(|i| {
            if r.uniform_f64() < 0.6 {
                i % c
            } else {
                r.below(3) as usize
            }
        })
        .collect();
    let feats = t2(&x, n, d);
    for l2 in [1e-3, 1e-1] {
        let p = LinearProbe::fit_l2(&feats, &y, c, l2, 2000, 1e-9).unwrap();
        let xs = p.scaler.apply(&feats).unwrap().to_vec_f64().unwrap();
        let w = p.weight.to_vec_f64().unwrap();
        let b = p.bias.to_vec_f64().unwrap();
        let g = reference_grad(&xs, &y, &w, &b, d, c, l2);
        let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(gmax < 1e-4, "l2 {l2}: gradient {gmax} at the solution");
        // And the weights are not trivially zero.
        assert!(w.iter().any(|v| v.abs() > 1e-2));
    }
    let cfg = LinearConfig::default();
    let p = LinearProbe::fit(&feats, &y, c, &cfg).unwrap();
    // The chosen candidate has the lowest validation cross-entropy, ties to the larger penalty.
    let best = p
        .l2_scores
        .iter()
        .map(|s| s.loss)
        .fold(f64::INFINITY, f64::min);
    let first = p.l2_scores.iter().find(|s| s.loss == best).unwrap();
    assert_eq!(
        (p.l2, p.val_accuracy, p.val_loss),
        (first.l2, first.accuracy, first.loss)
    );
    assert!(cfg.l2.contains(&p.l2));
}

/// `n` 4x4 grayscale images whose pixels depend on the label plus noise.
fn tiny_images(n: usize, classes: usize, seed: u64) -> ImageDataset {
    let mut r = Philox::new(seed, 2);
    let mut px = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        for j in 0..16 {
            let base = if j % classes == c { 150.0 } else { 90.0 };
            px.push((base + 60.0 * r.normal_f64()).clamp(0.0, 255.0) as u8);
        }
        labels.push(c as i64);
    }
    ImageDataset::new(px, [n, 1, 4, 4], Some(labels), vec![]).unwrap()
}

#[test]
fn l2_is_chosen_without_looking_at_test_labels() {
    let train = tiny_images(200, 4, 1);
    let test = tiny_images(100, 4, 2);
    let mut scrambled = test.clone();
    if let Some(l) = &mut scrambled.labels {
        l.reverse();
        l.rotate_left(1);
    }
    let cfg = LinearConfig {
        max_iter: 300,
        ..Default::default()
    };
    let (acc_a, _, pa) = pixels_logreg(&train, &test, &cfg).unwrap();
    let (acc_b, _, pb) = pixels_logreg(&train, &scrambled, &cfg).unwrap();
    assert_eq!(pa.l2, pb.l2);
    assert_eq!(pa.l2_scores, pb.l2_scores);
    assert_eq!(
        pa.weight.to_vec::<f32>().unwrap(),
        pb.weight.to_vec::<f32>().unwrap()
    );
    assert_ne!(
        acc_a, acc_b,
        "scrambled test labels must change the test score only"
    );
    assert!(acc_a > 0.5, "pixel logreg on easy images: {acc_a}");
    // The features are the pixels in [0, 1].
    let f = pixel_features(&train).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(f[0], train.pixels[0] as f32 / 255.0);
}

#[test]
fn pca_recovers_the_dominant_direction() {
    let (n, d) = (400, 5);
    let u = [3.0, 1.0, 0.0, -2.0, 1.0];
    let un = (u.iter().map(|x| x * x).sum::<f64>()).sqrt();
    let mut r = Philox::new(9, 9);
    let mut x = Vec::new();
    let mut t = Vec::new();
    for _ in 0..n {
        let a = 10.0 * r.normal_f64();
        t.push(a);
        for (j, uj) in u.iter().enumerate() {
            x.push(5.0 + a * uj / un + r.normal_f64() * if j == 2 { 3.0 } else { 0.5 });
        }
    }
    let y = pca_2d(&t2(&x, n, d)).unwrap();
    let corr = |a: &[f64], b: &[f64]| {
        let ma = a.iter().sum::<f64>() / a.len() as f64;
        let mb = b.iter().sum::<f64>() / b.len() as f64;
        let cov: f64 = a.iter().zip(b).map(|(p, q)| (p - ma) * (q - mb)).sum();
        let va: f64 = a.iter().map(|p| (p - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|q| (q - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    };
    let p0: Vec<f64> = y.iter().map(|v| v[0]).collect();
    let p1: Vec<f64> = y.iter().map(|v| v[1]).collect();
    assert!(corr(&p0, &t).abs() > 0.99, "{}", corr(&p0, &t));
    // The second component is the noisy axis 2, uncorrelated with the first.
    let x2: Vec<f64> = x.chunks(d).map(|r| r[2]).collect();
    assert!(corr(&p1, &x2).abs() > 0.9, "{}", corr(&p1, &x2));
    assert!(corr(&p0, &p1).abs() < 1e-6);
    let var = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
    assert!(var(&p0) > 5.0 * var(&p1));
}

#[test]
fn tsne_keeps_separated_clusters_apart() {
    let (n, d) = (80, 10);
    let mut r = Philox::new(3, 3);
    let mut x = Vec::new();
    for i in 0..n {
        for j in 0..d {
            let centre = if i < n / 2 {
                0.0
            } else if j == 0 {
                15.0
            } else {
                0.0
            };
            x.push(centre + r.normal_f64());
        }
    }
    let y = tsne_2d(&t2(&x, n, d), 10.0, 400, 0).unwrap();
    assert!(y.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
    let dist = |a: [f64; 2], b: [f64; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let centre = |s: &[[f64; 2]]| {
        let k = s.len() as f64;
        [
            s.iter().map(|p| p[0]).sum::<f64>() / k,
            s.iter().map(|p| p[1]).sum::<f64>() / k,
        ]
    };
    let (a, b) = y.split_at(n / 2);
    let (ca, cb) = (centre(a), centre(b));
    let spread = y[..n / 2]
        .iter()
        .map(|&p| dist(p, ca))
        .chain(b.iter().map(|&p| dist(p, cb)))
        .fold(0.0, f64::max);
    assert!(
        dist(ca, cb) > 2.0 * spread,
        "centres {} apart, spread {spread}",
        dist(ca, cb)
    );
    // Every point's nearest neighbour is in its own cluster.
    for i in 0..n {
        let j = (0..n)
            .filter(|&j| j != i)
            .min_by(|&p, &q| dist(y[i], y[p]).total_cmp(&dist(y[i], y[q])))
            .unwrap();
        assert_eq!(i < n / 2, j < n / 2);
    }
    assert!(tsne_2d(&t2(&x, n, d), 200.0, 10, 0).is_err());
}

#[test]
fn labelled_subset_is_stratified_and_seeded() {
    let data = tiny_images(100, 5, 4);
    let a = labelled_subset(&data, 4, 0).unwrap();
    assert_eq!(a.len, 20);
    let l = a.labels.clone().unwrap();
    for c in 0..5 {
        assert_eq!(l.iter().filter(|&&x| x == c).count(), 4);
    }
    assert_eq!(a, labelled_subset(&data, 4, 0).unwrap());
    assert_ne!(a.pixels, labelled_subset(&data, 4, 1).unwrap().pixels);
    assert!(labelled_subset(&data, 21, 0).is_err());
    let mut unl = data.clone();
    unl.labels = None;
    assert!(labelled_subset(&unl, 1, 0).is_err());
}

/// 12x12 images: label 0 bright on the left half, label 1 bright on the right.
fn left_right(n: usize, seed: u64) -> ImageDataset {
    let mut r = Philox::new(seed, 4);
    let (h, w) = (12, 12);
    let mut px = Vec::with_capacity(n * h * w);
    let mut labels = Vec::new();
    for i in 0..n {
        let c = (i % 2) as i64;
        let (lo, hi) = (
            20.0 + 40.0 * r.uniform_f64(),
            160.0 + 60.0 * r.uniform_f64(),
        );
        for _ in 0..h {
            for x in 0..w {
                let bright = (x < w / 2) == (c == 0);
                let v = if bright { hi } else { lo } + 15.0 * r.normal_f64();
                px.push(v.clamp(0.0, 255.0) as u8);
            }
        }
        labels.push(c);
    }
    ImageDataset::new(
        px,
        [n, 1, h, w],
        Some(labels),
        vec!["left".into(), "right".into()],
    )
    .unwrap()
}

fn tiny_backbone() -> BackboneConfig {
    BackboneConfig {
        in_channels: 1,
        image_size: 12,
        widths: vec![4, 8, 8],
        ..Default::default()
    }
}

#[test]
fn finetune_with_frozen_encoder_trains_only_the_head() {
    let data = left_right(80, 1);
    let mut g = Generator::new(0);
    let mut enc = Encoder::new(&tiny_backbone(), false, false, &mut g).unwrap();
    let before: Vec<(String, Vec<f64>)> = enc
        .params()
        .into_iter()
        .chain(enc.buffers())
        .map(|(n, t)| (n, t.to_vec_f64().unwrap()))
        .collect();
    let cfg = FinetuneConfig {
        epochs: 4,
        lr: 1e-2,
        batch: 16,
        freeze: FreezePolicy::All,
        augment: false,
        patience: 0,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let (clf, res) = finetune(&mut enc, &data, None, 2, &cfg, &mut |e, _, l, a| {
        seen.push((e, l, a))
    })
    .unwrap();
    let head_after = clf.head.weight.to_vec::<f32>().unwrap();
    assert_eq!(res.epochs_run, 4);
    assert_eq!(seen, res.history);
    assert!(
        res.history[3].1 < res.history[0].1,
        "head loss must go down: {:?}",
        res.history
    );
    let fresh = selfsup_nn::Linear::new(
        8,
        2,
        true,
        selfsup_tensor::DType::F32,
        &mut Generator::new(0),
    )
    .unwrap();
    assert_ne!(head_after, fresh.weight.to_vec::<f32>().unwrap());
    drop(clf);
    let after: Vec<(String, Vec<f64>)> = enc
        .params()
        .into_iter()
        .chain(enc.buffers())
        .map(|(n, t)| (n, t.to_vec_f64().unwrap()))
        .collect();
    assert_eq!(before, after, "a frozen encoder must stay bit-identical");

    // Freezing the lower two stages of three leaves exactly those untouched.
    let mut enc2 = Encoder::new(&tiny_backbone(), false, false, &mut Generator::new(0)).unwrap();
    assert_eq!(
        finetune::stages(&enc2),
        vec!["blocks.0", "blocks.1", "blocks.2"]
    );
    let before2 = enc2.params();
    let before2: Vec<(String, Vec<f32>)> = before2
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec::<f32>().unwrap()))
        .collect();
    let cfg2 = FinetuneConfig {
        freeze: FreezePolicy::Lower(2),
        encoder_lr_scale: 1.0,
        epochs: 2,
        ..cfg.clone()
    };
    finetune(&mut enc2, &data, None, 2, &cfg2, &mut |_, _, _, _| {}).unwrap();
    for ((n, b), (_, t)) in before2.iter().zip(enc2.params()) {
        let same = *b == t.to_vec::<f32>().unwrap();
        assert_eq!(same, !n.starts_with("blocks.2"), "{n}");
    }
    let bad = FinetuneConfig {
        freeze: FreezePolicy::Lower(4),
        ..cfg
    };
    assert!(finetune(&mut enc2, &data, None, 2, &bad, &mut |_, _, _, _| {}).is_err());
}

#[test]
fn finetune_runs_at_least_min_steps() {
    // 80 images, 20% held out: 64 to fit, 4 steps of 16 per epoch.
    let data = left_right(80, 1);
    let mut enc = Encoder::new(&tiny_backbone(), false, false, &mut Generator::new(0)).unwrap();
    let cfg = FinetuneConfig {
        epochs: 1,
        min_steps: 10,
        batch: 16,
        augment: false,
        patience: 0,
        ..Default::default()
    };
    let (_, res) = finetune(&mut enc, &data, None, 2, &cfg, &mut |_, _, _, _| {}).unwrap();
    assert_eq!(res.epochs_run, 3, "ceil(10 / 4) epochs");
    let cfg = FinetuneConfig { epochs: 5, ..cfg };
    let (_, res) = finetune(&mut enc, &data, None, 2, &cfg, &mut |_, _, _, _| {}).unwrap();
    assert_eq!(res.epochs_run, 5, "epochs already give more than min_steps");
}

#[test]
fn supervised_from_scratch_learns_an_easy_task() {
    let train = left_right(160, 1);
    let test = left_right(100, 2);
    let cfg = FinetuneConfig {
        epochs: 8,
        lr: 1e-2,
        batch: 16,
        augment: false,
        patience: 4,
        ..Default::default()
    };
    let (acc, cm) = supervised_from_scratch(
        &tiny_backbone(),
        &train,
        &test,
        None,
        &cfg,
        &mut |_, _, _, _| {},
    )
    .unwrap();
    assert_eq!(cm.total(), 100);
    assert!(acc > 0.9, "accuracy {acc}\n{}", cm.to_markdown(None));
}

#[test]
fn features_and_standardisation() {
    let data = left_right(10, 3);
    let mut enc = Encoder::new(&tiny_backbone(), false, false, &mut Generator::new(1)).unwrap();
    let f = extract_features(&mut enc, &data, None, 3).unwrap();
    assert_eq!(f.shape(), &[10, 8]);
    // Batching must not change eval-mode features.
    let g = extract_features(&mut enc, &data, None, 10).unwrap();
    let (a, b) = (f.to_vec::<f32>().unwrap(), g.to_vec::<f32>().unwrap());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    // Standardisation uses the first argument's statistics only.
    let tr = t2(&[1.0, 10.0, 3.0, 10.0, 5.0, 10.0], 3, 2);
    let te = t2(&[3.0, 11.0], 1, 2);
    let (s, t) = standardize(&tr, &te).unwrap();
    let s = s.to_vec::<f32>().unwrap();
    let sd = (8.0f32 / 3.0).sqrt();
    assert!((s[0] + 2.0 / sd).abs() < 1e-6 && s[1] == 0.0);
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
}
