//! Fine-tuning a text encoder with a new linear head on labelled token sequences (BERT-style
//! fine-tuning; with a freshly initialised encoder, the supervised-from-scratch baseline).

use selfsup_nn::optim::Optimizer;
use selfsup_nn::{Linear, Module};
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use super::finetune::{
    check_config, cosine_lr, optimizer, BestEpoch, FinetuneConfig, FinetuneResult,
};
use super::split::stratified_split;
use crate::encoder::Encoder;
use crate::error::{config, Result};

/// The `[PAD]` id of the workspace's vocabularies.
const PAD: i64 = 0;

/// A text encoder with a linear head on its mean-pooled hidden states.
#[derive(Debug)]
pub struct TextClassifier<'a> {
    /// The (fine-tuned) text encoder.
    pub encoder: &'a mut Encoder,
    /// The linear head `[dim] -> [classes]`.
    pub head: Linear,
}

/// Rows `rows` of `seqs` cut to `context` and padded with `[PAD]` to the longest: ids `[B, T]`,
/// the key-padding mask `[B, T]` (1 at padding, `None` when nothing is padded) and the
/// pooling weights `[B, T, 1]` (`1 / length` at real tokens, 0 at padding).
fn padded(
    seqs: &[Vec<i64>],
    rows: &[usize],
    context: usize,
) -> Result<(Tensor, Option<Tensor>, Tensor)> {
    let len = |i: usize| seqs[i].len().min(context);
    let t = rows.iter().map(|&i| len(i)).max().unwrap_or(0).max(1);
    let b = rows.len();
    let mut ids = vec![PAD; b * t];
    let mut pad = vec![1f32; b * t];
    let mut w = vec![0f32; b * t];
    for (r, &i) in rows.iter().enumerate() {
        let l = len(i);
        ids[r * t..r * t + l].copy_from_slice(&seqs[i][..l]);
        for j in 0..l {
            pad[r * t + j] = 0.0;
            w[r * t + j] = 1.0 / l.max(1) as f32;
        }
    }
    let any_pad = pad.iter().any(|&p| p > 0.0);
    Ok((
        Tensor::from_vec(ids, &[b, t])?,
        if any_pad {
            Some(Tensor::from_vec(pad, &[b, t])?)
        } else {
            None
        },
        Tensor::from_vec(w, &[b, t, 1])?,
    ))
}

impl TextClassifier<'_> {
    /// Mean-pooled hidden states `[B, dim]` of the rows `rows` of `seqs` in the current mode:
    /// the mean over each sequence's own tokens (padding is masked out of the attention and
    /// the mean).
    pub fn pooled(&self, seqs: &[Vec<i64>], rows: &[usize]) -> Result<Tensor> {
        let Some(text) = self.encoder.as_text() else {
            return config("text classifier: the encoder is not a text transformer");
        };
        let (ids, pad, w) = padded(seqs, rows, text.config.context)?;
        let h = text.hidden(&ids, pad.as_ref())?;
        Ok(h.mul(&w)?.sum(&[1], false)?)
    }

    /// Class scores `[B, classes]` of the rows `rows` of `seqs` in the current mode.
    pub fn logits(&self, seqs: &[Vec<i64>], rows: &[usize]) -> Result<Tensor> {
        Ok(self.head.forward(&self.pooled(seqs, rows)?)?)
    }

    /// The predicted class of every sequence (evaluation mode, no gradients, `batch` at a
    /// time). Leaves the encoder in evaluation mode.
    pub fn predict(&mut self, seqs: &[Vec<i64>], batch: usize) -> Result<Vec<usize>> {
        if batch == 0 {
            return config("predict: batch must be at least 1");
        }
        self.encoder.set_train(false);
        let _g = no_grad();
        let mut out = vec![0usize; seqs.len()];
        // Equal lengths together, so little padding is computed.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        for rows in order.chunks(batch) {
            let pred = self.logits(seqs, rows)?.argmax(1, false)?.to_vec::<i64>()?;
            for (&i, p) in rows.iter().zip(pred) {
                out[i] = p as usize;
            }
        }
        Ok(out)
    }
}

/// Fine-tunes the text `encoder` with a new linear head on token sequences `seqs` with
/// `labels`, exactly as [`super::finetune()`] does for images: a stratified `cfg.val_fraction`
/// held out, AdamW (head at `cfg.lr`, encoder at `cfg.lr * cfg.encoder_lr_scale`, `cfg.freeze`
/// respected), cosine decay when `cfg.cosine`, at least `cfg.min_steps` steps, early stopping
/// after `cfg.patience` epochs without a better validation accuracy, and the best epoch's
/// weights restored. `cfg.augment` and `cfg.view` do not apply to text. Sequences longer than
/// the encoder's context are cut; empty sequences are an error.
pub fn text_finetune<'a>(
    encoder: &'a mut Encoder,
    seqs: &[Vec<i64>],
    labels: &[usize],
    classes: usize,
    cfg: &FinetuneConfig,
    progress: &mut dyn FnMut(usize, usize, f64, f64),
) -> Result<(TextClassifier<'a>, FinetuneResult)> {
    check_config(cfg)?;
    if encoder.as_text().is_none() {
        return config("text_finetune: the encoder is not a text transformer");
    }
    if seqs.len() != labels.len() {
        return config(format!(
            "text_finetune: {} sequences but {} labels",
            seqs.len(),
            labels.len()
        ));
    }
    if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
        return config(format!("text_finetune: sequence {i} is empty"));
    }
    super::check_labels(labels, classes, "text_finetune")?;
    let (fit, val) = stratified_split(labels, classes, cfg.val_fraction, cfg.seed)?;
    let val_seqs: Vec<Vec<i64>> = val.iter().map(|&i| seqs[i].clone()).collect();
    let val_labels: Vec<usize> = val.iter().map(|&i| labels[i]).collect();

    let mut g = Generator::new(cfg.seed);
    let head = Linear::new(encoder.out_dim(), classes, true, DType::F32, &mut g)?;
    let (mut opt, encoder_trains) = optimizer(encoder, &head, cfg)?;
    let mut clf = TextClassifier { encoder, head };

    let batch = cfg.batch.min(fit.len()).max(1);
    let per_epoch = (fit.len() / batch).max(1);
    let epochs = cfg.epochs.max(cfg.min_steps.div_ceil(per_epoch));
    let total_steps = (epochs * per_epoch) as f64;
    let mut best = BestEpoch::new(cfg.patience);
    let mut history = Vec::new();
    let mut step = 0usize;
    for epoch in 1..=epochs {
        clf.encoder.set_train(encoder_trains);
        let mut order = fit.clone();
        Philox::new(cfg.seed, 0x7465_7874_0000 + epoch as u64).shuffle(&mut order);
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        for rows in order.chunks_exact(batch).take(per_epoch) {
            let y: Vec<i64> = rows.iter().map(|&i| labels[i] as i64).collect();
            let logits = if encoder_trains {
                clf.logits(seqs, rows)?
            } else {
                let pooled = {
                    let _g = no_grad();
                    clf.pooled(seqs, rows)?.detach()
                };
                clf.head.forward(&pooled)?
            };
            let loss = logits.cross_entropy(&Tensor::from_vec(y, &[rows.len()])?)?;
            loss.backward()?;
            cosine_lr(&mut opt, cfg, step, total_steps);
            step += 1;
            opt.step()?;
            opt.zero_grad();
            clf.encoder.zero_grad();
            let l = loss.item()?;
            if !l.is_finite() {
                return Err(crate::SslError::NonFinite {
                    step: step as u64,
                    value: l,
                });
            }
            loss_sum += l;
            steps += 1;
        }
        let pred = clf.predict(&val_seqs, 64)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneConfig, BackboneKind};
    use crate::eval::FreezePolicy;

    fn tiny_encoder(seed: u64) -> Encoder {
        let cfg = BackboneConfig {
            kind: BackboneKind::Text,
            vocab: 10,
            context: 8,
            dim: 16,
            depth: 1,
            heads: 2,
            ..BackboneConfig::default()
        };
        Encoder::new(&cfg, false, true, &mut Generator::new(seed)).unwrap()
    }

    /// Class 0 sequences are made of ids 2-5, class 1 of ids 6-9, with random lengths 1-12.
    fn toy(n: usize, seed: u64) -> (Vec<Vec<i64>>, Vec<usize>) {
        let mut rng = Philox::new(seed, 1);
        let mut seqs = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = i % 2;
            let l = 1 + rng.below(12) as usize;
            seqs.push(
                (0..l)
                    .map(|_| 2 + 4 * c as i64 + rng.below(4) as i64)
                    .collect(),
            );
            labels.push(c);
        }
        (seqs, labels)
    }

    #[test]
    fn learns_a_separable_task_and_pools_over_real_tokens_only() {
        let (seqs, labels) = toy(64, 0);
        let mut enc = tiny_encoder(1);
        let cfg = FinetuneConfig {
            epochs: 30,
            lr: 3e-3,
            encoder_lr_scale: 1.0,
            batch: 16,
            patience: 0,
            ..FinetuneConfig::default()
        };
        let (mut clf, res) =
            text_finetune(&mut enc, &seqs, &labels, 2, &cfg, &mut |_, _, _, _| {}).unwrap();
        let (test, yt) = toy(40, 9);
        let pred = clf.predict(&test, 7).unwrap();
        let acc = crate::eval::accuracy(&pred, &yt);
        assert!(acc > 0.9, "accuracy {acc}, history {:?}", res.history);
        // Padding must not change a sequence's scores: alone vs beside a longer one.
        let short = vec![vec![3i64, 4], vec![6i64; 8]];
        let _g = no_grad();
        let both = clf
            .logits(&short, &[0, 1])
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let alone = clf.logits(&short, &[0]).unwrap().to_vec::<f32>().unwrap();
        for (a, b) in alone.iter().zip(&both[..2]) {
            assert!((a - b).abs() < 1e-5, "{alone:?} vs {both:?}");
        }
    }

    #[test]
    fn frozen_encoder_keeps_its_weights_and_errors_are_clear() {
        let (seqs, labels) = toy(32, 2);
        let mut enc = tiny_encoder(3);
        let before: Vec<f32> = enc.params()[0].1.to_vec().unwrap();
        let cfg = FinetuneConfig {
            epochs: 2,
            batch: 8,
            freeze: FreezePolicy::All,
            ..FinetuneConfig::default()
        };
        text_finetune(&mut enc, &seqs, &labels, 2, &cfg, &mut |_, _, _, _| {}).unwrap();
        assert_eq!(before, enc.params()[0].1.to_vec::<f32>().unwrap());
        let err = text_finetune(&mut enc, &seqs, &labels[1..], 2, &cfg, &mut |_, _, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 sequences but 31 labels"), "{err}");
        let mut bad = seqs.clone();
        bad[3].clear();
        assert!(text_finetune(&mut enc, &bad, &labels, 2, &cfg, &mut |_, _, _, _| {}).is_err());
    }
}
