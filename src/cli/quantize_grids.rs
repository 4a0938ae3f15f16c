//! `quantize --dtype int8 --calibration FILE` on a transformer directory: each linear layer's
//! activation grid (s8, u7, u6) chosen from its output error on the calibration sentences
//! (`BertEncoder::activation_grid_errors`), recorded in `joulecut.int8_activations.layers`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use joulecut::embed::{Engine, SentenceEncoder, read_sentences};
use joulecut::models::bert::{GridErrors, GridPolicy, choose_grids};
use joulecut::quant::ActivationGrid;

use super::error::bad_input;
use super::eval_embeddings::embed_err;

/// The chosen grid per module and the errors behind the choice.
pub struct ChosenGrids {
    pub grids: BTreeMap<String, ActivationGrid>,
    pub errors: Vec<GridErrors>,
    pub sentences: usize,
}

pub fn choose(
    input: &Path,
    calibration: &Path,
    policy: &GridPolicy,
) -> anyhow::Result<ChosenGrids> {
    if !input.is_dir() {
        return Err(bad_input(
            format!(
                "--calibration chooses activation grids for a Hugging Face model directory; {} is not one",
                input.display()
            ),
            "pass the directory (config.json, tokenizer.json, model.safetensors), or drop --calibration",
        ));
    }
    if !(policy.max_error > 0.0 && policy.max_error.is_finite()) {
        return Err(bad_input(
            format!(
                "--activation-error {} must be a positive number",
                policy.max_error
            ),
            "e.g. --activation-error 0.0002 (the default)",
        ));
    }
    let sentences = read_sentences(calibration).map_err(embed_err)?;
    let enc =
        SentenceEncoder::load_with(input, &Device::Cpu, Engine::Joulecut).map_err(embed_err)?;
    let batch = enc.token_batch(&sentences).map_err(embed_err)?;
    let model = enc.native().expect("the joulecut engine was asked for");
    let errors = model.activation_grid_errors(&batch).map_err(|e| {
        bad_input(
            format!("{}: {e}", input.display()),
            "calibrate the original f32 model",
        )
    })?;
    let prefix = enc.prefix();
    let grids = choose_grids(&errors, policy)
        .into_iter()
        .map(|(m, g)| (format!("{prefix}{m}"), g))
        .collect();
    Ok(ChosenGrids {
        grids,
        errors,
        sentences: sentences.len(),
    })
}
