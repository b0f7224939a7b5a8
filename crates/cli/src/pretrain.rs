//! `selfsup pretrain`: trains a method on unlabelled data with checkpoints, exact resume, a NaN
//! guard, a per-epoch monitor and collapse diagnostics, and writes the run directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use selfsup_data::{ImageDataset, LoaderConfig};
use selfsup_nn::checkpoint::{
    load_checkpoint, save_checkpoint, save_model, LoadOptions, TrainState,
};
use selfsup_nn::Module;
use selfsup_ssl::diagnostics::Diagnostics;
use selfsup_ssl::feed::{image_loader, to_ssl_batch, TextWindows};
use selfsup_ssl::{build, SslBatch, SslError, StepStats, Trainer};
use selfsup_tensor::Generator;
use serde_json::{json, Map, Value};

use crate::datasets::{load_images, load_text, vocab_for, ImageData};
use crate::error::{input, CliError, Result};
use crate::monitor::{random_subset, text_val_loss, ImageMonitor};
use crate::runconfig::{DatasetKind, RunConfig};
use crate::runlog::{ensure_dir, num, write_metrics, Progress, RunLog};

/// The checkpoint file of a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The exported encoder of a run directory.
pub const ENCODER: &str = "encoder.safetensors";
/// The vocabulary of a text run.
pub const VOCAB: &str = "vocab.txt";

/// What a finished pretraining run measured.
#[derive(Clone, Debug, Default)]
pub struct PretrainSummary {
    /// Mean loss of the last logged steps.
    pub final_loss: f64,
    /// Steps trained in total.
    pub steps: u64,
    /// Seconds spent in this invocation.
    pub seconds: f64,
    /// Last monitor kNN accuracy.
    pub knn: Option<f64>,
    /// Last monitor linear-probe accuracy.
    pub linear: Option<f64>,
    /// Last collapse diagnostics.
    pub diagnostics: Option<Diagnostics>,
    /// Text validation loss (nats per token).
    pub val_loss: Option<f64>,
}

enum Source {
    Images {
        data: ImageData,
        train: Arc<ImageDataset>,
    },
    Text {
        train: TextWindows,
        val: TextWindows,
        train_tokens: Vec<i64>,
        val_tokens: Vec<i64>,
        vocab: usize,
    },
}

/// The device named by `train.device` / `--device`, checked to be usable (a plain error naming
/// what is missing otherwise), with every kernel it runs compiled and loaded.
pub fn training_device(name: &str) -> Result<selfsup_tensor::Device> {
    let d = selfsup_tensor::Device::parse(name)
        .map_err(|e| crate::error::CliError::Input(format!("--device {name}: {e}")))?;
    d.check()
        .map_err(|e| crate::error::CliError::Input(format!("--device {name}: {e}")))?;
    // Every kernel now, on all cores at once, rather than one file at a time in the first
    // steps; a no-op on the CPU and when the on-disk cache holds them.
    let k = d
        .load_kernels()
        .map_err(|e| crate::error::CliError::Input(format!("--device {name}: {e}")))?;
    if k.compiled > 0 {
        eprintln!(
            "{name}: compiled {} of {} kernel files with NVRTC in {:.1} s (cached for later runs)",
            k.compiled, k.files, k.seconds
        );
    }
    Ok(d)
}

/// Device memory held by tensors and reserved by the pool, in bytes, on a GPU.
fn device_memory(d: selfsup_tensor::Device) -> Option<(u64, u64)> {
    match d {
        selfsup_tensor::Device::Cpu => None,
        selfsup_tensor::Device::Cuda(i) => selfsup_tensor::cuda::CudaBackend::get(i)
            .ok()?
            .memory_in_use()
            .ok(),
    }
}

/// Runs (or resumes) pretraining into `out`; `stop_at` stops after that step with a checkpoint,
/// as if interrupted. `command` is recorded in metrics.json.
pub fn pretrain(
    mut cfg: RunConfig,
    out: &Path,
    resume: bool,
    stop_at: Option<u64>,
    command: &str,
) -> Result<PretrainSummary> {
    let started = Instant::now();
    ensure_dir(out)?;
    let ckpt_path = out.join(CHECKPOINT);
    if !resume && ckpt_path.exists() {
        return input(format!(
            "{} already holds a run ({CHECKPOINT}); continue it with `selfsup pretrain --resume {}` or pass another --out",
            out.display(),
            out.display()
        ));
    }
    if resume && !ckpt_path.is_file() {
        return input(format!(
            "--resume {}: no {CHECKPOINT} there; pass the --out directory of an earlier pretrain run",
            out.display()
        ));
    }
    cfg.validate()?;

    // Data first: a text model's vocabulary size comes from the corpus.
    let source = if cfg.dataset == DatasetKind::Text {
        let text = load_text(&cfg.data)?;
        let vocab = vocab_for(&text);
        let mut train_text = text.train.clone();
        if cfg.train.subset > 0 && cfg.train.subset < train_text.len() {
            let cut = train_text
                .char_indices()
                .nth(cfg.train.subset)
                .map(|(i, _)| i)
                .unwrap_or(train_text.len());
            train_text.truncate(cut);
        }
        cfg.model.backbone.vocab = vocab.len();
        vocab.save(&out.join(crate::pretrain::VOCAB))?;
        let ctx = cfg.model.backbone.context;
        let train_tokens = vocab.encode(&train_text)?;
        let val_tokens = vocab.encode(&text.validation)?;
        Source::Text {
            train: TextWindows::new(train_tokens.clone(), ctx, cfg.seed)?,
            val: TextWindows::new(val_tokens.clone(), ctx, cfg.seed)?,
            train_tokens,
            val_tokens,
            vocab: vocab.len(),
        }
    } else {
        let data = load_images(cfg.dataset, &cfg.data, cfg.model.backbone.image_size)?;
        let train = if cfg.train.subset > 0 {
            random_subset(&data.train, cfg.train.subset, cfg.seed)?
        } else {
            data.train.clone()
        };
        Source::Images {
            train: Arc::new(train),
            data,
        }
    };
    cfg.save(out)?;

    let mut g = Generator::new(cfg.seed);
    let method = build(&cfg.model, &mut g)?;
    let kind = method.input();
    let batch = cfg.train.batch_size;

    let (loader, per_epoch) = match &source {
        Source::Images { data, train } => {
            let view = cfg
                .augment
                .to_view(cfg.model.backbone.image_size, Some(data.normalize.clone()));
            let loader = image_loader(
                Arc::clone(train),
                &kind,
                &view,
                LoaderConfig {
                    batch_size: batch,
                    seed: cfg.seed,
                    ..LoaderConfig::default()
                },
            )?;
            let n = loader.batches_per_epoch() as u64;
            if n == 0 {
                return input(format!(
                    "{} training images are fewer than one batch of {batch}: lower --batch-size",
                    train.len
                ));
            }
            (Some(loader), n)
        }
        Source::Text { train, .. } => {
            let n = (train.len() / (batch * cfg.model.backbone.context)).max(1) as u64;
            (None, n)
        }
    };
    let mut total = cfg.train.epochs * per_epoch;
    if cfg.train.max_steps > 0 && (total == 0 || cfg.train.max_steps < total) {
        total = cfg.train.max_steps;
    }
    let device = training_device(&cfg.train.device)?;
    let mut trainer = Trainer::on_device(method, &cfg.optim, total, cfg.seed, device)?;
    trainer.set_precision(
        cfg.train
            .precision
            .parse()
            .map_err(|e| crate::error::CliError::Input(format!("train.precision: {e}")))?,
    );

    let mut resumed_from = None;
    if resume {
        let state = load_checkpoint(
            &ckpt_path,
            trainer.method.as_ref() as &dyn Module,
            Some(&mut *trainer.optimizer),
            &LoadOptions::default(),
        )?;
        trainer.step = state.step;
        if let Some(&(seed, offset)) = state.generators.get("method") {
            trainer.generator = Generator::from_state(seed, offset);
        }
        resumed_from = Some(state.step);
    }
    let mut log = RunLog::open(out, resumed_from)?;
    let monitor = match &source {
        Source::Images { data, .. } => ImageMonitor::new(
            &data.train,
            data.test.as_ref(),
            &data.normalize,
            &cfg.monitor,
            cfg.seed,
        )?,
        Source::Text { .. } => None,
    };

    let save = |trainer: &Trainer, step: u64| -> Result<()> {
        let mut state = TrainState {
            step,
            epoch: step / per_epoch,
            ..TrainState::default()
        };
        state
            .generators
            .insert("method".into(), trainer.generator.state());
        save_checkpoint(
            &ckpt_path,
            trainer.method.as_ref() as &dyn Module,
            Some(trainer.optimizer.as_ref() as &dyn selfsup_nn::optim::Optimizer),
            &state,
        )?;
        Ok(())
    };

    let unit = if cfg.dataset == DatasetKind::Text {
        "tok/s"
    } else {
        "img/s"
    };
    let per_step_items = match &source {
        Source::Text { .. } => (batch * cfg.model.backbone.context) as f64,
        Source::Images { .. } => batch as f64,
    };
    let progress = Progress::new(
        cfg.method.as_str(),
        trainer.step,
        total,
        cfg.train.log_every,
    );
    if let Some(s) = resumed_from {
        progress.println(&format!(
            "resuming {} at step {s} of {total}",
            out.display()
        ));
    }
    let mut summary = PretrainSummary::default();
    let mut recent: Vec<f64> = Vec::new();
    let mut last_stats: Option<StepStats> = None;
    let mut window_start = Instant::now();
    let mut window_steps = 0u64;
    let mut rate = 0.0;

    let mut on_step = |trainer: &mut Trainer,
                       batch: SslBatch,
                       log: &mut RunLog,
                       last: &mut Option<StepStats>|
     -> Result<()> {
        let step = trainer.step;
        let st = match trainer.train_step(&batch) {
            Ok(st) => st,
            Err(err @ (SslError::NonFinite { .. } | SslError::Diverged { .. })) => {
                let (step, what) = match err {
                    SslError::Diverged { step, what, value } => {
                        (step, format!("{what} became {value}"))
                    }
                    SslError::NonFinite { step, value } => {
                        (step, format!("the loss became {value}"))
                    }
                    other => return Err(other.into()),
                };
                progress.finish();
                let kept = if ckpt_path.is_file() {
                    format!(
                        "the last good checkpoint is kept at {} (resume with --resume {} after lowering optim.lr = {} or setting optim.clip_grad)",
                        ckpt_path.display(),
                        out.display(),
                        cfg.optim.lr
                    )
                } else {
                    format!(
                        "no checkpoint had been written yet; lower optim.lr = {} or set optim.clip_grad",
                        cfg.optim.lr
                    )
                };
                log.write(json!({"step": step, "event": "diverged", "what": what}))?;
                return Err(CliError::Diverged(format!(
                    "stopped: {what} at step {step}; {kept}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        window_steps += 1;
        let el = window_start.elapsed().as_secs_f64();
        if el > 2.0 {
            rate = window_steps as f64 * per_step_items / el;
            window_start = Instant::now();
            window_steps = 0;
        }
        recent.push(st.loss);
        if recent.len() > 20 {
            recent.remove(0);
        }
        let done = step + 1;
        if done % cfg.train.log_every.max(1) == 0 || done == total {
            let mut rec = Map::new();
            rec.insert("step".into(), json!(done));
            rec.insert("epoch".into(), json!(step / per_epoch));
            rec.insert("loss".into(), num(st.loss));
            rec.insert("lr".into(), num(st.lr));
            rec.insert("throughput".into(), num(rate));
            for (k, v) in &st.metrics {
                rec.insert(k.clone(), num(*v));
            }
            if let Some((used, reserved)) = device_memory(device) {
                rec.insert("device_mem_mib".into(), num(used as f64 / (1 << 20) as f64));
                rec.insert(
                    "device_reserved_mib".into(),
                    num(reserved as f64 / (1 << 20) as f64),
                );
            }
            log.write(Value::Object(rec))?;
        }
        progress.update(
            done,
            &format!("loss {:.4} lr {:.2e} {:.0} {unit}", st.loss, st.lr, rate),
        );
        if cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0 && done < total
        {
            save(trainer, done)?;
        }
        *last = Some(st);
        Ok(())
    };

    let epoch_end = |trainer: &mut Trainer,
                     epoch: u64,
                     log: &mut RunLog,
                     last: &Option<StepStats>,
                     summary: &mut PretrainSummary|
     -> Result<()> {
        let mut rec = Map::new();
        rec.insert("epoch".into(), json!(epoch));
        rec.insert("step".into(), json!(trainer.step));
        rec.insert("event".into(), json!("epoch"));
        if let Some(d) = last
            .as_ref()
            .map(|s| s.diagnostics())
            .transpose()?
            .flatten()
        {
            rec.insert("embedding_std".into(), num(d.embedding_std));
            rec.insert("healthy_std".into(), num(d.healthy_std));
            rec.insert("effective_rank".into(), num(d.effective_rank));
            if let Some(a) = d.alignment {
                rec.insert("alignment".into(), num(a));
            }
            rec.insert("uniformity".into(), num(d.uniformity));
            let line = format!("epoch {epoch}: {}", d.summary());
            progress.println(&line);
            if d.collapsed() {
                progress.println(&format!(
                    "warning: epoch {epoch}: the embeddings have COLLAPSED (std {:.4}, healthy {:.4}); lower the learning rate or change the method's settings",
                    d.embedding_std, d.healthy_std
                ));
                rec.insert("collapsed".into(), json!(true));
            }
            summary.diagnostics = Some(d);
        }
        if let Some(m) = &monitor {
            let r = m.run(trainer.method.encoder_mut())?;
            trainer.method.set_train(true);
            rec.insert("knn_accuracy".into(), num(r.knn));
            rec.insert("linear_accuracy".into(), num(r.linear));
            progress.println(&format!(
                "epoch {epoch}: monitor kNN {:.2}% linear {:.2}%",
                100.0 * r.knn,
                100.0 * r.linear
            ));
            summary.knn = Some(r.knn);
            summary.linear = Some(r.linear);
        }
        if let Source::Text { val, .. } = &source {
            let v = text_val_loss(trainer.method.as_mut(), val, batch, 256)?;
            rec.insert("val_loss".into(), num(v));
            progress.println(&format!("epoch {epoch}: validation loss {v:.4} nats/token"));
            summary.val_loss = Some(v);
        }
        log.write(Value::Object(rec))
    };

    let start_step = trainer.step;
    while trainer.step < total {
        let epoch = trainer.step / per_epoch;
        let first = (trainer.step % per_epoch) as usize;
        match (&source, &loader) {
            (Source::Images { .. }, Some(loader)) => {
                for b in loader.epoch_from(epoch, first) {
                    if trainer.step >= total || Some(trainer.step) == stop_at {
                        break;
                    }
                    on_step(&mut trainer, to_ssl_batch(b)?, &mut log, &mut last_stats)?;
                }
            }
            (Source::Text { train, .. }, _) => {
                for _ in first as u64..per_epoch {
                    if trainer.step >= total || Some(trainer.step) == stop_at {
                        break;
                    }
                    let ids = train.batch(trainer.step, batch)?;
                    on_step(
                        &mut trainer,
                        SslBatch::from_tokens(ids),
                        &mut log,
                        &mut last_stats,
                    )?;
                }
            }
            _ => return input("internal: no loader for image data"),
        }
        if Some(trainer.step) == stop_at && trainer.step < total {
            progress.finish();
            save(&trainer, trainer.step)?;
            log.write(json!({"step": trainer.step, "event": "stopped"}))?;
            summary.steps = trainer.step;
            summary.seconds = started.elapsed().as_secs_f64();
            summary.final_loss = recent.last().copied().unwrap_or(f64::NAN);
            eprintln!(
                "stopped at step {} of {total} as asked; continue with `selfsup pretrain --resume {}`",
                trainer.step,
                out.display()
            );
            return Ok(summary);
        }
        if trainer.step % per_epoch == 0 || trainer.step >= total {
            epoch_end(&mut trainer, epoch, &mut log, &last_stats, &mut summary)?;
        }
    }
    progress.finish();
    save(&trainer, trainer.step)?;
    save_model(out.join(ENCODER), trainer.method.encoder())?;

    summary.final_loss = if recent.is_empty() {
        f64::NAN
    } else {
        recent.iter().sum::<f64>() / recent.len() as f64
    };
    summary.steps = trainer.step;
    summary.seconds = started.elapsed().as_secs_f64();

    let mut m = Map::new();
    m.insert("command".into(), json!(command));
    m.insert("method".into(), json!(cfg.method.as_str()));
    m.insert("backbone".into(), json!(cfg.backbone_name()));
    m.insert("dataset".into(), json!(cfg.dataset.as_str()));
    m.insert("seconds".into(), num(summary.seconds));
    m.insert("steps".into(), json!(summary.steps));
    m.insert(
        "steps_this_invocation".into(),
        json!(summary.steps - start_step),
    );
    m.insert("final_loss".into(), num(summary.final_loss));
    m.insert(
        if unit == "tok/s" {
            "tokens_per_second"
        } else {
            "images_per_second"
        }
        .to_string(),
        num(rate),
    );
    if let Some(k) = summary.knn {
        m.insert("knn_accuracy".into(), num(k));
    }
    if let Some(l) = summary.linear {
        m.insert("linear_accuracy".into(), num(l));
    }
    if summary.knn.is_some() {
        m.insert(
            "monitor".into(),
            json!({"note": "knn_accuracy and linear_accuracy here come from the per-epoch monitor (bank of labelled training images, a fixed subset of the test split); `selfsup eval` gives the full protocols", "bank": cfg.monitor.bank, "queries": cfg.monitor.queries}),
        );
    }
    if let Some(d) = &summary.diagnostics {
        m.insert("embedding_std".into(), num(d.embedding_std));
        m.insert("effective_rank".into(), num(d.effective_rank));
    }
    if let Source::Text {
        train_tokens,
        val_tokens,
        vocab,
        ..
    } = &source
    {
        if let Some(v) = summary.val_loss {
            m.insert("val_loss".into(), num(v));
        }
        let b = crate::textstats::count_baselines(train_tokens, val_tokens, *vocab);
        m.insert("unigram_loss".into(), num(b.unigram));
        m.insert("bigram_loss".into(), num(b.bigram));
        m.insert("loss_unit".into(), json!("nats per character"));
        if cfg.method == selfsup_ssl::MethodName::Gpt {
            if let Some(tt) = trainer.method.encoder().as_text() {
                let vocab = selfsup_data::vocab::Vocab::load(&out.join(VOCAB))?;
                // The first characters of the validation text as the prompt.
                let prompt: Vec<i64> = val_tokens.iter().take(4).copied().collect();
                let mut g = Generator::new(cfg.seed);
                let ids = selfsup_ssl::sample::sample(tt, &prompt, 200, 0.8, Some(20), &mut g)?;
                let text = vocab.decode(&ids);
                progress.println(&format!("sample: {text}"));
                m.insert("sample".into(), json!(text));
            }
        }
    }
    write_metrics(out, &m)?;
    let report = crate::report::pretrain_report(
        out,
        &cfg,
        &source_queries(&source, &monitor),
        trainer.method.encoder_mut(),
    );
    if let Err(e) = report {
        eprintln!("warning: report.html not written: {e}");
    }
    Ok(summary)
}

/// Test images and labels for the embedding plot, when the run has labelled test data.
fn source_queries<'a>(
    _source: &'a Source,
    monitor: &'a Option<ImageMonitor>,
) -> Option<(
    &'a ImageDataset,
    &'a [usize],
    selfsup_data::augment::normalize::Normalize,
)> {
    match (_source, monitor) {
        (Source::Images { data, .. }, Some(m)) => {
            let (d, l) = m.queries();
            Some((d, l, data.normalize.clone()))
        }
        _ => None,
    }
}

/// The run directory a `--checkpoint` argument names (the directory itself, or the folder of a
/// `.safetensors` file in it).
pub fn run_dir(checkpoint: &Path) -> Result<PathBuf> {
    if !checkpoint.exists() {
        return input(format!(
            "--checkpoint {}: no such file or directory; pass the --out directory of `selfsup pretrain`",
            checkpoint.display()
        ));
    }
    Ok(if checkpoint.is_file() {
        checkpoint
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    } else {
        checkpoint.to_path_buf()
    })
}
