//! The per-epoch monitor of a pretraining run: weighted kNN and a linear probe on detached,
//! frozen features of labelled images, or the validation loss of a text model.

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::ImageDataset;
use selfsup_ssl::eval::{extract_features, knn_classify, KnnConfig, LinearConfig, LinearProbe};
use selfsup_ssl::feed::TextWindows;
use selfsup_ssl::{Encoder, Progress, SslBatch, SslMethod};
use selfsup_tensor::{no_grad, Generator};

use crate::error::Result;
use crate::runconfig::MonitorConfig;

/// The labelled images the monitor scores: a fixed bank of training images and a fixed set of
/// test queries.
pub struct ImageMonitor {
    bank: ImageDataset,
    bank_labels: Vec<usize>,
    queries: ImageDataset,
    query_labels: Vec<usize>,
    classes: usize,
    normalize: Normalize,
    cfg: MonitorConfig,
}

/// What the monitor measured.
#[derive(Clone, Copy, Debug)]
pub struct MonitorResult {
    /// Weighted kNN top-1 accuracy on the queries.
    pub knn: f64,
    /// Linear-probe top-1 accuracy on the queries.
    pub linear: f64,
}

fn labels(d: &ImageDataset) -> Option<Vec<usize>> {
    d.labels
        .as_ref()
        .map(|l| l.iter().map(|&v| v.max(0) as usize).collect())
}

/// The first `n` images of a seeded permutation of `d`.
pub fn random_subset(d: &ImageDataset, n: usize, seed: u64) -> Result<ImageDataset> {
    if n == 0 || n >= d.len {
        return Ok(d.clone());
    }
    let mut idx: Vec<usize> = (0..d.len).collect();
    selfsup_tensor::rng::Philox::new(seed, 0x6d6f6e).shuffle(&mut idx);
    idx.truncate(n);
    idx.sort_unstable();
    Ok(d.select(&idx)?)
}

impl ImageMonitor {
    /// A monitor over `train` (bank) and `test` (queries); `None` when either lacks labels.
    pub fn new(
        train: &ImageDataset,
        test: Option<&ImageDataset>,
        normalize: &Normalize,
        cfg: &MonitorConfig,
        seed: u64,
    ) -> Result<Option<Self>> {
        let Some(test) = test else { return Ok(None) };
        if !cfg.enabled || train.labels.is_none() || test.labels.is_none() {
            return Ok(None);
        }
        let bank = random_subset(train, cfg.bank, seed)?;
        let queries = random_subset(test, cfg.queries, seed ^ 1)?;
        let (Some(bank_labels), Some(query_labels)) = (labels(&bank), labels(&queries)) else {
            return Ok(None);
        };
        let classes = train.num_classes().max(test.num_classes());
        Ok(Some(ImageMonitor {
            bank,
            bank_labels,
            queries,
            query_labels,
            classes,
            normalize: normalize.clone(),
            cfg: cfg.clone(),
        }))
    }

    /// Scores the encoder (left in eval mode; the trainer puts it back in training mode).
    pub fn run(&self, encoder: &mut Encoder) -> Result<MonitorResult> {
        let bank = extract_features(encoder, &self.bank, Some(&self.normalize), 512)?;
        let queries = extract_features(encoder, &self.queries, Some(&self.normalize), 512)?;
        let pred = knn_classify(
            &bank,
            &self.bank_labels,
            &queries,
            self.classes,
            &KnnConfig {
                k: self.cfg.knn_k,
                temperature: self.cfg.knn_temperature,
                center: false,
            },
        )?;
        let knn = accuracy(&pred, &self.query_labels);
        let probe = LinearProbe::fit(
            &bank,
            &self.bank_labels,
            self.classes,
            &LinearConfig {
                l2: vec![1e-4],
                max_iter: 100,
                ..LinearConfig::default()
            },
        )?;
        let linear = accuracy(&probe.predict(&queries)?, &self.query_labels);
        Ok(MonitorResult { knn, linear })
    }

    /// The test images scored (for the embedding plot).
    pub fn queries(&self) -> (&ImageDataset, &[usize]) {
        (&self.queries, &self.query_labels)
    }
}

/// Fraction of equal entries.
pub fn accuracy(pred: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

/// Mean loss of a text method over up to `max_windows` consecutive validation windows, in eval
/// mode and without gradients, with a fixed generator (the same masks every time).
pub fn text_val_loss(
    method: &mut dyn SslMethod,
    windows: &TextWindows,
    batch: usize,
    max_windows: usize,
) -> Result<f64> {
    let _g = no_grad();
    method.set_train(false);
    let all = windows.sequential(max_windows)?;
    let mut g = Generator::new(0x0076_616c);
    let (mut sum, mut n) = (0.0, 0usize);
    for chunk in all.chunks(batch.max(1)) {
        let refs: Vec<&selfsup_tensor::Tensor> = chunk.iter().collect();
        let ids = selfsup_tensor::Tensor::concat(&refs, 0)?;
        let out = method.forward(
            &SslBatch::from_tokens(ids),
            Progress { step: 0, total: 1 },
            &mut g,
        )?;
        sum += out.loss.item()? * chunk.len() as f64;
        n += chunk.len();
    }
    method.set_train(true);
    Ok(if n == 0 { f64::NAN } else { sum / n as f64 })
}
