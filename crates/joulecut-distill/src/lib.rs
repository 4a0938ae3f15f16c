//! Knowledge distillation: a small student learns from a large, frozen teacher. It works on any
//! candle forward pass (a candle-nn network, your own `Module`, or `joulecut_models::Model`) and
//! needs nothing else from joulecut.
//!
//! - [`kd_loss`]: Hinton's loss, `alpha * T² * KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * CE`
//!   (fused on CPU; [`kd_loss_reference`] is the plain-candle oracle), and [`hint_mse`] /
//!   [`Hints`] for feature distillation with learned projections.
//! - [`KdObjective`]: the teacher-student objective, with a live teacher (run without gradients)
//!   or [`TeacherLogits`] computed once over a [`TrainingSet`], in memory or on disk, so a
//!   distillation epoch costs about what a plain training epoch does. Its
//!   [`KdObjective::batch_loss`] works in any candle loop; `joulecut_harness` adapts it to its
//!   training loop (this crate sits below the models and the harness).
//! - [`distill_step`]: one step for your own candle loop.
//! - [`embedding_loss`]: distillation for sentence encoders, on pooled embeddings (cosine, MSE)
//!   and mapped hidden states, no labels needed ([`EmbeddingLoss`] weighs the terms).
//! - [`Arch`], [`HiddenModule`] and [`check_compatible`]: what distillation needs to know of a
//!   network, as plain values and one trait (for hints only).
//!
//! The defaults ([`KdConfig::default`]) come from the experiment in `docs/DISTILLATION.md`.
//!
//! The KD loss in your own candle loop, with plain candle-nn networks:
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap, linear, seq};
//! use joulecut_distill::{KdConfig, kd_loss};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let mlp = |vm: &VarMap, hidden: usize| -> candle_core::Result<_> {
//!     let vb = VarBuilder::from_varmap(vm, DType::F32, &dev);
//!     Ok(seq()
//!         .add(linear(8, hidden, vb.pp("fc1"))?)
//!         .add(|x: &Tensor| x.relu())
//!         .add(linear(hidden, 4, vb.pp("fc2"))?))
//! };
//! // The teacher would be trained already; the student has its own variables and optimiser.
//! let teacher = mlp(&VarMap::new(), 64)?;
//! let svm = VarMap::new();
//! let student = mlp(&svm, 8)?;
//! let mut opt = candle_nn::AdamW::new_lr(svm.all_vars(), 1e-2)?;
//! let x = Tensor::randn(0f32, 1.0, (32, 8), &dev)?;
//! let y = Tensor::from_vec((0..32u32).map(|i| i % 4).collect::<Vec<_>>(), 32, &dev)?;
//! let cfg = KdConfig::default();
//! let mut losses = Vec::new();
//! for _ in 0..30 {
//!     // The teacher's logits carry no gradient; the loss trains the student only.
//!     let t = teacher.forward(&x)?.detach();
//!     let loss = kd_loss(&student.forward(&x)?, &t, &y, &cfg)?;
//!     opt.backward_step(&loss)?;
//!     losses.push(loss.to_scalar::<f32>()?);
//! }
//! assert!(losses[29] < losses[0]);
//! # Ok(()) }
//! ```
//!
//! The fused loss and its plain-candle reference agree:
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use joulecut_distill::{KdConfig, kd_loss, kd_loss_reference};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let s = Tensor::new(&[[0.5f32, -0.2, 0.1], [1.0, 2.0, -1.0]], &dev)?;
//! let t = Tensor::new(&[[2.0f32, -1.0, 0.0], [0.0, 3.0, -2.0]], &dev)?;
//! let y = Tensor::new(&[0u32, 1], &dev)?;
//! let cfg = KdConfig::default();
//! let fused = kd_loss(&s, &t, &y, &cfg)?.to_scalar::<f32>()?;
//! let plain = kd_loss_reference(&s, &t, &y, &cfg)?.to_scalar::<f32>()?;
//! assert!((fused - plain).abs() < 1e-5);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod cache;
mod embedding;
mod error;
mod loss;
mod network;
mod objective;

pub use cache::{
    Samples, TeacherLogits, TrainingSet, dataset_fingerprint, ensemble_id, file_fingerprint,
    fingerprint_words,
};
pub use embedding::{EmbeddingLoss, EmbeddingLossParts, embedding_loss, row_cosine};
pub use error::{Error, Result};
pub use loss::{
    DEFAULT_ALPHA, DEFAULT_TEMPERATURE, KdConfig, hint_mse, kd_loss, kd_loss_reference,
    smoothed_cross_entropy, soft_kl,
};
pub use network::{Arch, HiddenModule, check_compatible};
pub use objective::{HintPair, Hints, KdObjective, StepOutput, Teacher, distill_step};
