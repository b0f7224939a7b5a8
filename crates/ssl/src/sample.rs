//! Sampling text from a causal [`TextTransformer`]: repeatedly feed the last `context` tokens,
//! take the logits of the last position, and pick the next token greedily (temperature 0) or
//! by drawing from `softmax(logits / temperature)`, optionally restricted to the `top_k` most
//! likely tokens.

use selfsup_nn::TextTransformer;
use selfsup_tensor::{no_grad, Generator, Tensor};

use crate::error::{config, Result};

/// Extends `prompt` by `max_new` tokens and returns the whole sequence (prompt first).
///
/// `temperature` 0 is greedy (argmax, the first on ties); otherwise each token is drawn from
/// the tempered softmax over the `top_k` largest logits (all of them with `None`; tokens tied
/// with the `k`-th largest stay in). Runs under `no_grad`; put the model in evaluation mode
/// first if it has dropout. Randomness comes from `g`, so the same seed gives the same sample.
pub fn sample(
    model: &TextTransformer,
    prompt: &[i64],
    max_new: usize,
    temperature: f64,
    top_k: Option<usize>,
    g: &mut Generator,
) -> Result<Vec<i64>> {
    let _ng = no_grad();
    if prompt.is_empty() {
        return config("sample: the prompt must hold at least one token");
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return config(format!(
            "sample: temperature = {temperature} must be finite and >= 0"
        ));
    }
    if top_k == Some(0) {
        return config("sample: top_k must be at least 1");
    }
    let vocab = model.config.vocab as i64;
    if let Some(bad) = prompt.iter().find(|&&t| t < 0 || t >= vocab) {
        return config(format!(
            "sample: prompt token {bad} is outside the vocabulary of {vocab}"
        ));
    }
    let ctx = model.config.context;
    let mut seq = prompt.to_vec();
    for _ in 0..max_new {
        let start = seq.len().saturating_sub(ctx);
        let window = &seq[start..];
        let ids = Tensor::from_vec(window.to_vec(), &[1, window.len()])?;
        let logits = model.forward(&ids)?;
        let last = logits
            .select(1, window.len() - 1)?
            .reshape(&[model.config.vocab])?
            .to_vec_f64()?;
        seq.push(pick(&last, temperature, top_k, g) as i64);
    }
    Ok(seq)
}

/// The next token from one row of logits (see [`sample`]).
fn pick(logits: &[f64], temperature: f64, top_k: Option<usize>, g: &mut Generator) -> usize {
    let argmax = logits
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0;
    if temperature == 0.0 {
        return argmax;
    }
    let threshold = match top_k {
        Some(k) if k < logits.len() => {
            let mut sorted = logits.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            sorted[k - 1]
        }
        _ => f64::NEG_INFINITY,
    };
    let best = logits[argmax];
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| {
            if v >= threshold {
                ((v - best) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return argmax;
    }
    let mut u = g.fork().uniform_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if u < *w {
                return i;
            }
            u -= w;
        }
    }
    argmax
}
