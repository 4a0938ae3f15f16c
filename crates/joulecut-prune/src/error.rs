//! The error type of `joulecut-prune`.
//!
//! Every variant names the tensor (and its shape) or the option at fault. [`Error::is_bad_input`]
//! separates the user's mistakes (a sparsity outside `[0, 1)`, a glob that matches nothing, ...) from
//! failures of the work itself (a candle error while enforcing a mask), so the CLI can exit with 2 or 1.

/// A `Result` whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the pruning library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sparsity target outside `[0, 1)`.
    #[error("invalid sparsity {value}{}: it must be in [0, 1)", for_tensor(.tensor))]
    InvalidSparsity {
        /// The value given.
        value: f64,
        /// The tensor it was given for (per-layer targets), if any.
        tensor: Option<String>,
    },

    /// An N:M pattern with `N = 0` or `N >= M`.
    #[error("invalid N:M pattern {n}:{m}: it needs 1 <= N < M (keep N of every M weights)")]
    InvalidNm {
        /// Kept weights per group.
        n: usize,
        /// Group size.
        m: usize,
    },

    /// A tensor whose input dimension is not a multiple of `M`.
    #[error(
        "cannot apply {n}:{m} sparsity to `{name}` {shape:?}: its input dimension (dim {dim}, size {size}) \
         is not divisible by {m}"
    )]
    NmIndivisible {
        /// Tensor name.
        name: String,
        /// Tensor shape.
        shape: Vec<usize>,
        /// The grouped (input) dimension.
        dim: usize,
        /// Size of the grouped dimension.
        size: usize,
        /// Kept weights per group.
        n: usize,
        /// Group size.
        m: usize,
    },

    /// A bad include/exclude glob, a glob that matches nothing, or an empty selection.
    #[error(transparent)]
    Selection(#[from] joulecut_checkpoint::SelectionError),

    /// Structured pruning of a tensor without an output dimension to prune along (rank < 2).
    #[error(
        "cannot prune `{name}` {shape:?} by {granularity}: structured pruning needs a weight of rank >= 2 \
         ([out, in] or [out, in, kh, kw])"
    )]
    RankTooLow {
        /// Tensor name.
        name: String,
        /// Tensor shape.
        shape: Vec<usize>,
        /// The granularity asked for.
        granularity: String,
    },

    /// A tensor name that does not exist (per-layer targets, masks, chains).
    #[error("unknown tensor `{name}`")]
    UnknownTensor {
        /// The name given.
        name: String,
    },

    /// Two options that cannot be combined.
    #[error("{message}")]
    IncompatibleOptions {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: String,
    },

    /// A matrix given to the 2:4 kernel that is not 2:4 along its inputs.
    #[error(
        "a {rows}x{cols} matrix is not 2:4: its width must be a multiple of 4 with at most 2 non-zeros in every group of 4"
    )]
    NotTwoFour {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
    },

    /// A tensor whose shape or length does not match what it is used with.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },

    /// A schedule with inconsistent parameters.
    #[error("invalid pruning schedule: {reason}")]
    InvalidSchedule {
        /// What is wrong.
        reason: String,
    },

    /// A layer chain that cannot be compacted.
    #[error("cannot compact the chain at `{name}`: {reason}")]
    InvalidChain {
        /// The weight where the problem was found.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// An inconsistent sparse matrix (bitmap and values disagree, column index out of range, ...).
    #[error("invalid sparse matrix `{name}`: {reason}")]
    InvalidSparse {
        /// The matrix (or tensor) name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A tensor with a dtype the operation does not support.
    #[error("unsupported dtype {dtype} for `{name}`: {operation} needs a float tensor")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
        /// What was attempted.
        operation: &'static str,
    },

    /// Calibration statistics that cannot drive the pruning of a layer (none collected, another
    /// layer's, non-finite, or without the Gram matrix a method needs).
    #[error("cannot prune `{name}` from its calibration inputs: {reason}")]
    InvalidCalibration {
        /// The layer's weight.
        name: String,
        /// What is wrong.
        reason: String,
        /// How to fix it.
        hint: &'static str,
    },

    /// A layer Hessian that stays singular or indefinite after SparseGPT's dampening.
    #[error(
        "the calibration Hessian of `{name}` is not positive definite even with dampening {damp} \
         (pivot {pivot})"
    )]
    NotPositiveDefinite {
        /// The layer's weight.
        name: String,
        /// The relative dampening of the last attempt.
        damp: f64,
        /// The input feature at which the factorisation failed.
        pivot: usize,
    },

    /// A candle operation failed.
    #[error("{action} `{name}`")]
    Candle {
        /// What was being done.
        action: &'static str,
        /// The tensor it was done to.
        name: String,
        /// candle's error.
        #[source]
        source: Box<candle_core::Error>,
    },
}

// Keep `Result<T>` cheap to return (clippy's `result_large_err` bound is 128 bytes).
const _: () = assert!(size_of::<Error>() <= 96);

fn for_tensor(t: &Option<String>) -> String {
    t.as_ref()
        .map(|n| format!(" for `{n}`"))
        .unwrap_or_default()
}

impl Error {
    /// Whether the error is the caller's fault (bad option, bad tensor), not a failure of the work.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Candle { .. })
    }

    /// A one-line suggestion for fixing the error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::InvalidSparsity { .. } => {
                Some("give the fraction of weights to remove, e.g. --sparsity 0.9 for 90%".into())
            }
            Error::InvalidNm { .. } => Some("use e.g. --nm 2:4 (keep 2 of every 4 weights)".into()),
            Error::NmIndivisible { name, .. } => {
                Some(format!("exclude it (--exclude '{name}') or choose an M that divides its input dimension"))
            }
            Error::NotTwoFour { .. } => {
                Some("prune it to the pattern first: `joulecut prune --nm 2:4`".into())
            }
            Error::Selection(e) => Some(e.hint()),
            Error::RankTooLow { name, .. } => Some(format!(
                "exclude it (--exclude '{name}'), include only weights (e.g. --include '*.weight'), \
                 or use --granularity unstructured"
            )),
            Error::UnknownTensor { .. } => Some("list the tensor names with `joulecut inspect FILE`".into()),
            Error::IncompatibleOptions { hint, .. } => Some(hint.clone()),
            Error::InvalidCalibration { hint, .. } => Some((*hint).into()),
            Error::NotPositiveDefinite { .. } => Some(
                "calibrate on more tokens than the layer has inputs, or raise the SparseGPT \
                 dampening (SparseGptConfig::damp)"
                    .into(),
            ),
            Error::InvalidSchedule { .. } => {
                Some("AGP needs start <= end and frequency >= 1; iterative needs rounds >= 1".into())
            }
            Error::InvalidChain { .. } => Some(
                "a chain lists layers in data-flow order; each layer's input dimension must equal the \
                 previous layer's outputs (times the spatial size after a flatten)"
                    .into(),
            ),
            _ => None,
        }
    }

    pub(crate) fn candle(
        action: &'static str,
        name: impl Into<String>,
    ) -> impl FnOnce(candle_core::Error) -> Error {
        let name = name.into();
        move |source| Error::Candle {
            action,
            name,
            source: Box::new(source),
        }
    }
}
