//! `selfsup-data`: datasets, augmentations, view generators, masking and the batch loader.
//!
//! Outputs are plain owned buffers: [`ImageBatch`] holds NCHW `f32` values and its shape, labels
//! and token ids are `Vec<i64>`. All randomness comes from the counter-based
//! [`Philox`](selfsup_tensor::rng::Philox) generator, derived per sample from
//! `(seed, epoch, sample index)`, so results do not depend on the number of threads.
//!
//! Errors are [`DataError`]s whose message is one line naming the file, the problem and the fix.
//!
//! ```no_run
//! use selfsup_data::{idx, Split, ViewConfig, Views};
//!
//! let train = idx::load_fashion_mnist(std::path::Path::new(idx::DEBIAN_FASHION_MNIST_DIR), Split::Train)?;
//! assert_eq!(train.len, 60_000);
//! let views = Views::two(ViewConfig::default()); // the benchmark's SimCLR views
//! let v = views.apply(train.image(0), 0, 0, 0);
//! assert_eq!((v[0].channels, v[0].height, v[0].width), (1, 28, 28));
//! # Ok::<(), selfsup_data::DataError>(())
//! ```

#![warn(missing_docs)]
// `x % n == 0` instead of `is_multiple_of`, which needs Rust 1.87 (the workspace supports 1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod mask;
pub mod subset;
pub mod text;
pub mod topics;
pub mod views;
pub mod vocab;

pub use dataset::{Image, ImageBatch, ImageDataset, ImageRef, Split};
pub use error::{DataError, Result};
pub use loader::{Batch, Loader, LoaderConfig};
pub use views::{ViewConfig, Views};
