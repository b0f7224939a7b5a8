//! `selfsup eval` on a text run: the fortune-topic task (which of eight fortune files an entry
//! comes from), the pretrained encoder against two baselines that see the same labels: the
//! same architecture without pretraining (left at its random initialisation for the kNN and
//! linear protocols, trained from scratch for fine-tuning), and logistic regression on hashed
//! bags of word and character n-grams.

use std::path::{Path, PathBuf};
use std::time::Instant;

use selfsup_data::text::DEBIAN_FORTUNES_DIR;
use selfsup_data::topics::{fortune_topics, TextClassification, DEFAULT_TOPICS};
use selfsup_data::vocab::Vocab;
use selfsup_ssl::eval::{
    ngram_features, text_features, text_finetune, ConfusionMatrix, FinetuneConfig, FreezePolicy,
    LinearConfig, LinearProbe,
};
use selfsup_ssl::{build, Encoder};
use selfsup_tensor::{Generator, Tensor};
use serde_json::{json, Map};

use crate::cli::{EvalArgs, Protocol};
use crate::error::{input, Result};
use crate::evaluate::{freeze_policy, load_method, out_dir};
use crate::pretrain::VOCAB;
use crate::report::{confusion_html, write_html};
use crate::runconfig::RunConfig;
use crate::runlog::{ensure_dir, num, write_metrics, Progress};

/// Hash buckets of the n-gram baseline.
pub const NGRAM_DIMS: usize = 4096;

/// Sequences encoded per forward pass.
const FEATURE_BATCH: usize = 64;

/// The fortunes directory a text run was trained on (the Debian package when it named none).
fn fortunes_dir(data: &str) -> Result<PathBuf> {
    let p = if data.is_empty() {
        PathBuf::from(DEBIAN_FORTUNES_DIR)
    } else {
        PathBuf::from(data)
    };
    if !p.join("fortunes").is_file() {
        return input(format!(
            "{}: text evaluation classifies fortunes by file and needs the fortunes directory (install with `sudo apt-get install fortunes`, or pass --data DIR of fortune files)",
            p.display()
        ));
    }
    Ok(p)
}

/// Test predictions of one feature set under `protocol` (kNN or the linear probe).
fn predict(
    protocol: Protocol,
    train: &Tensor,
    labels: &[usize],
    test: &Tensor,
    classes: usize,
    args: &EvalArgs,
) -> Result<Vec<usize>> {
    Ok(match protocol {
        Protocol::Knn => crate::evaluate::knn_predict(train, labels, test, classes, args)?.0,
        _ => LinearProbe::fit(
            train,
            labels,
            classes,
            &LinearConfig {
                seed: args.seed,
                ..LinearConfig::default()
            },
        )?
        .predict(test)?,
    })
}

/// Features of the labelled and the test texts through `encoder`.
fn encoder_features(
    encoder: &mut Encoder,
    vocab: &Vocab,
    labelled: &[(String, usize)],
    test: &[(String, usize)],
) -> Result<(Tensor, Tensor)> {
    let enc = |set: &[(String, usize)]| -> Vec<Vec<i64>> {
        set.iter().map(|(t, _)| vocab.encode_lossy(t).0).collect()
    };
    Ok((
        text_features(encoder, &enc(labelled), FEATURE_BATCH)?,
        text_features(encoder, &enc(test), FEATURE_BATCH)?,
    ))
}

/// Runs `selfsup eval` for a text run directory `dir` with config `cfg`; returns the accuracy
/// of the pretrained encoder.
pub fn eval_text(args: &EvalArgs, command: &str, dir: &Path, cfg: &RunConfig) -> Result<f64> {
    let started = Instant::now();
    let data = args
        .data
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| cfg.data.clone());
    let task: TextClassification = fortune_topics(&fortunes_dir(&data)?, &DEFAULT_TOPICS)?;
    let labelled = match args.labels_per_class {
        Some(0) => return input("--labels-per-class 0 leaves nothing to train on: use 1 or more"),
        Some(k) => task.labelled_subset(k, args.seed),
        None => task.train.clone(),
    };
    let classes = task.num_classes();
    let y: Vec<usize> = labelled.iter().map(|(_, c)| *c).collect();
    let yt: Vec<usize> = task.test.iter().map(|(_, c)| *c).collect();
    let vocab = Vocab::load(&dir.join(VOCAB))?;
    let out = out_dir(dir, args);
    ensure_dir(&out)?;

    let mut method = load_method(dir, cfg)?;
    let mut g = Generator::new(cfg.seed);
    let mut untrained = build(&cfg.model, &mut g)?;
    let proto = format!("{:?}", args.protocol).to_lowercase();
    let (key, control_key, control_title, cm, rcm) = if args.protocol == Protocol::Finetune {
        let seqs = |set: &[(String, usize)]| -> Result<Vec<Vec<i64>>> {
            set.iter()
                .map(|(t, _)| match vocab.encode_lossy(t).0 {
                    s if s.is_empty() => input(format!(
                        "the run's vocabulary has none of the characters of the fortune {t:?}: evaluate on the fortunes the run was trained on"
                    )),
                    s => Ok(s),
                })
                .collect()
        };
        let (str_, ste) = (seqs(&labelled)?, seqs(&task.test)?);
        let fcfg = FinetuneConfig {
            epochs: args.epochs,
            lr: args.lr,
            encoder_lr_scale: args.encoder_lr_scale,
            freeze: freeze_policy(&args.freeze)?,
            batch: 32,
            // Both models run the whole cosine schedule; the best validation epoch is kept.
            patience: 0,
            seed: args.seed,
            ..FinetuneConfig::default()
        };
        let run =
            |encoder: &mut Encoder, what: &str, fcfg: &FinetuneConfig| -> Result<ConfusionMatrix> {
                let progress = Progress::epochs(what, fcfg.epochs as u64);
                let mut report = |epoch: usize, epochs: usize, loss: f64, val: f64| {
                    progress.set_total(epochs as u64);
                    progress.update(
                        epoch as u64,
                        &format!("loss {loss:.4} val {:.2}%", 100.0 * val),
                    );
                };
                let (mut clf, res) = text_finetune(encoder, &str_, &y, classes, fcfg, &mut report)?;
                progress.finish();
                eprintln!(
                    "{what}: {} epochs, best validation accuracy {:.2}%",
                    res.epochs_run,
                    100.0 * res.val_accuracy
                );
                Ok(ConfusionMatrix::from_predictions(
                    &yt,
                    &clf.predict(&ste, 64)?,
                    classes,
                )?)
            };
        let cm = run(method.encoder_mut(), "finetune", &fcfg)?;
        let scratch = FinetuneConfig {
            freeze: FreezePolicy::None,
            encoder_lr_scale: 1.0,
            ..fcfg.clone()
        };
        let rcm = run(untrained.encoder_mut(), "supervised from scratch", &scratch)?;
        (
            "finetune_accuracy",
            "supervised_accuracy",
            "Same encoder trained from scratch on the labels",
            cm,
            rcm,
        )
    } else {
        let (ftr, fte) = encoder_features(method.encoder_mut(), &vocab, &labelled, &task.test)?;
        let pred = predict(args.protocol, &ftr, &y, &fte, classes, args)?;
        let cm = ConfusionMatrix::from_predictions(&yt, &pred, classes)?;
        let (rtr, rte) = encoder_features(untrained.encoder_mut(), &vocab, &labelled, &task.test)?;
        let rpred = predict(args.protocol, &rtr, &y, &rte, classes, args)?;
        let rcm = ConfusionMatrix::from_predictions(&yt, &rpred, classes)?;
        let key = if args.protocol == Protocol::Knn {
            "knn_accuracy"
        } else {
            "linear_accuracy"
        };
        (
            key,
            "random_encoder_accuracy",
            "Same encoder untrained",
            cm,
            rcm,
        )
    };

    let texts =
        |set: &[(String, usize)]| -> Vec<String> { set.iter().map(|(t, _)| t.clone()).collect() };
    let ntr = ngram_features(&texts(&labelled), NGRAM_DIMS)?;
    let nte = ngram_features(&texts(&task.test), NGRAM_DIMS)?;
    let npred = predict(Protocol::Linear, &ntr, &y, &nte, classes, args)?;
    let ncm = ConfusionMatrix::from_predictions(&yt, &npred, classes)?;

    let mut m = Map::new();
    m.insert("command".into(), json!(command));
    m.insert("method".into(), json!(cfg.method.as_str()));
    m.insert("backbone".into(), json!(cfg.backbone_name()));
    m.insert("dataset".into(), json!(cfg.dataset.as_str()));
    m.insert("task".into(), json!("fortune-topics"));
    m.insert("classes".into(), json!(task.classes));
    m.insert(
        "protocol".into(),
        json!(format!("{:?}", args.protocol).to_lowercase()),
    );
    m.insert(key.into(), num(cm.accuracy()));
    m.insert(control_key.into(), num(rcm.accuracy()));
    m.insert("ngram_accuracy".into(), num(ncm.accuracy()));
    m.insert(
        "labels_per_class".into(),
        args.labels_per_class.map_or(json!("all"), |k| json!(k)),
    );
    m.insert("labelled_texts".into(), json!(labelled.len()));
    m.insert("test_texts".into(), json!(task.test.len()));
    m.insert("checkpoint".into(), json!(dir.display().to_string()));
    m.insert("seconds".into(), num(started.elapsed().as_secs_f64()));
    write_metrics(&out, &m)?;
    let names: Vec<&str> = task.classes.iter().map(String::as_str).collect();
    std::fs::write(out.join("confusion.md"), cm.to_markdown(Some(&names)))
        .map_err(crate::error::io(out.join("confusion.md"), "writing"))?;
    let sections = vec![
        (
            format!(
                "Pretrained {} encoder, {proto} ({:.2}%)",
                cfg.method,
                100.0 * cm.accuracy()
            ),
            confusion_html(&cm, &task.classes),
        ),
        (
            format!("{control_title}, {proto} ({:.2}%)", 100.0 * rcm.accuracy()),
            confusion_html(&rcm, &task.classes),
        ),
        (
            format!(
                "Bag of n-grams, logistic regression ({:.2}%)",
                100.0 * ncm.accuracy()
            ),
            confusion_html(&ncm, &task.classes),
        ),
    ];
    write_html(
        &out,
        &format!("selfsup eval: {} on fortune topics ({proto})", cfg.method),
        &format!(
            "<pre>{}</pre>",
            serde_json::to_string_pretty(&m).unwrap_or_default()
        ),
        &sections,
    )?;
    let budget = args
        .labels_per_class
        .map_or("all labels".to_string(), |k| format!("{k} per class"));
    println!(
        "fortune topics ({} classes, {} labelled texts, {budget}; {} test texts):",
        classes,
        labelled.len(),
        task.test.len()
    );
    println!(
        "  {key} = {:.2}% (pretrained {}), {control_key} = {:.2}% ({}), ngram_accuracy = {:.2}% (bag of n-grams, logistic regression); wrote {}",
        100.0 * cm.accuracy(),
        cfg.method,
        100.0 * rcm.accuracy(),
        control_title.to_lowercase(),
        100.0 * ncm.accuracy(),
        out.display()
    );
    Ok(cm.accuracy())
}
