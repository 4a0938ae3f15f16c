//! joulecut: compress neural networks — pruning, quantization, distillation — and prove the savings
//! in joules.
//!
//! This facade re-exports the workspace crates so library users depend on one crate:
//! [`checkpoint`] (safetensors checkpoints and their encodings), [`models`] (reference
//! architectures), [`harness`] (datasets, training and evaluation loops).

#![forbid(unsafe_code)]

/// Safetensors checkpoints: lazy reading, encodings, selection, atomic writes.
pub use joulecut_checkpoint as checkpoint;
/// Knowledge distillation: Hinton KD and hint losses, cached or live teachers, a teacher-student step.
pub use joulecut_distill as distill;
/// Sentence encoders (BERT family, Hugging Face layout): load any encoding, embed, compare.
pub use joulecut_embed as embed;
/// Energy metering: RAPL, NVML and labelled estimates, windows, measurements with provenance.
pub use joulecut_energy as energy;
/// Datasets, training and evaluation loops.
pub use joulecut_harness as harness;
/// Interop: compressed-tensors export and import.
pub use joulecut_interop as interop;
/// Reference architectures that rebuild from checkpoint metadata.
pub use joulecut_models as models;
/// Fast CPU kernels for training: conv2d, pooling, linear, cross-entropy, fused optimisers.
pub use joulecut_ops as ops;

/// Pruning: masks, schedules, compaction, sparse kernels.
pub use joulecut_prune as prune;
/// Quantization: casts, int8 schemes and kernels, QAT.
pub use joulecut_quant as quant;
