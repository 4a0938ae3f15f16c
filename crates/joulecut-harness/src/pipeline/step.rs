//! The typed compression steps a [`Plan`](super::Plan) is made of. The bench's suite configs
//! deserialize straight into them (`{"op": "prune", "granularity": "2:4", ...}`), and the CLI
//! commands build them from their flags, so both front-ends speak one vocabulary. Strings stop at
//! the parsers: granularities, scopes, schedules and storage types are the owning crates' types.

use joulecut_prune::{Granularity, Scope};
use joulecut_quant::{ActivationGrid, ScaleGranularity};
use serde::{Deserialize, Serialize};

use crate::train::LrSchedule;

/// What a `quantize` step stores the weights as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum QuantTarget {
    /// int8 values with f32 scales (run by the int8 kernels).
    Int8,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl std::fmt::Display for QuantTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuantTarget::Int8 => "int8",
            QuantTarget::F16 => "f16",
            QuantTarget::Bf16 => "bf16",
        })
    }
}

/// A compression step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Magnitude pruning of the weights (see [`super::prune_spec`] for which layers take part).
    Prune {
        /// Target sparsity in [0, 1).
        sparsity: f64,
        /// `unstructured`, `rows`, `channels` or `N:M` (e.g. `2:4`).
        #[serde(with = "joulecut_prune::granularity_name")]
        granularity: Granularity,
        /// `global` or `layer`.
        #[serde(default = "global")]
        scope: Scope,
        /// Leave the output layer's weights dense (the sparsity is then over the other layers).
        #[serde(default, skip_serializing_if = "is_false")]
        exclude_output: bool,
    },
    /// Gradual magnitude pruning during fine-tuning (Zhu & Gupta's AGP): the sparsity ramps from
    /// `initial_sparsity` to `sparsity` along the cubic schedule over the first `ramp` fraction
    /// of the fine-tuning steps, masks recomputed every `frequency` steps; the rest of the epochs
    /// fine-tune at the target with the mask fixed.
    Gradual {
        /// Final sparsity in [0, 1).
        sparsity: f64,
        /// `unstructured`, `rows`, `channels` or `N:M`.
        #[serde(with = "joulecut_prune::granularity_name", default = "unstructured")]
        granularity: Granularity,
        /// `global` or `layer`.
        #[serde(default = "global")]
        scope: Scope,
        /// Leave the output layer's weights dense.
        #[serde(default, skip_serializing_if = "is_false")]
        exclude_output: bool,
        /// Epochs of fine-tuning (ramp included).
        epochs: usize,
        /// Learning rate (default: the baseline's).
        #[serde(default)]
        lr: Option<f64>,
        /// Learning-rate schedule over the epochs (default `wsd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr_schedule: Option<LrSchedule>,
        /// Fraction of the steps over which the sparsity ramps, in (0, 1] (default 0.5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ramp: Option<f64>,
        /// Steps between mask updates (default 10).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frequency: Option<usize>,
        /// Sparsity of the first update, in [0, sparsity] (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial_sparsity: Option<f64>,
    },
    /// Remove pruned neurons/channels: physically smaller layers.
    Compact,
    /// Fine-tune with Adam, keeping pruned weights at zero.
    Finetune {
        /// Epochs.
        epochs: usize,
        /// Learning rate (default: the baseline's).
        #[serde(default)]
        lr: Option<f64>,
        /// Learning-rate schedule (default `wsd`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr_schedule: Option<LrSchedule>,
        /// Batch size (default: the baseline's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_size: Option<usize>,
        /// Learn from the baseline's logits as well as the labels (knowledge distillation,
        /// `joulecut distill`'s loss; the teacher's logits over the training set are computed once
        /// and metered with the step).
        #[serde(default, skip_serializing_if = "is_false")]
        kd: bool,
        /// KD softmax temperature (default: `joulecut distill`'s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temperature: Option<f64>,
        /// KD weight of the teacher term in [0, 1] (default: `joulecut distill`'s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alpha: Option<f64>,
    },
    /// Quantization-aware fine-tuning: weights fake-quantised (int8 per channel, STE).
    Qat {
        /// Epochs.
        epochs: usize,
        /// Learning rate (default: the baseline's).
        #[serde(default)]
        lr: Option<f64>,
    },
    /// Store weights as `int8`, `f16` or `bf16`.
    Quantize {
        /// Target type.
        dtype: QuantTarget,
        /// int8: `channel` or `tensor`.
        #[serde(default)]
        granularity: ScaleGranularity,
        /// int8: the activation grid at inference, `u6` (6-bit unsigned), `u7` (7-bit unsigned)
        /// or `s8` (8-bit); absent: [`ActivationGrid::RECOMMENDED`], as `joulecut quantize`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activations: Option<ActivationGrid>,
    },
    /// Store sparse weights in the packed `sparse` encoding (run by the CSR kernel).
    Pack,
    /// Knowledge distillation: a new `student` architecture learns from the model so far (the
    /// teacher, usually the baseline), whose logits over the training set are computed once
    /// (`joulecut-distill`'s cached teacher); the student replaces the model in later steps.
    Distill {
        /// Student architecture, e.g. `mlp:784-64-10`.
        student: String,
        /// Epochs (default: the baseline's).
        #[serde(default)]
        epochs: Option<usize>,
        /// Learning rate (default: the baseline's).
        #[serde(default)]
        lr: Option<f64>,
        /// Softmax temperature (default: `joulecut distill`'s).
        #[serde(default)]
        temperature: Option<f64>,
        /// Weight of the teacher term in [0, 1] (default: `joulecut distill`'s).
        #[serde(default)]
        alpha: Option<f64>,
    },
}

impl Step {
    /// Storage steps change only how weights are stored (applied when the checkpoint is written);
    /// the others change the weights.
    pub fn is_storage(&self) -> bool {
        matches!(self, Step::Quantize { .. } | Step::Pack)
    }
}

/// The KD settings of a step: its overrides over `joulecut distill`'s defaults.
pub fn kd_config(temperature: Option<f64>, alpha: Option<f64>) -> joulecut_distill::KdConfig {
    let d = joulecut_distill::KdConfig::default();
    joulecut_distill::KdConfig {
        temperature: temperature.unwrap_or(d.temperature),
        alpha: alpha.unwrap_or(d.alpha),
        ..d
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn unstructured() -> Granularity {
    Granularity::Unstructured
}

fn global() -> Scope {
    Scope::Global
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_their_json_names() {
        let text = r#"[{"op":"prune","sparsity":0.5,"granularity":"2:4","scope":"layer"},{"op":"gradual","sparsity":0.9,"granularity":"rows","scope":"global","epochs":2,"lr":null,"lr_schedule":"cosine"},{"op":"quantize","dtype":"int8","granularity":"tensor","activations":"u7"},{"op":"pack"}]"#;
        let steps: Vec<Step> = serde_json::from_str(text).unwrap();
        assert!(matches!(
            steps[0],
            Step::Prune {
                granularity: Granularity::Nm { n: 2, m: 4 },
                scope: Scope::Layer,
                ..
            }
        ));
        assert!(matches!(
            steps[1],
            Step::Gradual {
                lr_schedule: Some(LrSchedule::Cosine),
                ..
            }
        ));
        assert!(matches!(
            steps[2],
            Step::Quantize {
                dtype: QuantTarget::Int8,
                granularity: ScaleGranularity::Tensor,
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&steps).unwrap(), text);
        assert!(steps[3].is_storage() && !steps[0].is_storage());
    }

    #[test]
    fn bad_names_are_refused_when_parsing() {
        for bad in [
            r#"{"op":"prune","sparsity":0.5,"granularity":"3:2"}"#,
            r#"{"op":"prune","sparsity":0.5,"granularity":"diagonal"}"#,
            r#"{"op":"prune","sparsity":0.5,"granularity":"rows","scope":"everywhere"}"#,
            r#"{"op":"quantize","dtype":"int4"}"#,
            r#"{"op":"finetune","epochs":1,"lr_schedule":"linear"}"#,
        ] {
            assert!(serde_json::from_str::<Step>(bad).is_err(), "{bad}");
        }
    }
}
