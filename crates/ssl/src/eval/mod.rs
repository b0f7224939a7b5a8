//! Evaluation protocols and honest baselines for pretrained encoders.
//!
//! - [`features`]: encoder features of a dataset (eval mode, no gradients) and column
//!   standardisation with statistics from the training rows only.
//! - [`knn`]: weighted k-nearest-neighbour classification on cosine similarity (InstDisc).
//! - [`linear`]: the linear probe, multinomial logistic regression solved to convergence with
//!   L-BFGS, its L2 penalty chosen by cross-validated cross-entropy on the labelled training set.
//! - [`mod@finetune`]: fine-tuning the encoder with a new linear head, early stopping on a
//!   validation split, optional freezing.
//! - [`baselines`]: logistic regression on raw pixels, and the same backbone trained supervised
//!   from scratch on the same labels.
//! - [`embed2d`]: 2-D PCA and exact t-SNE for plots.
//! - [`confusion`]: the confusion matrix, accuracy, per-class recall, a markdown table.
//! - [`subset`]: `K` labelled images per class.
//! - [`text`]: features for text classification: mean-pooled text-encoder states, and the
//!   hashed bag-of-n-grams baseline.
//! - [`mod@text_finetune`]: fine-tuning a text encoder with a linear head on mean-pooled states.
//!
//! Nothing here ever looks at test labels except to score predictions: every choice (L2 penalty,
//! early-stopping epoch) is made on a split of the labelled training set.

pub mod baselines;
pub mod confusion;
pub mod embed2d;
pub mod features;
pub mod finetune;
pub mod knn;
mod lbfgs;
pub mod linear;
mod split;
pub mod subset;
pub mod text;
pub mod text_finetune;

pub use baselines::{pixels_logreg, supervised_from_scratch};
pub use confusion::ConfusionMatrix;
pub use embed2d::{pca_2d, tsne_2d};
pub use features::{extract_features, standardize};
pub use finetune::{finetune, Classifier, FinetuneConfig, FinetuneResult, FreezePolicy};
pub use knn::{knn_classify, knn_select, KnnConfig, KnnSelection, KNN_KS, KNN_TEMPERATURES};
pub use linear::{L2Score, LinearConfig, LinearProbe};
pub use subset::labelled_subset;
pub use text::{ngram_features, text_features};
pub use text_finetune::{text_finetune, TextClassifier};

use crate::error::{config, Result};

/// The labels of `data` as class indices, checked against `classes` when it is non-zero.
pub(crate) fn labels_of(data: &selfsup_data::ImageDataset, what: &str) -> Result<Vec<usize>> {
    let Some(l) = &data.labels else {
        return config(format!(
            "{what}: the dataset has no labels; pass a labelled dataset"
        ));
    };
    l.iter()
        .map(|&x| usize::try_from(x).or_else(|_| config(format!("{what}: negative label {x}"))))
        .collect()
}

/// Checks that every label is below `classes`.
pub(crate) fn check_labels(labels: &[usize], classes: usize, what: &str) -> Result<()> {
    if classes == 0 {
        return config(format!("{what}: the number of classes must be positive"));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return config(format!(
            "{what}: label {bad} is not below the number of classes {classes}"
        ));
    }
    Ok(())
}

/// Fraction of positions where `a` and `b` agree (0 for empty input).
pub(crate) fn accuracy(a: &[usize], b: &[usize]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}
