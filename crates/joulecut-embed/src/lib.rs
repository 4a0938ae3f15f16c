//! # joulecut-embed
//!
//! Does a compressed sentence encoder still work? This crate loads BERT-family encoders laid out as
//! Hugging Face ships them — `config.json`, `tokenizer.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) — runs them through candle-transformers' BERT and mean-pools
//! the token states over the attention mask, as sentence-transformers does. The weights may be in
//! any joulecut encoding (dense F32/F16/BF16, int8, sparse): each tensor is decoded to f32 as the
//! model asks for it ([`Weights`]). [`CosineSummary`] compares two models' embeddings sentence by
//! sentence; `joulecut eval-embeddings` is the command line for it (docs/EMBEDDINGS.md).
//! [`read_sentences`] reads sentence files (one a line); [`wordnet`] gives real English sentences,
//! WordNet's glosses, split into disjoint calibration, evaluation and corpus sets.
//!
//! ```no_run
//! use joulecut_embed::{CosineSummary, EncodeConfig, SentenceEncoder};
//! # fn main() -> joulecut_embed::Result<()> {
//! let dev = candle_core::Device::Cpu;
//! let orig = SentenceEncoder::load("all-MiniLM-L6-v2", &dev)?;
//! let int8 = SentenceEncoder::load("all-MiniLM-L6-v2-int8", &dev)?;
//! let sentences = vec!["A man is eating food.".to_string(), "A cat sleeps.".to_string()];
//! let cfg = EncodeConfig::default();
//! let s = CosineSummary::of(&orig.encode(&sentences, &cfg)?, &int8.encode(&sentences, &cfg)?)
//!     .expect("same sentences, same width");
//! println!("mean cosine {:.5}, min {:.5}", s.mean, s.min);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod compare;
mod config;
mod encoder;
mod error;
pub mod generate;
mod native;
mod structure;
mod weights;
pub mod wordnet;

pub use compare::{CosineSummary, cosine, neighbour_agreement, read_sentences};
pub use config::{
    SUPPORTED_MODEL_TYPES, check_structured_weights, check_weights, is_encoder_tensor,
    parse_config, read_config,
};
pub use encoder::{EncodeConfig, Engine, SentenceEncoder, kernel_saves_compute, mean_pool};
pub use error::{Error, Result};
pub use joulecut_models::bert::{LinearKind, Precision};
pub use structure::{INTERMEDIATE_SIZES, PRUNED_HEADS, Structure};
pub use weights::{INDEX_FILE, WEIGHTS_FILE, Weights};
