//! Turning datasets into [`SslBatch`]es: the image views a method's [`InputKind`] asks for,
//! and random windows of token ids for text methods.

use std::sync::Arc;

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::{Batch, ImageDataset, Loader, LoaderConfig, ViewConfig, Views};
use selfsup_tensor::rng::Philox;
use selfsup_tensor::Tensor;

use crate::error::{config, Result};
use crate::method::{InputKind, SslBatch};

/// The view pipelines for `kind`: `base` for every global view; DINO's local crops reuse
/// `base` at their own size and scale; [`InputKind::Images`] gets `base` with the crop kept
/// gentle (the method makes its own targets from it).
pub fn views_for(kind: &InputKind, base: &ViewConfig) -> Result<Views> {
    Ok(match *kind {
        InputKind::Views { count } => Views {
            views: vec![base.clone(); count.max(1)],
        },
        InputKind::MultiCrop { local, local_size } => {
            Views::dino(base.clone(), base.size.0, local_size, local)
        }
        InputKind::Images => Views {
            views: vec![base.clone()],
        },
        InputKind::Tokens { .. } => {
            return config("a text method takes token windows, not image views")
        }
    })
}

/// An evaluation view: resize to `size` and normalise with `normalize`.
pub fn eval_views(size: (usize, usize), normalize: Option<Normalize>) -> Views {
    Views::eval(size, normalize)
}

/// Converts a loader batch to an [`SslBatch`] of tensors.
pub fn to_ssl_batch(batch: Batch) -> Result<SslBatch> {
    let views = batch
        .views
        .into_iter()
        .map(|v| v.into_tensor())
        .collect::<selfsup_tensor::Result<Vec<Tensor>>>()?;
    Ok(SslBatch::from_views(views))
}

/// A loader producing the views `kind` needs from `dataset`.
pub fn image_loader(
    dataset: Arc<ImageDataset>,
    kind: &InputKind,
    base: &ViewConfig,
    config: LoaderConfig,
) -> Result<Loader> {
    Ok(Loader::new(dataset, views_for(kind, base)?, config)?)
}

/// Random windows of `context + 1` token ids from one long token stream.
#[derive(Clone, Debug)]
pub struct TextWindows {
    tokens: Arc<Vec<i64>>,
    context: usize,
    seed: u64,
}

impl TextWindows {
    /// Windows of `context + 1` tokens from `tokens` (which must be longer than that).
    pub fn new(tokens: Vec<i64>, context: usize, seed: u64) -> Result<Self> {
        if context == 0 || tokens.len() <= context + 1 {
            return config(format!(
                "text of {} tokens is too short for windows of context {context} + 1",
                tokens.len()
            ));
        }
        Ok(TextWindows {
            tokens: Arc::new(tokens),
            context,
            seed,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens.
    pub fn tokens(&self) -> &[i64] {
        &self.tokens
    }

    /// Batch `step` of `batch` windows `[batch, context + 1]`, starting at offsets drawn from
    /// `(seed, step)`: the same step always gives the same batch.
    pub fn batch(&self, step: u64, batch: usize) -> Result<Tensor> {
        let mut rng = Philox::new(self.seed, step);
        let span = (self.tokens.len() - self.context - 1) as u64 + 1;
        let w = self.context + 1;
        let mut out = Vec::with_capacity(batch * w);
        for _ in 0..batch {
            let start = (rng.next_u64() % span) as usize;
            out.extend_from_slice(&self.tokens[start..start + w]);
        }
        Ok(Tensor::from_vec(out, &[batch, w])?)
    }

    /// Consecutive non-overlapping windows `[n, context + 1]` covering the stream in order
    /// (for validation losses), at most `max_windows` of them.
    pub fn sequential(&self, max_windows: usize) -> Result<Vec<Tensor>> {
        let w = self.context + 1;
        let n = ((self.tokens.len() - 1) / self.context).min(max_windows);
        let mut out = Vec::new();
        for i in 0..n {
            let s = i * self.context;
            if s + w > self.tokens.len() {
                break;
            }
            out.push(Tensor::from_vec(self.tokens[s..s + w].to_vec(), &[1, w])?);
        }
        Ok(out)
    }
}

/// The default view pipeline of `method` on 1-channel 28x28 images (Fashion-MNIST): the
/// stronger SimCLR recipe of shared/README.md (crop 0.3-1, flip, brightness/contrast jitter)
/// for joint-embedding methods; a gentle crop (0.7-1) and flip for methods that make their own
/// targets from one view.
pub fn default_view(method: crate::MethodName, size: usize) -> ViewConfig {
    let mut v = if method.is_joint_embedding() {
        ViewConfig::simclr_fashion_mnist_jitter()
    } else {
        ViewConfig {
            crop: Some(selfsup_data::augment::RandomResizedCrop {
                scale: (0.7, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            }),
            ..ViewConfig::default()
        }
    };
    v.size = (size, size);
    v
}

/// A batch for MLM with next-sentence prediction, from encoded pairs `(first, second,
/// is_next)`: `batch` pairs drawn from `(seed, step)`; the first segments padded (id 0,
/// `[PAD]`) or cut to `[batch, context + 1]` as the token ids, the second segments to
/// `[batch, context]` with their labels (1 = is next) as [`SslBatch::pairs`].
pub fn nsp_batch(
    pairs: &[(Vec<i64>, Vec<i64>, bool)],
    context: usize,
    step: u64,
    batch: usize,
    seed: u64,
) -> Result<SslBatch> {
    if pairs.is_empty() || context == 0 || batch == 0 {
        return config("nsp_batch: needs pairs, a positive context and a positive batch size");
    }
    let pad = |ids: &[i64], n: usize| -> Vec<i64> {
        let mut v: Vec<i64> = ids.iter().copied().take(n).collect();
        v.resize(n, 0);
        v
    };
    let mut rng = Philox::new(seed, step);
    let (mut first, mut second, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batch {
        let (a, b, next) = &pairs[rng.below(pairs.len() as u64) as usize];
        first.extend(pad(a, context + 1));
        second.extend(pad(b, context));
        labels.push(i64::from(*next));
    }
    let mut out = SslBatch::from_tokens(Tensor::from_vec(first, &[batch, context + 1])?);
    out.pairs = Some((
        Tensor::from_vec(second, &[batch, context])?,
        Tensor::from_vec(labels, &[batch])?,
    ));
    Ok(out)
}
