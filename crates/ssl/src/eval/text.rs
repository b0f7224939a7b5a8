//! Text classification features: the mean-pooled hidden states of a text encoder, and the
//! honest baseline of hashed bags of n-grams.

use selfsup_nn::Module;
use selfsup_tensor::{no_grad, DType, Tensor};

use crate::encoder::Encoder;
use crate::error::{config, Result};

/// Features `[N, dim]` (f32) of token sequences: the mean over positions of the text encoder's
/// final hidden states, every sequence cut to the encoder's context.
///
/// Sequences of equal length are batched together (at most `batch` at a time), so no padding
/// enters the attention or the mean. An empty sequence gets a zero row. Runs in evaluation mode
/// without recording gradients; the encoder is left in evaluation mode.
pub fn text_features(encoder: &mut Encoder, seqs: &[Vec<i64>], batch: usize) -> Result<Tensor> {
    let Some(text) = encoder.as_text() else {
        return config("text_features: the encoder is not a text transformer");
    };
    if batch == 0 {
        return config("text_features: batch must be at least 1");
    }
    let context = text.config.context;
    let d = encoder.out_dim();
    encoder.set_train(false);
    let _g = no_grad();
    let mut out = vec![0f32; seqs.len() * d];
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    let len = |i: usize| seqs[i].len().min(context);
    order.sort_by_key(|&i| len(i));
    let mut start = 0;
    while start < order.len() {
        let l = len(order[start]);
        let mut end = start;
        while end < order.len() && end - start < batch && len(order[end]) == l {
            end += 1;
        }
        if l > 0 {
            let rows = &order[start..end];
            let ids: Vec<i64> = rows.iter().flat_map(|&i| seqs[i][..l].to_vec()).collect();
            let f = encoder.embed(&Tensor::from_vec(ids, &[rows.len(), l])?)?;
            let f = if f.dtype() == DType::F32 {
                f
            } else {
                f.to_dtype(DType::F32)?
            };
            let f = f.to_vec::<f32>()?;
            for (r, &i) in rows.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&f[r * d..(r + 1) * d]);
            }
        }
        start = end;
    }
    Ok(Tensor::from_vec(out, &[seqs.len(), d])?)
}

/// 64-bit FNV-1a of `parts` (a stable hash: the same on every run and platform).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Hashed bag-of-n-grams features `[N, dims]` (f32), the usual strong baseline for topic
/// classification: lower-cased word unigrams and bigrams and character 1- to 3-grams, each
/// hashed (FNV-1a, kind-tagged) into `dims` buckets with sublinear counts `1 + ln(count)`,
/// every row scaled to unit L2 norm. `dims` must be positive.
pub fn ngram_features(texts: &[String], dims: usize) -> Result<Tensor> {
    if dims == 0 {
        return config("ngram_features: dims must be positive");
    }
    let mut out = vec![0f32; texts.len() * dims];
    let mut counts = std::collections::HashMap::<usize, u32>::new();
    for (t, row) in texts.iter().zip(out.chunks_mut(dims)) {
        counts.clear();
        let lower = t.to_lowercase();
        let mut add = |h: u64| *counts.entry((h % dims as u64) as usize).or_insert(0) += 1;
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .collect();
        for w in &words {
            add(fnv1a(&[b"w", w.as_bytes()]));
        }
        for p in words.windows(2) {
            add(fnv1a(&[b"b", p[0].as_bytes(), p[1].as_bytes()]));
        }
        let chars: Vec<char> = lower.chars().collect();
        let mut buf = [0u8; 16];
        for n in 1..=3usize {
            for win in chars.windows(n) {
                let mut len = 0;
                for c in win {
                    len += c.encode_utf8(&mut buf[len..]).len();
                }
                add(fnv1a(&[&[b'0' + n as u8], &buf[..len]]));
            }
        }
        for (&k, &c) in &counts {
            row[k] = 1.0 + (c as f32).ln();
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(Tensor::from_vec(out, &[texts.len(), dims])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneConfig, BackboneKind};
    use selfsup_tensor::Generator;

    #[test]
    fn ngram_rows_are_stable_unit_and_discriminative() {
        let texts = vec![
            "The kernel panicked.".to_string(),
            "the KERNEL panicked.".to_string(),
            "Roses are red".to_string(),
            String::new(),
        ];
        let f = ngram_features(&texts, 512).unwrap();
        let v = f.to_vec::<f32>().unwrap();
        let row = |i: usize| &v[i * 512..(i + 1) * 512];
        assert_eq!(row(0), row(1)); // lower-cased
        let n2: f32 = row(2).iter().map(|x| x * x).sum();
        assert!((n2 - 1.0).abs() < 1e-5);
        let dot: f32 = row(0).iter().zip(row(2)).map(|(a, b)| a * b).sum();
        assert!(dot < 0.5, "{dot}");
        assert!(row(3).iter().all(|&x| x == 0.0));
        assert_eq!(
            v,
            ngram_features(&texts, 512)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        );
        assert!(ngram_features(&texts, 0).is_err());
    }

    #[test]
    fn text_features_match_one_at_a_time_and_cut_to_context() {
        let cfg = BackboneConfig {
            kind: BackboneKind::Text,
            vocab: 12,
            context: 6,
            dim: 16,
            depth: 1,
            heads: 2,
            ..BackboneConfig::default()
        };
        let mut enc = Encoder::new(&cfg, false, true, &mut Generator::new(3)).unwrap();
        let seqs: Vec<Vec<i64>> = vec![
            vec![2, 3, 4],
            vec![5, 6, 7, 8, 9, 10, 11, 2],
            vec![],
            vec![4, 4, 4],
            vec![7],
        ];
        let all = text_features(&mut enc, &seqs, 2)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(all[2 * 16..3 * 16].iter().all(|&x| x == 0.0));
        for (i, s) in seqs.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            let one = text_features(&mut enc, &[s[..s.len().min(6)].to_vec()], 1)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for (a, b) in one.iter().zip(&all[i * 16..(i + 1) * 16]) {
                assert!((a - b).abs() < 1e-5, "row {i}: {a} vs {b}");
            }
        }
        let cnn = BackboneConfig::default();
        let mut c = Encoder::new(&cnn, false, false, &mut Generator::new(0)).unwrap();
        assert!(text_features(&mut c, &seqs, 2).is_err());
    }
}
