//! Each int8 layer's activation grid (s8, u7, u6) and smoothing for a model directory, chosen from
//! the layer's output error on calibration sentences (`BertEncoder::activation_grid_errors`): the
//! fastest grid within the policy's error budget. The grids are what
//! `joulecut.int8_activations.layers` stores; the smoothing becomes the weights' `:in_scale`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use joulecut_checkpoint::Source;
use joulecut_embed::{Engine, SentenceEncoder};
use joulecut_models::bert::{GridErrors, GridPolicy, choose_grids, choose_in_scales};
use joulecut_quant::{ActivationGrid, Int8Config};

use crate::{Error, Result};

/// The chosen grid per module and the errors behind the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenGrids {
    /// Module name (with the file's prefix, without `.weight`) → grid.
    pub grids: BTreeMap<String, ActivationGrid>,
    /// Module name → input scales (`1/s`, one per input column) of the modules that are smoothed.
    pub in_scales: BTreeMap<String, Vec<f32>>,
    /// Every linear layer's error under each grid.
    pub errors: Vec<GridErrors>,
    /// Calibration sentences used.
    pub sentences: usize,
}

impl ChosenGrids {
    /// How many modules got each grid, e.g. `{"s8": 6, "u6": 30}`.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for g in self.grids.values() {
            *m.entry(g.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// The smoothing per weight tensor (`MODULE.weight` → input scales), as the quantize pass
    /// takes it.
    pub fn weight_in_scales(&self) -> BTreeMap<String, Vec<f32>> {
        self.in_scales
            .iter()
            .map(|(m, f)| (format!("{m}.weight"), f.clone()))
            .collect()
    }
}

/// Runs `calibration` through the (unquantized) model in `dir` and chooses every linear layer's
/// activation grid and smoothing under `policy`, for weights quantized per `weights`.
pub fn calibrated_grids(
    dir: &Path,
    calibration: &[String],
    policy: &GridPolicy,
    weights: &Int8Config,
) -> Result<ChosenGrids> {
    if !(policy.max_error > 0.0 && policy.max_error.is_finite()) {
        return Err(Error::BadSetting(format!(
            "the activation error budget {} must be a positive number",
            policy.max_error
        )));
    }
    let enc = SentenceEncoder::load_with(dir, &Device::Cpu, Engine::Joulecut)?;
    let batch = enc.token_batch(calibration)?;
    let model = enc.native().expect("the joulecut engine was asked for");
    let mut errors =
        model
            .activation_grid_errors(&batch, weights)
            .map_err(|e| Error::Calibration {
                path: dir.to_path_buf(),
                reason: e.to_string(),
                hint: "calibrate the original f32 model".into(),
            })?;
    let prefix = enc.prefix();
    // Only weights stored dense can be stored smoothed: a packed layer the engine decoded to
    // dense f32 is judged without smoothing.
    let src = Source::open(dir)?;
    for e in &mut errors {
        let dense = e.modules.iter().all(|m| {
            let name = format!("{prefix}{m}.weight");
            src.shard_index(&name).is_some() && src.shard_of(&name).encodings().get(&name).is_none()
        });
        if !dense {
            e.smoothed.clear();
        }
    }
    let grids = choose_grids(&errors, policy)
        .into_iter()
        .map(|(m, g)| (format!("{prefix}{m}"), g))
        .collect();
    let in_scales = choose_in_scales(&errors, policy)
        .into_iter()
        .map(|(m, f)| (format!("{prefix}{m}"), f))
        .collect();
    Ok(ChosenGrids {
        grids,
        in_scales,
        errors,
        sentences: calibration.len(),
    })
}
