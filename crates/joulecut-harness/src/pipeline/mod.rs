//! The one compression pipeline behind both front-ends: a [`Plan`] of typed [`Step`]s, applied to a
//! model by a [`Context`] (weight-changing steps, metered) and written through [`encode`] (storage
//! steps). `joulecut bench` runs plans from its suite configs; the CLI commands (`prune`, `train
//! --prune-schedule`, `quantize --qat`) use the same policy, compaction, hooks and encoders.
//! [`quantize_stream`] is the streaming quantize or cast of any checkpoint or model directory
//! (`joulecut quantize`), and [`transformer`] the calibrated pruning and activation grids of
//! BERT-family model directories that the transformer bench and the CLI share.
//!
//! ```
//! use joulecut_harness::pipeline::{Plan, Step};
//! let plan: Plan = serde_json::from_str(
//!     r#"[{"op": "prune", "sparsity": 0.9, "granularity": "unstructured"},
//!         {"op": "finetune", "epochs": 1},
//!         {"op": "pack"}, {"op": "quantize", "dtype": "int8"}]"#,
//! )?;
//! plan.validate()?;
//! let (weights, storage) = plan.split();
//! assert_eq!(weights.len(), 2);
//! assert!(matches!(storage[0], Step::Pack));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod encode;
mod policy;
mod quantize;
mod step;
pub mod transformer;
mod weights;

pub use apply::{Applied, Context, ModelState, StepEnergy, TrainDefaults};
pub use encode::{data_bytes, encode, int8_activations, pack_if_pays, storage_steps_of};
pub use policy::{FittedSpec, Indivisible, PrunePolicy, spec as prune_spec};
pub use quantize::{Int8Activations, QuantizeJob, pass_error, quantize_stream};
pub use step::{QuantTarget, Step, kd_config};
pub use weights::{
    CompactedModel, Param, compact_model, copy_varmap, dense_tensors, varmap_from_checkpoint,
    varmap_params,
};

use serde::{Deserialize, Serialize};

/// The steps of one compressed variant, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl std::ops::Deref for Plan {
    type Target = [Step];

    fn deref(&self) -> &[Step] {
        &self.steps
    }
}

impl Plan {
    /// The weight-changing steps and the storage steps (applied when the checkpoint is written).
    pub fn split(&self) -> (Vec<&Step>, Vec<Step>) {
        let storage = self
            .steps
            .iter()
            .filter(|s| s.is_storage())
            .cloned()
            .collect();
        let changing = self.steps.iter().filter(|s| !s.is_storage()).collect();
        (changing, storage)
    }

    /// Checks the values the types cannot (ranges, combinations). Architectures named by a
    /// `distill` step are checked by the caller, who knows the teachers.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.steps.iter().try_for_each(check_step)
    }
}

fn positive_lr(lr: Option<f64>) -> bool {
    lr.is_none_or(|l| l > 0.0)
}

fn check_step(s: &Step) -> std::result::Result<(), String> {
    let epochs = match s {
        Step::Gradual { epochs, .. } | Step::Finetune { epochs, .. } | Step::Qat { epochs, .. } => {
            Some(*epochs)
        }
        Step::Distill { epochs, .. } => *epochs,
        _ => None,
    };
    if let Some(e) = epochs.filter(|&e| e > crate::MAX_EPOCHS) {
        return Err(format!(
            "{e} epochs is over the limit of {}",
            crate::MAX_EPOCHS
        ));
    }
    match s {
        Step::Prune { sparsity, .. } => check_sparsity(*sparsity),
        Step::Gradual {
            sparsity,
            epochs,
            lr,
            ramp,
            frequency,
            initial_sparsity,
            ..
        } => {
            check_sparsity(*sparsity)?;
            if *epochs == 0 || !positive_lr(*lr) {
                return Err("gradual pruning needs epochs >= 1 and lr > 0".into());
            }
            if let Some(r) = ramp.filter(|r| !(*r > 0.0 && *r <= 1.0)) {
                return Err(format!("ramp {r} is outside (0, 1]"));
            }
            if *frequency == Some(0) {
                return Err("frequency must be at least 1 step".into());
            }
            if let Some(i) = initial_sparsity.filter(|i| !(0.0..=*sparsity).contains(i)) {
                return Err(format!("initial_sparsity {i} is outside [0, {sparsity}]"));
            }
            Ok(())
        }
        Step::Quantize {
            dtype,
            activations: Some(a),
            ..
        } if *dtype != QuantTarget::Int8 => Err(format!("activations `{a}` needs dtype int8")),
        Step::Quantize { .. } => Ok(()),
        Step::Finetune {
            epochs,
            lr,
            batch_size,
            kd,
            temperature,
            alpha,
            ..
        } => {
            if *epochs == 0 || !positive_lr(*lr) {
                return Err("fine-tuning needs epochs >= 1 and lr > 0".into());
            }
            if *batch_size == Some(0) {
                return Err("batch_size must be >= 1".into());
            }
            if !kd && (temperature.is_some() || alpha.is_some()) {
                return Err("temperature and alpha need \"kd\": true".into());
            }
            kd_config(*temperature, *alpha)
                .validate()
                .map_err(|e| e.to_string())
        }
        Step::Qat { epochs, lr } => {
            if *epochs == 0 || !positive_lr(*lr) {
                return Err("fine-tuning needs epochs >= 1 and lr > 0".into());
            }
            Ok(())
        }
        Step::Distill {
            student,
            epochs,
            lr,
            temperature,
            alpha,
        } => {
            joulecut_models::ModelConfig::parse(student).map_err(|e| format!("student: {e}"))?;
            if *epochs == Some(0) || !positive_lr(*lr) {
                return Err("distillation needs epochs >= 1 and lr > 0".into());
            }
            kd_config(*temperature, *alpha)
                .validate()
                .map_err(|e| e.to_string())
        }
        Step::Compact | Step::Pack => Ok(()),
    }
}

fn check_sparsity(s: f64) -> std::result::Result<(), String> {
    if (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(format!("sparsity {s} is outside [0, 1)"))
    }
}
