//! Weighted k-nearest-neighbour classification on cosine similarity.

use rayon::prelude::*;
use selfsup_tensor::{no_grad, DType, Tensor};

use super::features::{dims2, take_rows};
use crate::error::{config, Result};

/// Settings of [`knn_classify`].
#[derive(Clone, Debug, PartialEq)]
pub struct KnnConfig {
    /// Number of neighbours that vote (clamped to the number of training rows).
    pub k: usize,
    /// Temperature of the vote weights `exp(similarity / temperature)`.
    pub temperature: f64,
    /// Subtract the mean of the training features from every row (training and test) before
    /// L2-normalising. Features after a ReLU and average pooling all lie in one orthant, where
    /// cosine similarities crowd near 1; centring spreads them (SimpleShot's "CL2N").
    pub center: bool,
}

impl Default for KnnConfig {
    /// `k = 20`, `temperature = 0.07` (the InstDisc / DINO protocol), no centring.
    fn default() -> Self {
        KnnConfig {
            k: 20,
            temperature: 0.07,
            center: false,
        }
    }
}

/// Test rows per similarity block: the block's `[rows, N]` similarities are materialised.
const BLOCK: usize = 256;

/// Weighted kNN (InstDisc): rows of `train` and `test` are L2-normalised (after subtracting the
/// training mean when `cfg.center`), so the dot product is the cosine similarity; each test
/// row's `k` most similar training rows vote for their label with weight `exp(sim / T)`, and
/// the class with the largest total wins (ties go to the smaller class index; equally similar
/// neighbours are taken in training-row order).
///
/// Cost: one `[B, D] x [D, N]` matmul per block of `B = 256` test rows, then a single pass over
/// each row of similarities keeping a sorted buffer of the `k` best (rows in parallel with
/// rayon), so `O(M N D)` flops and `O(B N)` memory.
pub fn knn_classify(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    classes: usize,
    cfg: &KnnConfig,
) -> Result<Vec<usize>> {
    let n = check(train, train_labels, test, classes, cfg.k)?;
    check_temperature(cfg.temperature)?;
    let k = cfg.k.min(n);
    let _g = no_grad();
    let (train_n, test_n) = unit_rows(train, test, cfg.center)?;
    let near = neighbours(&train_n, &test_n, k)?;
    Ok(near
        .iter()
        .map(|best| vote(best, train_labels, classes, k, cfg.temperature))
        .collect())
}

/// The `k` and temperature [`knn_select`] chose, and the accuracy that chose them.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnSelection {
    /// Chosen number of neighbours.
    pub k: usize,
    /// Chosen vote temperature.
    pub temperature: f64,
    /// Accuracy of the choice on the validation split.
    pub val_accuracy: f64,
}

/// The neighbour counts [`knn_select`] tries by default.
pub const KNN_KS: [usize; 7] = [1, 5, 10, 20, 50, 100, 200];
/// The vote temperatures [`knn_select`] tries by default.
pub const KNN_TEMPERATURES: [f64; 8] = [0.002, 0.005, 0.01, 0.02, 0.05, 0.07, 0.1, 0.2];

/// Chooses `k` and the temperature of [`knn_classify`] on the labelled rows alone: a stratified
/// 10% of them (seeded with `seed`) is classified by the other 90% for every pair of `ks` x
/// `temperatures`, and the pair with the best validation accuracy wins (ties go to the earlier
/// pair, `ks` outer). The neighbours are searched once, for the largest `k`. `center` is
/// applied as in [`KnnConfig::center`], with the mean of the 90%.
pub fn knn_select(
    train: &Tensor,
    train_labels: &[usize],
    classes: usize,
    ks: &[usize],
    temperatures: &[f64],
    center: bool,
    seed: u64,
) -> Result<KnnSelection> {
    let kmax = ks.iter().copied().max().unwrap_or(0);
    check(train, train_labels, train, classes, kmax)?;
    if temperatures.is_empty() {
        return config("knn: give at least one temperature to choose from");
    }
    for &t in temperatures {
        check_temperature(t)?;
    }
    let (fit, val) = super::split::stratified_split(train_labels, classes, 0.1, seed)?;
    let _g = no_grad();
    let (fit_n, val_n) = unit_rows(&take_rows(train, &fit)?, &take_rows(train, &val)?, center)?;
    let fit_labels: Vec<usize> = fit.iter().map(|&i| train_labels[i]).collect();
    let near = neighbours(&fit_n, &val_n, kmax.min(fit.len()))?;
    let mut best: Option<KnnSelection> = None;
    for &k in ks {
        let k = k.min(fit.len());
        for &t in temperatures {
            let right = near
                .iter()
                .zip(&val)
                .filter(|&(nb, &v)| vote(nb, &fit_labels, classes, k, t) == train_labels[v])
                .count();
            let acc = right as f64 / val.len() as f64;
            if best.as_ref().is_none_or(|b| acc > b.val_accuracy) {
                best = Some(KnnSelection {
                    k,
                    temperature: t,
                    val_accuracy: acc,
                });
            }
        }
    }
    best.map_or_else(|| config("knn: give at least one k to choose from"), Ok)
}

/// Checks shapes, labels and `k`; returns the number of training rows.
fn check(
    train: &Tensor,
    train_labels: &[usize],
    test: &Tensor,
    classes: usize,
    k: usize,
) -> Result<usize> {
    let (n, d) = dims2(train, "knn train features")?;
    let (_, d2) = dims2(test, "knn test features")?;
    if d != d2 {
        return config(format!(
            "knn: train features have {d} columns, test features {d2}"
        ));
    }
    if train_labels.len() != n {
        return config(format!(
            "knn: {} labels for {n} training rows",
            train_labels.len()
        ));
    }
    super::check_labels(train_labels, classes, "knn")?;
    if n == 0 || k == 0 {
        return config("knn: need at least one training row and k >= 1");
    }
    Ok(n)
}

fn check_temperature(t: f64) -> Result<()> {
    if !(t > 0.0 && t.is_finite()) {
        return config(format!("knn: temperature {t} must be positive"));
    }
    Ok(())
}

/// `train` and `test` as contiguous f32 rows of unit length, both shifted by minus the mean
/// training row first when `center`.
fn unit_rows(train: &Tensor, test: &Tensor, center: bool) -> Result<(Tensor, Tensor)> {
    let mut train = train.detach().to_dtype(DType::F32)?;
    let mut test = test.detach().to_dtype(DType::F32)?;
    if center {
        let mean = train.mean(&[0], true)?;
        train = train.sub(&mean)?;
        test = test.sub(&mean)?;
    }
    let unit = |x: &Tensor| -> Result<Tensor> { Ok(x.l2_normalize(1, 1e-12)?.contiguous()?) };
    Ok((unit(&train)?, unit(&test)?))
}

/// For every row of `test_n`, its `k` most similar rows of `train_n` as `(similarity, row)`,
/// most similar first (equal similarities in row order).
fn neighbours(train_n: &Tensor, test_n: &Tensor, k: usize) -> Result<Vec<Vec<(f32, usize)>>> {
    let n = train_n.shape()[0];
    let m = test_n.shape()[0];
    let train_t = train_n.t()?;
    let mut out = Vec::with_capacity(m);
    let mut start = 0;
    while start < m {
        let rows = BLOCK.min(m - start);
        let sims = test_n.narrow(0, start, rows)?.matmul(&train_t)?;
        let sims = sims.to_vec::<f32>()?;
        let block: Vec<Vec<(f32, usize)>> = sims.par_chunks(n).map(|row| top_k(row, k)).collect();
        out.extend(block);
        start += rows;
    }
    Ok(out)
}

/// The `k` largest entries of `row` with their indices, largest first.
fn top_k(row: &[f32], k: usize) -> Vec<(f32, usize)> {
    // `best` is sorted by decreasing similarity; a new entry must beat the current k-th
    // strictly, so among equal similarities the earlier training row is kept.
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (j, &s) in row.iter().enumerate() {
        if best.len() == k && s <= best[k - 1].0 {
            continue;
        }
        let pos = best.partition_point(|&(b, _)| b >= s);
        best.insert(pos, (s, j));
        if best.len() > k {
            best.pop();
        }
    }
    best
}

/// The weighted vote of the first `k` of `best` (sorted neighbours).
fn vote(best: &[(f32, usize)], labels: &[usize], classes: usize, k: usize, t: f64) -> usize {
    let mut votes = vec![0f64; classes];
    for &(s, j) in best.iter().take(k) {
        votes[labels[j]] += (s as f64 / t).exp();
    }
    argmax(&votes)
}

/// Index of the largest value (the first one on ties).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfsup_tensor::rng::Philox;

    /// `knn_select` picks the pair that `knn_classify` scores best on the same split.
    #[test]
    fn select_agrees_with_classify_on_its_split() {
        let mut r = Philox::new(3, 0);
        let (n, d, classes) = (400, 5, 3);
        let labels: Vec<usize> = (0..n).map(|_| r.below(classes as u64) as usize).collect();
        // Noisy classes: the choice of k and T matters.
        let x: Vec<f32> = labels
            .iter()
            .flat_map(|&c| {
                let mut v: Vec<f32> = (0..d).map(|_| r.normal_f64() as f32).collect();
                v[c] += 0.8;
                v
            })
            .collect();
        let x = Tensor::from_vec(x, &[n, d]).unwrap();
        let (ks, ts) = ([1, 5, 25], [0.05, 1.0]);
        for center in [false, true] {
            let got = knn_select(&x, &labels, classes, &ks, &ts, center, 9).unwrap();
            let (fit, val) =
                super::super::split::stratified_split(&labels, classes, 0.1, 9).unwrap();
            let take = |ids: &[usize]| take_rows(&x, ids).unwrap();
            let fit_labels: Vec<usize> = fit.iter().map(|&i| labels[i]).collect();
            let mut best = (0, 0.0, -1.0);
            for k in ks {
                for t in ts {
                    let cfg = KnnConfig {
                        k,
                        temperature: t,
                        center,
                    };
                    let pred =
                        knn_classify(&take(&fit), &fit_labels, &take(&val), classes, &cfg).unwrap();
                    let right = pred
                        .iter()
                        .zip(&val)
                        .filter(|&(p, &v)| *p == labels[v])
                        .count();
                    let acc = right as f64 / val.len() as f64;
                    if acc > best.2 {
                        best = (k, t, acc);
                    }
                }
            }
            assert_eq!(
                (got.k, got.temperature, got.val_accuracy),
                best,
                "center {center}"
            );
        }
    }
}
