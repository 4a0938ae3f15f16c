//! `joulecut prune --method wanda|sparsegpt --calibration FILE`: activation-aware pruning of a
//! BERT-family model directory. The calibration sentences run through joulecut's encoder; each
//! encoder layer's linear layers are pruned on the inputs the already pruned layers before them
//! produce (`BertEncoder::prune_calibrated`), and the result is written as a model directory with
//! every other tensor and file copied unchanged (`joulecut_harness::pipeline::transformer`, which
//! the transformer bench runs too).

use std::path::Path;
use std::process::ExitCode;

use joulecut::embed::read_sentences;
use joulecut::harness::pipeline::transformer::prune_encoder_observed;
use joulecut::prune::Granularity;
use joulecut::prune::{CalibratedSpec, Method};

use super::error::bad_input;
use super::eval_embeddings::embed_err;
use super::output::{human_bytes, print_json};

/// What the command needs beyond the generic prune arguments.
pub struct CalibratedArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub calibration: Option<&'a Path>,
    pub method: Method,
    pub granularity: Granularity,
    pub sparsity: f64,
    pub pack: bool,
    pub json: bool,
}

pub fn run(a: CalibratedArgs<'_>) -> anyhow::Result<ExitCode> {
    if !a.input.is_dir() {
        return Err(bad_input(
            format!(
                "--method {} prunes a Hugging Face model directory; {} is not one",
                a.method,
                a.input.display()
            ),
            "pass the directory with config.json, tokenizer.json and model.safetensors",
        ));
    }
    if matches!(a.granularity, Granularity::Rows | Granularity::Channels) {
        return Err(bad_input(
            format!("--method {} prunes single weights or N:M groups", a.method),
            "use --granularity unstructured or --nm 2:4",
        ));
    }
    let calib = match a.calibration {
        Some(p) => read_sentences(p).map_err(embed_err)?,
        None if a.method.needs_calibration() => {
            return Err(bad_input(
                format!("--method {} needs --calibration FILE", a.method),
                "give sentences like the ones the model will embed, one per line (128 is plenty)",
            ));
        }
        None => Vec::new(),
    };
    let spec = CalibratedSpec::new(a.method, a.sparsity).granularity(a.granularity);
    let bar = super::progress::bar(&format!("{} pruning", a.method), 0, "layers", a.json);
    let pruned = prune_encoder_observed(a.input, &calib, &spec, &mut |done, n| {
        bar.set_length(n as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let out = pruned.write(a.output, a.pack)?;
    let (written, packed) = (out.written, out.packed);
    let reports = &pruned.reports;
    let batch_tokens = pruned.tokens;
    let saving = if packed > 0 { "real" } else { "nominal" };
    let (zeros, total) = pruned.zeros();
    let mean_err = pruned.mean_reconstruction_error();
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": written.path,
            "method": a.method,
            "granularity": a.granularity.to_string(),
            "sparsity": zeros as f64 / total.max(1) as f64,
            "calibration": {"sentences": calib.len(), "tokens": batch_tokens},
            "bytes": written.bytes,
            "layers": reports,
            "mean_reconstruction_error": mean_err,
            "packed_tensors": packed,
            // dense zeros: the dense kernels do the same work; packed: the sparse kernel skips them
            "saving": saving,
        }))?;
    } else {
        println!(
            "pruned {} linear layers by {} ({}), calibrated on {} sentences ({} tokens): {:.1}% of {} weights are zero",
            reports.iter().map(|r| r.modules.len()).sum::<usize>(),
            a.method,
            a.granularity,
            calib.len(),
            batch_tokens,
            100.0 * zeros as f64 / total.max(1) as f64,
            total
        );
        if let Some(e) = mean_err {
            println!("mean relative reconstruction error on the calibration inputs: {e:.4}");
        }
        if saving == "real" {
            println!(
                "wrote {} ({}); saving real: {packed} weights packed (bitmap + non-zeros), run by the sparse kernel",
                written.path.display(),
                human_bytes(written.bytes)
            );
        } else {
            println!(
                "wrote {} ({}); saving nominal: zeros are stored densely (--pack, or quantize, for a real one)",
                written.path.display(),
                human_bytes(written.bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
