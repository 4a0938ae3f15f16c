//! The transformer suite config (JSON, `"kind": "transformer"`): the model directory, the text
//! (WordNet glosses or sentence files), evaluation settings, the cosine budget and the variants,
//! each a chain of steps that are the CLI's commands (`prune --method`, `prune --granularity
//! heads|neurons`, `distill --corpus`, `quantize`). The built-in `transformer` suite is
//! `crates/joulecut-harness/suites/transformer.json`.

use std::path::PathBuf;

use joulecut_prune::{CalibratedSpec, Granularity, Method};
use joulecut_quant::{ActivationGrid, ScaleGranularity};
use serde::{Deserialize, Serialize};

use crate::pipeline::QuantTarget;
use crate::pipeline::transformer::Units;
use crate::{Error, Result};

/// The `kind` tag of a transformer suite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuiteKind {
    /// A BERT-family sentence encoder in the Hugging Face layout.
    Transformer,
}

/// A transformer suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSuite {
    /// Always `transformer`: tells `joulecut bench --config` what the file holds.
    pub kind: SuiteKind,
    /// Suite name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The model directory (`config.json`, `tokenizer.json`, `model.safetensors`); `null`: the
    /// front-end's default (the installed all-MiniLM-L6-v2).
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Calibration, evaluation and (for `recover` steps) training sentences.
    pub text: TextConfig,
    /// How every variant is evaluated.
    pub eval: EmbedEvalConfig,
    /// The recommendation's budget: the lowest mean cosine against the f32 baseline allowed.
    #[serde(default = "default_min_cosine")]
    pub min_cosine: f64,
    /// The compressed variants (the f32 baseline is always run first).
    pub variants: Vec<TransformerVariant>,
}

fn default_min_cosine() -> f64 {
    0.99
}

/// Where the sentences come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum TextConfig {
    /// WordNet's glosses (Debian's `wordnet-base`), split into disjoint sets
    /// (`joulecut_embed::wordnet`, as `joulecut text wordnet` writes them).
    Wordnet {
        /// Directory holding `data.noun` ... (default `/usr/share/wordnet`).
        #[serde(default = "wordnet_dir")]
        dir: PathBuf,
        /// Calibration sentences.
        calibration: usize,
        /// Evaluation sentences.
        evaluation: usize,
        /// Training sentences of `recover` steps (disjoint from the other two sets; 0: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        corpus: usize,
        /// Seed of the shuffle.
        #[serde(default)]
        seed: u64,
    },
    /// Sentence files, one sentence a line.
    Files {
        /// Calibration sentences.
        calibration: PathBuf,
        /// Evaluation sentences.
        evaluation: PathBuf,
        /// Training sentences of `recover` steps (keep them apart from the evaluation ones).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        corpus: Option<PathBuf>,
    },
}

impl TextConfig {
    /// Whether it names training sentences for `recover` steps.
    pub fn has_corpus(&self) -> bool {
        match self {
            TextConfig::Wordnet { corpus, .. } => *corpus > 0,
            TextConfig::Files { corpus, .. } => corpus.is_some(),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn wordnet_dir() -> PathBuf {
    PathBuf::from(joulecut_embed::wordnet::DEFAULT_DIR)
}

/// Evaluation of each variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedEvalConfig {
    /// Sentences per forward pass.
    pub batch_size: usize,
    /// The fewest passes over the evaluation sentences inside the energy window (more are run
    /// until the window spans ten updates of the slowest measured counter).
    #[serde(default = "one")]
    pub repeats: usize,
    /// Nearest neighbours compared for the retrieval agreement.
    #[serde(default = "ten")]
    pub neighbours: usize,
}

fn one() -> usize {
    1
}

fn ten() -> usize {
    10
}

/// One compressed variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerVariant {
    /// Name in reports (also its directory under `OUT/models/`).
    pub name: String,
    /// Steps, in order; each reads the previous step's model directory and writes one.
    pub steps: Vec<TransformerStep>,
}

/// How an int8 step chooses the grid its layers quantize their inputs to at run time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GridChoice {
    /// Per layer, the fastest grid whose output error on the calibration sentences stays within
    /// `max_error` (`joulecut quantize --calibration`).
    Calibrated,
    /// `s8` for every layer.
    S8,
    /// `u7` for every layer.
    U7,
    /// `u6` for every layer.
    U6,
}

impl GridChoice {
    /// The one grid for all layers (`None` when calibrated).
    pub fn grid(self) -> Option<ActivationGrid> {
        match self {
            GridChoice::Calibrated => None,
            GridChoice::S8 => Some(ActivationGrid::S8),
            GridChoice::U7 => Some(ActivationGrid::U7),
            GridChoice::U6 => Some(ActivationGrid::U6),
        }
    }
}

/// A step of a transformer variant: one CLI command on a model directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TransformerStep {
    /// `joulecut prune IN -o OUT --method M --calibration CALIB (--sparsity S | --nm N:M) [--pack]`:
    /// activation-aware pruning of every encoder linear layer, layer by layer.
    Prune {
        /// `wanda` or `sparsegpt`.
        method: Method,
        /// Fraction of each layer's weights removed (unstructured); implied by an N:M pattern.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sparsity: Option<f64>,
        /// `unstructured` (default) or `N:M` (e.g. `2:4`).
        #[serde(
            with = "joulecut_prune::granularity_name",
            default = "unstructured",
            skip_serializing_if = "is_unstructured"
        )]
        granularity: Granularity,
        /// Store weights that are at least half zeros packed (the sparse kernel runs them).
        #[serde(default, skip_serializing_if = "is_false")]
        pack: bool,
    },
    /// `joulecut quantize IN -o OUT --dtype D [--granularity G] [--calibration CALIB |
    /// --int8-activations A]`: the projection and FFN weights stored as int8 (run by the int8
    /// GEMM) or f16/bf16 (decoded to f32 at load: a nominal saving).
    Quantize {
        /// `int8`, `f16` or `bf16`.
        dtype: QuantTarget,
        /// int8: one scale per output channel (default) or per tensor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        granularity: Option<ScaleGranularity>,
        /// int8: `calibrated` (default) or one grid for all layers (`s8`, `u7`, `u6`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activations: Option<GridChoice>,
        /// int8, calibrated: the largest relative output error a layer's grid may add
        /// (default: `joulecut quantize --activation-error`'s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_error: Option<f64>,
    },
    /// `joulecut prune IN -o OUT --granularity heads|neurons --sparsity F --method M
    /// [--calibration CALIB]`: a fraction of every encoder layer's attention heads or FFN neurons
    /// removed and the layers compacted (physically smaller dense layers).
    Structured {
        /// `heads` or `neurons`.
        granularity: Units,
        /// Fraction of every layer's units removed, in (0, 1).
        sparsity: f64,
        /// `magnitude` (default: by weight norm) or `wanda` (by output change on the calibration
        /// sentences, the mean folded into the bias).
        #[serde(default = "magnitude")]
        method: Method,
    },
    /// `joulecut distill --teacher BASELINE --student IN --corpus CORPUS -o OUT --epochs E --lr LR
    /// --batch-size 32 [--keep-layers L]`: the previous step's model (or the baseline, when this
    /// is the first step) trained back against the f32 baseline by embedding distillation on the
    /// suite's corpus (pooled cosine + MSE + hidden-state MSE on uniformly mapped layers, zeros
    /// kept).
    Recover {
        /// Passes over the corpus.
        #[serde(default = "one")]
        epochs: usize,
        /// Peak learning rate (AdamW; default 1e-4, or 5e-4 with `keep_layers`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lr: Option<f64>,
        /// The student is the input with only these layers (0-based, increasing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_layers: Option<Vec<usize>>,
    },
}

/// Sentences per training step of a `recover` step.
pub(crate) const RECOVER_BATCH_SIZE: usize = 32;

fn magnitude() -> Method {
    Method::Magnitude
}

fn unstructured() -> Granularity {
    Granularity::Unstructured
}

fn is_unstructured(g: &Granularity) -> bool {
    *g == Granularity::Unstructured
}

fn is_false(b: &bool) -> bool {
    !b
}

impl TransformerStep {
    /// The pruning spec of a `prune` step.
    pub fn prune_spec(&self) -> Option<CalibratedSpec> {
        match self {
            TransformerStep::Prune {
                method,
                sparsity,
                granularity,
                ..
            } => {
                let s = granularity
                    .implied_sparsity()
                    .or(*sparsity)
                    .unwrap_or_default();
                Some(CalibratedSpec::new(*method, s).granularity(*granularity))
            }
            _ => None,
        }
    }

    /// The peak learning rate of a `recover` step (its default when unset).
    pub fn recover_lr(&self) -> Option<f64> {
        match self {
            TransformerStep::Recover {
                lr, keep_layers, ..
            } => Some(lr.unwrap_or(if keep_layers.is_some() { 5e-4 } else { 1e-4 })),
            _ => None,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        match self {
            TransformerStep::Prune {
                method,
                sparsity,
                granularity,
                ..
            } => {
                if !method.needs_calibration() {
                    return Err(format!(
                        "method `{method}`: the transformer suite prunes with calibration (wanda, sparsegpt)"
                    ));
                }
                match (granularity, granularity.implied_sparsity(), sparsity) {
                    (Granularity::Rows | Granularity::Channels, ..) => {
                        return Err(format!(
                            "granularity `{granularity}`: prune steps remove single weights or N:M groups"
                        ));
                    }
                    (_, Some(implied), Some(s)) if (s - implied).abs() > 1e-9 => {
                        return Err(format!(
                            "sparsity {s} contradicts {granularity} (which is {implied} sparse)"
                        ));
                    }
                    (_, None, None) => return Err("an unstructured prune needs a sparsity".into()),
                    _ => {}
                }
                self.prune_spec()
                    .expect("a prune step")
                    .validate()
                    .map_err(|e| e.to_string())
            }
            TransformerStep::Quantize {
                dtype,
                granularity,
                activations,
                max_error,
            } => {
                let int8 = *dtype == QuantTarget::Int8;
                if !int8 && (granularity.is_some() || activations.is_some() || max_error.is_some())
                {
                    return Err(format!(
                        "{dtype}: granularity, activations and max_error apply to int8 only"
                    ));
                }
                if max_error.is_some() && activations.is_some_and(|a| a != GridChoice::Calibrated) {
                    return Err("max_error applies to calibrated activations only".into());
                }
                if let Some(e) = max_error.filter(|e| !(*e > 0.0 && e.is_finite())) {
                    return Err(format!("max_error {e} must be a positive number"));
                }
                Ok(())
            }
            TransformerStep::Structured {
                granularity,
                sparsity,
                method,
            } => {
                if !(*sparsity > 0.0 && *sparsity < 1.0) {
                    return Err(format!(
                        "structured {granularity}: sparsity {sparsity} is outside (0, 1) (each layer keeps at least one unit)"
                    ));
                }
                if !matches!(method, Method::Magnitude | Method::Wanda) {
                    return Err(format!(
                        "structured {granularity}: method `{method}` updates single weights; heads and neurons are ranked by magnitude or wanda"
                    ));
                }
                Ok(())
            }
            TransformerStep::Recover {
                epochs,
                lr,
                keep_layers,
            } => {
                if !(1..=10_000).contains(epochs) {
                    return Err(format!("recover: epochs must be 1 to 10000, got {epochs}"));
                }
                if let Some(lr) = lr.filter(|lr| !(lr.is_finite() && *lr > 0.0 && *lr < 1.0)) {
                    return Err(format!("recover: lr must be in (0, 1), got {lr}"));
                }
                match keep_layers {
                    Some(k) if k.is_empty() => {
                        Err("recover: keep_layers needs at least one layer".into())
                    }
                    Some(k) if k.windows(2).any(|w| w[0] >= w[1]) => Err(format!(
                        "recover: keep_layers {k:?} must be increasing layer numbers (0-based)"
                    )),
                    _ => Ok(()),
                }
            }
        }
    }
}

const TRANSFORMER: &str = include_str!("../../../suites/transformer.json");

impl TransformerSuite {
    /// The built-in `transformer` suite.
    pub fn builtin() -> Self {
        Self::parse(TRANSFORMER, "built-in transformer suite").expect("the built-in suite parses")
    }

    /// The JSON text of the built-in suite.
    pub fn builtin_text() -> &'static str {
        TRANSFORMER
    }

    /// Whether a suite file's text declares a transformer suite (`"kind": "transformer"`).
    pub fn is_transformer_text(text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("kind").and_then(|k| k.as_str()) == Some("transformer"))
    }

    /// Parses and validates a suite (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cfg: TransformerSuite =
            serde_json::from_str(text).map_err(|e| Error::BadSetting(format!("{origin}: {e}")))?;
        cfg.validate()
            .map_err(|e| Error::BadSetting(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.eval.batch_size == 0 || self.eval.repeats == 0 || self.eval.neighbours == 0 {
            return Err("eval needs batch_size, repeats and neighbours >= 1".into());
        }
        if let TextConfig::Wordnet {
            calibration,
            evaluation,
            ..
        } = &self.text
        {
            if *calibration == 0 || *evaluation < 2 {
                return Err("text needs at least 1 calibration and 2 evaluation sentences".into());
            }
        }
        if !(self.min_cosine.is_finite() && (-1.0..=1.0).contains(&self.min_cosine)) {
            return Err(format!("min_cosine {} is outside [-1, 1]", self.min_cosine));
        }
        let mut names = std::collections::HashSet::new();
        for v in &self.variants {
            if !names.insert(&v.name) || v.name == "baseline" {
                return Err(format!(
                    "variant name `{}` is used twice (or is `baseline`)",
                    v.name
                ));
            }
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+:".contains(c))
                || v.name.starts_with('.')
            {
                return Err(format!(
                    "variant name `{}`: use letters, digits and - _ . + : (it names a directory)",
                    v.name
                ));
            }
            if v.steps.is_empty() {
                return Err(format!("{}: a variant needs at least one step", v.name));
            }
            for s in &v.steps {
                s.validate().map_err(|e| format!("{}: {e}", v.name))?;
            }
            // later steps read f32 weights (int8 or f16 ones cannot be pruned or trained):
            // quantize last
            let first_quantize = v
                .steps
                .iter()
                .position(|s| matches!(s, TransformerStep::Quantize { .. }));
            if first_quantize.is_some_and(|i| {
                v.steps[i..]
                    .iter()
                    .any(|s| !matches!(s, TransformerStep::Quantize { .. }))
            }) {
                return Err(format!(
                    "{}: prune, structured and recover steps come before quantize steps (they need the f32 weights)",
                    v.name
                ));
            }
            if let Some(TransformerStep::Recover {
                keep_layers: None, ..
            }) = v.steps.first()
            {
                return Err(format!(
                    "{}: a first recover step would train the baseline against itself; give it keep_layers, or compress first",
                    v.name
                ));
            }
            let recovers = v
                .steps
                .iter()
                .any(|s| matches!(s, TransformerStep::Recover { .. }));
            if recovers && !self.text.has_corpus() {
                return Err(format!(
                    "{}: a recover step trains on the suite's corpus, and `text` names none; add \"corpus\": 2000 (WordNet) or \"corpus\": FILE (files)",
                    v.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
