//! Errors for loading and comparing sentence encoders. Every variant names the file or tensor at
//! fault; [`Error::is_bad_input`] separates the user's input (exit 2) from failed work (exit 1).

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model path is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A file the Hugging Face layout needs is missing.
    #[error("{} has no {file}", dir.display())]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The file name expected in it.
        file: &'static str,
        /// What the directory has instead, if that explains it (e.g. `pytorch_model.bin`).
        instead: Option<String>,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A generated model could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not JSON or lacks a field BERT needs.
    #[error("{}: {reason}", path.display())]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` describes another architecture.
    #[error("{}: model_type `{found}` is not BERT", path.display())]
    NotBert {
        /// The config file.
        path: PathBuf,
        /// The `model_type` (or `architectures`) found.
        found: String,
    },
    /// `tokenizer.json` does not load, or does not fit the model.
    #[error("{}: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A size in `config.json` disagrees with the weights' shapes.
    #[error("{}: {field} is {value}, but {found}", path.display())]
    ConfigMismatch {
        /// The config file.
        path: PathBuf,
        /// The config field (`hidden_size`, `num_hidden_layers`, ...).
        field: &'static str,
        /// Its value in the config.
        value: usize,
        /// What the weights hold instead.
        found: String,
    },
    /// A tensor BERT needs is not in the weights.
    #[error("tensor `{name}` not found in {}", path.display())]
    MissingTensor {
        /// The full tensor name (with its prefix, if any).
        name: String,
        /// The weights file (or index).
        path: PathBuf,
    },
    /// A tensor has a shape that does not match `config.json`.
    #[error("tensor `{name}` in {} has shape {found:?}, config.json implies {expected:?}", path.display())]
    WrongShape {
        /// The full tensor name.
        name: String,
        /// The weights file.
        path: PathBuf,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
    },
    /// The weights file itself is bad (from joulecut-checkpoint: header, encodings, NaN weights).
    #[error(transparent)]
    Checkpoint(#[from] joulecut_checkpoint::Error),
    /// The sentence file has no sentence.
    #[error("sentence file {} has no sentences (it is empty or only blank lines)", path.display())]
    NoSentences {
        /// The sentence file.
        path: PathBuf,
    },
    /// The sentence file is not UTF-8 text.
    #[error("sentence file {} is not UTF-8 text (line {line})", path.display())]
    NotText {
        /// The sentence file.
        path: PathBuf,
        /// First line that is not UTF-8 (1-based).
        line: usize,
    },
    /// The sentence file holds NUL bytes: a binary file, not text.
    #[error("sentence file {} is binary, not text (NUL byte on line {line})", path.display())]
    Binary {
        /// The sentence file.
        path: PathBuf,
        /// Line of the first NUL byte (1-based).
        line: usize,
    },
    /// A WordNet data file is missing.
    #[error("WordNet glosses not found: {} does not exist", path.display())]
    NoWordnet {
        /// The missing `data.*` file.
        path: PathBuf,
    },
    /// The glosses are too few for the requested split.
    #[error("{}: {found} distinct glosses of {min_words}+ words, but the split needs {needed}", dir.display())]
    NotEnoughText {
        /// The WordNet directory.
        dir: PathBuf,
        /// Sentences the split needs.
        needed: usize,
        /// Distinct sentences available.
        found: usize,
        /// The minimum words per sentence.
        min_words: usize,
    },
    /// The two models cannot be compared.
    #[error("cannot compare {} with {}: {reason}", a.display(), b.display())]
    Incompatible {
        /// First model directory.
        a: PathBuf,
        /// Second model directory.
        b: PathBuf,
        /// Why.
        reason: String,
    },
    /// A structurally pruned model (heads or FFN neurons removed) asked of an engine that builds
    /// full-size layers only.
    #[error("{}: the model is structurally pruned (pruned_heads / joulecut_intermediate_sizes); candle-transformers' BERT builds full-size layers only", path.display())]
    StructurallyPruned {
        /// The config file recording the pruning.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("{0}")]
    BadSetting(String),
    /// The engine asked for cannot do what was asked (a device, a precision).
    #[error("{0}")]
    WrongEngine(String),
    /// A candle operation failed while running the model.
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
            Error::Checkpoint(e) => e.is_bad_input(),
            Error::Candle { .. } | Error::Write { .. } => false,
            _ => true,
        }
    }

    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotADirectory { .. } => {
                "pass the model directory (config.json, tokenizer.json, model.safetensors), as Hugging Face ships it".into()
            }
            Error::MissingFile { instead: Some(other), .. } => {
                format!("the directory has {other}; convert it to model.safetensors (e.g. with the safetensors `convert` script)")
            }
            Error::MissingFile { file, .. } => format!(
                "a Hugging Face sentence encoder directory has config.json, tokenizer.json and model.safetensors; copy {file} from the original model"
            ),
            Error::Read { .. } => "check the path and the file's permissions".into(),
            Error::Write { .. } => "check free disk space and that the directory is writable".into(),
            Error::BadConfig { .. } => {
                "config.json should be the model's Hugging Face BertConfig (hidden_size, num_hidden_layers, ...)".into()
            }
            Error::NotBert { .. } => format!(
                "supported model_type: {} (BERT encoders such as all-MiniLM-L6-v2, bge-small-en-v1.5, e5-small-v2); RoBERTa, DistilBERT, MPNet and decoder models are not",
                crate::config::SUPPORTED_MODEL_TYPES.join(", ")
            ),
            Error::ConfigMismatch { field, .. } => format!(
                "config.json must describe these weights: use the config.json that ships with them, or correct `{field}`"
            ),
            Error::Tokenizer { .. } => {
                "use the tokenizer.json that ships with the model (a `tokenizers` JSON file, not vocab.txt)".into()
            }
            Error::MissingTensor { .. } | Error::WrongShape { .. } => {
                "the weights do not match config.json; `joulecut inspect FILE` lists the tensors the file has".into()
            }
            Error::Checkpoint(e) => return e.hint(),
            Error::NoSentences { .. } => "a sentence file holds one sentence per line (UTF-8 text)".into(),
            Error::NotText { .. } => "a sentence file must be UTF-8 text, one sentence per line; convert it, e.g. `iconv -f latin1 -t utf-8`".into(),
            Error::Binary { .. } => "pass a text file with one sentence per line (UTF-8), not a binary file".into(),
            Error::NoWordnet { .. } => "apt-get install wordnet-base (it puts the glosses in /usr/share/wordnet), or pass the directory holding data.noun, data.verb, data.adj and data.adv".into(),
            Error::NotEnoughText { .. } => "ask for smaller sets (e.g. --corpus), or lower the minimum sentence length".into(),
            Error::Incompatible { .. } => {
                "compare a model with a compressed copy of itself (same config.json and tokenizer.json)".into()
            }
            Error::StructurallyPruned { .. } => {
                "run it on joulecut's engine (--engine joulecut, the default), which loads the smaller layers".into()
            }
            Error::BadSetting(_) => "e.g. --batch-size 32".into(),
            Error::WrongEngine(_) => "joulecut's kernels run on the CPU in f32 (or as stored); \
                `--engine portable` runs on any device and takes --precision f32|f16|bf16"
                .into(),
            Error::Candle { .. } => return None,
        })
    }

    pub(crate) fn candle(action: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Error {
        let action = action.into();
        move |source| Error::Candle { action, source }
    }
}
