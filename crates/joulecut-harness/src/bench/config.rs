//! The declarative suite config (JSON): models, seeds, baseline training, evaluation settings and
//! the variants, each a list of steps applied to the trained baseline. The built-in `quick` and
//! `full` suites are files under `crates/joulecut-harness/suites/`; `joulecut bench --print-config
//! quick` prints one to copy and edit.

use serde::{Deserialize, Serialize};

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
    pub steps: Vec<Step>,
}

impl VariantConfig {
    /// Whether the variant runs for model `m`.
    pub fn applies_to(&self, m: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|x| x == m))
    }
}

/// The KD settings of a distill step: its overrides over `joulecut distill`'s defaults.
pub(crate) fn kd_config(
    temperature: Option<f64>,
    alpha: Option<f64>,
) -> joulecut_distill::KdConfig {
    let d = joulecut_distill::KdConfig::default();
    joulecut_distill::KdConfig {
        temperature: temperature.unwrap_or(d.temperature),
        alpha: alpha.unwrap_or(d.alpha),
        ..d
    }
}

/// A compression step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Magnitude pruning of the weights (never the output layer's rows).
    Prune {
        /// Target sparsity in [0, 1).
        sparsity: f64,
        /// `unstructured`, `rows`, `channels` or `N:M` (e.g. `2:4`).
        granularity: String,
        /// `global` or `layer`.
        #[serde(default = "default_scope")]
        scope: String,
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
        #[serde(default = "default_unstructured")]
        granularity: String,
        /// `global` or `layer`.
        #[serde(default = "default_scope")]
        scope: String,
        /// Leave the output layer's weights dense.
        #[serde(default, skip_serializing_if = "is_false")]
        exclude_output: bool,
        /// Epochs of fine-tuning (ramp included).
        epochs: usize,
        /// Learning rate (default: the baseline's).
        #[serde(default)]
        lr: Option<f64>,
        /// Learning-rate schedule over the epochs: `wsd` (default), `cosine` or `constant`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr_schedule: Option<String>,
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
        /// Learning-rate schedule: `wsd` (default), `cosine` or `constant`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr_schedule: Option<String>,
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
        dtype: String,
        /// int8: `channel` or `tensor`.
        #[serde(default = "default_granularity")]
        granularity: String,
        /// int8: the activation grid at inference, `u6` (6-bit unsigned, the default, as
        /// `joulecut quantize`), `u7` (7-bit unsigned) or `s8` (8-bit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activations: Option<String>,
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

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_unstructured() -> String {
    "unstructured".into()
}

fn default_scope() -> String {
    "global".into()
}

fn default_granularity() -> String {
    "channel".into()
}

const QUICK: &str = include_str!("../../suites/quick.json");
const FULL: &str = include_str!("../../suites/full.json");

impl SuiteConfig {
    /// A built-in suite by name (`quick`, `full`).
    pub fn builtin(name: &str) -> Result<Self> {
        match name {
            "quick" => Self::parse(QUICK, "built-in quick suite"),
            "full" => Self::parse(FULL, "built-in full suite"),
            other => Err(Error::BadSetting(format!(
                "unknown suite `{other}` (built-in suites: quick, full)"
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
            || self.baseline.batch_size == 0
            || self.baseline.lr.is_nan()
            || self.baseline.lr <= 0.0
        {
            return Err("baseline needs epochs >= 1, batch_size >= 1 and lr > 0".into());
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
            for s in &v.steps {
                match s {
                    Step::Prune {
                        sparsity,
                        granularity,
                        scope,
                        ..
                    } => check_prune(*sparsity, granularity, scope)
                        .map_err(|e| format!("{}: {e}", v.name))?,
                    Step::Gradual {
                        sparsity,
                        granularity,
                        scope,
                        epochs,
                        lr,
                        lr_schedule,
                        ramp,
                        frequency,
                        initial_sparsity,
                        ..
                    } => {
                        let bad = |e: String| format!("{}: {e}", v.name);
                        check_prune(*sparsity, granularity, scope).map_err(bad)?;
                        if *epochs == 0 || lr.is_some_and(|l| l.is_nan() || l <= 0.0) {
                            return Err(bad("gradual pruning needs epochs >= 1 and lr > 0".into()));
                        }
                        check_lr_schedule(lr_schedule.as_deref()).map_err(bad)?;
                        if ramp.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
                            return Err(bad(format!("ramp {} is outside (0, 1]", ramp.unwrap())));
                        }
                        if *frequency == Some(0) {
                            return Err(bad("frequency must be at least 1 step".into()));
                        }
                        if initial_sparsity.is_some_and(|i| !(0.0..=*sparsity).contains(&i)) {
                            return Err(bad(format!(
                                "initial_sparsity {} is outside [0, {sparsity}]",
                                initial_sparsity.unwrap()
                            )));
                        }
                    }
                    Step::Quantize {
                        dtype,
                        granularity,
                        activations,
                    } => {
                        if let Some(a) = activations {
                            if dtype != "int8"
                                || a.parse::<joulecut_quant::ActivationGrid>().is_err()
                            {
                                return Err(format!(
                                    "{}: activations `{a}` needs dtype int8 and is u6, u7 or s8",
                                    v.name
                                ));
                            }
                        }
                        if !["int8", "f16", "bf16"].contains(&dtype.as_str()) {
                            return Err(format!(
                                "{}: dtype `{dtype}` is not int8, f16 or bf16",
                                v.name
                            ));
                        }
                        if granularity != "channel" && granularity != "tensor" {
                            return Err(format!(
                                "{}: granularity `{granularity}` is not channel or tensor",
                                v.name
                            ));
                        }
                    }
                    Step::Finetune { epochs, lr, .. } | Step::Qat { epochs, lr } => {
                        if *epochs == 0 || lr.is_some_and(|l| l.is_nan() || l <= 0.0) {
                            return Err(format!(
                                "{}: fine-tuning needs epochs >= 1 and lr > 0",
                                v.name
                            ));
                        }
                        if let Step::Finetune {
                            lr_schedule,
                            batch_size,
                            kd,
                            temperature,
                            alpha,
                            ..
                        } = s
                        {
                            check_lr_schedule(lr_schedule.as_deref())
                                .map_err(|e| format!("{}: {e}", v.name))?;
                            if *batch_size == Some(0) {
                                return Err(format!("{}: batch_size must be >= 1", v.name));
                            }
                            if !kd && (temperature.is_some() || alpha.is_some()) {
                                return Err(format!(
                                    "{}: temperature and alpha need \"kd\": true",
                                    v.name
                                ));
                            }
                            kd_config(*temperature, *alpha)
                                .validate()
                                .map_err(|e| format!("{}: {e}", v.name))?;
                        }
                    }
                    Step::Distill {
                        student,
                        epochs,
                        lr,
                        temperature,
                        alpha,
                    } => {
                        let scfg = joulecut_models::ModelConfig::parse(student)
                            .map_err(|e| format!("{}: student: {e}", v.name))?;
                        if *epochs == Some(0) || lr.is_some_and(|l| l.is_nan() || l <= 0.0) {
                            return Err(format!(
                                "{}: distillation needs epochs >= 1 and lr > 0",
                                v.name
                            ));
                        }
                        kd_config(*temperature, *alpha)
                            .validate()
                            .map_err(|e| format!("{}: {e}", v.name))?;
                        for m in self.models.iter().filter(|m| v.applies_to(m)) {
                            let tcfg = joulecut_models::ModelConfig::parse(m)
                                .map_err(|e| e.to_string())?;
                            joulecut_distill::check_compatible(&tcfg, &scfg)
                                .map_err(|e| format!("{}: {e}", v.name))?;
                        }
                    }
                    Step::Compact | Step::Pack => {}
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

fn check_prune(sparsity: f64, granularity: &str, scope: &str) -> std::result::Result<(), String> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(format!("sparsity {sparsity} is outside [0, 1)"));
    }
    parse_granularity(granularity)?;
    if scope != "global" && scope != "layer" {
        return Err(format!("scope `{scope}` is not global or layer"));
    }
    Ok(())
}

fn check_lr_schedule(s: Option<&str>) -> std::result::Result<(), String> {
    match s {
        Some(name) if crate::train::LrSchedule::parse(name).is_none() => Err(format!(
            "lr_schedule `{name}` is not wsd, cosine or constant"
        )),
        _ => Ok(()),
    }
}

/// Parses a prune granularity (`unstructured`, `rows`, `channels`, `N:M`).
pub fn parse_granularity(g: &str) -> std::result::Result<joulecut_prune::Granularity, String> {
    use joulecut_prune::Granularity;
    Ok(match g {
        "unstructured" => Granularity::Unstructured,
        "rows" => Granularity::Rows,
        "channels" => Granularity::Channels,
        nm => {
            let (n, m) = nm.split_once(':').ok_or_else(|| {
                format!("granularity `{nm}` is not unstructured, rows, channels or N:M")
            })?;
            let (n, m) = (
                n.parse::<usize>().map_err(|e| e.to_string())?,
                m.parse::<usize>().map_err(|e| e.to_string())?,
            );
            Granularity::nm(n, m).map_err(|e| e.to_string())?
        }
    })
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
            Step::Quantize { activations: Some(a), .. } if a == "s8"
        ));
        for bad in [
            r#"{"op": "quantize", "dtype": "int8", "activations": "u9"}"#,
            r#"{"op": "quantize", "dtype": "f16", "activations": "u7"}"#,
        ] {
            assert!(with_variant(bad).is_err(), "{bad}");
        }
    }
}
