//! Honest baselines: what the labels alone achieve without self-supervised pretraining.

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::ImageDataset;
use selfsup_tensor::{Generator, Tensor};

use super::confusion::ConfusionMatrix;
use super::finetune::{finetune, FinetuneConfig, FreezePolicy};
use super::linear::{LinearConfig, LinearProbe};
use crate::config::BackboneConfig;
use crate::encoder::Encoder;
use crate::error::{config, Result};

/// Every image of `data` flattened to a row of `[0, 1]` pixel values: `[N, C*H*W]` f32.
pub fn pixel_features(data: &ImageDataset) -> Result<Tensor> {
    let v: Vec<f32> = data
        .pixels
        .iter()
        .map(|&p| p as f32 * (1.0 / 255.0))
        .collect();
    Ok(Tensor::from_vec(v, &[data.len, data.image_len()])?)
}

/// Logistic regression on raw pixels: a [`LinearProbe`] (standardised columns, L2 chosen on a
/// validation split of `train`) on the flattened pixels scaled to `[0, 1]`, scored on `test`.
/// Returns the test accuracy, the confusion matrix and the probe.
pub fn pixels_logreg(
    train: &ImageDataset,
    test: &ImageDataset,
    cfg: &LinearConfig,
) -> Result<(f64, ConfusionMatrix, LinearProbe)> {
    if train.image_len() != test.image_len() {
        return config(format!(
            "pixels_logreg: train images have {} values, test images {}",
            train.image_len(),
            test.image_len()
        ));
    }
    let y = super::labels_of(train, "pixels_logreg train")?;
    let yt = super::labels_of(test, "pixels_logreg test")?;
    let classes = train.num_classes().max(test.num_classes());
    let probe = LinearProbe::fit(&pixel_features(train)?, &y, classes, cfg)?;
    let pred = probe.predict(&pixel_features(test)?)?;
    let cm = ConfusionMatrix::from_predictions(&yt, &pred, classes)?;
    Ok((cm.accuracy(), cm, probe))
}

/// The same backbone trained supervised from scratch on the labelled set: [`finetune`] on a
/// freshly initialised encoder (seeded with `cfg.seed`) with nothing frozen and the encoder at
/// the full learning rate (`cfg.freeze` and `cfg.encoder_lr_scale` are overridden to
/// [`FreezePolicy::None`] and 1), the same augmentations and early stopping on a validation
/// split of `train`. Returns the accuracy on `test` and its confusion matrix.
pub fn supervised_from_scratch(
    backbone: &BackboneConfig,
    train: &ImageDataset,
    test: &ImageDataset,
    normalize: Option<&Normalize>,
    cfg: &FinetuneConfig,
    progress: &mut dyn FnMut(usize, usize, f64, f64),
) -> Result<(f64, ConfusionMatrix)> {
    let yt = super::labels_of(test, "supervised_from_scratch test")?;
    let classes = train.num_classes().max(test.num_classes());
    let mut g = Generator::new(cfg.seed);
    let mut encoder = Encoder::new(backbone, false, false, &mut g)?;
    let cfg = FinetuneConfig {
        freeze: FreezePolicy::None,
        encoder_lr_scale: 1.0,
        ..cfg.clone()
    };
    let (mut clf, _) = finetune(&mut encoder, train, normalize, classes, &cfg, progress)?;
    let pred = clf.predict(test, normalize, 256)?;
    let cm = ConfusionMatrix::from_predictions(&yt, &pred, classes)?;
    Ok((cm.accuracy(), cm))
}
