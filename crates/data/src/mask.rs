//! Masking generators for masked modelling: MAE random patch masks, block-wise masks
//! (BEiT/SimMIM), BERT token masking and span masking.

use selfsup_tensor::rng::Philox;

use crate::error::{DataError, Result};

/// The label value that loss functions ignore (PyTorch's `ignore_index` default).
pub const IGNORE_INDEX: i64 = -100;

/// MAE-style random masks for a batch: per sample, patches are ranked by uniform noise; the
/// lowest-noise `keep` patches are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct MaeMask {
    /// `[batch, keep]`: indices of the kept patches, in shuffled order (row-major).
    pub ids_keep: Vec<i64>,
    /// `[batch, patches]`: position of each patch in the shuffled order (gather index that
    /// un-shuffles `[kept tokens, mask tokens]`).
    pub ids_restore: Vec<i64>,
    /// `[batch, patches]`: 1.0 for masked patches, 0.0 for kept ones.
    pub mask: Vec<f32>,
    /// Batch size.
    pub batch: usize,
    /// Patches per sample.
    pub patches: usize,
    /// Kept patches per sample: `floor(patches * (1 - ratio))`.
    pub keep: usize,
}

/// Draws MAE masks for `batch` samples of `patches` patches at `ratio` masked. Sample `i` uses
/// `Philox(seed, stream0 + i)`.
pub fn mae_mask(
    batch: usize,
    patches: usize,
    ratio: f64,
    seed: u64,
    stream0: u64,
) -> Result<MaeMask> {
    if !(0.0..1.0).contains(&ratio) || patches == 0 {
        return Err(DataError::invalid(
            "MAE mask",
            format!("ratio {ratio} must be in [0, 1) and patches positive"),
        ));
    }
    let keep = (patches as f64 * (1.0 - ratio)) as usize;
    let mut m = MaeMask {
        ids_keep: Vec::with_capacity(batch * keep),
        ids_restore: vec![0; batch * patches],
        mask: vec![1.0; batch * patches],
        batch,
        patches,
        keep,
    };
    for b in 0..batch {
        let mut rng = Philox::new(seed, stream0.wrapping_add(b as u64));
        let noise: Vec<f32> = (0..patches).map(|_| rng.uniform_f32()).collect();
        let mut shuffle: Vec<usize> = (0..patches).collect();
        shuffle.sort_by(|&x, &y| noise[x].total_cmp(&noise[y]).then(x.cmp(&y)));
        for (rank, &p) in shuffle.iter().enumerate() {
            m.ids_restore[b * patches + p] = rank as i64;
            if rank < keep {
                m.mask[b * patches + p] = 0.0;
            }
        }
        m.ids_keep.extend(shuffle[..keep].iter().map(|&p| p as i64));
    }
    Ok(m)
}

/// BEiT's block-wise masking on a `height x width` patch grid: rectangles of at least
/// `min_patches` patches with aspect ratio in `[min_aspect, 1/min_aspect]` are added until
/// `num_masked` patches are masked (or no block fits). Returns the row-major boolean mask.
pub fn block_mask(
    height: usize,
    width: usize,
    num_masked: usize,
    min_patches: usize,
    min_aspect: f64,
    rng: &mut Philox,
) -> Vec<bool> {
    let mut mask = vec![false; height * width];
    let (la, lb) = (min_aspect.ln(), (1.0 / min_aspect).ln());
    let (la, lb) = (la.min(lb), la.max(lb));
    let mut count = 0;
    while count < num_masked {
        let max_patches = num_masked - count;
        let mut delta = 0;
        for _ in 0..10 {
            let target =
                rng.uniform_range(min_patches as f64, (max_patches.max(min_patches)) as f64);
            let aspect = rng.uniform_range(la, lb).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if w < width && h < height && w > 0 && h > 0 {
                let top = rng.below((height - h + 1) as u64) as usize;
                let left = rng.below((width - w + 1) as u64) as usize;
                let already = (top..top + h)
                    .flat_map(|y| (left..left + w).map(move |x| (y, x)))
                    .filter(|&(y, x)| mask[y * width + x])
                    .count();
                let new = h * w - already;
                if new > 0 && new <= max_patches {
                    for y in top..top + h {
                        for x in left..left + w {
                            mask[y * width + x] = true;
                        }
                    }
                    delta = new;
                    break;
                }
            }
        }
        if delta == 0 {
            break;
        }
        count += delta;
    }
    mask
}

/// SimMIM's masking: the `height x width` patch grid is covered by `block x block` mask units
/// (`block` must divide both sides); a random `ratio` of the units is masked. Row-major mask over
/// patches.
pub fn simmim_mask(
    height: usize,
    width: usize,
    block: usize,
    ratio: f64,
    rng: &mut Philox,
) -> Result<Vec<bool>> {
    if block == 0 || height % block != 0 || width % block != 0 {
        return Err(DataError::invalid(
            "SimMIM mask",
            format!("block {block} must divide the {height}x{width} grid"),
        ));
    }
    let (gh, gw) = (height / block, width / block);
    let units = gh * gw;
    let n = (units as f64 * ratio).ceil() as usize;
    let perm = rng.permutation(units);
    let mut unit_mask = vec![false; units];
    for &u in &perm[..n.min(units)] {
        unit_mask[u] = true;
    }
    Ok((0..height * width)
        .map(|p| unit_mask[(p / width / block) * gw + (p % width) / block])
        .collect())
}

/// BERT masking settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BertMasking {
    /// Probability that a (non-special) token is selected for prediction (0.15).
    pub prob: f64,
    /// The `[MASK]` token id.
    pub mask_token: i64,
    /// Vocabulary size (random replacements are drawn from the non-special ids below it).
    pub vocab_size: usize,
    /// Ids never selected (padding, `[CLS]`, `[SEP]`, `[MASK]` ...).
    pub special: Vec<i64>,
}

/// Masked inputs and prediction targets.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskedTokens {
    /// The input ids with the selected tokens replaced.
    pub inputs: Vec<i64>,
    /// The original id at selected positions, [`IGNORE_INDEX`] elsewhere.
    pub targets: Vec<i64>,
}

impl BertMasking {
    fn replace(
        &self,
        inputs: &mut [i64],
        targets: &mut [i64],
        i: usize,
        rng: &mut Philox,
        normal: &[i64],
    ) {
        targets[i] = inputs[i];
        let r = rng.uniform_f64();
        if r < 0.8 {
            inputs[i] = self.mask_token;
        } else if r < 0.9 && !normal.is_empty() {
            inputs[i] = normal[rng.below(normal.len() as u64) as usize];
        }
    }

    fn normal_ids(&self) -> Vec<i64> {
        (0..self.vocab_size as i64)
            .filter(|t| !self.special.contains(t) && *t != self.mask_token)
            .collect()
    }

    /// Masks a token sequence (any shape, flattened): each non-special token is selected with
    /// `prob`; a selected token becomes `[MASK]` (80%), a random non-special token (10%) or stays
    /// (10%).
    #[allow(clippy::needless_range_loop)]
    pub fn apply(&self, tokens: &[i64], rng: &mut Philox) -> MaskedTokens {
        let normal = self.normal_ids();
        let mut inputs = tokens.to_vec();
        let mut targets = vec![IGNORE_INDEX; tokens.len()];
        for i in 0..tokens.len() {
            if self.special.contains(&tokens[i]) || tokens[i] == self.mask_token {
                continue;
            }
            if rng.bernoulli(self.prob) {
                self.replace(&mut inputs, &mut targets, i, rng, &normal);
            }
        }
        MaskedTokens { inputs, targets }
    }

    /// Span masking (SpanBERT): spans with geometric lengths (mean `mean_span`, at most
    /// `max_span`) are selected until `prob` of the non-special tokens are covered; each selected
    /// token is then replaced as in [`BertMasking::apply`]. Spans never cover special tokens.
    pub fn apply_spans(
        &self,
        tokens: &[i64],
        mean_span: f64,
        max_span: usize,
        rng: &mut Philox,
    ) -> MaskedTokens {
        let normal = self.normal_ids();
        let mut inputs = tokens.to_vec();
        let mut targets = vec![IGNORE_INDEX; tokens.len()];
        let maskable: Vec<usize> = (0..tokens.len())
            .filter(|&i| !self.special.contains(&tokens[i]) && tokens[i] != self.mask_token)
            .collect();
        let budget = (maskable.len() as f64 * self.prob).round() as usize;
        let p = 1.0 / mean_span.max(1.0);
        let mut selected = vec![false; tokens.len()];
        let mut count = 0;
        let mut tries = 0;
        while count < budget && tries < 100 * (budget + 1) && !maskable.is_empty() {
            tries += 1;
            let mut len = 1;
            while len < max_span.max(1) && !rng.bernoulli(p) {
                len += 1;
            }
            let len = len.min(budget - count);
            let start = maskable[rng.below(maskable.len() as u64) as usize];
            for i in start..(start + len).min(tokens.len()) {
                if self.special.contains(&tokens[i]) || tokens[i] == self.mask_token {
                    break;
                }
                if !selected[i] {
                    selected[i] = true;
                    count += 1;
                }
            }
        }
        for (i, &s) in selected.iter().enumerate() {
            if s {
                self.replace(&mut inputs, &mut targets, i, rng, &normal);
            }
        }
        MaskedTokens { inputs, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mae_mask_keeps_the_ratio_and_restores() {
        let m = mae_mask(4, 196, 0.75, 0, 0).unwrap();
        assert_eq!(m.keep, 49);
        for b in 0..4 {
            let mask = &m.mask[b * 196..(b + 1) * 196];
            assert_eq!(mask.iter().filter(|&&x| x == 1.0).count(), 147);
            for &k in &m.ids_keep[b * 49..(b + 1) * 49] {
                assert_eq!(mask[k as usize], 0.0);
                assert!(m.ids_restore[b * 196 + k as usize] < 49);
            }
        }
        assert_ne!(m.ids_keep[..49], m.ids_keep[49..98]);
        // a 2x2 example: restore is the inverse permutation of the shuffle
        let m = mae_mask(1, 4, 0.5, 3, 0).unwrap();
        let mut restored = [0i64; 4];
        for p in 0..4 {
            restored[m.ids_restore[p] as usize] = p as i64;
        }
        assert_eq!(&restored[..2], &m.ids_keep[..]);
    }

    #[test]
    fn block_mask_reaches_its_target() {
        let mut rng = Philox::new(0, 0);
        let mut total = 0;
        for _ in 0..50 {
            let m = block_mask(14, 14, 75, 16, 0.3, &mut rng);
            let n = m.iter().filter(|&&x| x).count();
            assert!(n <= 75);
            total += n;
        }
        assert!(total as f64 / 50.0 > 60.0, "{}", total as f64 / 50.0);
    }

    #[test]
    fn simmim_mask_masks_whole_units() {
        let m = simmim_mask(4, 4, 2, 0.5, &mut Philox::new(1, 0)).unwrap();
        assert_eq!(m.iter().filter(|&&x| x).count(), 8);
        for p in 0..16 {
            let (y, x) = (p / 4, p % 4);
            assert_eq!(m[p], m[(y / 2 * 2) * 4 + x / 2 * 2]);
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn bert_masking_proportions() {
        let bm = BertMasking {
            prob: 0.15,
            mask_token: 1,
            vocab_size: 100,
            special: vec![0, 1, 2],
        };
        let mut tokens: Vec<i64> = (0..200_000).map(|i| 3 + (i * 7 % 97) as i64).collect();
        for i in (0..tokens.len()).step_by(50) {
            tokens[i] = 0; // padding/special tokens must never be selected
        }
        let out = bm.apply(&tokens, &mut Philox::new(2, 0));
        let (mut sel, mut masked, mut random, mut same) = (0, 0, 0, 0);
        for i in 0..tokens.len() {
            if tokens[i] == 0 {
                assert_eq!(out.targets[i], IGNORE_INDEX);
                assert_eq!(out.inputs[i], 0);
                continue;
            }
            if out.targets[i] == IGNORE_INDEX {
                assert_eq!(out.inputs[i], tokens[i]);
                continue;
            }
            sel += 1;
            assert_eq!(out.targets[i], tokens[i]);
            if out.inputs[i] == 1 {
                masked += 1;
            } else if out.inputs[i] == tokens[i] {
                same += 1;
            } else {
                random += 1;
                assert!(out.inputs[i] >= 3);
            }
        }
        let n = (tokens.len() - tokens.len() / 50) as f64;
        assert!((sel as f64 / n - 0.15).abs() < 0.005, "{sel}");
        let s = sel as f64;
        assert!((masked as f64 / s - 0.8).abs() < 0.01);
        // a random replacement can hit the original token (1 in 97), counting as unchanged
        assert!((random as f64 / s - 0.1).abs() < 0.01, "{random}");
        assert!((same as f64 / s - 0.1).abs() < 0.01, "{same}");
    }

    #[test]
    fn span_masking_covers_the_budget_in_runs() {
        let bm = BertMasking {
            prob: 0.15,
            mask_token: 1,
            vocab_size: 50,
            special: vec![0],
        };
        let tokens: Vec<i64> = (0..1000)
            .map(|i| if i % 100 == 0 { 0 } else { 5 })
            .collect();
        let out = bm.apply_spans(&tokens, 3.0, 10, &mut Philox::new(0, 0));
        let sel: Vec<usize> = (0..1000)
            .filter(|&i| out.targets[i] != IGNORE_INDEX)
            .collect();
        assert_eq!(sel.len(), (990.0f64 * 0.15).round() as usize);
        assert!(sel.iter().all(|&i| tokens[i] != 0));
        let runs = 1 + sel.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(runs < sel.len() / 2, "{runs} runs for {} tokens", sel.len());
    }
}
