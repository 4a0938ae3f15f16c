//! Errors of the models crate.

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong building or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--model`/`--student` named no known architecture.
    #[error("unknown architecture `{arch}`")]
    UnknownArch {
        /// What was given.
        arch: String,
    },
    /// The `joulecut.model` metadata doesn't describe a valid model.
    #[error("invalid model config: {reason}")]
    BadConfig {
        /// Why.
        reason: String,
    },
    /// The checkpoint has no model config and the architecture can't be inferred.
    #[error(
        "{path} has no `joulecut.model` metadata and its tensors don't look like a known architecture"
    )]
    NoConfig {
        /// The file.
        path: String,
    },
    /// A parameter the architecture needs is missing from the checkpoint.
    #[error("tensor `{name}` is missing (the architecture needs it)")]
    MissingTensor {
        /// The parameter.
        name: String,
    },
    /// A tensor the architecture doesn't have.
    #[error("tensor `{name}` is not a parameter of this architecture")]
    UnexpectedTensor {
        /// The tensor.
        name: String,
    },
    /// A parameter has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, the architecture expects {expected:?}")]
    ShapeMismatch {
        /// The parameter.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] joulecut_checkpoint::Error),
    /// A compressed layer could not be built.
    #[error("layer `{name}`: {reason}")]
    Layer {
        /// The layer.
        name: String,
        /// Why.
        reason: String,
    },
    /// An architecture too large to allocate.
    #[error("{arch}: {reason}")]
    TooLarge {
        /// The architecture.
        arch: String,
        /// How large it is.
        reason: String,
    },
    /// A candle operation failed.
    #[error("{action}")]
    Candle {
        /// What was being done.
        action: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
}

impl Error {
    /// A closure mapping a candle error into [`Error::Candle`] for `action`.
    pub fn candle(action: &'static str) -> impl Fn(candle_core::Error) -> Error {
        move |source| Error::Candle {
            action: action.to_string(),
            source,
        }
    }

    /// Whether the user's input is at fault (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Checkpoint(e) => e.is_bad_input(),
            Error::Candle { .. } => false,
            _ => true,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::UnknownArch { .. } => Some(format!("architectures: {}", crate::ARCH_NAMES)),
            Error::NoConfig { .. } => Some("pass the architecture with --model (e.g. --model lenet-300-100)".into()),
            Error::MissingTensor { .. } | Error::ShapeMismatch { .. } | Error::UnexpectedTensor { .. } => {
                Some("the file holds a different architecture; `joulecut inspect FILE` lists its tensors".into())
            }
            Error::BadConfig { .. } => Some(
                "the file's joulecut metadata is damaged or from a newer joulecut; `joulecut inspect FILE` shows it".into(),
            ),
            Error::Checkpoint(e) => e.hint(),
            Error::TooLarge { .. } => Some(format!(
                "joulecut's models have at most {} weights ({} GiB as f32) and widths of at most {}; use smaller widths",
                crate::config::MAX_PARAMS,
                (crate::config::MAX_PARAMS * 4) >> 30,
                crate::config::MAX_WIDTH
            )),
            _ => None,
        }
    }
}
