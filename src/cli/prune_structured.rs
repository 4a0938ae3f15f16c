//! `joulecut prune DIR -o OUT --granularity heads|neurons --sparsity F [--method wanda
//! --calibration FILE]`: structured pruning of a BERT-family model directory. A fraction of every
//! encoder layer's attention heads or FFN neurons is removed and the layers are compacted
//! (`BertEncoder::prune_structured`): the output's tensors are physically smaller, `config.json`
//! records what is gone (`pruned_heads`, `joulecut_intermediate_sizes`), and every other tensor and
//! file is copied unchanged. `--method magnitude` ranks units by their weights; `--method wanda`
//! by their output change on the calibration sentences, with their mean folded into the bias.

use std::path::Path;
use std::process::ExitCode;

use joulecut::checkpoint::{Source, check_output};
use joulecut::embed::read_sentences;
use joulecut::harness::pipeline::transformer::{UnitPrune, prune_units};
use joulecut::models::bert::UnitScore;
use joulecut::prune::Method;

pub use joulecut::harness::pipeline::transformer::Units;

use super::error::bad_input;
use super::eval_embeddings::embed_err;
use super::output::{human_bytes, print_json};

/// What the command needs beyond the generic prune arguments.
pub struct StructuredArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub units: Units,
    pub sparsity: f64,
    pub method: Method,
    pub calibration: Option<&'a Path>,
    pub json: bool,
}

/// The validated spec: the fraction in range, the method one that ranks whole units.
fn spec_of(a: &StructuredArgs<'_>) -> anyhow::Result<UnitPrune> {
    if !(0.0..1.0).contains(&a.sparsity) {
        return Err(bad_input(
            format!(
                "--sparsity {} is outside [0, 1) for --granularity {}",
                a.sparsity,
                a.units.name()
            ),
            "e.g. --sparsity 0.25 removes a quarter of every layer's units (each layer keeps at least one)",
        ));
    }
    let score = match (a.method, a.calibration) {
        (Method::Magnitude, None) => UnitScore::Magnitude,
        (Method::Wanda, Some(_)) => UnitScore::Activation,
        (Method::Magnitude, Some(c)) => {
            return Err(bad_input(
                format!(
                    "--calibration {} is unused by --method magnitude",
                    c.display()
                ),
                "use --method wanda to rank heads and neurons on calibration sentences",
            ));
        }
        (Method::Wanda, None) => {
            return Err(bad_input(
                format!(
                    "--method wanda --granularity {} needs --calibration FILE",
                    a.units.name()
                ),
                "give sentences like the ones the model will embed, one per line (128 is plenty)",
            ));
        }
        (m, _) => {
            return Err(bad_input(
                format!(
                    "--method {m} updates single weights; it does not rank {}",
                    a.units.name()
                ),
                "use --method wanda --calibration FILE (activation-aware) or --method magnitude",
            ));
        }
    };
    Ok(UnitPrune {
        units: a.units,
        sparsity: a.sparsity,
        score,
    })
}

pub fn run(a: StructuredArgs<'_>) -> anyhow::Result<ExitCode> {
    let units = a.units.name();
    if !a.input.is_dir() {
        return Err(bad_input(
            format!(
                "--granularity {units} removes attention heads or FFN neurons of a BERT-family model directory; {} is not one",
                a.input.display()
            ),
            "pass the Hugging Face directory (config.json, tokenizer.json, model.safetensors); for other models use --granularity rows --compact",
        ));
    }
    let spec = spec_of(&a)?;
    let src = Source::open(a.input)?;
    check_output(&src, a.output, false)?;
    let calib = match a.calibration {
        Some(p) => read_sentences(p).map_err(embed_err)?,
        None => Vec::new(),
    };
    let pruned = prune_units(a.input, &calib, &spec)?;
    let written = pruned.write(a.output)?;
    let (params_before, params_after) = (pruned.params_before, pruned.params_after);
    let saving = if params_after < params_before {
        "real"
    } else {
        "nominal"
    };
    let (heads, neurons) = pruned.removed();
    let (reports, structure) = (&pruned.reports, &pruned.structure);
    let bytes_before = src.file_bytes();
    if a.json {
        let layers: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "layer": r.layer,
                    "heads_before": r.heads_before,
                    "heads_after": r.heads_before - r.removed_heads.len(),
                    "pruned_heads": structure.pruned_heads.get(&r.layer),
                    "neurons_before": r.neurons_before,
                    "neurons_after": r.neurons_after,
                    "head_score_removed": r.head_score_removed,
                    "neuron_score_removed": r.neuron_score_removed,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "input": a.input,
            "output": written.path,
            "granularity": units,
            "sparsity": a.sparsity,
            "score": spec.score,
            "calibration": {"sentences": calib.len(), "tokens": pruned.tokens},
            "removed": {"heads": heads, "neurons": neurons},
            "layers": layers,
            "linear_params": {"before": params_before, "after": params_after},
            "bytes": {"before": bytes_before, "after": written.bytes},
            "sidecars": written.sidecars,
            // smaller dense layers: every kernel does less work
            "saving": saving,
        }))?;
    } else {
        let how = match spec.score {
            UnitScore::Activation => format!(
                "by output change on {} calibration sentences ({} tokens)",
                calib.len(),
                pruned.tokens
            ),
            _ => "by weight magnitude".into(),
        };
        println!(
            "removed {heads} attention heads and {neurons} FFN neurons from {} layers, ranked {how}",
            reports.len()
        );
        println!(
            "encoder linear weights {params_before} -> {params_after} ({:.1}% fewer)",
            100.0 * (1.0 - params_after as f64 / params_before.max(1) as f64)
        );
        println!(
            "wrote {} ({} -> {}); saving {saving}: physically smaller dense layers (config.json records the pruning; the candle engine cannot run it)",
            written.path.display(),
            human_bytes(bytes_before),
            human_bytes(written.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
