//! Activation-aware pruning of a model directory: the calibration sentences run through joulecut's
//! encoder, each encoder layer's linear layers are pruned on the inputs the already pruned layers
//! before them produce (`BertEncoder::prune_calibrated`), and the result is written through
//! [`Precomputed`] + [`stream`] — a model directory with every other tensor (token ids included)
//! and file copied unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use joulecut_checkpoint::{
    DenseTensor, FloatType, HistoryEntry, Precomputed, Source, SparseTensor, StreamOptions,
    TensorData, Written, stream,
};
use joulecut_embed::{Engine, SentenceEncoder};
use joulecut_models::bert::SublayerReport;
use joulecut_prune::CalibratedSpec;

use crate::pipeline::data_bytes;
use crate::{Error, Result};

/// A model directory's encoder with its linear layers pruned in memory.
pub struct PrunedEncoder {
    /// The directory it was loaded from.
    pub input: PathBuf,
    /// The encoder (joulecut's engine), pruned.
    pub encoder: SentenceEncoder,
    /// How it was pruned.
    pub spec: CalibratedSpec,
    /// What pruning each linear layer did.
    pub reports: Vec<SublayerReport>,
    /// Calibration sentences used.
    pub sentences: usize,
    /// Their tokens (special tokens included).
    pub tokens: usize,
}

impl std::fmt::Debug for PrunedEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrunedEncoder")
            .field("input", &self.input)
            .field("spec", &self.spec)
            .field("sentences", &self.sentences)
            .finish_non_exhaustive()
    }
}

/// What [`PrunedEncoder::write`] wrote.
#[derive(Debug)]
pub struct PrunedWritten {
    /// The files.
    pub written: Written<()>,
    /// Weights stored packed (bitmap + non-zeros), run by the sparse kernel.
    pub packed: usize,
}

/// Whether two weights belong to one fused product (`….attention.self.{query,key,value}`).
fn same_product(a: &str, b: &str) -> bool {
    let group = |n: &str| n.find(".attention.self.").map(|i| n[..i].to_string());
    group(a).is_some() && group(a) == group(b)
}

/// The packed encoding when it is smaller than dense f32 (a part a little denser than half
/// still is: the bitmap costs 1 bit a weight, a kept value 32).
pub(crate) fn pack_if_smaller(shape: &[usize], v: &[f32]) -> Option<TensorData> {
    let p = TensorData::Sparse(SparseTensor::pack_f32(shape.to_vec(), v, FloatType::F32));
    (data_bytes(&p) < v.len() * 4).then_some(p)
}

/// Loads `dir` on joulecut's kernels and prunes every encoder linear layer by `spec`, calibrated
/// on `calibration` (unused by magnitude pruning). The layers must be dense f32: prune the
/// original model, then quantize.
pub fn prune_encoder(
    dir: &Path,
    calibration: &[String],
    spec: &CalibratedSpec,
) -> Result<PrunedEncoder> {
    prune_encoder_observed(dir, calibration, spec, &mut |_, _| {})
}

/// [`prune_encoder`], calling `on_layer(layers done, layers)` after each encoder layer.
pub fn prune_encoder_observed(
    dir: &Path,
    calibration: &[String],
    spec: &CalibratedSpec,
    on_layer: &mut dyn FnMut(usize, usize),
) -> Result<PrunedEncoder> {
    spec.validate()?;
    let mut encoder = SentenceEncoder::load_with(dir, &Device::Cpu, Engine::Joulecut)?;
    let batch = encoder.token_batch(calibration)?;
    let model = encoder
        .native_mut()
        .expect("the joulecut engine was asked for");
    let reports = model
        .prune_calibrated_observed(&batch, spec, on_layer)
        .map_err(|e| Error::Calibration {
            path: dir.to_path_buf(),
            reason: e.to_string(),
            hint: "prune the original f32 model (before quantizing); `joulecut inspect DIR` lists its tensors".into(),
        })?;
    Ok(PrunedEncoder {
        input: dir.to_path_buf(),
        encoder,
        spec: spec.clone(),
        reports,
        sentences: calibration.len(),
        tokens: batch.tokens(),
    })
}

impl PrunedEncoder {
    /// Zeros and total over the pruned weights.
    pub fn zeros(&self) -> (usize, usize) {
        self.reports
            .iter()
            .fold((0, 0), |(z, t), r| (z + r.stats.zeros, t + r.stats.total))
    }

    /// Mean relative reconstruction error of the layers' outputs on the calibration inputs
    /// (`None` for methods that do not measure it).
    pub fn mean_reconstruction_error(&self) -> Option<f64> {
        let errs: Vec<f64> = self
            .reports
            .iter()
            .filter_map(|r| r.stats.reconstruction_error)
            .collect();
        (!errs.is_empty()).then(|| errs.iter().sum::<f64>() / errs.len() as f64)
    }

    /// The history entry the output records (the same from every front-end).
    pub fn history(&self) -> HistoryEntry {
        HistoryEntry::new(
            "prune",
            serde_json::json!({
                "method": self.spec.method,
                "granularity": self.spec.granularity.to_string(),
                "sparsity": self.spec.sparsity,
                "calibration_sentences": self.sentences,
                "calibration_tokens": self.tokens,
            }),
        )
    }

    /// Writes the pruned model to `output` in the input's layout (a directory for a directory),
    /// atomically. `pack`: the weights of a product that is at least half zeros (the fused query,
    /// key and value counted together) are stored as bitmap + non-zeros where that is smaller,
    /// and the sparse kernel runs them; otherwise zeros are stored densely.
    pub fn write(&self, output: &Path, pack: bool) -> Result<PrunedWritten> {
        let prefix = self.encoder.prefix().to_string();
        let model = self
            .encoder
            .native()
            .expect("the joulecut engine was asked for");
        // The query, key and value run as one product, so they are packed together or not at
        // all (SparseGPT's masks are per block across their rows: one part may keep a little
        // over half).
        let mut packed = 0;
        let mut weights: BTreeMap<String, TensorData> = BTreeMap::new();
        let linear = model.linear_weights();
        for group in linear.chunk_by(|a, b| same_product(&a.0, &b.0)) {
            let zeros: usize = group
                .iter()
                .map(|(_, _, v)| v.iter().filter(|x| **x == 0.0).count())
                .sum();
            let total: usize = group.iter().map(|(_, _, v)| v.len()).sum();
            let pack = pack && zeros * 2 >= total;
            for (n, shape, v) in group {
                let data = match pack.then(|| pack_if_smaller(shape, v)).flatten() {
                    Some(p) => {
                        packed += 1;
                        p
                    }
                    None => TensorData::Dense(DenseTensor::from_f32(shape.to_vec(), v)),
                };
                weights.insert(format!("{prefix}{n}"), data);
            }
        }
        let src = Source::open(&self.input)?;
        let written = stream(
            &src,
            output,
            &StreamOptions::new(self.history()),
            &Precomputed::new(weights)?,
        )?;
        Ok(PrunedWritten { written, packed })
    }
}
