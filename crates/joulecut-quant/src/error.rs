//! The error type of `joulecut-quant`.
//!
//! Every variant names the tensor (or layer) it is about and, where shapes are involved, the shapes.
//! [`Error::is_bad_input`] tells the CLI whether the user's input was at fault (exit code 2).

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of quantization, kernels and quantized layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor holds NaN or infinite values, which cannot be quantized.
    #[error("cannot quantize tensor `{name}`: element {index} is {value}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Flat index of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A finite value beyond what the target float type holds (it would become infinite).
    #[error(
        "cannot cast tensor `{name}` to {dtype}: element {index} is {value}, beyond its largest finite value"
    )]
    OutOfRange {
        /// Tensor name.
        name: String,
        /// Flat index of the first offending element.
        index: usize,
        /// The offending value.
        value: f32,
        /// The target type.
        dtype: String,
    },
    /// A shape does not fit the operation.
    #[error("tensor `{name}` has shape {shape:?}: {reason}")]
    BadShape {
        /// Tensor (or layer) name.
        name: String,
        /// The shape found.
        shape: Vec<usize>,
        /// What was expected.
        reason: String,
    },
    /// Scales or zero-points do not match the tensor (count, sign, finiteness, range).
    #[error("bad quantization parameters for `{name}`: {reason}")]
    BadParams {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range (e.g. a percentile outside (0, 100]).
    #[error("invalid quantization config: {0}")]
    BadConfig(String),
    /// A candle operation failed.
    #[error("{action} failed")]
    Candle {
        /// The action that failed.
        action: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
}

impl Error {
    /// Whether the error is the input's fault (bad tensor, bad parameters, bad config): exit code 2.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::NonFinite { .. }
            | Error::OutOfRange { .. }
            | Error::BadShape { .. }
            | Error::BadParams { .. }
            | Error::BadConfig(_) => true,
            Error::Candle { .. } => false,
        }
    }

    /// A suggestion for the user, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NonFinite { name, .. } => Some(format!(
                "the tensor `{name}` is corrupt or diverged in training; exclude it (--exclude) or fix the checkpoint"
            )),
            Error::OutOfRange { name, .. } => Some(format!(
                "f16 holds magnitudes up to 65504: use --dtype bf16 (f32's range), or keep `{name}` as it is with --exclude"
            )),
            Error::BadParams { .. } => Some(
                "an int8 tensor needs one finite, positive scale per tensor or per channel"
                    .to_string(),
            ),
            Error::BadConfig(_) => {
                Some("see `joulecut quantize --help` for accepted values".to_string())
            }
            Error::BadShape { .. } | Error::Candle { .. } => None,
        }
    }

    pub(crate) fn candle(action: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Error {
        let action = action.into();
        move |source| Error::Candle { action, source }
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle { source, .. } => source,
            other => candle_core::Error::wrap(other),
        }
    }
}
