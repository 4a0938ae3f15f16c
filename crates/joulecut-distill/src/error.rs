//! Errors of distillation: bad settings, teacher/student mismatches, stale or damaged logit caches.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The temperature is not a positive finite number.
    #[error("temperature must be > 0, got {0}")]
    BadTemperature(f64),
    /// alpha (the weight of the soft-target term) is outside [0, 1].
    #[error("alpha must be in [0, 1], got {0}")]
    BadAlpha(f64),
    /// Another distillation setting is out of range.
    #[error("{0}")]
    BadSetting(String),
    /// Teacher and student disagree on the output width (classes) or the input width.
    #[error(
        "the teacher {teacher} has {what} width {teacher_width} but the student {student} has {student_width}"
    )]
    WidthMismatch {
        /// `output` or `input`.
        what: &'static str,
        /// Teacher architecture name.
        teacher: String,
        /// Its width.
        teacher_width: usize,
        /// Student architecture name.
        student: String,
        /// Its width.
        student_width: usize,
    },
    /// A hint (feature) pair names a hidden layer the model does not have.
    #[error(
        "hint layer {layer} of the {which} does not exist: it has {available} hidden layers (0-based)"
    )]
    NoSuchHiddenLayer {
        /// `student` or `teacher`.
        which: &'static str,
        /// The requested index.
        layer: usize,
        /// How many hidden layers there are.
        available: usize,
    },
    /// The cached teacher logits were made for another teacher or dataset, or have the wrong shape.
    #[error("teacher-logit cache {} does not match: {reason}", path.display())]
    StaleCache {
        /// The cache file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The cache file is not a readable teacher-logit safetensors file.
    #[error("cannot read teacher-logit cache {}: {reason}", path.display())]
    BadCache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`read`, `write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
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

    /// Whether the user's input is at fault (exit code 2 in the CLI).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::BadTemperature(_)
            | Error::BadAlpha(_)
            | Error::BadSetting(_)
            | Error::WidthMismatch { .. }
            | Error::NoSuchHiddenLayer { .. }
            | Error::StaleCache { .. }
            | Error::BadCache { .. } => true,
            Error::Io { action, .. } => *action == "read",
            Error::Candle { .. } => false,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::BadTemperature(_) => Some(
                "pass a positive --temperature; 1-4 is the useful range (the default is tuned for Fashion-MNIST)".into(),
            ),
            Error::BadAlpha(_) => Some(
                "pass --alpha between 0 (labels only) and 1 (teacher only)".into(),
            ),
            Error::WidthMismatch { what: "output", .. } => Some(
                "the student's last width must equal the teacher's number of classes, e.g. --student mlp:784-64-10 for a 10-class teacher".into(),
            ),
            Error::WidthMismatch { .. } => Some(
                "the student's first width must equal the teacher's input size (784 for Fashion-MNIST)".into(),
            ),
            Error::NoSuchHiddenLayer { .. } => Some(
                "hidden layers are numbered from 0 in forward order; an MLP with widths W0-...-Wn has n-1 of them".into(),
            ),
            Error::StaleCache { .. } => Some(
                "delete the cache file (it is recomputed), or point --teacher-logits at a new path".into(),
            ),
            Error::BadCache { .. } => Some(
                "delete the file; joulecut distill --teacher-logits FILE recomputes and rewrites it".into(),
            ),
            _ => None,
        }
    }
}
