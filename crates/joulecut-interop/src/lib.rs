//! Interoperability: joulecut's compressed checkpoints in the formats other runtimes load, and
//! back. [`compressed_tensors`] exports to (and imports from) the compressed-tensors layout of
//! vLLM and Hugging Face `transformers`. The format mapping is documented in docs/INTEROP.md.

pub mod compressed_tensors;
mod error;

pub use error::{Error, Result};
