//! Stratified train/validation splits of labelled rows.

use selfsup_tensor::rng::Philox;

use crate::error::{config, Result};

/// The row indices of every class, in order; errors on a label outside `0..classes`.
fn rows_by_class(labels: &[usize], classes: usize) -> Result<Vec<Vec<usize>>> {
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            return config(format!(
                "label {l} is not below the number of classes {classes}"
            ));
        }
        by_class[l].push(i);
    }
    Ok(by_class)
}

/// Splits row indices into `(fit, val)`, stratified by label: of each class's `n` rows,
/// `round(n * val_fraction)` go to validation, kept below `n` so that every class stays in the
/// fitting part, shuffled with `Philox(seed, class)`. Both lists are sorted.
pub(crate) fn stratified_split(
    labels: &[usize],
    classes: usize,
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    #[allow(clippy::manual_range_contains)]
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return config(format!(
            "validation fraction {val_fraction} must be strictly between 0 and 1"
        ));
    }
    let by_class = rows_by_class(labels, classes)?;
    let (mut fit, mut val) = (Vec::new(), Vec::new());
    for (c, mut rows) in by_class.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        Philox::new(seed, 0x5EED_0000 + c as u64).shuffle(&mut rows);
        let n_val = ((rows.len() as f64 * val_fraction).round() as usize).min(rows.len() - 1);
        val.extend_from_slice(&rows[..n_val]);
        fit.extend_from_slice(&rows[n_val..]);
    }
    if val.is_empty() {
        return config(format!(
            "the validation split of {} labelled rows at fraction {val_fraction} is empty; use more labels or a larger fraction",
            labels.len()
        ));
    }
    fit.sort_unstable();
    val.sort_unstable();
    Ok((fit, val))
}

/// Splits row indices into `k` stratified folds: each class's rows are shuffled with
/// `Philox(seed, class)` and dealt round-robin, so every fold holds `floor(n/k)` or
/// `ceil(n/k)` rows of a class with `n` rows. Each fold is sorted. Needs `k >= 2`.
pub(crate) fn stratified_folds(
    labels: &[usize],
    classes: usize,
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    if k < 2 {
        return config(format!("{k} cross-validation folds: need at least 2"));
    }
    let by_class = rows_by_class(labels, classes)?;
    let mut folds = vec![Vec::new(); k];
    let mut next = 0;
    for (c, mut rows) in by_class.into_iter().enumerate() {
        Philox::new(seed, 0x5EED_0000 + c as u64).shuffle(&mut rows);
        for r in rows {
            folds[next].push(r);
            next = (next + 1) % k;
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_rows_and_balance_classes() {
        let labels: Vec<usize> = (0..103).map(|i| (i * 7) % 4).collect();
        let folds = stratified_folds(&labels, 4, 5, 3).unwrap();
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        for c in 0..4 {
            let n = labels.iter().filter(|&&l| l == c).count();
            for f in &folds {
                let m = f.iter().filter(|&&i| labels[i] == c).count();
                assert!(m == n / 5 || m == n / 5 + 1, "class {c}: {m} of {n}");
            }
        }
        assert!(stratified_folds(&labels, 4, 1, 3).is_err());
        assert!(stratified_folds(&labels, 3, 5, 3).is_err());
    }
}
