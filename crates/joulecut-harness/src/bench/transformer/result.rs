//! The raw result of one transformer variant (or the f32 baseline), as `report.json` stores it.

use std::collections::BTreeMap;

use joulecut_energy::{Measurement, TotalProvenance};
use serde::{Deserialize, Serialize};

use super::config::TransformerStep;
use crate::bench::Saving;

/// The energy and time of one step of making a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    /// What ran (`prune sparsegpt 50%: calibrate + prune`, `write`, `quantize int8`, ...).
    pub step: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Joules.
    pub joules: f64,
    /// Provenance of the joules.
    pub provenance: TotalProvenance,
    /// Its energy window (the DESIGN `energy` object).
    pub energy: serde_json::Value,
    /// The variant that ran it; this one reuses its result (one calibration pass per pruning
    /// spec, one directory per chain of steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<String>,
}

impl StepCost {
    /// The cost of a metered window.
    pub fn of(step: impl Into<String>, m: &Measurement) -> StepCost {
        StepCost {
            step: step.into(),
            seconds: m.wall.as_secs_f64(),
            joules: m.total().0,
            provenance: m.provenance(),
            energy: serde_json::to_value(m).unwrap_or_default(),
            shared_with: None,
        }
    }

    /// The same cost, as reused from `by` (kept when it was already a reuse).
    pub fn shared(&self, by: &str) -> StepCost {
        StepCost {
            shared_with: self.shared_with.clone().or_else(|| Some(by.to_string())),
            ..self.clone()
        }
    }
}

/// Which kernel runs one linear layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerKernel {
    /// Module name (`encoder.layer.0.attention.self.query`).
    pub name: String,
    /// `dense-f32`, `int8` or `sparse`.
    pub kernel: String,
}

/// One variant's result. Ratios against the baseline are computed by the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerResult {
    /// `baseline` or the variant's name.
    pub variant: String,
    /// The variant's steps.
    pub steps: Vec<TransformerStep>,
    /// The `joulecut` commands that make the same model directory, one per step.
    pub commands: Vec<String>,
    /// The model directory evaluated.
    pub dir: String,
    /// Mean cosine of its embeddings against the baseline's over the evaluation sentences.
    pub cosine_mean: f64,
    /// The lowest cosine.
    pub cosine_min: f64,
    /// The evaluation sentence (0-based) that gave it.
    pub cosine_min_index: usize,
    /// Mean overlap of each sentence's nearest neighbours with the baseline's (`None` with too
    /// few sentences).
    pub neighbour_agreement: Option<f64>,
    /// Sentences/s at the eval batch size (every pass inside the energy window).
    pub sentences_per_second: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Inference joules per 1,000 sentences.
    pub joules_per_1000: f64,
    /// Provenance of the inference joules.
    pub provenance: TotalProvenance,
    /// The inference energy window (the DESIGN `energy` object).
    pub inference_energy: serde_json::Value,
    /// Whether that window was shorter than a measured counter's update period.
    #[serde(default)]
    pub inference_below_resolution: bool,
    /// Seconds spent making the variant from the baseline (every step, shared ones included).
    pub compression_seconds: f64,
    /// Joules spent making it.
    pub compression_joules: f64,
    /// Each step's cost.
    pub compression: Vec<StepCost>,
    /// Bytes of the weight files.
    pub bytes: u64,
    /// Zeros over the encoder's linear weights (as the kernels see them).
    pub weight_sparsity: f64,
    /// Weights of the encoder's linear layers (fewer once heads or FFN neurons are removed).
    pub linear_params: usize,
    /// Linear layers per kernel, e.g. `{"int8": 36}`.
    pub kernels: BTreeMap<String, usize>,
    /// The kernel of every linear layer.
    pub layers: Vec<LayerKernel>,
    /// `real` when an int8 or sparse kernel runs some layer or the layers are physically smaller;
    /// `nominal` when every layer runs dense f32 at full size (zeros stored densely, f16/bf16
    /// decoded at load).
    pub saving: Saving,
    /// Wall seconds of the whole row (making + evaluating).
    pub seconds: f64,
}
