//! The program's errors: every one prints as one line that names the thing and the fix, and maps
//! to an exit code (2 for bad input, 1 for a run that failed while training).

use std::path::PathBuf;

/// Everything `selfsup` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: paths, configs, impossible combinations.
    #[error("{0}")]
    Input(String),
    /// A file that could not be read or written.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("{0}")]
    Diverged(String),
    /// An error from the libraries.
    #[error("{0}")]
    Ssl(#[from] selfsup_ssl::SslError),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Diverged(_) => 1,
            _ => 2,
        }
    }
}

impl From<selfsup_data::DataError> for CliError {
    fn from(e: selfsup_data::DataError) -> Self {
        CliError::Ssl(e.into())
    }
}

impl From<selfsup_nn::NnError> for CliError {
    fn from(e: selfsup_nn::NnError) -> Self {
        CliError::Ssl(e.into())
    }
}

impl From<selfsup_tensor::Error> for CliError {
    fn from(e: selfsup_tensor::Error) -> Self {
        CliError::Ssl(e.into())
    }
}

/// Result with [`CliError`].
pub type Result<T> = std::result::Result<T, CliError>;

/// An input error.
pub fn input<T>(msg: impl Into<String>) -> Result<T> {
    Err(CliError::Input(msg.into()))
}

/// Maps an io error on `path`.
pub fn io(
    path: impl Into<PathBuf>,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.into();
    move |source| CliError::Io {
        path,
        action,
        source,
    }
}
