//! Errors for reading and writing checkpoints. Every variant names the file or tensor at fault.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{} is not a valid safetensors file: {reason}", path.display())]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is a model in a format joulecut recognises but does not read (GGUF, PyTorch, ...).
    #[error("{} is {}, not a safetensors file", path.display(), format.name)]
    OtherFormat {
        /// The file.
        path: PathBuf,
        /// What it is.
        format: crate::sniff::Foreign,
    },
    /// A tensor's stored data or encoding is inconsistent.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// Logical or stored tensor name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pass was asked (by an include glob) to change a tensor that is not a float tensor (token
    /// ids, masks): those pass through every command unchanged.
    #[error(
        "tensor `{name}` is {dtype}, not a float tensor: {action} does not apply to it (it is kept as is)"
    )]
    NotFloat {
        /// The tensor name.
        name: String,
        /// Its safetensors dtype (`I64`, `U8`, ...).
        dtype: String,
        /// What was asked (`quantization`, `pruning`).
        action: &'static str,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("tensor `{name}` not found in {}", path.display())]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A joulecut metadata entry cannot be parsed.
    #[error("metadata `{key}` in {}: {reason}", path.display())]
    BadMetadata {
        /// The metadata key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The output path is the input path: inputs are never overwritten.
    #[error("refusing to write {}: it is the input file", path.display())]
    OutputIsInput {
        /// The path.
        path: PathBuf,
    },
    /// A sharded checkpoint's index (or its directory) is inconsistent.
    #[error("{}: {reason}", path.display())]
    BadIndex {
        /// The index file or model directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The output would be written inside an input model directory.
    #[error("refusing to write {}: it is inside the input directory {}", path.display(), dir.display())]
    OutputInsideInput {
        /// The output path.
        path: PathBuf,
        /// The input directory.
        dir: PathBuf,
    },
    /// A directory output already exists with files in it (joulecut never merges or deletes them).
    #[error("refusing to write {}: the directory exists and is not empty", path.display())]
    OutputNotEmpty {
        /// The output directory.
        path: PathBuf,
    },
    /// The output path's kind does not fit the input (a file for a sharded model, ...).
    #[error("cannot write {}: {reason}", path.display())]
    BadOutput {
        /// The output path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the output failed (nothing was left at the destination).
    #[error("cannot write {}", path.display())]
    Write {
        /// The destination.
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
    /// Whether the user's input is at fault (exit code 2) rather than the work failing.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Read { .. }
            | Error::NotSafetensors { .. }
            | Error::OtherFormat { .. }
            | Error::BadTensor { .. }
            | Error::NotFloat { .. }
            | Error::MissingTensor { .. }
            | Error::BadMetadata { .. }
            | Error::OutputIsInput { .. }
            | Error::BadIndex { .. }
            | Error::OutputInsideInput { .. }
            | Error::OutputNotEmpty { .. }
            | Error::BadOutput { .. } => true,
            Error::Write { .. } | Error::Candle { .. } => false,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "check the path; joulecut reads .safetensors files".into()
            }
            Error::Read { .. } => "check the file's permissions".into(),
            Error::NotSafetensors { .. } => {
                "joulecut reads safetensors files (8-byte header length, JSON header, data); the file may be truncated or in another format (e.g. a PyTorch .bin/.pt)".into()
            }
            Error::OtherFormat { format, .. } => format.hint.into(),
            Error::BadTensor { .. } => "the file is corrupt or was written by an incompatible tool; `joulecut inspect` shows its tensors".into(),
            Error::NotFloat { name, .. } => format!(
                "non-float tensors (token ids, masks) are copied unchanged; narrow --include, or add --exclude '{name}'"
            ),
            Error::MissingTensor { .. } => "`joulecut inspect FILE` lists the tensors the file has".into(),
            Error::BadMetadata { .. } => "the joulecut metadata is damaged; `joulecut decompress` needs it too, so re-create the file from its source".into(),
            Error::OutputIsInput { .. } => "choose a different output path with -o".into(),
            Error::BadIndex { .. } => "a sharded checkpoint is a directory of .safetensors shards plus `model.safetensors.index.json` whose weight_map names each tensor's shard; re-download or re-create it".into(),
            Error::OutputInsideInput { .. } => "write the output next to the model directory, not inside it (e.g. -o model-int8)".into(),
            Error::OutputNotEmpty { .. } => "remove the directory or choose a new output path".into(),
            Error::BadOutput { .. } => "a sharded or directory input is written as a directory; add --single-file to write one .safetensors file".into(),
            Error::Write { .. } => "check free disk space and that the output directory exists and is writable".into(),
            Error::Candle { .. } => return None,
        })
    }
}
