//! Weighted k-nearest-neighbour classification on cosine similarity.

use rayon::prelude::*;
use selfsup_tensor::{no_grad, DType, Tensor};

use super::features::dims2;
use crate::error::{config, Result};

/// Settings of [`knn_classify`].
#[derive(Clone, Debug, PartialEq)]
pub struct KnnConfig {
    /// Number of neighbours that vote (clamped to the number of training rows).
    pub k: usize,
    /// Temperature of the vote weights `exp(similarity / temperature)`.
    pub temperature: f64,
}

impl Default for KnnConfig {
    /// `k = 20`, `temperature = 0.07` (the InstDisc / DINO protocol).
    fn default() -> Self {
        KnnConfig {
            k: 20,
            temperature: 0.07,
        }
    }
}

/// Test rows per similarity block: the block's `[rows, N]` similarities are materialised.
const BLOCK: usize = 256;

/// Weighted kNN (InstDisc): rows of `train` and `test` are L2-normalised, so the dot product is
/// the cosine similarity; each test row's `k` most similar training rows vote for their label
/// with weight `exp(sim / T)`, and the class with the largest total wins (ties go to the
/// smaller class index; equally similar neighbours are taken in training-row order).
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
    let (n, d) = dims2(train, "knn train features")?;
    let (m, d2) = dims2(test, "knn test features")?;
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
    if n == 0 || cfg.k == 0 {
        return config("knn: need at least one training row and k >= 1");
    }
    if !(cfg.temperature > 0.0 && cfg.temperature.is_finite()) {
        return config(format!(
            "knn: temperature {} must be positive",
            cfg.temperature
        ));
    }
    let k = cfg.k.min(n);
    let _g = no_grad();
    let unit = |x: &Tensor| -> Result<Tensor> {
        Ok(x.detach()
            .to_dtype(DType::F32)?
            .l2_normalize(1, 1e-12)?
            .contiguous()?)
    };
    let train_n = unit(train)?;
    let train_t = train_n.t()?;
    let test_n = unit(test)?;
    let mut out = Vec::with_capacity(m);
    let mut start = 0;
    while start < m {
        let rows = BLOCK.min(m - start);
        let sims = test_n.narrow(0, start, rows)?.matmul(&train_t)?;
        let sims = sims.to_vec::<f32>()?;
        let block: Vec<usize> = sims
            .par_chunks(n)
            .map(|row| vote(row, train_labels, classes, k, cfg.temperature))
            .collect();
        out.extend(block);
        start += rows;
    }
    Ok(out)
}

/// The weighted vote of the `k` largest entries of `row`.
fn vote(row: &[f32], labels: &[usize], classes: usize, k: usize, t: f64) -> usize {
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
    let mut votes = vec![0f64; classes];
    for &(s, j) in &best {
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
