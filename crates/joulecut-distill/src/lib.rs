//! Knowledge distillation: a small student learns from a large, frozen teacher.
//!
//! - [`kd_loss`]: Hinton's loss, `alpha * T² * KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) * CE`
//!   (fused on CPU; [`kd_loss_reference`] is the plain-candle oracle), and [`hint_mse`] /
//!   [`Hints`] for feature distillation with learned projections.
//! - [`KdObjective`]: the teacher-student objective, with a live teacher (run without gradients)
//!   or [`TeacherLogits`] computed once over a [`TrainingSet`], in memory or on disk, so a
//!   distillation epoch costs about what a plain training epoch does. Its
//!   [`KdObjective::batch_loss`] works in any candle loop; `joulecut_harness` adapts it to its
//!   training loop (this crate sits below the harness: it needs only models and checkpoints).
//! - [`distill_step`]: one step for your own candle loop.
//!
//! The defaults ([`KdConfig::default`]) come from the experiment in `docs/DISTILLATION.md`.
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

mod cache;
mod error;
mod loss;
mod objective;

pub use cache::{
    Samples, TeacherLogits, TrainingSet, dataset_fingerprint, ensemble_id, file_fingerprint,
    fingerprint_words,
};
pub use error::{Error, Result};
pub use loss::{
    DEFAULT_ALPHA, DEFAULT_TEMPERATURE, KdConfig, hint_mse, kd_loss, kd_loss_reference,
    smoothed_cross_entropy, soft_kl,
};
pub use objective::{
    HintPair, Hints, KdObjective, StepOutput, Teacher, check_compatible, distill_step,
    hidden_widths,
};
