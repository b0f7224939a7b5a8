//! Honest baselines on Fashion-MNIST: logistic regression on standardised raw pixels with 60
//! labels per class (seed 0) and with all 60,000 labels, scored on the 10,000 test images, with
//! the time of every step; then kNN and the linear probe on 128-d random-encoder features to
//! time the protocols at the quickstart's sizes.
//!
//! ```text
//! cargo run --release -p selfsup-ssl --example eval_baselines
//! ```
//! Needs `apt-get install dataset-fashion-mnist`; prints a message and exits otherwise.

use std::path::Path;
use std::time::Instant;

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::{idx, Split};
use selfsup_ssl::eval::baselines::pixel_features;
use selfsup_ssl::eval::{
    extract_features, knn_classify, labelled_subset, ConfusionMatrix, KnnConfig, LinearConfig,
    LinearProbe,
};
use selfsup_ssl::{BackboneConfig, Encoder};
use selfsup_tensor::Generator;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn labels(d: &selfsup_data::ImageDataset) -> Vec<usize> {
    d.labels
        .as_ref()
        .map(|l| l.iter().map(|&x| x as usize).collect())
        .unwrap_or_default()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    if !Path::new(idx::DEBIAN_FASHION_MNIST_DIR).exists() {
        println!(
            "skipped: {} is absent (apt-get install dataset-fashion-mnist)",
            idx::DEBIAN_FASHION_MNIST_DIR
        );
        return Ok(());
    }
    let t = Instant::now();
    let train = idx::load_fashion_mnist_debian(Split::Train)?;
    let test = idx::load_fashion_mnist_debian(Split::Test)?;
    println!("load: {:.2}s", t.elapsed().as_secs_f64());
    let yt = labels(&test);
    let cfg = LinearConfig::default();
    let xt = pixel_features(&test)?;
    // Protocol timings at the quickstart's sizes: 128-d features of a random SmallCnn.
    let mut enc = Encoder::new(
        &BackboneConfig::default(),
        false,
        false,
        &mut Generator::new(0),
    )?;
    let nm = Normalize::fashion_mnist();
    let t = Instant::now();
    let ftr = extract_features(&mut enc, &train, Some(&nm), 512)?;
    let fte = extract_features(&mut enc, &test, Some(&nm), 512)?;
    println!(
        "random SmallCnn features (70k images): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let pred = knn_classify(&ftr, &labels(&train), &fte, 10, &KnnConfig::default())?;
    let acc = ConfusionMatrix::from_predictions(&yt, &pred, 10)?.accuracy();
    println!(
        "kNN 60k x 10k x 128 (k 20, T 0.07): {:.2}% in {:.2}s",
        100.0 * acc,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let probe = LinearProbe::fit(&ftr, &labels(&train), 10, &cfg)?;
    let t_fit = t.elapsed().as_secs_f64();
    let acc = ConfusionMatrix::from_predictions(&yt, &probe.predict(&fte)?, 10)?.accuracy();
    println!(
        "linear probe 60k x 128: {:.2}% | l2 {:e} | iters {} | fit {:.2}s",
        100.0 * acc,
        probe.l2,
        probe.iterations,
        t_fit
    );
    for per_class in [Some(60), None] {
        let sub = match per_class {
            Some(k) => labelled_subset(&train, k, 0)?,
            None => train.clone(),
        };
        let t = Instant::now();
        let x = pixel_features(&sub)?;
        let t_feat = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let probe = LinearProbe::fit(&x, &labels(&sub), 10, &cfg)?;
        let t_fit = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let pred = probe.predict(&xt)?;
        let t_pred = t.elapsed().as_secs_f64();
        let cm = ConfusionMatrix::from_predictions(&yt, &pred, 10)?;
        println!(
            "pixels logreg, {} labels: test {:.2}% | {} (scores {:?}) | iters {} |grad|inf {:.1e} | features {:.2}s fit {:.2}s predict {:.2}s",
            sub.len,
            100.0 * cm.accuracy(),
            probe.chosen_by(),
            probe.l2_scores,
            probe.iterations,
            probe.grad_inf,
            t_feat,
            t_fit,
            t_pred
        );
    }
    Ok(())
}
