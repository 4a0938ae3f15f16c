//! Structured pruning of a model directory: a fraction of every encoder layer's attention heads or
//! FFN neurons is removed and the layers are compacted (`BertEncoder::prune_structured`), so the
//! output's tensors are physically smaller. [`StructuredEncoder::write`] writes through
//! [`Precomputed`] + [`stream`]: the compacted tensors in the dtype each had, `config.json`
//! rewritten to record what is gone (`pruned_heads`, `joulecut_intermediate_sizes`), every other
//! tensor and file copied unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use joulecut_checkpoint::{
    DenseTensor, FloatType, HistoryEntry, Precomputed, Source, StreamOptions, TensorData,
    TensorRef, Written, stream,
};
use joulecut_embed::{Engine, SentenceEncoder, Structure};
use joulecut_models::bert::{StructuredReport, StructuredSpec, UnitScore};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which units a structured pass removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// Attention heads.
    Heads,
    /// FFN neurons.
    Neurons,
}

impl Units {
    /// `heads` or `neurons` (the `--granularity` value).
    pub fn name(self) -> &'static str {
        match self {
            Units::Heads => "heads",
            Units::Neurons => "neurons",
        }
    }
}

impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A structured pass: which units, what fraction of each layer's, ranked how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitPrune {
    /// Heads or neurons.
    pub units: Units,
    /// Fraction of every layer's units removed, in `[0, 1)` (each layer keeps at least one).
    pub sparsity: f64,
    /// By weight magnitude, or by output change on calibration sentences.
    pub score: UnitScore,
}

impl UnitPrune {
    /// The model's spec.
    pub fn spec(&self) -> StructuredSpec {
        let (heads, neurons) = match self.units {
            Units::Heads => (self.sparsity, 0.0),
            Units::Neurons => (0.0, self.sparsity),
        };
        StructuredSpec {
            heads,
            neurons,
            score: self.score,
        }
    }
}

/// A model directory's encoder with heads or neurons removed in memory.
pub struct StructuredEncoder {
    /// The directory it was loaded from.
    pub input: PathBuf,
    /// The encoder (joulecut's engine), compacted.
    pub encoder: SentenceEncoder,
    /// The pass.
    pub prune: UnitPrune,
    /// What it removed from each layer.
    pub reports: Vec<StructuredReport>,
    /// The record `config.json` gets of everything removed (earlier passes' included).
    pub structure: Structure,
    /// Encoder linear weights before.
    pub params_before: usize,
    /// Encoder linear weights after.
    pub params_after: usize,
    /// Calibration sentences used (0 for magnitude).
    pub sentences: usize,
    /// Their tokens.
    pub tokens: usize,
}

impl std::fmt::Debug for StructuredEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredEncoder")
            .field("input", &self.input)
            .field("prune", &self.prune)
            .field("params_before", &self.params_before)
            .field("params_after", &self.params_after)
            .finish_non_exhaustive()
    }
}

/// The config's record of what is gone, after this pass removed `reports`' units.
fn new_structure(enc: &SentenceEncoder, reports: &[StructuredReport]) -> Structure {
    let cfg = enc.config();
    let mut s = enc.structure().clone();
    for r in reports {
        let kept = s.kept_heads(r.layer, cfg);
        for &h in &r.removed_heads {
            s.pruned_heads.entry(r.layer).or_default().insert(kept[h]);
        }
    }
    let sizes: Vec<usize> = (0..cfg.num_hidden_layers)
        .map(|l| {
            reports
                .iter()
                .find(|r| r.layer == l)
                .map_or(s.intermediate(l, cfg), |r| r.neurons_after)
        })
        .collect();
    s.intermediate_sizes = sizes
        .iter()
        .any(|&w| w < cfg.intermediate_size)
        .then_some(sizes);
    s
}

fn unusable(dir: &Path) -> impl Fn(joulecut_models::Error) -> Error + '_ {
    move |e| {
        Error::Calibration {
        path: dir.to_path_buf(),
        reason: e.to_string(),
        hint: "remove heads and neurons from the f32 model, then quantize or pack; `joulecut inspect DIR` lists its tensors".into(),
    }
    }
}

/// Loads `dir` on joulecut's kernels and removes `p`'s units from every encoder layer, ranked on
/// `calibration` (needed by [`UnitScore::Activation`], unused by magnitude). The layers must be
/// dense f32.
pub fn prune_units(dir: &Path, calibration: &[String], p: &UnitPrune) -> Result<StructuredEncoder> {
    let mut encoder = SentenceEncoder::load_with(dir, &Device::Cpu, Engine::Joulecut)?;
    let batch = encoder.token_batch(calibration)?;
    let params_before = encoder.linear_params();
    let model = encoder
        .native_mut()
        .expect("the joulecut engine was asked for");
    let reports = model
        .prune_structured(&batch, &p.spec())
        .map_err(unusable(dir))?;
    let structure = new_structure(&encoder, &reports);
    let params_after = structure.linear_params(encoder.config());
    Ok(StructuredEncoder {
        input: dir.to_path_buf(),
        encoder,
        prune: *p,
        reports,
        structure,
        params_before,
        params_after,
        sentences: calibration.len(),
        tokens: batch.tokens(),
    })
}

impl StructuredEncoder {
    /// Heads and FFN neurons removed, over all layers.
    pub fn removed(&self) -> (usize, usize) {
        self.reports.iter().fold((0, 0), |(h, n), r| {
            (
                h + r.removed_heads.len(),
                n + r.neurons_before - r.neurons_after,
            )
        })
    }

    /// The history entry the output records (the same from every front-end).
    pub fn history(&self) -> HistoryEntry {
        HistoryEntry::new(
            "prune",
            serde_json::json!({
                "granularity": self.prune.units.name(),
                "sparsity": self.prune.sparsity,
                "score": self.prune.score,
                "calibration_sentences": self.sentences,
                "calibration_tokens": self.tokens,
            }),
        )
    }

    /// Writes the compacted model to `output` in the input's layout, atomically: the smaller
    /// tensors in the dtype each had, `config.json` recording the pruning.
    pub fn write(&self, output: &Path) -> Result<Written<()>> {
        let src = Source::open(&self.input)?;
        let prefix = self.encoder.prefix();
        let model = self
            .encoder
            .native()
            .expect("the joulecut engine was asked for");
        let tensors = model
            .dense_linear_tensors()
            .map_err(unusable(&self.input))?;
        let mut replaced = BTreeMap::new();
        for (name, shape, values) in tensors {
            let name = format!("{prefix}{name}");
            let dtype = src
                .names()
                .iter()
                .find(|n| **n == name)
                .and_then(|n| {
                    TensorRef {
                        checkpoint: src.shard_of(n),
                        name: n,
                    }
                    .float_type()
                })
                .unwrap_or(FloatType::F32);
            let bytes = dtype.encode(&values);
            replaced.insert(
                name,
                TensorData::Dense(DenseTensor {
                    dtype,
                    shape,
                    bytes,
                }),
            );
        }
        let config_path = self.input.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Read {
            path: config_path.clone(),
            source,
        })?;
        let mut config_json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::BadInput {
                what: config_path.display().to_string(),
                reason: format!("not JSON: {e}"),
                hint: "the model directory's config.json is damaged".into(),
            })?;
        self.structure
            .write_into(&mut config_json, self.encoder.config());
        let mut config_text = serde_json::to_string_pretty(&config_json).expect("JSON serialises");
        config_text.push('\n');
        let mut opts = StreamOptions::new(self.history());
        opts.sidecar_contents
            .insert(PathBuf::from("config.json"), config_text.into_bytes());
        Ok(stream(&src, output, &opts, &Precomputed::new(replaced)?)?)
    }
}
