//! Each int8 layer's activation grid (s8, u7, u6) for a model directory, chosen from the layer's
//! output error on calibration sentences (`BertEncoder::activation_grid_errors`): the fastest grid
//! within the policy's error budget. The result is what `joulecut.int8_activations.layers` stores.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use joulecut_embed::{Engine, SentenceEncoder};
use joulecut_models::bert::{GridErrors, GridPolicy, choose_grids};
use joulecut_quant::ActivationGrid;

use crate::{Error, Result};

/// The chosen grid per module and the errors behind the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenGrids {
    /// Module name (with the file's prefix, without `.weight`) → grid.
    pub grids: BTreeMap<String, ActivationGrid>,
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
}

/// Runs `calibration` through the (unquantized) model in `dir` and chooses every linear layer's
/// activation grid under `policy`.
pub fn calibrated_grids(
    dir: &Path,
    calibration: &[String],
    policy: &GridPolicy,
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
    let errors = model
        .activation_grid_errors(&batch)
        .map_err(|e| Error::Calibration {
            path: dir.to_path_buf(),
            reason: e.to_string(),
            hint: "calibrate the original f32 model".into(),
        })?;
    let prefix = enc.prefix();
    let grids = choose_grids(&errors, policy)
        .into_iter()
        .map(|(m, g)| (format!("{prefix}{m}"), g))
        .collect();
    Ok(ChosenGrids {
        grids,
        errors,
        sentences: calibration.len(),
    })
}
