//! Count-based baselines for character-level language models: unigram and bigram
//! cross-entropy on the validation text, in nats per character.
//!
//! Both use additive smoothing whose strength is chosen on the last 10% of the training tokens
//! (fitted on the first 90%), then refitted on all training tokens: no validation data is used
//! for any choice.

/// Unigram and bigram validation losses (nats per character).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CountBaselines {
    /// Unigram model.
    pub unigram: f64,
    /// Bigram model.
    pub bigram: f64,
}

const ALPHAS: [f64; 5] = [1e-3, 1e-2, 0.1, 0.5, 1.0];

fn unigram_loss(fit: &[i64], eval: &[i64], vocab: usize, alpha: f64) -> f64 {
    let mut c = vec![0f64; vocab];
    for &t in fit {
        c[t as usize] += 1.0;
    }
    let total = fit.len() as f64 + alpha * vocab as f64;
    let n = eval.len().max(1) as f64;
    eval.iter()
        .map(|&t| -((c[t as usize] + alpha) / total).ln())
        .sum::<f64>()
        / n
}

fn bigram_loss(fit: &[i64], eval: &[i64], vocab: usize, alpha: f64) -> f64 {
    let mut c = vec![0f64; vocab * vocab];
    let mut row = vec![0f64; vocab];
    for w in fit.windows(2) {
        c[w[0] as usize * vocab + w[1] as usize] += 1.0;
        row[w[0] as usize] += 1.0;
    }
    let n = (eval.len().saturating_sub(1)).max(1) as f64;
    eval.windows(2)
        .map(|w| {
            let (a, b) = (w[0] as usize, w[1] as usize);
            -((c[a * vocab + b] + alpha) / (row[a] + alpha * vocab as f64)).ln()
        })
        .sum::<f64>()
        / n
}

fn best_alpha(train: &[i64], vocab: usize, f: fn(&[i64], &[i64], usize, f64) -> f64) -> f64 {
    let cut = train.len() * 9 / 10;
    let (fit, held) = train.split_at(cut);
    ALPHAS
        .iter()
        .copied()
        .min_by(|a, b| f(fit, held, vocab, *a).total_cmp(&f(fit, held, vocab, *b)))
        .unwrap_or(1.0)
}

/// The baselines for token ids in `0..vocab`.
pub fn count_baselines(train: &[i64], validation: &[i64], vocab: usize) -> CountBaselines {
    let ua = best_alpha(train, vocab, unigram_loss);
    let ba = best_alpha(train, vocab, bigram_loss);
    CountBaselines {
        unigram: unigram_loss(train, validation, vocab, ua),
        bigram: bigram_loss(train, validation, vocab, ba),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_losses() {
        // Uniform text over 2 symbols: unigram loss ln 2 (alpha irrelevant for equal counts).
        let t = [0i64, 1, 0, 1, 0, 1, 0, 1];
        assert!((unigram_loss(&t, &t, 2, 1.0) - 2f64.ln()).abs() < 1e-12);
        // Alternating text: the bigram model is near-certain with a small alpha.
        assert!(bigram_loss(&t, &t, 2, 1e-6) < 1e-5);
        let b = count_baselines(&t.repeat(20), &t, 2);
        assert!(b.bigram < b.unigram);
    }
}
