//! Stratified train/validation splits of labelled rows.

use selfsup_tensor::rng::Philox;

use crate::error::{config, Result};

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
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            return config(format!(
                "label {l} is not below the number of classes {classes}"
            ));
        }
        by_class[l].push(i);
    }
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
