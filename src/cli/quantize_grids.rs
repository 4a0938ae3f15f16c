//! `quantize --dtype int8 --calibration FILE` on a transformer directory: each linear layer's
//! activation grid (s8, u7, u6) chosen from its output error on the calibration sentences
//! (`joulecut_harness::pipeline::transformer::calibrated_grids`, which the transformer bench runs
//! too), recorded in `joulecut.int8_activations.layers`.

use std::path::Path;

use joulecut::embed::read_sentences;
use joulecut::harness::pipeline::transformer::{ChosenGrids, calibrated_grids};
use joulecut::models::bert::GridPolicy;
use joulecut::quant::Int8Config;

use super::error::bad_input;
use super::eval_embeddings::embed_err;

pub fn choose(
    input: &Path,
    calibration: &Path,
    policy: &GridPolicy,
    weights: &Int8Config,
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
            "e.g. --activation-error 0.0006 (the default)",
        ));
    }
    let sentences = read_sentences(calibration).map_err(embed_err)?;
    // one pass of the calibration text through the model, every grid's error per layer: no
    // natural unit to count, so a spinner with the elapsed time
    let spinner = super::progress::spinner(&format!(
        "calibrating activation grids on {} sentences",
        sentences.len()
    ));
    let chosen = calibrated_grids(input, &sentences, policy, weights);
    spinner.finish_and_clear();
    Ok(chosen?)
}
