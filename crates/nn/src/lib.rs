//! `selfsup-nn`: modules, initialisers, optimisers, schedules and checkpoints on top of
//! `selfsup-tensor`.
//!
//! - [`Module`]: parameters and buffers by dotted PyTorch-style names, train/eval mode;
//!   [`Layer`] for one-tensor layers and [`Sequential`] to chain them.
//! - Layers: [`Linear`], [`LayerNorm`], [`BatchNorm`], [`Embedding`], [`Dropout`],
//!   [`Activation`], [`Mlp`], [`MultiHeadAttention`], [`TransformerBlock`], positional
//!   embeddings, [`ClassificationHead`].
//! - [`init`]: Kaiming, Xavier, truncated normal, all from a [`selfsup_tensor::Generator`].
//! - [`optim`]: SGD, Adam, AdamW, LARS with parameter groups, freezing and gradient clipping;
//!   [`schedule`]: learning-rate and EMA momentum schedules, [`schedule::ema_update`].
//! - [`checkpoint`]: safetensors checkpoints with atomic writes and strict, named loading.
//!
//! Parameters are leaf tensors (`requires_grad_()`); optimisers and EMA update them in place
//! with `assign` under `no_grad`.
//!
//! ```
//! use selfsup_nn::{optim::{Optimizer, Sgd, SgdConfig}, Activation, Linear, Module, Sequential};
//! use selfsup_tensor::{DType, Generator, Tensor};
//! let mut g = Generator::new(0);
//! let net = Sequential::new()
//!     .push(Linear::new(2, 8, true, DType::F32, &mut g)?)
//!     .push(Activation::Relu)
//!     .push(Linear::new(8, 1, true, DType::F32, &mut g)?);
//! assert_eq!(net.params()[0].0, "0.weight");
//! let mut opt = Sgd::new(net.params(), SgdConfig { lr: 0.1, ..Default::default() });
//! let x = Tensor::randn(&[16, 2], 0.0, 1.0, DType::F32, &mut g)?;
//! let loss = net.forward(&x)?.sqr()?.mean_all()?;
//! loss.backward()?;
//! opt.step()?;
//! opt.zero_grad();
//! # Ok::<(), selfsup_nn::NnError>(())
//! ```

#![warn(missing_docs)]
// `usize::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#![allow(unknown_lints, clippy::manual_is_multiple_of)]

pub mod activation;
pub mod attention;
pub mod backbone;
pub mod checkpoint;
pub mod conv;
pub mod embedding;
pub mod error;
pub mod init;
pub mod linear;
pub mod mlp;
pub mod module;
pub mod norm;
pub mod optim;
pub mod schedule;
pub mod sequential;
pub mod transformer;

pub use activation::{Activation, Dropout};
pub use attention::{causal_mask, MultiHeadAttention};
pub use backbone::{ResNet, SmallCnn, TextConfig, TextTransformer, Vit, VitConfig};
pub use conv::Conv2d;
pub use embedding::{sinusoidal_positions, Embedding, LearnedPositionalEmbedding};
pub use error::{NnError, Result};
pub use linear::Linear;
pub use mlp::{Mlp, MlpConfig};
pub use module::{join, Layer, Module};
pub use norm::{BatchNorm, LayerNorm};
pub use sequential::Sequential;
pub use transformer::{ClassificationHead, Pooling, TransformerBlock};
