//! Trains one SSL method for a few hundred steps on real data (Fashion-MNIST for image
//! methods, the fortunes corpus for text methods) and prints the loss before and after, the
//! collapse diagnostics and the time: the runs recorded in docs/methods.md.
//!
//! ```text
//! cargo run --release -p selfsup-ssl --example train_method -- simclr 300 256
//! ```
//! Arguments: method name, steps (default 300), batch size (default 256 images or 32 text
//! windows), then optionally the SmallCnn widths as `a,b,c[,d..]` (default 32,64,128) for image
//! methods, or `nsp` for `mlm` (next-sentence pairs from the fortunes' sentences). GPT prints a
//! short sample at the end. Needs `apt-get install dataset-fashion-mnist` /
//! `apt-get install fortunes`.
//!
//! Colorization needs RGB images: Fashion-MNIST is grayscale, so for it each image (left
//! un-normalised, in [0, 1]) is colourised with a fixed per-class palette (class `c` gets the
//! fully saturated hue `36 c` degrees at value 1, scaled by the pixel's gray level), which makes
//! chroma a deterministic function of the garment's class and gray level.
//!
//! Any argument `key=value` (TOML value) overrides that field of the method's
//! `MethodConfig`, e.g. `momentum=0.99` or `dino_out_dim=256`.
//!
//! Image methods other than colorization also report a weighted kNN accuracy (k = 20,
//! T = 0.07) of the encoder's features, from the first 10,000 training images to the 10,000
//! test images, before and after the run: the untrained encoder is the baseline a healthy run
//! must beat.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use selfsup_data::ImageDataset;
use selfsup_data::{idx, text, vocab::Vocab, LoaderConfig, Split};
use selfsup_ssl::eval::{extract_features, knn_classify, KnnConfig};
use selfsup_ssl::feed::{default_view, image_loader, to_ssl_batch, TextWindows};
use selfsup_ssl::{build, MethodConfig, MethodName, OptimConfig, SslBatch, Trainer};
use selfsup_tensor::{Generator, Tensor};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (overrides, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.contains('='));
    let method: MethodName = args
        .first()
        .map(String::as_str)
        .unwrap_or("simclr")
        .parse()?;
    let steps: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(300);
    let mut cfg = MethodConfig::for_method(method);
    if let Some(w) = args.get(3) {
        let v: Vec<usize> = w
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()?;
        cfg.backbone.widths = v;
    }
    if !overrides.is_empty() {
        let mut table = toml::Table::try_from(&cfg)?;
        for o in &overrides {
            let parsed: toml::Table = toml::from_str(o)?;
            table.extend(parsed);
        }
        cfg = table.try_into()?;
        eprintln!("overrides: {}", overrides.join(" "));
    }
    let mut optim = OptimConfig::default();
    let mut g = Generator::new(0);
    let started = Instant::now();
    let mut losses = Vec::new();
    let mut last = None;
    let mut first_stats = None;
    let mut knn = None;
    let mut metrics: Vec<Vec<(String, f64)>> = Vec::new();
    if method.is_text() {
        let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
        let corpus = text::fortunes_corpus(Path::new(text::DEBIAN_FORTUNES_DIR))?;
        let vocab = Vocab::chars_from_text(vec!["[PAD]".into(), "[MASK]".into()], &corpus.text);
        cfg.backbone.vocab = vocab.len();
        cfg.backbone.context = 64;
        optim.optimizer = selfsup_ssl::OptimizerKind::Adamw;
        optim.weight_decay = 0.1;
        let windows = TextWindows::new(vocab.encode(&corpus.train)?, 64, 0)?;
        let nsp = method == MethodName::Mlm && args.get(3).map(String::as_str) == Some("nsp");
        let mut pairs = Vec::new();
        if nsp {
            cfg.nsp = true;
            let docs: Vec<Vec<String>> = corpus
                .entries
                .iter()
                .map(|e| text::split_sentences(e))
                .collect();
            for p in text::nsp_pairs(&docs, 0)? {
                pairs.push((vocab.encode(&p.first)?, vocab.encode(&p.second)?, p.is_next));
            }
        }
        let mut trainer = Trainer::new(build(&cfg, &mut g)?, &optim, steps, 0)?;
        for s in 0..steps {
            let b = if nsp {
                selfsup_ssl::feed::nsp_batch(&pairs, 64, s, batch, 0)?
            } else {
                SslBatch::from_tokens(windows.batch(s, batch)?)
            };
            let st = trainer.train_step(&b)?;
            log(s, steps, &st);
            metrics.push(st.metrics.clone());
            losses.push(st.loss);
            if s == 0 {
                first_stats = Some(st.clone());
            }
            last = Some(st);
        }
        if method == MethodName::Gpt {
            trainer.method.set_train(false);
            if let Some(model) = trainer.method.encoder().as_text() {
                let prompt = vocab.encode("The ")?;
                let out = selfsup_ssl::sample::sample(
                    model,
                    &prompt,
                    200,
                    0.8,
                    Some(10),
                    &mut Generator::new(1),
                )?;
                eprintln!(
                    "sample (temperature 0.8, top-k 10):\n{}",
                    vocab.decode(&out)
                );
            }
        }
    } else {
        let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
        let train = Arc::new(idx::load_fashion_mnist_debian(Split::Train)?);
        let method_box = build(&cfg, &mut g)?;
        let kind = method_box.input();
        let colour = method == MethodName::Colorization;
        let mut view = default_view(method, cfg.backbone.image_size);
        if colour {
            view.normalize = None;
        }
        let loader = image_loader(
            train.clone(),
            &kind,
            &view,
            LoaderConfig {
                batch_size: batch,
                ..LoaderConfig::default()
            },
        )?;
        let mut trainer = Trainer::new(method_box, &optim, steps, 0)?;
        let probe = if colour {
            None
        } else {
            let test = idx::load_fashion_mnist_debian(Split::Test)?;
            let rows: Vec<usize> = (0..train.len.min(10_000)).collect();
            let before = knn_accuracy(&mut trainer, &train.select(&rows)?, &test, &view)?;
            Some((train.select(&rows)?, test, before))
        };
        let mut s = 0;
        'outer: for epoch in 0.. {
            for b in loader.epoch(epoch) {
                if s == steps {
                    break 'outer;
                }
                let labels = b.labels.clone().unwrap_or_default();
                let mut sb = to_ssl_batch(b)?;
                if colour {
                    sb.views[0] = colourise(&sb.views[0], &labels)?;
                }
                let st = trainer.train_step(&sb)?;
                log(s, steps, &st);
                metrics.push(st.metrics.clone());
                losses.push(st.loss);
                if s == 0 {
                    first_stats = Some(st.clone());
                }
                last = Some(st);
                s += 1;
            }
        }
        if let Some((probe_train, test, before)) = probe {
            let after = knn_accuracy(&mut trainer, &probe_train, &test, &view)?;
            knn = Some((before, after));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let k = (losses.len() / 10).max(1);
    let first: f64 = losses.iter().take(k).sum::<f64>() / k as f64;
    let final_: f64 = losses.iter().rev().take(k).sum::<f64>() / k as f64;
    let diag = match &last {
        Some(st) => st.diagnostics()?.map(|d| d.summary()),
        None => None,
    };
    let first_diag = match &first_stats {
        Some(st) => st.diagnostics()?.map(|d| d.summary()),
        None => None,
    };
    if let Some(d) = first_diag {
        eprintln!("diagnostics at step 0: {d}");
    }
    if let Some((a, b)) = knn {
        eprintln!(
            "kNN accuracy (10k train -> 10k test): {:.2}% untrained -> {:.2}% trained",
            100.0 * a,
            100.0 * b
        );
    }
    // The method's own figures (pretext accuracy), averaged like the loss.
    let extra: Vec<String> = metrics
        .first()
        .map(|m| m.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let avg = |it: &mut dyn Iterator<Item = &Vec<(String, f64)>>| {
                it.take(k).map(|m| m[i].1).sum::<f64>() / k as f64
            };
            let a = avg(&mut metrics.iter());
            let b = avg(&mut metrics.iter().rev());
            format!("{name} {a:.3} -> {b:.3}")
        })
        .collect();
    let knn_cell = match knn {
        Some((a, b)) => format!("{:.1}% -> {:.1}%", 100.0 * a, 100.0 * b),
        None => "-".into(),
    };
    println!(
        "| {method} | {steps} | {first:.4} | {final_:.4} | {} | {knn_cell} | {} | {secs:.0} s |",
        diag.unwrap_or_else(|| "-".into()),
        if extra.is_empty() {
            "-".into()
        } else {
            extra.join(", ")
        }
    );
    Ok(())
}

/// Weighted kNN accuracy (k = 20, T = 0.07) of the method's encoder features from `train` to
/// `test`; leaves the method in training mode.
fn knn_accuracy(
    trainer: &mut Trainer,
    train: &ImageDataset,
    test: &ImageDataset,
    view: &selfsup_data::ViewConfig,
) -> Result<f64, Box<dyn std::error::Error>> {
    let nm = view.normalize.as_ref();
    let enc = trainer.method.encoder_mut();
    let ftr = extract_features(enc, train, nm, 500)?;
    let fte = extract_features(enc, test, nm, 500)?;
    trainer.method.set_train(true);
    let labels = |d: &ImageDataset| -> Vec<usize> {
        d.labels
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|&l| l as usize)
            .collect()
    };
    let (ltr, lte) = (labels(train), labels(test));
    let pred = knn_classify(&ftr, &ltr, &fte, 10, &KnnConfig::default())?;
    let hits = pred.iter().zip(&lte).filter(|(p, l)| p == l).count();
    Ok(hits as f64 / lte.len().max(1) as f64)
}

/// RGB of class `c`: hue `36 c` degrees, full saturation and value.
fn palette(c: i64) -> [f32; 3] {
    let h = (c.rem_euclid(10) as f32) * 36.0 / 60.0;
    let x = 1.0 - ((h % 2.0) - 1.0).abs();
    match h as usize {
        0 => [1.0, x, 0.0],
        1 => [x, 1.0, 0.0],
        2 => [0.0, 1.0, x],
        3 => [0.0, x, 1.0],
        4 => [x, 0.0, 1.0],
        _ => [1.0, 0.0, x],
    }
}

/// Gray images `[B, 1, H, W]` coloured by their labels' palette entries: `[B, 3, H, W]`.
fn colourise(x: &Tensor, labels: &[i64]) -> Result<Tensor, Box<dyn std::error::Error>> {
    let b = x.shape()[0];
    if labels.len() != b {
        return Err("colorization: the batch has no labels to colour it by".into());
    }
    let p: Vec<f32> = labels.iter().flat_map(|&c| palette(c)).collect();
    Ok(x.mul(&Tensor::from_vec(p, &[b, 3, 1, 1])?)?)
}

fn log(s: u64, steps: u64, st: &selfsup_ssl::StepStats) {
    if s.is_multiple_of(25) || s + 1 == steps {
        let extra: Vec<String> = st
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        eprintln!(
            "step {s:4} loss {:.4} lr {:.2e} {}",
            st.loss,
            st.lr,
            extra.join(" ")
        );
    }
}
