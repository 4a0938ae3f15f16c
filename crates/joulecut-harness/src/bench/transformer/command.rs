//! How a step reads in reports: a few words, and the `joulecut` command that makes the same
//! model directory (the report lists them; `tests/bench_transformer_cli.rs` runs them).

use std::path::Path;

use joulecut_prune::Method;
use joulecut_quant::ScaleGranularity;

use super::config::{GridChoice, RECOVER_BATCH_SIZE, TransformerStep};
use crate::pipeline::QuantTarget;

/// The files a command names besides its input and output.
pub(super) struct Named<'a> {
    /// The baseline model directory (the teacher of `distill`).
    pub baseline: &'a Path,
    /// The calibration sentences.
    pub calibration: &'a Path,
    /// The training sentences of `distill` (validated present when a variant recovers).
    pub corpus: Option<&'a Path>,
}

fn layer_list(k: &[usize]) -> String {
    k.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// A step in a few words (`sparsegpt 50%`, `sparsegpt 2:4 packed`, `int8, calibrated grids`,
/// `neurons 50%, wanda`, `layers 0,2,4, 1 epoch, lr 0.0005`).
pub(super) fn describe(step: &TransformerStep) -> String {
    match step {
        TransformerStep::Prune {
            method,
            sparsity,
            granularity,
            pack,
        } => {
            let amount = match granularity.implied_sparsity() {
                Some(_) => granularity.to_string(),
                None => format!("{:.0}%", sparsity.unwrap_or_default() * 100.0),
            };
            format!("{method} {amount}{}", if *pack { " packed" } else { "" })
        }
        TransformerStep::Quantize {
            dtype, activations, ..
        } => match (dtype, activations.unwrap_or(GridChoice::Calibrated)) {
            (QuantTarget::Int8, GridChoice::Calibrated) => "int8, calibrated grids".into(),
            (QuantTarget::Int8, g) => format!(
                "int8, {} activations",
                g.grid().expect("not calibrated").as_str()
            ),
            (d, _) => d.to_string(),
        },
        TransformerStep::Structured {
            granularity,
            sparsity,
            method,
        } => format!("{granularity} {:.0}%, {method}", sparsity * 100.0),
        TransformerStep::Recover {
            epochs,
            keep_layers,
            ..
        } => {
            let layers = keep_layers
                .as_deref()
                .map(|k| format!("layers {}, ", layer_list(k)))
                .unwrap_or_default();
            let lr = step.recover_lr().expect("a recover step");
            let s = if *epochs == 1 { "" } else { "s" };
            format!("{layers}{epochs} epoch{s}, lr {lr}")
        }
    }
}

/// The `joulecut` command that runs `step` from `input` to `out`.
pub(super) fn command(
    step: &TransformerStep,
    input: &Path,
    out: &Path,
    files: &Named<'_>,
) -> String {
    let (i, o, c) = (input.display(), out.display(), files.calibration.display());
    match step {
        TransformerStep::Prune {
            method,
            sparsity,
            granularity,
            pack,
        } => {
            let amount = match granularity.implied_sparsity() {
                Some(_) => format!("--nm {granularity}"),
                None => format!("--sparsity {}", sparsity.unwrap_or_default()),
            };
            let pack = if *pack { " --pack" } else { "" };
            format!("joulecut prune {i} -o {o} --method {method} --calibration {c} {amount}{pack}")
        }
        TransformerStep::Quantize {
            dtype,
            granularity,
            activations,
            max_error,
        } => {
            let mut s = format!("joulecut quantize {i} -o {o} --dtype {dtype}");
            if *dtype == QuantTarget::Int8 {
                let g = match granularity.unwrap_or(ScaleGranularity::Channel) {
                    ScaleGranularity::Tensor => "tensor",
                    _ => "channel",
                };
                s += &format!(" --granularity {g}");
                match activations.unwrap_or(GridChoice::Calibrated).grid() {
                    Some(grid) => s += &format!(" --int8-activations {}", grid.as_str()),
                    None => {
                        s += &format!(" --calibration {c}");
                        if let Some(e) = max_error {
                            s += &format!(" --activation-error {e}");
                        }
                    }
                }
            }
            s
        }
        TransformerStep::Structured {
            granularity,
            sparsity,
            method,
        } => {
            let calib = if *method == Method::Wanda {
                format!(" --calibration {c}")
            } else {
                String::new()
            };
            format!(
                "joulecut prune {i} -o {o} --granularity {granularity} --sparsity {sparsity} --method {method}{calib}"
            )
        }
        TransformerStep::Recover {
            epochs,
            keep_layers,
            ..
        } => {
            let corpus = files
                .corpus
                .expect("a suite with recover steps has a corpus")
                .display();
            let lr = step.recover_lr().expect("a recover step");
            let keep = keep_layers
                .as_deref()
                .map(|k| format!(" --keep-layers {}", layer_list(k)))
                .unwrap_or_default();
            format!(
                "joulecut distill --teacher {} --student {i} --corpus {corpus} -o {o} --epochs {epochs} --lr {lr} --batch-size {RECOVER_BATCH_SIZE}{keep}",
                files.baseline.display()
            )
        }
    }
}
