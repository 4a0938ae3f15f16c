//! Errors of exporting and importing. Every variant names the file or tensor at fault, and
//! [`Error::hint`] says what can be done instead.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with an export or import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] joulecut_checkpoint::Error),
    /// A BERT-family model directory does not load (config, weights, shapes).
    #[error(transparent)]
    Embed(#[from] joulecut_embed::Error),
    /// A tensor's encoding has no counterpart in the target format.
    #[error("tensor `{tensor}` ({encoding}): {format} cannot express it: {reason}")]
    Unsupported {
        /// The logical tensor.
        tensor: String,
        /// Its joulecut encoding (`int8 per-channel on axis 1`, ...).
        encoding: String,
        /// The target format.
        format: &'static str,
        /// Why not.
        reason: String,
        /// What the format can express.
        can: String,
    },
    /// The input is not a checkpoint of the format being imported.
    #[error("{}: {reason}", path.display())]
    BadInput {
        /// The input (directory or config file).
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// What would be accepted.
        hint: String,
    },
    /// A tensor of an imported checkpoint is missing a part or has an inconsistent one.
    #[error("tensor `{tensor}`: {reason}")]
    BadPart {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// The output path cannot take the export.
    #[error("cannot write {}: {reason}", path.display())]
    BadOutput {
        /// The output path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing a file of the output failed (nothing was left at the destination).
    #[error("cannot write {}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the user's input is at fault (exit code 2) rather than the work failing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Checkpoint(e) => e.is_bad_input(),
            Error::Embed(e) => e.is_bad_input(),
            Error::Unsupported { .. }
            | Error::BadInput { .. }
            | Error::BadPart { .. }
            | Error::BadOutput { .. } => true,
            Error::Write { .. } => false,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Checkpoint(e) => e.hint(),
            Error::Embed(e) => e.hint(),
            Error::Unsupported { can, .. } => Some(can.clone()),
            Error::BadInput { hint, .. } => Some(hint.clone()),
            Error::BadPart { .. } => Some(
                "the checkpoint is incomplete or was written by an incompatible tool; re-export it"
                    .into(),
            ),
            Error::BadOutput { .. } => Some(
                "the export is a model directory: give -o a new (or empty) directory path".into(),
            ),
            Error::Write { .. } => {
                Some("check free disk space and that the output directory is writable".into())
            }
        }
    }
}
