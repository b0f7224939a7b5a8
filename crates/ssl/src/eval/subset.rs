//! Few-label subsets of a labelled dataset.

use selfsup_data::subset::per_class_subset;
use selfsup_data::ImageDataset;

use crate::error::{config, Result};

/// `per_class` labelled images of every class, drawn stratified with `seed` (see
/// [`selfsup_data::subset::per_class_subset`]: the same seed gives the same images; the result
/// lists classes in increasing order). A class with fewer than `per_class` images, or an
/// unlabelled dataset, is an error.
pub fn labelled_subset(data: &ImageDataset, per_class: usize, seed: u64) -> Result<ImageDataset> {
    let Some(labels) = &data.labels else {
        return config("labelled_subset: the dataset has no labels; pass a labelled dataset");
    };
    if per_class == 0 {
        return config("labelled_subset: ask for at least 1 image per class");
    }
    let idx = per_class_subset(labels, per_class, seed)?;
    Ok(data.select(&idx)?)
}
