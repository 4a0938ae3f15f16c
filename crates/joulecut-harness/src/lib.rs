//! The harness: datasets (IDX / Fashion-MNIST, generated), the training loop and evaluation that
//! the CLI and the benchmark runner share.
//!
//! ```
//! use candle_core::Device;
//! use joulecut_harness::{TrainConfig, Trainer, data};
//! use joulecut_models::{Model, ModelConfig, init_varmap};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let splits = data::synthetic(512, 128, 16, 3, 0);
//! let cfg = ModelConfig::parse("mlp:16-32-3")?;
//! let vm = init_varmap(&cfg, 0, &Device::Cpu)?;
//! let model = Model::from_varmap(&cfg, &vm)?;
//! let tc = TrainConfig { epochs: 3, batch_size: 32, lr_schedule: joulecut_harness::LrSchedule::Constant, ..Default::default() };
//! let report = Trainer::new(&model, &vm, &tc).run(&splits.train, &splits.test)?;
//! assert!(report.accuracy > 0.9);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod bench;
pub mod card;
pub mod data;
mod error;
mod eval;
mod host;
mod kd;
pub mod pipeline;
pub mod qat;
pub mod recover;
mod train;
mod trainer;

pub use error::{Error, Result};
pub use eval::{EvalStats, LatencyStats, RepeatedEval, evaluate, evaluate_for, latency};
pub use host::{Host, RunStamp};
pub use joulecut_models::{Fallback, Kernel, RealKernels, Route};
pub use qat::QatObjective;
pub use train::{
    CrossEntropy, EpochStats, Event, LrSchedule, MAX_EPOCHS, NoHook, Objective, Observer,
    OptimizerKind, Silent, StepHook, TrainConfig, TrainReport, WARMUP_STEPS, Warmup, cross_entropy,
    warm_up,
};
pub use trainer::Trainer;
