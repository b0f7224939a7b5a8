//! `selfsup-ssl`: self-supervised methods, their losses, the trainer, evaluation protocols and
//! collapse diagnostics.
//!
//! - [`SslMethod`]: the one trait every method implements: built from a [`MethodConfig`] by
//!   [`build`], it exposes its [`Encoder`], computes its loss on an [`SslBatch`] and does its
//!   per-step updates (EMA targets, queues, centres).
//! - [`Trainer`]: optimiser, schedule and NaN guard around any method.
//! - [`feed`]: the views or token windows each method's [`InputKind`] asks for.
//! - [`loss`]: the losses, one file each; [`diagnostics`]: embedding std, effective rank,
//!   alignment and uniformity.
//!
//! ```
//! use selfsup_ssl::{build, MethodConfig, MethodName, OptimConfig, SslBatch, Trainer};
//! use selfsup_tensor::{DType, Generator, Tensor};
//!
//! let mut g = Generator::new(0);
//! let mut cfg = MethodConfig::for_method(MethodName::Simclr);
//! cfg.backbone.widths = vec![4, 8, 16];
//! let method = build(&cfg, &mut g)?;
//! let mut trainer = Trainer::new(method, &OptimConfig::default(), 10, 0)?;
//! let v1 = Tensor::randn(&[8, 1, 28, 28], 0.0, 1.0, DType::F32, &mut g)?;
//! let v2 = Tensor::randn(&[8, 1, 28, 28], 0.0, 1.0, DType::F32, &mut g)?;
//! let stats = trainer.train_step(&SslBatch::from_views(vec![v1, v2]))?;
//! assert!(stats.loss.is_finite());
//! # Ok::<(), selfsup_ssl::SslError>(())
//! ```

#![warn(missing_docs)]
#![allow(clippy::manual_is_multiple_of)]

pub mod config;
pub mod diagnostics;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod feed;
pub mod loss;
mod macros;
pub mod method;
pub mod methods;
pub mod metric;
pub mod pretext;
pub mod sample;
pub mod train;

pub use config::{BackboneConfig, BackboneKind, MethodConfig, MethodName};
pub use encoder::Encoder;
pub use error::{Result, SslError};
pub use method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
pub use methods::build;
pub use train::{OptimConfig, OptimizerKind, ScheduleKind, StepStats, Trainer};
