//! Fine-tuning an encoder with a new linear head on labelled images.

use std::collections::HashMap;
use std::sync::Arc;

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::{ImageDataset, Loader, LoaderConfig, ViewConfig, Views};
use selfsup_nn::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use selfsup_nn::{Linear, Module};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use super::features::{check_normalize, images_tensor};
use super::split::stratified_split;
use crate::encoder::Encoder;
use crate::error::{config, Result};

/// Which encoder parameters fine-tuning leaves untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreezePolicy {
    /// Train everything.
    None,
    /// Train the linear head only; the encoder is frozen and kept in evaluation mode (its
    /// BatchNorm statistics do not move either).
    All,
    /// Freeze the first `n` stages of the encoder (see [`stages`]); later stages and the head
    /// train. Frozen BatchNorm layers still update their running statistics in training mode.
    Lower(usize),
}

/// Settings of [`finetune`].
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneConfig {
    /// Most epochs over the fitting part of the labelled set.
    pub epochs: usize,
    /// At least this many optimiser steps: `epochs` is raised to reach it when the labelled
    /// set is small (10 images per class make one step per epoch). 0: `epochs` as given.
    pub min_steps: usize,
    /// Learning rate of the head (AdamW).
    pub lr: f64,
    /// The encoder's learning rate is `lr * encoder_lr_scale`.
    pub encoder_lr_scale: f64,
    /// Decoupled (AdamW) weight decay of every trained parameter.
    pub weight_decay: f64,
    /// Images per step.
    pub batch: usize,
    /// What stays frozen.
    pub freeze: FreezePolicy,
    /// Augment training images with `view` (its size is set to the images' and its
    /// normalisation replaced by the one passed to [`finetune`]); otherwise images are only
    /// normalised.
    pub augment: bool,
    /// The augmentation pipeline used when `augment` is set.
    pub view: ViewConfig,
    /// Stop after this many epochs without a better validation accuracy (0: never stop early).
    pub patience: usize,
    /// Decay both learning rates along a cosine from their values at the first step to 0 at
    /// the last step of `epochs` (otherwise they stay constant).
    pub cosine: bool,
    /// Fraction of every class held out for validation (early stopping and model choice).
    pub val_fraction: f64,
    /// Seed of the split, the head's initialisation, shuffling and augmentation.
    pub seed: u64,
}

impl Default for FinetuneConfig {
    /// 30 epochs (no minimum step count), head lr 1e-3, encoder lr scale 0.1, weight decay
    /// 1e-4, batch 64, nothing frozen, augmentation with the default SimCLR view, patience 5,
    /// cosine decay, 20% validation, seed 0.
    fn default() -> Self {
        FinetuneConfig {
            epochs: 30,
            min_steps: 0,
            lr: 1e-3,
            encoder_lr_scale: 0.1,
            weight_decay: 1e-4,
            batch: 64,
            freeze: FreezePolicy::None,
            augment: true,
            view: ViewConfig::default(),
            patience: 5,
            cosine: true,
            val_fraction: 0.2,
            seed: 0,
        }
    }
}

/// What [`finetune`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneResult {
    /// Best validation accuracy (the kept weights are those of that epoch).
    pub val_accuracy: f64,
    /// Epochs run (fewer than configured when early stopping triggered).
    pub epochs_run: usize,
    /// `(epoch, mean train loss, validation accuracy)` of every epoch, epochs counted from 1.
    pub history: Vec<(usize, f64, f64)>,
}

/// An encoder with a linear head: predicts classes of images.
#[derive(Debug)]
pub struct Classifier<'a> {
    /// The (fine-tuned) encoder.
    pub encoder: &'a mut Encoder,
    /// The linear head `[out_dim] -> [classes]`.
    pub head: Linear,
}

impl Classifier<'_> {
    /// Class scores `[B, classes]` of an image batch `[B, C, H, W]` in the current mode.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.encoder.embed(x)?)?)
    }

    /// The predicted class of every image of `data` (evaluation mode, no gradients, `batch`
    /// images at a time, normalised with `normalize`). Leaves the encoder in evaluation mode.
    pub fn predict(
        &mut self,
        data: &ImageDataset,
        normalize: Option<&Normalize>,
        batch: usize,
    ) -> Result<Vec<usize>> {
        if batch == 0 {
            return config("predict: batch must be at least 1");
        }
        check_normalize(normalize, data.channels)?;
        self.encoder.set_train(false);
        let _g = no_grad();
        let mut out = Vec::with_capacity(data.len);
        let mut start = 0;
        while start < data.len {
            let end = (start + batch).min(data.len);
            let rows: Vec<usize> = (start..end).collect();
            let x =
                images_tensor(data, &rows, normalize)?.to_device(Module::device(&*self.encoder))?;
            let pred = self.logits(&x)?.argmax(1, false)?.to_vec::<i64>()?;
            out.extend(pred.into_iter().map(|p| p as usize));
            start = end;
        }
        Ok(out)
    }
}

/// The stage a parameter belongs to, for [`FreezePolicy::Lower`]: `blocks.{i}` (SmallCnn, ViT
/// and text blocks) and `layer{i}` (ResNet) are one stage each; the final norms (`norm`,
/// `ln_f`) and a text `head` are stages of their own; everything else (ResNet `conv1`/`bn1`,
/// ViT `patch_embed`/`pos_embed`/`cls_token`, text `tok`/`pos`) is the `stem`.
pub fn stage_of(param: &str) -> String {
    let mut parts = param.split('.');
    let first = parts.next().unwrap_or("");
    match first {
        "blocks" => format!("blocks.{}", parts.next().unwrap_or("")),
        f if f.starts_with("layer") => f.to_string(),
        "norm" | "ln_f" | "head" => first.to_string(),
        _ => "stem".to_string(),
    }
}

/// The encoder's stages (see [`stage_of`]) in input-to-output order: SmallCnn has
/// `blocks.0..2`; ResNet-18 `stem, layer1..4`; a ViT `stem, blocks.0.., norm`.
pub fn stages(encoder: &Encoder) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (n, _) in encoder.params() {
        let s = stage_of(&n);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Copies of every parameter and buffer, by name.
pub(crate) fn snapshot(m: &dyn Module) -> Result<HashMap<String, Tensor>> {
    let _g = no_grad();
    let mut out = HashMap::new();
    for (n, t) in m.params().into_iter().chain(m.buffers()) {
        out.insert(n, t.detach().copy()?);
    }
    Ok(out)
}

/// Writes a [`snapshot`] back in place.
pub(crate) fn restore(m: &dyn Module, snap: &HashMap<String, Tensor>) -> Result<()> {
    let _g = no_grad();
    for (n, t) in m.params().into_iter().chain(m.buffers()) {
        if let Some(s) = snap.get(&n) {
            t.assign(s)?;
        }
    }
    Ok(())
}

pub(crate) fn check_config(cfg: &FinetuneConfig) -> Result<()> {
    if cfg.batch == 0 || cfg.epochs == 0 {
        return config("finetune: batch and epochs must be at least 1");
    }
    let ok = |x: f64| x >= 0.0 && x.is_finite();
    let lr_ok = cfg.lr > 0.0 && cfg.lr.is_finite();
    if !lr_ok || !ok(cfg.encoder_lr_scale) || !ok(cfg.weight_decay) {
        return config(format!(
            "finetune: lr {} must be positive, encoder_lr_scale {} and weight_decay {} >= 0",
            cfg.lr, cfg.encoder_lr_scale, cfg.weight_decay
        ));
    }
    Ok(())
}

/// Keeps the weights (encoder and head) of the best validation epoch so far and counts the
/// epochs since, for early stopping.
pub(crate) struct BestEpoch {
    best: Option<(f64, HashMap<String, Tensor>, HashMap<String, Tensor>)>,
    since_best: usize,
    patience: usize,
}

impl BestEpoch {
    /// Stops after `patience` epochs without a better accuracy (0: never).
    pub(crate) fn new(patience: usize) -> Self {
        BestEpoch {
            best: None,
            since_best: 0,
            patience,
        }
    }

    /// Records an epoch's validation accuracy (snapshotting the weights when it is the best so
    /// far); returns whether training should stop.
    pub(crate) fn observe(
        &mut self,
        acc: f64,
        encoder: &dyn Module,
        head: &dyn Module,
    ) -> Result<bool> {
        if self.best.as_ref().is_none_or(|(a, _, _)| acc > *a) {
            self.best = Some((acc, snapshot(encoder)?, snapshot(head)?));
            self.since_best = 0;
            return Ok(false);
        }
        self.since_best += 1;
        Ok(self.patience > 0 && self.since_best >= self.patience)
    }

    /// Writes the best epoch's weights back; returns its accuracy (0 when no epoch ran).
    pub(crate) fn restore(&self, encoder: &dyn Module, head: &dyn Module) -> Result<f64> {
        match &self.best {
            Some((acc, enc, h)) => {
                restore(encoder, enc)?;
                restore(head, h)?;
                Ok(*acc)
            }
            None => Ok(0.0),
        }
    }
}

/// AdamW over the head (at `cfg.lr`) and the encoder parameters `cfg.freeze` leaves
/// trainable (at `cfg.lr * cfg.encoder_lr_scale`); also says whether any encoder parameter
/// trains.
pub(crate) fn optimizer(
    encoder: &Encoder,
    head: &Linear,
    cfg: &FinetuneConfig,
) -> Result<(Adam, bool)> {
    let frozen: Vec<String> = match cfg.freeze {
        FreezePolicy::None => Vec::new(),
        FreezePolicy::All => stages(encoder),
        FreezePolicy::Lower(n) => {
            let s = stages(encoder);
            if n > s.len() {
                return config(format!(
                    "finetune: cannot freeze {n} stages, the encoder has {} ({})",
                    s.len(),
                    s.join(", ")
                ));
            }
            s[..n].to_vec()
        }
    };
    let enc_params: Vec<(String, Tensor)> = encoder
        .params()
        .into_iter()
        .filter(|(n, _)| !frozen.contains(&stage_of(n)))
        .map(|(n, t)| (format!("encoder.{n}"), t))
        .collect();
    let head_params: Vec<(String, Tensor)> = head
        .params()
        .into_iter()
        .map(|(n, t)| (format!("head.{n}"), t))
        .collect();
    let encoder_trains = !enc_params.is_empty();
    let mut groups = vec![ParamGroup::new(head_params, cfg.lr, cfg.weight_decay)];
    if encoder_trains {
        groups.push(ParamGroup::new(
            enc_params,
            cfg.lr * cfg.encoder_lr_scale,
            cfg.weight_decay,
        ));
    }
    let opt = Adam::with_groups(
        groups,
        AdamConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            decoupled: true,
            ..Default::default()
        },
    )?;

    Ok((opt, encoder_trains))
}

/// Sets both learning rates of an [`optimizer`] to their cosine-decayed values at `step` of
/// `total` (no change unless `cfg.cosine`).
pub(crate) fn cosine_lr(opt: &mut Adam, cfg: &FinetuneConfig, step: usize, total: f64) {
    if cfg.cosine {
        let f = 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
        let groups = opt.groups_mut();
        groups[0].lr = cfg.lr * f;
        if let Some(enc) = groups.get_mut(1) {
            enc.lr = cfg.lr * cfg.encoder_lr_scale * f;
        }
    }
}

/// Fine-tunes `encoder` with a new linear head on the labelled images of `train`.
///
/// A stratified `val_fraction` of every class is held out; the rest is trained on with AdamW
/// (head at `lr`, encoder at `lr * encoder_lr_scale`, parameters frozen by `cfg.freeze`
/// excluded; both rates decayed along a cosine over all the steps when `cfg.cosine`), augmented
/// with `cfg.view` when `cfg.augment`, for at most `cfg.epochs` epochs (more when needed for
/// `cfg.min_steps` steps),
/// stopping after `cfg.patience` epochs without a better validation accuracy. The weights of the
/// best validation epoch are restored into `encoder` (parameters and BatchNorm statistics) and
/// the head, and returned as a [`Classifier`] borrowing the encoder. `progress(epoch, epochs,
/// train loss, val accuracy)` is called after every epoch (1-based, of the `epochs` the run
/// may take: `cfg.epochs`, or more for `cfg.min_steps`).
pub fn finetune<'a>(
    encoder: &'a mut Encoder,
    train: &ImageDataset,
    normalize: Option<&Normalize>,
    classes: usize,
    cfg: &FinetuneConfig,
    progress: &mut dyn FnMut(usize, usize, f64, f64),
) -> Result<(Classifier<'a>, FinetuneResult)> {
    check_config(cfg)?;
    check_normalize(normalize, train.channels)?;
    let labels = super::labels_of(train, "finetune")?;
    super::check_labels(&labels, classes, "finetune")?;
    let (fit_rows, val_rows) = stratified_split(&labels, classes, cfg.val_fraction, cfg.seed)?;
    let fit = Arc::new(train.select(&fit_rows)?);
    let val = train.select(&val_rows)?;
    let val_labels: Vec<usize> = val_rows.iter().map(|&i| labels[i]).collect();

    let mut g = Generator::new(cfg.seed);
    let mut head = Linear::new(encoder.out_dim(), classes, true, DType::F32, &mut g)?;
    // The head lives with the encoder; batches are moved there below.
    let device = Module::device(&*encoder);
    head.to_device(device)?;
    let (mut opt, encoder_trains) = optimizer(encoder, &head, cfg)?;

    let size = (train.height, train.width);
    let views = if cfg.augment {
        Views {
            views: vec![ViewConfig {
                size,
                normalize: normalize.cloned(),
                ..cfg.view.clone()
            }],
        }
    } else {
        Views::eval(size, normalize.cloned())
    };
    let batch = cfg.batch.min(fit.len);
    let loader = Loader::new(
        Arc::clone(&fit),
        views,
        LoaderConfig {
            batch_size: batch,
            shuffle: true,
            drop_last: true,
            seed: cfg.seed,
            prefetch: 2,
            threads: 0,
        },
    )?;

    let mut clf = Classifier { encoder, head };
    let mut best = BestEpoch::new(cfg.patience);
    let mut history = Vec::new();
    let per_epoch = loader.batches_per_epoch().max(1);
    let epochs = cfg.epochs.max(cfg.min_steps.div_ceil(per_epoch));
    let total_steps = (epochs * per_epoch) as f64;
    let mut step = 0usize;
    for epoch in 1..=epochs {
        clf.encoder.set_train(encoder_trains);
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        for b in loader.epoch(epoch as u64) {
            let Some(y) = b.labels else {
                return config("finetune: the loader lost the labels");
            };
            let Some(view) = b.views.into_iter().next() else {
                return config("finetune: the loader produced no view");
            };
            let x = view.into_tensor()?.to_device(device)?;
            let f = if encoder_trains {
                clf.encoder.embed(&x)?
            } else {
                let _g = no_grad();
                clf.encoder.embed(&x)?.detach()
            };
            let n = y.len();
            let loss = clf
                .head
                .forward(&f)?
                .cross_entropy(&Tensor::from_vec(y, &[n])?)?;
            loss.backward()?;
            cosine_lr(&mut opt, cfg, step, total_steps);
            step += 1;
            opt.step()?;
            opt.zero_grad();
            clf.encoder.zero_grad();
            let l = loss.item()?;
            if !l.is_finite() {
                return Err(crate::SslError::NonFinite {
                    step: (epoch * loader.batches_per_epoch()) as u64,
                    value: l,
                });
            }
            loss_sum += l;
            steps += 1;
        }
        let pred = clf.predict(&val, normalize, 256)?;
        let acc = super::accuracy(&pred, &val_labels);
        let mean_loss = loss_sum / steps.max(1) as f64;
        history.push((epoch, mean_loss, acc));
        progress(epoch, epochs, mean_loss, acc);
        if best.observe(acc, &*clf.encoder, &clf.head)? {
            break;
        }
    }
    let val_accuracy = best.restore(&*clf.encoder, &clf.head)?;
    clf.encoder.set_train(false);
    let epochs_run = history.len();
    Ok((
        clf,
        FinetuneResult {
            val_accuracy,
            epochs_run,
            history,
        },
    ))
}
