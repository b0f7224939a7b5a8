//! The error type of `selfsup-nn`.

use std::path::PathBuf;

/// Everything that can go wrong in a module, optimiser or checkpoint operation.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor op failed (shapes, dtypes, ...); the message names the op.
    #[error(transparent)]
    Tensor(#[from] selfsup_tensor::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A checkpoint file could not be parsed or written as safetensors.
    #[error("{path}: invalid checkpoint: {msg}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A checkpoint does not match the model (every problem is listed by tensor name).
    #[error("{path}: checkpoint does not match the model:\n  {}", problems.join("\n  "))]
    Mismatch {
        /// The file involved.
        path: PathBuf,
        /// One line per missing, unexpected or wrong-shaped tensor.
        problems: Vec<String>,
    },
    /// An invalid configuration or argument (the message says what and how to fix it).
    #[error("{0}")]
    Config(String),
}

/// `Result` with [`NnError`].
pub type Result<T> = std::result::Result<T, NnError>;

/// Shorthand for an [`NnError::Config`].
pub(crate) fn config<T>(msg: impl Into<String>) -> Result<T> {
    Err(NnError::Config(msg.into()))
}
