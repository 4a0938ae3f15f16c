//! The streaming quantize or cast of a checkpoint — a file, a sharded index or a model directory —
//! behind `joulecut quantize` and the transformer bench's `quantize` steps: the quant crate's
//! [`QuantizePass`] through [`joulecut_checkpoint::stream`], with the int8 activation grids the
//! layers will run on recorded in the output's metadata.

use std::collections::BTreeMap;
use std::path::Path;

use joulecut_checkpoint::{HistoryEntry, Selection, Source, StreamOptions, Written, meta, stream};
use joulecut_quant::{ActivationGrid, PassError, QuantReport, QuantizePass, Target};

use crate::{Error, Result};

/// How the int8 layers of a quantized file quantize their inputs at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Int8Activations {
    /// One grid for every int8 layer (`joulecut.int8_activations`).
    One(ActivationGrid),
    /// A grid per module (`joulecut.int8_activations.layers`, module names without `.weight`),
    /// e.g. chosen from calibration error ([`super::transformer::calibrated_grids`]).
    PerLayer(BTreeMap<String, ActivationGrid>),
}

impl Int8Activations {
    /// The `__metadata__` entries that record it.
    pub fn metadata(&self) -> BTreeMap<String, Option<String>> {
        let mut m = BTreeMap::new();
        match self {
            Int8Activations::One(g) => {
                m.insert(meta::INT8_ACTIVATIONS.into(), Some(g.as_str().into()));
            }
            Int8Activations::PerLayer(grids) => {
                // a layer the map does not name runs on full 8-bit rows
                m.insert(
                    meta::INT8_ACTIVATIONS.into(),
                    Some(ActivationGrid::S8.as_str().into()),
                );
                m.insert(
                    meta::INT8_ACTIVATIONS_LAYERS.into(),
                    Some(serde_json::to_string(grids).expect("grid tags serialise")),
                );
            }
        }
        m
    }
}

/// One streaming quantize or cast.
#[derive(Debug, Clone)]
pub struct QuantizeJob {
    /// What the selected tensors become.
    pub target: Target,
    /// Which tensors are selected.
    pub selection: Selection,
    /// The activation grids int8 layers record (ignored for f16/bf16 targets).
    pub activations: Int8Activations,
    /// int8 only: weights stored smoothed (tensor name → input scales), e.g.
    /// [`super::transformer::ChosenGrids::weight_in_scales`].
    pub in_scales: BTreeMap<String, Vec<f32>>,
    /// Appended to the output's `joulecut.history`.
    pub history: HistoryEntry,
    /// One `.safetensors` file even when the input is sharded or a directory.
    pub single_file: bool,
}

/// A streaming pass error as this crate's error, keeping its type for the exit-code classifier.
pub fn pass_error(e: PassError) -> Error {
    match e {
        PassError::Quant(e) => Error::Quant(e),
        PassError::Checkpoint(e) => Error::Checkpoint(e),
        other => Error::Pass(other.to_string()),
    }
}

/// Quantizes (or casts) `src` into `out`, tensor by tensor in bounded memory; a directory input
/// gives a directory with the same shards, index and sidecar files. The output appears complete
/// or not at all.
pub fn quantize_stream(
    src: &Source,
    out: &Path,
    job: &QuantizeJob,
) -> Result<Written<QuantReport>> {
    let mut opts = StreamOptions::new(job.history.clone());
    opts.single_file = job.single_file;
    if matches!(job.target, Target::Int8(_)) {
        opts.metadata = job.activations.metadata();
    }
    let pass = QuantizePass {
        target: job.target,
        selection: job.selection.clone(),
        in_scales: job.in_scales.clone(),
    };
    stream(src, out, &opts, &pass).map_err(pass_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_layer_grids_default_to_full_rows() {
        let mut g = BTreeMap::new();
        g.insert(
            "encoder.layer.0.output.dense".to_string(),
            ActivationGrid::U6,
        );
        let m = Int8Activations::PerLayer(g).metadata();
        assert_eq!(m[meta::INT8_ACTIVATIONS].as_deref(), Some("s8"));
        assert_eq!(
            m[meta::INT8_ACTIVATIONS_LAYERS].as_deref(),
            Some(r#"{"encoder.layer.0.output.dense":"u6"}"#)
        );
        let one = Int8Activations::One(ActivationGrid::U7).metadata();
        assert_eq!(one.len(), 1);
        assert_eq!(one[meta::INT8_ACTIVATIONS].as_deref(), Some("u7"));
    }
}
