//! `selfsup eval` and `selfsup baseline`: the evaluation protocols on the held-out test split,
//! with a seeded, stratified label budget.

use std::path::{Path, PathBuf};
use std::time::Instant;

use selfsup_data::ImageDataset;
use selfsup_nn::checkpoint::{load_checkpoint, LoadOptions};
use selfsup_ssl::eval::{
    extract_features, finetune, knn_classify, knn_select, labelled_subset, pixels_logreg,
    supervised_from_scratch, ConfusionMatrix, FinetuneConfig, FreezePolicy, KnnConfig,
    LinearConfig, LinearProbe, KNN_KS, KNN_TEMPERATURES,
};
use selfsup_ssl::{build, BackboneConfig, BackboneKind, SslMethod};
use selfsup_tensor::Generator;
use selfsup_tensor::Tensor;
use serde_json::{json, Map};

use crate::cli::{parse_enum, BaselineArgs, EvalArgs, Protocol, Which};
use crate::datasets::{load_images, ImageData};
use crate::error::{input, Result};
use crate::pretrain::{run_dir, ENCODER};
use crate::report::{class_names, confusion_html, embedding_plots, write_html};
use crate::runconfig::{load_run_config, DatasetKind, RunConfig};
use crate::runlog::{ensure_dir, num, write_metrics, Progress};

/// kNN predictions with `eval`'s flags: `--k` and `--temperature` as given, or both chosen on a
/// validation split of the labelled rows with `--tune-knn`; `--center`. Returns the settings
/// used beside the predictions.
pub(crate) fn knn_predict(
    train: &Tensor,
    labels: &[usize],
    test: &Tensor,
    classes: usize,
    args: &EvalArgs,
) -> Result<(Vec<usize>, KnnConfig)> {
    let mut cfg = KnnConfig {
        k: args.k,
        temperature: args.temperature,
        center: args.center,
    };
    if args.tune_knn {
        let sel = knn_select(
            train,
            labels,
            classes,
            &KNN_KS,
            &KNN_TEMPERATURES,
            args.center,
            args.seed,
        )?;
        eprintln!(
            "knn: k {} and temperature {} chosen on a validation split of the labelled rows (validation accuracy {:.2}%)",
            sel.k,
            sel.temperature,
            100.0 * sel.val_accuracy
        );
        cfg.k = sel.k;
        cfg.temperature = sel.temperature;
    }
    Ok((knn_classify(train, labels, test, classes, &cfg)?, cfg))
}

/// Labels as class indices (an error when the split has none).
pub fn labels_of(d: &ImageDataset, what: &str) -> Result<Vec<usize>> {
    match &d.labels {
        Some(l) => Ok(l.iter().map(|&v| v.max(0) as usize).collect()),
        None => input(format!(
            "the {what} images have no labels; evaluation needs a labelled dataset"
        )),
    }
}

/// The labelled training images for a budget of `per_class` (all when `None`).
pub fn budget(train: &ImageDataset, per_class: Option<usize>, seed: u64) -> Result<ImageDataset> {
    match per_class {
        Some(0) => input("--labels-per-class 0 leaves nothing to train on: use 1 or more"),
        Some(k) => Ok(labelled_subset(train, k, seed)?),
        None => Ok(train.clone()),
    }
}

/// The test split, or an error naming the dataset.
pub fn test_split(data: &ImageData, dataset: DatasetKind) -> Result<&ImageDataset> {
    data.test.as_ref().ok_or_else(|| {
        crate::error::CliError::Input(format!(
            "{} has no test split here: evaluation reports accuracy on held-out test images (for an image folder: put them in DATA/test)",
            dataset.as_str()
        ))
    })
}

/// Loads the pretrained method of a run directory with its encoder weights.
pub fn load_method(dir: &Path, cfg: &RunConfig) -> Result<Box<dyn SslMethod>> {
    let mut g = Generator::new(cfg.seed);
    let method = build(&cfg.model, &mut g)?;
    let path = dir.join(ENCODER);
    if !path.is_file() {
        return input(format!(
            "{} has no {ENCODER}: the run has not finished; continue it with `selfsup pretrain --resume {}`",
            dir.display(),
            dir.display()
        ));
    }
    load_checkpoint(&path, method.encoder(), None, &LoadOptions::default())?;
    Ok(method)
}

/// Parses `--freeze`.
pub fn freeze_policy(s: &str) -> Result<FreezePolicy> {
    match s {
        "none" => Ok(FreezePolicy::None),
        "all" => Ok(FreezePolicy::All),
        _ => match s.strip_prefix("lower:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(FreezePolicy::Lower(n)),
            _ => input(format!(
                "--freeze {s}: use none, all (train the head only) or lower:N (freeze the first N stages)"
            )),
        },
    }
}

/// Where `eval` writes: `--out`, or `RUN/eval-PROTOCOL[-K]`.
pub fn out_dir(dir: &Path, args: &EvalArgs) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        let mut name = format!("eval-{:?}", args.protocol).to_lowercase();
        if let Some(k) = args.labels_per_class {
            name.push_str(&format!("-{k}"));
        }
        dir.join(name)
    })
}

/// Runs `selfsup eval`; returns the test accuracy.
pub fn eval(args: &EvalArgs, command: &str) -> Result<f64> {
    let started = Instant::now();
    let dir = run_dir(&args.checkpoint)?;
    let mut cfg = load_run_config(&dir)?;
    if cfg.dataset == DatasetKind::Text {
        return crate::evaluate_text::eval_text(args, command, &dir, &cfg);
    }
    if let Some(d) = &args.data {
        cfg.data = d.display().to_string();
    }
    let mut method = load_method(&dir, &cfg)?;
    let data = load_images(cfg.dataset, &cfg.data, cfg.model.backbone.image_size)?;
    let test = test_split(&data, cfg.dataset)?;
    let train = budget(&data.train, args.labels_per_class, args.seed)?;
    let train_labels = labels_of(&train, "training")?;
    let test_labels = labels_of(test, "test")?;
    let classes = data.train.num_classes().max(test.num_classes());
    let out = out_dir(&dir, args);
    ensure_dir(&out)?;
    let norm = data.normalize.clone();
    let encoder = method.encoder_mut();
    let mut knn_used = None;
    let pred = match args.protocol {
        Protocol::Knn | Protocol::Linear => {
            let ftr = extract_features(encoder, &train, Some(&norm), 512)?;
            let fte = extract_features(encoder, test, Some(&norm), 512)?;
            if args.protocol == Protocol::Knn {
                let (pred, used) = knn_predict(&ftr, &train_labels, &fte, classes, args)?;
                knn_used = Some(used);
                pred
            } else {
                let probe = LinearProbe::fit(
                    &ftr,
                    &train_labels,
                    classes,
                    &LinearConfig {
                        seed: args.seed,
                        ..LinearConfig::default()
                    },
                )?;
                eprintln!(
                    "linear probe: {}, chosen on the labelled images",
                    probe.chosen_by()
                );
                probe.predict(&fte)?
            }
        }
        Protocol::Finetune => {
            let fcfg = FinetuneConfig {
                epochs: args.epochs,
                lr: args.lr,
                encoder_lr_scale: args.encoder_lr_scale,
                freeze: freeze_policy(&args.freeze)?,
                augment: args.augment,
                seed: args.seed,
                ..FinetuneConfig::default()
            };
            let progress = Progress::epochs("finetune", args.epochs as u64);
            let mut report = |epoch: usize, epochs: usize, loss: f64, val: f64| {
                progress.set_total(epochs as u64);
                progress.update(
                    epoch as u64,
                    &format!("loss {loss:.4} val {:.2}%", 100.0 * val),
                );
            };
            let (mut clf, res) =
                finetune(encoder, &train, Some(&norm), classes, &fcfg, &mut report)?;
            progress.finish();
            eprintln!(
                "fine-tuning: {} epochs, best validation accuracy {:.2}%",
                res.epochs_run,
                100.0 * res.val_accuracy
            );
            clf.predict(test, Some(&norm), 512)?
        }
    };
    let confusion = ConfusionMatrix::from_predictions(&test_labels, &pred, classes)?;
    let accuracy = confusion.accuracy();
    let key = match args.protocol {
        Protocol::Knn => "knn_accuracy",
        Protocol::Linear => "linear_accuracy",
        Protocol::Finetune => "finetune_accuracy",
    };
    let mut m = Map::new();
    m.insert("command".into(), json!(command));
    m.insert("method".into(), json!(cfg.method.as_str()));
    m.insert("backbone".into(), json!(cfg.backbone_name()));
    m.insert("dataset".into(), json!(cfg.dataset.as_str()));
    m.insert(
        "protocol".into(),
        json!(format!("{:?}", args.protocol).to_lowercase()),
    );
    m.insert(key.into(), num(accuracy));
    m.insert(
        "labels_per_class".into(),
        args.labels_per_class.map_or(json!("all"), |k| json!(k)),
    );
    if let Some(c) = &knn_used {
        m.insert("knn_k".into(), json!(c.k));
        m.insert("knn_temperature".into(), num(c.temperature));
        m.insert("knn_center".into(), json!(c.center));
        m.insert("knn_tuned".into(), json!(args.tune_knn));
    }
    m.insert("labelled_images".into(), json!(train.len));
    m.insert("test_images".into(), json!(test.len));
    m.insert("checkpoint".into(), json!(dir.display().to_string()));
    m.insert("seconds".into(), num(started.elapsed().as_secs_f64()));
    write_metrics(&out, &m)?;
    let names = class_names(test, classes);
    std::fs::write(
        out.join("confusion.md"),
        confusion.to_markdown(Some(&names.iter().map(String::as_str).collect::<Vec<_>>())),
    )
    .map_err(crate::error::io(out.join("confusion.md"), "writing"))?;
    let mut sections = vec![(
        format!("Confusion matrix ({key} {:.2}%)", 100.0 * accuracy),
        confusion_html(&confusion, &names),
    )];
    match embedding_plots(method.encoder_mut(), test, &test_labels, &norm) {
        Ok(s) => sections.extend(s),
        Err(e) => eprintln!("warning: embedding plots skipped: {e}"),
    }
    write_html(
        &out,
        &format!("selfsup eval: {} ({:?})", cfg.method, args.protocol),
        &format!(
            "<pre>{}</pre>",
            serde_json::to_string_pretty(&m).unwrap_or_default()
        ),
        &sections,
    )?;
    println!(
        "{key} = {:.2}% on {} test images ({} labelled training images{}); wrote {}",
        100.0 * accuracy,
        test.len,
        train.len,
        args.labels_per_class
            .map_or(String::new(), |k| format!(", {k} per class")),
        out.display()
    );
    Ok(accuracy)
}

/// Baseline accuracies.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaselineOutcome {
    /// Logistic regression on pixels.
    pub pixels: Option<f64>,
    /// Supervised from scratch.
    pub supervised: Option<f64>,
}

/// The supervised-from-scratch settings shared by `baseline` and `quickstart`.
///
/// At least `min_steps` optimiser steps run, however few the labels (10 per class make one
/// step of 64 images per epoch), so that small label budgets do not leave it undertrained.
pub fn supervised_config(
    epochs: usize,
    min_steps: usize,
    augment: bool,
    seed: u64,
) -> FinetuneConfig {
    FinetuneConfig {
        epochs,
        min_steps,
        lr: 1e-3,
        encoder_lr_scale: 1.0,
        freeze: FreezePolicy::None,
        augment,
        // The SSL recipe's augmentations (crop 0.3-1, flip, brightness/contrast jitter).
        view: crate::runconfig::AugmentConfig::default().to_view(28, None),
        // The whole cosine schedule runs; the best validation epoch's weights are kept.
        patience: 0,
        cosine: true,
        seed,
        ..FinetuneConfig::default()
    }
}

/// Runs both baselines on given data (used by `baseline` and `quickstart`).
#[allow(clippy::too_many_arguments)]
pub fn run_baselines(
    data: &ImageData,
    dataset: DatasetKind,
    which: Which,
    per_class: Option<usize>,
    seed: u64,
    backbone: &BackboneConfig,
    fcfg: &FinetuneConfig,
    out: &Path,
) -> Result<(BaselineOutcome, Vec<(String, String)>)> {
    let test = test_split(data, dataset)?;
    let train = budget(&data.train, per_class, seed)?;
    let classes = data.train.num_classes().max(test.num_classes());
    let names = class_names(test, classes);
    let mut outcome = BaselineOutcome::default();
    let mut sections = Vec::new();
    if matches!(which, Which::Pixels | Which::Both) {
        let t = Instant::now();
        let (acc, cm, probe) = pixels_logreg(
            &train,
            test,
            &LinearConfig {
                seed,
                ..LinearConfig::default()
            },
        )?;
        eprintln!(
            "pixels: logistic regression on standardised pixels, {}, test accuracy {:.2}% [{:.0} s]",
            probe.chosen_by(),
            100.0 * acc,
            t.elapsed().as_secs_f64()
        );
        outcome.pixels = Some(acc);
        sections.push((
            format!("Pixels: logistic regression ({:.2}%)", 100.0 * acc),
            confusion_html(&cm, &names),
        ));
    }
    if matches!(which, Which::Supervised | Which::Both) {
        let t = Instant::now();
        let progress = Progress::epochs("supervised", fcfg.epochs as u64);
        let mut report = |epoch: usize, epochs: usize, loss: f64, val: f64| {
            progress.set_total(epochs as u64);
            progress.update(
                epoch as u64,
                &format!("loss {loss:.4} val {:.2}%", 100.0 * val),
            );
        };
        let (acc, cm) = supervised_from_scratch(
            backbone,
            &train,
            test,
            Some(&data.normalize),
            fcfg,
            &mut report,
        )?;
        progress.finish();
        eprintln!(
            "supervised from scratch ({}): test accuracy {:.2}% [{:.0} s]",
            backbone.kind,
            100.0 * acc,
            t.elapsed().as_secs_f64()
        );
        outcome.supervised = Some(acc);
        sections.push((
            format!("Supervised from scratch ({:.2}%)", 100.0 * acc),
            confusion_html(&cm, &names),
        ));
    }
    let _ = out;
    Ok((outcome, sections))
}

/// Runs `selfsup baseline`.
pub fn baseline(args: &BaselineArgs, command: &str) -> Result<BaselineOutcome> {
    let started = Instant::now();
    if args.dataset == DatasetKind::Text {
        return input("baselines classify images: pick an image --dataset (for text, `selfsup eval` on a text run reports the n-gram and untrained-encoder baselines with the same labels)");
    }
    let kind: BackboneKind = parse_enum(
        "--backbone",
        &args.backbone,
        &["small-cnn", "resnet18", "vit"],
    )?;
    let defaults = RunConfig::defaults(selfsup_ssl::MethodName::Simclr, args.dataset);
    let mut backbone = defaults.model.backbone.clone();
    backbone.kind = kind;
    if let Some(w) = &args.widths {
        if kind != BackboneKind::SmallCnn || w.is_empty() || w.contains(&0) {
            return input(format!(
                "--widths {w:?}: give one or more positive widths, with --backbone small-cnn"
            ));
        }
        backbone.widths = w.clone();
    }
    let data_path = args
        .data
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let data = load_images(args.dataset, &data_path, backbone.image_size)?;
    ensure_dir(&args.out)?;
    let fcfg = supervised_config(args.epochs, args.min_steps, args.augment, args.seed);
    let (o, sections) = run_baselines(
        &data,
        args.dataset,
        args.which,
        args.labels_per_class,
        args.seed,
        &backbone,
        &fcfg,
        &args.out,
    )?;
    let mut m = Map::new();
    m.insert("command".into(), json!(command));
    m.insert("method".into(), json!("baseline"));
    m.insert("backbone".into(), json!(kind.as_str()));
    m.insert("dataset".into(), json!(args.dataset.as_str()));
    m.insert(
        "labels_per_class".into(),
        args.labels_per_class.map_or(json!("all"), |k| json!(k)),
    );
    if let Some(p) = o.pixels {
        m.insert("pixels_accuracy".into(), num(p));
    }
    if let Some(s) = o.supervised {
        m.insert("supervised_accuracy".into(), num(s));
        m.insert("supervised_augment".into(), json!(args.augment));
    }
    m.insert("seconds".into(), num(started.elapsed().as_secs_f64()));
    write_metrics(&args.out, &m)?;
    write_html(&args.out, "selfsup baseline", "", &sections)?;
    for (k, v) in [("pixels", o.pixels), ("supervised", o.supervised)] {
        if let Some(v) = v {
            println!("{k}_accuracy = {:.2}%", 100.0 * v);
        }
    }
    Ok(o)
}
