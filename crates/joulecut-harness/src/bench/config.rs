//! The declarative suite config (JSON): models, seeds, baseline training, evaluation settings and
//! the variants, each a list of steps applied to the trained baseline. The built-in `quick` and
//! `full` suites are files under `crates/joulecut-harness/suites/`; `joulecut bench --print-config
//! quick` prints one to copy and edit.

use serde::{Deserialize, Serialize};

use crate::pipeline::{Plan, Step};
use crate::{Error, Result};

/// A whole suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    /// Suite name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Architectures (`lenet-300-100`, `lenet5`, `mlp:...`).
    pub models: Vec<String>,
    /// One run per seed; reports give medians and min-max over seeds.
    pub seeds: Vec<u64>,
    /// How baselines are trained.
    pub baseline: BaselineConfig,
    /// How every variant is evaluated.
    pub eval: EvalConfig,
    /// Accuracy budget (points) for the recommendation.
    #[serde(default = "default_drop")]
    pub max_accuracy_drop: f64,
    /// The compressed variants.
    pub variants: Vec<VariantConfig>,
}

fn default_drop() -> f64 {
    0.5
}

/// Baseline training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
}

/// Evaluation of each variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Batch size of the accuracy/throughput/energy passes.
    pub batch_size: usize,
    /// Passes over the test set inside the energy window (longer windows, steadier joules).
    pub repeats: usize,
    /// Batch-1 forward calls timed for latency.
    pub latency_iters: usize,
}

/// One compressed variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// Name in reports.
    pub name: String,
    /// Restrict to these models (default: all of the suite's).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Steps, in order.
    pub steps: Plan,
}

impl VariantConfig {
    /// Whether the variant runs for model `m`.
    pub fn applies_to(&self, m: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|x| x == m))
    }
}

const QUICK: &str = include_str!("../../suites/quick.json");
const FULL: &str = include_str!("../../suites/full.json");

impl SuiteConfig {
    /// A built-in suite by name (`quick`, `full`).
    pub fn builtin(name: &str) -> Result<Self> {
        match name {
            "quick" => Self::parse(QUICK, "built-in quick suite"),
            "full" => Self::parse(FULL, "built-in full suite"),
            "transformer" => Err(Error::BadSetting(
                "`transformer` is a transformer suite: `TransformerSuite::builtin()`".into(),
            )),
            other => Err(Error::BadSetting(format!(
                "unknown suite `{other}` (built-in suites: quick, full, transformer)"
            ))),
        }
    }

    /// The JSON text of a built-in suite.
    pub fn builtin_text(name: &str) -> Option<&'static str> {
        match name {
            "quick" => Some(QUICK),
            "full" => Some(FULL),
            _ => None,
        }
    }

    /// Parses and validates a suite (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cfg: SuiteConfig =
            serde_json::from_str(text).map_err(|e| Error::BadSetting(format!("{origin}: {e}")))?;
        cfg.validate()
            .map_err(|e| Error::BadSetting(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.models.is_empty() || self.seeds.is_empty() {
            return Err("needs at least one model and one seed".into());
        }
        for m in &self.models {
            joulecut_models::ModelConfig::parse(m).map_err(|e| e.to_string())?;
        }
        if self.baseline.epochs == 0
            || self.baseline.epochs > crate::MAX_EPOCHS
            || self.baseline.batch_size == 0
            || self.baseline.lr.is_nan()
            || self.baseline.lr <= 0.0
        {
            return Err(format!(
                "baseline needs epochs 1 to {}, batch_size >= 1 and lr > 0",
                crate::MAX_EPOCHS
            ));
        }
        if self.eval.batch_size == 0 || self.eval.repeats == 0 || self.eval.latency_iters == 0 {
            return Err("eval needs batch_size, repeats and latency_iters >= 1".into());
        }
        if self.max_accuracy_drop.is_nan() || self.max_accuracy_drop < 0.0 {
            return Err("max_accuracy_drop must be >= 0".into());
        }
        let mut names = std::collections::HashSet::new();
        for v in &self.variants {
            if !names.insert(&v.name) || v.name == "baseline" {
                return Err(format!(
                    "variant name `{}` is used twice (or is `baseline`)",
                    v.name
                ));
            }
            v.steps.validate().map_err(|e| format!("{}: {e}", v.name))?;
            for s in v.steps.iter() {
                if let Step::Distill { student, .. } = s {
                    let scfg = joulecut_models::ModelConfig::parse(student)
                        .map_err(|e| format!("{}: student: {e}", v.name))?;
                    for m in self.models.iter().filter(|m| v.applies_to(m)) {
                        let tcfg =
                            joulecut_models::ModelConfig::parse(m).map_err(|e| e.to_string())?;
                        joulecut_distill::check_compatible(&tcfg, &scfg)
                            .map_err(|e| format!("{}: {e}", v.name))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `(model, seed, variant index or None for the baseline)` in a deterministic order.
    pub fn runs(&self) -> Vec<(String, u64, Option<usize>)> {
        let mut out = Vec::new();
        for m in &self.models {
            for &s in &self.seeds {
                out.push((m.clone(), s, None));
                for (i, v) in self.variants.iter().enumerate() {
                    if v.applies_to(m) {
                        out.push((m.clone(), s, Some(i)));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_suites_parse() {
        let q = SuiteConfig::builtin("quick").unwrap();
        assert_eq!(q.runs().len(), 1 + q.variants.len());
        let f = SuiteConfig::builtin("full").unwrap();
        assert_eq!(f.runs().len(), 2 * 3 * (1 + f.variants.len()));
        assert!(SuiteConfig::builtin("huge").is_err());
    }

    #[test]
    fn bad_configs_are_rejected() {
        let q = SuiteConfig::builtin_text("quick").unwrap();
        let bad = q.replace("\"sparsity\": 0.9", "\"sparsity\": 1.5");
        assert!(
            SuiteConfig::parse(&bad, "x")
                .unwrap_err()
                .to_string()
                .contains("outside [0, 1)")
        );
        let bad = q.replace("\"dtype\": \"f16\"", "\"dtype\": \"int4\"");
        assert!(SuiteConfig::parse(&bad, "x").is_err());
    }

    fn with_variant(steps: &str) -> Result<SuiteConfig> {
        let text = format!(
            r#"{{"name": "t", "models": ["lenet-300-100"], "seeds": [0],
                "baseline": {{"epochs": 1, "batch_size": 8, "lr": 0.001}},
                "eval": {{"batch_size": 8, "repeats": 1, "latency_iters": 1}},
                "variants": [{{"name": "v", "steps": [{steps}]}}]}}"#
        );
        SuiteConfig::parse(&text, "t")
    }

    #[test]
    fn gradual_and_finetune_options_parse_and_are_checked() {
        let c = with_variant(
            r#"{"op": "gradual", "sparsity": 0.95, "epochs": 2, "lr": 0.002, "ramp": 0.5,
                "frequency": 20, "exclude_output": true, "lr_schedule": "cosine"}"#,
        )
        .unwrap();
        assert!(matches!(
            c.variants[0].steps[0],
            Step::Gradual { exclude_output: true, ramp: Some(r), .. } if r == 0.5
        ));
        with_variant(
            r#"{"op": "prune", "sparsity": 0.9, "granularity": "unstructured", "exclude_output": true},
               {"op": "finetune", "epochs": 1, "lr_schedule": "wsd", "batch_size": 64,
                "kd": true, "temperature": 2.0, "alpha": 0.5}"#,
        )
        .unwrap();
        for bad in [
            r#"{"op": "gradual", "sparsity": 0.9, "epochs": 1, "ramp": 0}"#,
            r#"{"op": "gradual", "sparsity": 0.9, "epochs": 1, "ramp": 1.5}"#,
            r#"{"op": "gradual", "sparsity": 0.9, "epochs": 1, "frequency": 0}"#,
            r#"{"op": "gradual", "sparsity": 0.9, "epochs": 1, "initial_sparsity": 0.95}"#,
            r#"{"op": "gradual", "sparsity": 1.0, "epochs": 1}"#,
            r#"{"op": "gradual", "sparsity": 0.9, "epochs": 0}"#,
            r#"{"op": "finetune", "epochs": 1, "lr_schedule": "step"}"#,
            r#"{"op": "finetune", "epochs": 1, "batch_size": 0}"#,
            r#"{"op": "finetune", "epochs": 1, "alpha": 0.5}"#,
            r#"{"op": "finetune", "epochs": 1, "kd": true, "alpha": 1.5}"#,
        ] {
            assert!(with_variant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_options_do_not_change_a_steps_json() {
        // Variants share weights by the JSON of their steps: a new optional field left out must
        // serialise exactly as before it existed.
        let c = with_variant(
            r#"{"op": "prune", "sparsity": 0.9, "granularity": "unstructured", "scope": "global"},
               {"op": "finetune", "epochs": 2}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&c.variants[0].steps).unwrap(),
            r#"[{"op":"prune","sparsity":0.9,"granularity":"unstructured","scope":"global"},{"op":"finetune","epochs":2,"lr":null}]"#
        );
    }

    #[test]
    fn int8_activation_option_is_checked() {
        let c =
            with_variant(r#"{"op": "quantize", "dtype": "int8", "activations": "s8"}"#).unwrap();
        assert!(matches!(
            &c.variants[0].steps[0],
            Step::Quantize {
                activations: Some(joulecut_quant::ActivationGrid::S8),
                ..
            }
        ));
        for bad in [
            r#"{"op": "quantize", "dtype": "int8", "activations": "u9"}"#,
            r#"{"op": "quantize", "dtype": "f16", "activations": "u7"}"#,
        ] {
            assert!(with_variant(bad).is_err(), "{bad}");
        }
    }
}
