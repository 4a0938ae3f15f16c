//! Interoperability: joulecut's compressed checkpoints in the formats other runtimes load, and
//! back. [`compressed_tensors`] exports to (and imports from) the compressed-tensors layout of
//! vLLM and Hugging Face `transformers`; [`onnx`] exports joulecut's MLPs, LeNet-5 and BERT-family
//! encoders as ONNX graphs (int8 as QDQ) for ONNX Runtime and tract. The format mapping is documented in docs/INTEROP.md.

pub mod compressed_tensors;
mod error;
pub mod onnx;

pub use error::{Error, Result};
