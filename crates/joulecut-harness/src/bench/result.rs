//! The raw result of one bench run (a baseline or a variant for one model and seed), as
//! `report.json` stores it and `joulecut report merge` reads it back.

use joulecut_energy::TotalProvenance;
use joulecut_models::{LayerPath, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::host::RunStamp;
use crate::pipeline::Plan;

/// Which kind of saving a variant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Saving {
    /// The uncompressed model itself.
    Baseline,
    /// The compressed model runs differently: int8 or sparse kernels, or physically smaller layers.
    Real,
    /// Only the file changed (zeros stored densely, fp16 computed in f32).
    Nominal,
}

impl std::fmt::Display for Saving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Saving::Baseline => "baseline",
            Saving::Real => "real",
            Saving::Nominal => "nominal",
        })
    }
}

/// How one layer of a variant ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRoute {
    /// Layer name (`fc1`, `conv2`).
    pub name: String,
    /// Which kernels ran it.
    pub path: LayerPath,
}

/// The energy of one metered piece of a variant's compression (or of the baseline's training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// `baseline-training`, `gradual`, `finetune`, `qat`, `teacher-logits`, `distill`.
    pub step: String,
    /// Its energy window (the DESIGN `energy` object).
    pub energy: serde_json::Value,
    /// The variant whose identical weight-changing steps produced these weights (this variant
    /// reuses them and reports their cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<String>,
    /// The device warm-up before the baseline's training window (not part of its joules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<serde_json::Value>,
}

impl StepRecord {
    /// A record of a pipeline step's energy.
    pub fn of(e: &crate::pipeline::StepEnergy) -> StepRecord {
        StepRecord {
            step: e.step.to_string(),
            energy: serde_json::to_value(&e.energy).unwrap_or_default(),
            shared_with: None,
            warmup: None,
        }
    }
}

/// The raw result of one run. Ratios against the baseline are computed by the report, so shards
/// can be merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Architecture name.
    pub model: String,
    /// Seed of the baseline.
    pub seed: u64,
    /// `baseline` or the variant's name.
    pub variant: String,
    /// The variant's steps.
    pub steps: Plan,
    /// Test accuracy.
    pub accuracy: f64,
    /// Checkpoint bytes on disk.
    pub bytes: u64,
    /// Logical parameters.
    pub params: usize,
    /// Non-zero parameters.
    pub nonzero_params: usize,
    /// Fraction of zeros over all weight matrices and conv kernels (every tensor of 2 or more
    /// dimensions, the output layer included; biases excluded).
    #[serde(default)]
    pub weight_sparsity: f64,
    /// Samples/s at the eval batch size.
    pub samples_per_second: f64,
    /// Batch size of the throughput and energy passes.
    pub batch_size: usize,
    /// Median batch-1 latency (µs).
    pub latency_b1_us: f64,
    /// Inference joules per 10,000 samples at the eval batch size.
    pub inference_joules_per_10k: f64,
    /// The inference energy window (the DESIGN `energy` object).
    pub inference_energy: serde_json::Value,
    /// Whether that window was shorter than a measured counter's update period
    /// ([`joulecut_energy::Measurement::below_resolution`]): its joules must not be read as a
    /// plain measurement.
    #[serde(default)]
    pub inference_below_resolution: bool,
    /// Joules spent producing this variant from its baseline (fine-tuning, QAT, calibration...).
    pub compression_joules: f64,
    /// Each compression step's energy.
    pub compression_energy: Vec<StepRecord>,
    /// Joules of training the baseline this variant starts from.
    pub baseline_training_joules: f64,
    /// Provenance of the inference joules.
    pub provenance: TotalProvenance,
    /// Which kind of saving this is.
    pub saving: Saving,
    /// Which kernels each layer ran on.
    pub layers: Vec<LayerRoute>,
    /// Model config of the variant (compaction and distillation change it).
    pub config: ModelConfig,
    /// Checkpoint path.
    pub file: String,
    /// Wall seconds this run took (training + compression + evaluation).
    pub seconds: f64,
    /// The run (process) that produced this result: after `joulecut report merge`, each row
    /// keeps its shard's run id, start and host. Absent in results written before schema 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<RunStamp>,
}
