//! The error type of `selfsup-ssl`.

/// Everything that can go wrong building or training an SSL method.
#[derive(Debug, thiserror::Error)]
pub enum SslError {
    /// A tensor op failed (the message names the op and the shapes).
    #[error(transparent)]
    Tensor(#[from] selfsup_tensor::Error),
    /// A module, optimiser or checkpoint operation failed.
    #[error(transparent)]
    Nn(#[from] selfsup_nn::NnError),
    /// Loading or augmenting data failed.
    #[error(transparent)]
    Data(#[from] selfsup_data::DataError),
    /// An invalid configuration, or a combination that cannot work (the message says what to
    /// change).
    #[error("{0}")]
    Config(String),
    /// The batch does not have what the method needs (e.g. token ids for a text method).
    #[error("{method}: {msg}")]
    Batch {
        /// The method's name.
        method: &'static str,
        /// What is missing or has the wrong shape.
        msg: String,
    },
    /// The loss became NaN or infinite.
    #[error("loss is {value} at step {step}: lower the learning rate or check the data")]
    NonFinite {
        /// The step at which it happened.
        step: u64,
        /// The offending value.
        value: f64,
    },
    /// A gradient or running statistic became NaN or infinite while the loss stayed finite.
    #[error("{what} became {value} at step {step}: lower the learning rate or clip gradients")]
    Diverged {
        /// The step at which it happened.
        step: u64,
        /// Which tensor (e.g. `gradient of encoder.conv1.weight`, `buffer ...running_var`).
        what: String,
        /// Its largest magnitude (NaN or infinite).
        value: f64,
    },
}

/// `Result` with [`SslError`].
pub type Result<T> = std::result::Result<T, SslError>;

/// Shorthand for an [`SslError::Config`].
pub(crate) fn config<T>(msg: impl Into<String>) -> Result<T> {
    Err(SslError::Config(msg.into()))
}
