//! Errors of the harness: datasets, training and the compression pipeline.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dataset directory or one of its files does not exist.
    #[error("dataset not found: {} ({what})", path.display())]
    DatasetMissing {
        /// The missing directory or file.
        path: PathBuf,
        /// Which file(s) were looked for.
        what: String,
    },
    /// An IDX file is malformed (bad magic, dims, counts, truncated).
    #[error("{}: {reason}", path.display())]
    BadIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading a file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("{0}")]
    BadSetting(String),
    /// The dataset and the model disagree (input size, number of classes).
    #[error("{0}")]
    Mismatch(String),
    /// Training diverged (NaN/Inf loss).
    #[error("training diverged at epoch {epoch}, step {step}: loss is {loss}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The loss.
        loss: f32,
    },
    /// A model error.
    #[error(transparent)]
    Model(#[from] joulecut_models::Error),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] joulecut_checkpoint::Error),
    /// A pruning step failed or was mis-specified.
    #[error(transparent)]
    Prune(#[from] joulecut_prune::Error),
    /// A quantization step failed or was mis-specified.
    #[error(transparent)]
    Quant(#[from] joulecut_quant::Error),
    /// A distillation step failed or was mis-specified.
    #[error(transparent)]
    Distill(#[from] joulecut_distill::Error),
    /// A sentence encoder could not be loaded, tokenized or run, or a text set could not be read.
    #[error(transparent)]
    Embed(#[from] joulecut_embed::Error),
    /// Calibrated compression of a model directory failed on what it was given (a layer that is
    /// not dense f32, calibration text that does not fit the model).
    #[error("{}: {reason}", path.display())]
    Calibration {
        /// The model directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// How to fix it.
        hint: String,
    },
    /// An input the user gave is unusable (a file, a setting).
    #[error("{what}: {reason}")]
    BadInput {
        /// What it is.
        what: String,
        /// What is wrong with it.
        reason: String,
        /// How to fix it.
        hint: String,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A streaming pass failed in a way its own error types do not name.
    #[error("{0}")]
    Pass(String),
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
            Error::DatasetMissing { .. }
            | Error::BadIdx { .. }
            | Error::Read { .. }
            | Error::BadSetting(_)
            | Error::Mismatch(_)
            | Error::Calibration { .. }
            | Error::BadInput { .. } => true,
            Error::Embed(e) => e.is_bad_input(),
            Error::Model(e) => e.is_bad_input(),
            Error::Checkpoint(e) => e.is_bad_input(),
            Error::Prune(e) => e.is_bad_input(),
            Error::Quant(e) => e.is_bad_input(),
            Error::Distill(e) => e.is_bad_input(),
            Error::Diverged { .. }
            | Error::Candle { .. }
            | Error::Pass(_)
            | Error::Write { .. } => false,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::DatasetMissing { .. } => Some(format!(
                "install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (files in {}), or point --data DIR / JOULECUT_DATA at a directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
                crate::data::DEFAULT_DATA_DIR
            )),
            Error::BadIdx { .. } => Some("the IDX file is damaged; reinstall the dataset (`apt-get install --reinstall dataset-fashion-mnist`)".into()),
            Error::Diverged { .. } => Some("lower the learning rate (--lr)".into()),
            Error::BadSetting(_) => {
                Some("`joulecut COMMAND --help` lists each setting with its range".into())
            }
            Error::Model(e) => e.hint(),
            Error::Checkpoint(e) => e.hint(),
            Error::Prune(e) => e.hint(),
            Error::Quant(e) => e.hint(),
            Error::Distill(e) => e.hint(),
            Error::Embed(e) => e.hint(),
            Error::Calibration { hint, .. } | Error::BadInput { hint, .. } => Some(hint.clone()),
            _ => None,
        }
    }
}
