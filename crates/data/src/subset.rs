//! Label subsets for few-label evaluation: `k` labelled samples per class, stratified, seeded.

use std::collections::BTreeMap;

use selfsup_tensor::rng::Philox;

use crate::error::{DataError, Result};

/// Draws `per_class` indices of every class present in `labels` (e.g. 60 per class for the
/// 600-label Fashion-MNIST evaluation). Class `c`'s samples are shuffled with `Philox(seed, c)`
/// and the first `per_class` taken; the result lists classes in increasing order, each in draw
/// order. A class with fewer than `per_class` samples is an error.
pub fn per_class_subset(labels: &[i64], per_class: usize, seed: u64) -> Result<Vec<usize>> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    if by_class.is_empty() {
        return Err(DataError::invalid(
            "label subset",
            "no labels; pass a labelled dataset",
        ));
    }
    let mut out = Vec::with_capacity(per_class * by_class.len());
    for (c, mut idx) in by_class {
        if idx.len() < per_class {
            return Err(DataError::invalid(
                "label subset",
                format!("class {c} has {} samples, fewer than the {per_class} asked for; ask for fewer per class", idx.len()),
            ));
        }
        Philox::new(seed, c as u64).shuffle(&mut idx);
        out.extend_from_slice(&idx[..per_class]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_seeded_and_distinct() {
        let labels: Vec<i64> = (0..1000).map(|i| i % 10).collect();
        let a = per_class_subset(&labels, 7, 0).unwrap();
        assert_eq!(a.len(), 70);
        for c in 0..10 {
            assert_eq!(
                a[c * 7..(c + 1) * 7]
                    .iter()
                    .filter(|&&i| labels[i] == c as i64)
                    .count(),
                7
            );
        }
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 70);
        assert_eq!(a, per_class_subset(&labels, 7, 0).unwrap());
        assert_ne!(a, per_class_subset(&labels, 7, 1).unwrap());
        assert!(per_class_subset(&labels, 101, 0).is_err());
    }
}
