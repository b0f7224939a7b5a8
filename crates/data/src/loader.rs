//! The batch loader: per-epoch shuffling, `drop_last`, augmentation in parallel with rayon, and
//! prefetching on a background thread through a bounded channel.
//!
//! Reproducibility: the epoch's order comes from `Philox` keyed by `(seed, epoch)`, and view `v`
//! of sample `i` uses the stream [`Views::stream`]`(epoch, v, i)` under `seed`, so the same seed
//! gives the same batches and the same augmentations whatever the thread count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rayon::prelude::*;
use selfsup_tensor::rng::{philox_block, Philox};

use crate::dataset::{ImageBatch, ImageDataset};
use crate::error::{DataError, Result};
use crate::views::{Scratch, Views};

/// Loader settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (the channel bound); at least 1.
    pub prefetch: usize,
    /// Worker threads for augmentation; 0 uses rayon's global pool.
    pub threads: usize,
}

impl Default for LoaderConfig {
    /// Batch 256, shuffled, `drop_last`, seed 0, 2 batches ahead, rayon's global pool.
    fn default() -> Self {
        LoaderConfig {
            batch_size: 256,
            shuffle: true,
            drop_last: true,
            seed: 0,
            prefetch: 2,
            threads: 0,
        }
    }
}

/// One batch: each view as an NCHW buffer, the labels (if the dataset has them) and the dataset
/// indices of the samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// One [`ImageBatch`] per view, in the order of [`Views::views`].
    pub views: Vec<ImageBatch>,
    /// The samples' labels.
    pub labels: Option<Vec<i64>>,
    /// The samples' indices in the dataset.
    pub indices: Vec<i64>,
}

/// Produces augmented batches of an in-memory dataset.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<ImageDataset>,
    views: Arc<Views>,
    config: LoaderConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("len", &self.dataset.len)
            .field("config", &self.config)
            .finish()
    }
}

impl Loader {
    /// A loader over `dataset` producing `views`; checks the configuration.
    pub fn new(dataset: Arc<ImageDataset>, views: Views, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::invalid("batch size", "0; use at least 1"));
        }
        if dataset.len == 0 {
            return Err(DataError::invalid(
                "dataset",
                "it has no images; load a non-empty dataset",
            ));
        }
        if dataset.len > u32::MAX as usize {
            return Err(DataError::invalid(
                "dataset",
                "more than 2^32 images are not supported",
            ));
        }
        views.validate(dataset.channels)?;
        let pool = if config.threads > 0 {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(config.threads)
                .build()
                .map_err(|e| {
                    DataError::invalid(
                        "threads",
                        format!("cannot start {} threads: {e}", config.threads),
                    )
                })?;
            Some(Arc::new(p))
        } else {
            None
        };
        Ok(Loader {
            dataset,
            views: Arc::new(views),
            config,
            pool,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len, self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of the samples in `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.config.shuffle {
            let w = philox_block(self.config.seed, u64::MAX, epoch);
            Philox::new(
                (w[0] as u64) << 32 | w[1] as u64,
                (w[2] as u64) << 32 | w[3] as u64,
            )
            .permutation(self.dataset.len)
        } else {
            (0..self.dataset.len).collect()
        }
    }

    /// Computes batch `b` of an epoch whose order is `order` (on the calling thread plus the pool).
    fn make_batch(&self, epoch: u64, order: &[usize], b: usize) -> Batch {
        let bs = self.config.batch_size;
        let idx = &order[b * bs..((b + 1) * bs).min(order.len())];
        let ds = &*self.dataset;
        let seed = self.config.seed;
        let views = self
            .views
            .views
            .iter()
            .enumerate()
            .map(|(v, cfg)| {
                let (oh, ow) = cfg.size;
                let per = ds.channels * oh * ow;
                let mut data = vec![0.0f32; idx.len() * per];
                data.par_chunks_mut(per)
                    .zip(idx.par_iter())
                    .with_min_len(8)
                    .for_each_init(Scratch::default, |scratch, (out, &i)| {
                        let mut rng = Philox::new(seed, Views::stream(epoch, v, i));
                        cfg.apply_u8(ds.image(i), &mut rng, scratch, out);
                    });
                ImageBatch {
                    data,
                    shape: [idx.len(), ds.channels, oh, ow],
                }
            })
            .collect();
        Batch {
            views,
            labels: ds
                .labels
                .as_ref()
                .map(|l| idx.iter().map(|&i| l[i]).collect()),
            indices: idx.iter().map(|&i| i as i64).collect(),
        }
    }

    /// Batch `b` of `epoch`, computed now (the same batch the epoch iterator yields).
    pub fn batch(&self, epoch: u64, b: usize) -> Option<Batch> {
        if b >= self.batches_per_epoch() {
            return None;
        }
        let order = self.order(epoch);
        Some(self.run(|| self.make_batch(epoch, &order, b)))
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// The batches of `epoch`, prepared on a background thread up to `prefetch` batches ahead.
    /// Dropping the iterator stops and joins the thread.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on (resuming a run mid-epoch yields exactly the
    /// batches the uninterrupted run would have seen).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> EpochIter {
        let total = self.batches_per_epoch();
        let start = start.min(total);
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("selfsup-loader".into())
            .spawn(move || {
                let order = me.order(epoch);
                for b in start..total {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let batch = me.run(|| me.make_batch(epoch, &order, b));
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
        match handle {
            Ok(h) => EpochIter {
                rx: Some(rx),
                handle: Some(h),
                stop,
                remaining: total - start,
                fallback: None,
            },
            // No thread could be started: compute the batches on the caller's thread instead.
            Err(_) => EpochIter {
                rx: None,
                handle: None,
                stop,
                remaining: total - start,
                fallback: Some((self.clone(), epoch, self.order(epoch), start)),
            },
        }
    }
}

/// The batches of one epoch, in order. Yields exactly [`Loader::batches_per_epoch`] batches.
pub struct EpochIter {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    remaining: usize,
    fallback: Option<(Loader, u64, Vec<usize>, usize)>,
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        if let Some((loader, epoch, order, b)) = &mut self.fallback {
            let batch = loader.run(|| loader.make_batch(*epoch, order, *b));
            *b += 1;
            self.remaining -= 1;
            return Some(batch);
        }
        match self.rx.as_ref().map(|rx| rx.recv()) {
            Some(Ok(batch)) => {
                self.remaining -= 1;
                Some(batch)
            }
            _ => {
                // The producer ended early: only a panic in it can do that; re-raise it rather
                // than end the epoch silently short.
                self.rx = None;
                if let Some(h) = self.handle.take() {
                    if let Err(p) = h.join() {
                        std::panic::resume_unwind(p);
                    }
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes a blocked `send` fail, so the producer exits promptly.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::ViewConfig;

    fn toy(n: usize) -> Arc<ImageDataset> {
        let pixels: Vec<u8> = (0..n * 64).map(|i| (i * 31 % 256) as u8).collect();
        let labels = (0..n as i64).map(|i| i % 3).collect();
        Arc::new(ImageDataset::new(pixels, [n, 1, 8, 8], Some(labels), vec![]).unwrap())
    }

    fn views() -> Views {
        Views::two(ViewConfig {
            size: (8, 8),
            ..ViewConfig::default()
        })
    }

    #[test]
    fn epoch_covers_every_sample_once_and_drop_last_works() {
        let cfg = LoaderConfig {
            batch_size: 4,
            ..LoaderConfig::default()
        };
        let l = Loader::new(toy(10), views(), cfg.clone()).unwrap();
        assert_eq!(l.batches_per_epoch(), 2);
        let batches: Vec<Batch> = l.epoch(0).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].views[0].shape, [4, 1, 8, 8]);
        assert_eq!(
            batches[0].labels.as_ref().unwrap()[0],
            batches[0].indices[0] % 3
        );
        let l = Loader::new(
            toy(10),
            views(),
            LoaderConfig {
                drop_last: false,
                ..cfg
            },
        )
        .unwrap();
        let mut seen: Vec<i64> = l.epoch(3).flat_map(|b| b.indices).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_batches_whatever_the_thread_count() {
        let cfg = LoaderConfig {
            batch_size: 5,
            threads: 1,
            ..LoaderConfig::default()
        };
        let a: Vec<Batch> = Loader::new(toy(23), views(), cfg.clone())
            .unwrap()
            .epoch(1)
            .collect();
        let b: Vec<Batch> = Loader::new(
            toy(23),
            views(),
            LoaderConfig {
                threads: 3,
                ..cfg.clone()
            },
        )
        .unwrap()
        .epoch(1)
        .collect();
        assert_eq!(a, b);
        let c: Vec<Batch> = Loader::new(toy(23), views(), cfg.clone())
            .unwrap()
            .epoch(2)
            .collect();
        assert_ne!(a[0].indices, c[0].indices);
        let single = Loader::new(toy(23), views(), cfg)
            .unwrap()
            .batch(1, 2)
            .unwrap();
        assert_eq!(single, a[2]);
    }

    #[test]
    fn dropping_mid_epoch_shuts_down() {
        let l = Loader::new(
            toy(200),
            views(),
            LoaderConfig {
                batch_size: 2,
                ..LoaderConfig::default()
            },
        )
        .unwrap();
        let mut it = l.epoch(0);
        assert!(it.next().is_some());
        drop(it); // joins the producer, which is blocked on the full channel
    }

    #[test]
    fn rejects_zero_batch_size() {
        let e = Loader::new(
            toy(4),
            views(),
            LoaderConfig {
                batch_size: 0,
                ..LoaderConfig::default()
            },
        );
        assert!(e.is_err());
    }
}
