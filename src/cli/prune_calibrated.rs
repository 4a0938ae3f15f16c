//! `joulecut prune --method wanda|sparsegpt --calibration FILE`: activation-aware pruning of a
//! BERT-family model directory. The calibration sentences run through joulecut's encoder; each
//! encoder layer's linear layers are pruned on the inputs the already pruned layers before them
//! produce (`BertEncoder::prune_calibrated`), and the result is written as a model directory with
//! every other tensor and file copied unchanged.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use candle_core::Device;
use joulecut::checkpoint::{
    DenseTensor, FloatType, HistoryEntry, Precomputed, Source, SparseTensor, StreamOptions,
    TensorData, stream,
};
use joulecut::embed::{Engine, SentenceEncoder, read_sentences};
use joulecut::harness::pipeline::data_bytes;
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

/// Whether two weights belong to one fused product (`….attention.self.{query,key,value}`).
fn same_product(a: &str, b: &str) -> bool {
    let group = |n: &str| n.find(".attention.self.").map(|i| n[..i].to_string());
    group(a).is_some() && group(a) == group(b)
}

/// The packed encoding when it is smaller than dense f32 (a part a little denser than half
/// still is: the bitmap costs 1 bit a weight, a kept value 32).
fn pack_if_smaller(shape: &[usize], v: &[f32]) -> Option<TensorData> {
    let p = TensorData::Sparse(SparseTensor::pack_f32(shape.to_vec(), v, FloatType::F32));
    (data_bytes(&p) < v.len() * 4).then_some(p)
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
    let mut enc =
        SentenceEncoder::load_with(a.input, &Device::Cpu, Engine::Joulecut).map_err(embed_err)?;
    let batch = enc.token_batch(&calib).map_err(embed_err)?;
    let spec = CalibratedSpec::new(a.method, a.sparsity).granularity(a.granularity);
    let prefix = enc.prefix().to_string();
    let model = enc.native_mut().expect("the joulecut engine was asked for");
    let reports = model.prune_calibrated(&batch, &spec).map_err(|e| {
        bad_input(
            format!("{}: {e}", a.input.display()),
            "prune the original f32 model (before quantizing); `joulecut inspect DIR` lists its tensors",
        )
    })?;
    // --pack: bitmap + non-zeros where that is smaller. The query, key and value run as one
    // product, so they are packed together or not at all (SparseGPT's masks are per block across
    // their rows: one part may keep a little over half).
    let mut packed = 0;
    let mut weights: BTreeMap<String, TensorData> = BTreeMap::new();
    let linear = model.linear_weights();
    for group in linear.chunk_by(|a, b| same_product(&a.0, &b.0)) {
        let zeros: usize = group
            .iter()
            .map(|(_, _, v)| v.iter().filter(|x| **x == 0.0).count())
            .sum();
        let total: usize = group.iter().map(|(_, _, v)| v.len()).sum();
        let pack = a.pack && zeros * 2 >= total;
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
    let src = Source::open(a.input)?;
    let history = HistoryEntry::new(
        "prune",
        serde_json::json!({
            "method": a.method,
            "granularity": a.granularity.to_string(),
            "sparsity": a.sparsity,
            "calibration_sentences": calib.len(),
            "calibration_tokens": batch.tokens(),
        }),
    );
    let written = stream(
        &src,
        a.output,
        &StreamOptions::new(history),
        &Precomputed::new(weights)?,
    )?;
    let saving = if packed > 0 { "real" } else { "nominal" };
    let zeros: usize = reports.iter().map(|r| r.stats.zeros).sum();
    let total: usize = reports.iter().map(|r| r.stats.total).sum();
    let errs: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.stats.reconstruction_error)
        .collect();
    let mean_err = (!errs.is_empty()).then(|| errs.iter().sum::<f64>() / errs.len() as f64);
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": written.path,
            "method": a.method,
            "granularity": a.granularity.to_string(),
            "sparsity": zeros as f64 / total.max(1) as f64,
            "calibration": {"sentences": calib.len(), "tokens": batch.tokens()},
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
            batch.tokens(),
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
