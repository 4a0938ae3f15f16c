//! `joulecut eval-embeddings`: does a compressed BERT-family sentence encoder still embed like the
//! original? Mean and minimum cosine between the two models' mean-pooled embeddings, and the joules
//! and throughput of each (docs/EMBEDDINGS.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use joulecut::embed::{
    CosineSummary, EncodeConfig, Engine, LinearKind, SentenceEncoder, neighbour_agreement,
    read_sentences,
};
use joulecut::energy::{Measurement, Meter};

use super::error::bad_input;
use super::output::{energy_line, human_bytes, meter, print_json};

/// Arguments of `joulecut eval-embeddings`.
#[derive(Debug, Args)]
pub struct EvalEmbeddingsArgs {
    /// The original model directory (config.json, tokenizer.json, model.safetensors).
    orig_dir: PathBuf,
    /// The compressed model directory (same layout; model.safetensors in any joulecut encoding).
    compressed_dir: PathBuf,
    /// Sentences to embed, one per line (blank lines skipped).
    #[arg(long, value_name = "FILE")]
    sentences: PathBuf,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = EncodeConfig::default().batch_size)]
    batch_size: usize,
    /// What runs the compressed model: `joulecut` (its own int8, sparse and f32 kernels,
    /// unpadded) or `candle` (candle-transformers with every weight decoded to f32).
    #[arg(long, default_value_t = Engine::Joulecut)]
    engine: Engine,
    /// What runs the original model (default: the same as --engine). `--orig-engine candle`
    /// against the same directory checks joulecut's engine against candle-transformers'.
    #[arg(long)]
    orig_engine: Option<Engine>,
    /// Sentences timed one at a time for the batch-1 throughput (the first N; 0 skips it).
    #[arg(long, default_value_t = 100)]
    batch1_sentences: usize,
    /// Also write both models' embeddings, in sentence order, to this JSON file
    /// (`{"original": [[...], ...], "compressed": [...]}`), to compare with other runtimes.
    #[arg(long, value_name = "FILE")]
    embeddings_out: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Library errors become exit-2 errors when the input is at fault, with the cause chain in the
/// message (main prints one line) and the library's hint.
pub(super) fn embed_err(e: joulecut::embed::Error) -> anyhow::Error {
    if !e.is_bad_input() {
        return anyhow::Error::new(e);
    }
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    bad_input(msg, e.hint().unwrap_or_default())
}

/// Neighbours compared per sentence for the retrieval agreement.
const NEIGHBOURS: usize = 10;

/// One model's run over all sentences.
pub(super) struct Run {
    pub(super) embeddings: Vec<Vec<f32>>,
    pub(super) seconds: f64,
    pub(super) energy: Measurement,
    /// Sentences/s at batch 1 over the first `batch1_sentences` (None when skipped).
    batch1: Option<f64>,
}

/// Sentences/s of `enc` at batch 1 over `sentences` (after one warm-up sentence).
fn batch1_rate(enc: &SentenceEncoder, sentences: &[String]) -> anyhow::Result<Option<f64>> {
    if sentences.is_empty() {
        return Ok(None);
    }
    let cfg = EncodeConfig { batch_size: 1 };
    enc.encode(&sentences[..1], &cfg).map_err(embed_err)?;
    let t = Instant::now();
    enc.encode(sentences, &cfg).map_err(embed_err)?;
    Ok(Some(sentences.len() as f64 / t.elapsed().as_secs_f64()))
}

/// How many linear layers each kernel runs, e.g. `{"int8": 36}`.
fn kernel_counts(enc: &SentenceEncoder) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, k) in enc.routes() {
        let name = match k {
            LinearKind::Dense => "dense-f32",
            LinearKind::Int8 => "int8",
            LinearKind::Sparse => "sparse",
        };
        *m.entry(name).or_insert(0) += 1;
    }
    m
}

/// `real` when a compressed kernel (int8, sparse) runs some layer or the linear layers are
/// physically smaller than the original's (heads or FFN neurons removed); otherwise `nominal`
/// (smaller file, same dense compute).
pub(super) fn saving(orig: &SentenceEncoder, enc: &SentenceEncoder) -> &'static str {
    if enc.saves_compute_against(orig) {
        "real"
    } else {
        "nominal"
    }
}

pub(super) fn run_model(
    meter: &Meter,
    label: &str,
    enc: &SentenceEncoder,
    sentences: &[String],
    cfg: &EncodeConfig,
) -> anyhow::Result<Run> {
    // One warm-up batch outside the window: first-touch allocation is not the model's cost.
    enc.encode(&sentences[..cfg.batch_size.min(sentences.len())], cfg)
        .map_err(embed_err)?;
    let (res, energy) = meter.measure(label, || {
        let t = Instant::now();
        enc.encode(sentences, cfg).map(|e| (e, t.elapsed()))
    });
    let (embeddings, elapsed) = res.map_err(embed_err)?;
    Ok(Run {
        embeddings,
        seconds: elapsed.as_secs_f64(),
        energy,
        batch1: None,
    })
}

pub fn run(a: EvalEmbeddingsArgs) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        return Err(bad_input(
            "--batch-size must be at least 1",
            "e.g. --batch-size 32",
        ));
    }
    let sentences = read_sentences(&a.sentences).map_err(embed_err)?;
    let dev = candle_core::Device::Cpu;
    let orig_engine = a.orig_engine.unwrap_or(a.engine);
    let orig = SentenceEncoder::load_with(&a.orig_dir, &dev, orig_engine).map_err(embed_err)?;
    let comp = SentenceEncoder::load_with(&a.compressed_dir, &dev, a.engine).map_err(embed_err)?;
    if orig.dim() != comp.dim() {
        return Err(embed_err(joulecut::embed::Error::Incompatible {
            a: a.orig_dir.clone(),
            b: a.compressed_dir.clone(),
            reason: format!("embedding widths differ ({} vs {})", orig.dim(), comp.dim()),
        }));
    }
    let tokens: usize = orig
        .token_counts(&sentences)
        .map_err(embed_err)?
        .iter()
        .sum();
    let cfg = EncodeConfig {
        batch_size: a.batch_size,
    };
    let meter = meter()?;
    let mut r_orig = run_model(&meter, "embed-original", &orig, &sentences, &cfg)?;
    let mut r_comp = run_model(&meter, "embed-compressed", &comp, &sentences, &cfg)?;
    let b1 = &sentences[..a.batch1_sentences.min(sentences.len())];
    r_orig.batch1 = batch1_rate(&orig, b1)?;
    r_comp.batch1 = batch1_rate(&comp, b1)?;
    let cos = CosineSummary::of(&r_orig.embeddings, &r_comp.embeddings)
        .ok_or_else(|| anyhow::anyhow!("embeddings of the two models do not line up"))?;
    if let Some(path) = &a.embeddings_out {
        let doc = serde_json::json!({
            "sentences": sentences.len(),
            "dim": orig.dim(),
            "original": r_orig.embeddings,
            "compressed": r_comp.embeddings,
        });
        joulecut::checkpoint::atomic_write(path, |w| {
            serde_json::to_writer(&mut *w, &doc).map_err(std::io::Error::other)
        })?;
    }
    let agreement = neighbour_agreement(&r_orig.embeddings, &r_comp.embeddings, NEIGHBOURS);
    let n = sentences.len() as f64;
    let side = |enc: &SentenceEncoder, r: &Run| {
        serde_json::json!({
            "dir": enc.dir(),
            "engine": enc.engine(),
            "kernels": kernel_counts(enc),
            "linear_params": enc.linear_params(),
            "weight_bytes": enc.weight_bytes(),
            "seconds": r.seconds,
            "sentences_per_second": n / r.seconds,
            "batch1_sentences_per_second": r.batch1,
            "energy": r.energy,
            "joules_per_sentence": r.energy.total().0 / n,
            "joules_per_1000_sentences": r.energy.total().0 / n * 1000.0,
            "energy_provenance": r.energy.provenance().to_string(),
        })
    };
    let saving = saving(&orig, &comp);
    if a.json {
        print_json(&serde_json::json!({
            "sentences": sentences.len(),
            "tokens": tokens,
            "batch_size": a.batch_size,
            "dim": orig.dim(),
            "pooling": "mean",
            "device": "cpu",
            "cosine": {
                "mean": cos.mean,
                "min": cos.min,
                "min_index": cos.min_index,
                "min_sentence": sentences[cos.min_index],
            },
            "neighbour_agreement": {
                "k": NEIGHBOURS,
                "mean": agreement,
            },
            "original": side(&orig, &r_orig),
            "compressed": side(&comp, &r_comp),
            "saving": saving,
        }))?;
    } else {
        println!(
            "{} sentences ({tokens} tokens), batch {}, {}-dim mean-pooled embeddings",
            sentences.len(),
            a.batch_size,
            orig.dim()
        );
        println!(
            "cosine  mean {:.6}  min {:.6} (sentence {}: {:?})",
            cos.mean,
            cos.min,
            cos.min_index + 1,
            sentences[cos.min_index]
        );
        if let Some(g) = agreement {
            println!(
                "retrieval  {NEIGHBOURS} nearest neighbours agree {:.1}%",
                g * 100.0
            );
        }
        println!(
            "{:<11} {:>10} {:>12} {:>12} {:>10}  energy",
            "model", "weights", "sentences/s", "batch-1 s/s", "J/1000"
        );
        for (name, enc, r) in [("original", &orig, &r_orig), ("compressed", &comp, &r_comp)] {
            println!(
                "{name:<11} {:>10} {:>12.1} {:>12} {:>10.1}  {}",
                human_bytes(enc.weight_bytes()),
                n / r.seconds,
                r.batch1.map_or("-".into(), |v| format!("{v:.1}")),
                r.energy.total().0 / n * 1000.0,
                energy_line(&r.energy)
            );
        }
        let kernels: Vec<String> = kernel_counts(&comp)
            .iter()
            .map(|(k, c)| format!("{c} {k}"))
            .collect();
        let (p_orig, p_comp) = (orig.linear_params(), comp.linear_params());
        if p_comp < p_orig {
            println!(
                "structure  {p_comp} of {p_orig} linear weights ({:.1}% fewer: heads or FFN neurons removed)",
                100.0 * (1.0 - p_comp as f64 / p_orig.max(1) as f64)
            );
        }
        match saving {
            "real" => println!(
                "saving  real: the compressed model's linear layers run on {} ({} engine)",
                kernels.join(", "),
                comp.engine()
            ),
            _ => println!(
                "saving  nominal: every linear layer runs dense f32 ({} engine), so both models do the same compute",
                comp.engine()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
