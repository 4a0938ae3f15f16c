//! `joulecut eval-embeddings`: does a compressed BERT-family sentence encoder still embed like the
//! original? Mean and minimum cosine between the two models' mean-pooled embeddings, and the joules
//! and throughput of each (docs/EMBEDDINGS.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use joulecut::embed::{CosineSummary, EncodeConfig, SentenceEncoder, read_sentences};
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
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Library errors become exit-2 errors when the input is at fault, with the cause chain in the
/// message (main prints one line) and the library's hint.
fn embed_err(e: joulecut::embed::Error) -> anyhow::Error {
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

/// One model's run over all sentences.
struct Run {
    embeddings: Vec<Vec<f32>>,
    seconds: f64,
    energy: Measurement,
}

fn run_model(
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
    let orig = SentenceEncoder::load(&a.orig_dir, &dev).map_err(embed_err)?;
    let comp = SentenceEncoder::load(&a.compressed_dir, &dev).map_err(embed_err)?;
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
    let r_orig = run_model(&meter, "embed-original", &orig, &sentences, &cfg)?;
    let r_comp = run_model(&meter, "embed-compressed", &comp, &sentences, &cfg)?;
    let cos = CosineSummary::of(&r_orig.embeddings, &r_comp.embeddings)
        .ok_or_else(|| anyhow::anyhow!("embeddings of the two models do not line up"))?;
    let n = sentences.len() as f64;
    let side = |enc: &SentenceEncoder, r: &Run| {
        serde_json::json!({
            "dir": enc.dir(),
            "weight_bytes": enc.weight_bytes(),
            "seconds": r.seconds,
            "sentences_per_second": n / r.seconds,
            "energy": r.energy,
            "joules_per_sentence": r.energy.total().0 / n,
        })
    };
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
            "original": side(&orig, &r_orig),
            "compressed": side(&comp, &r_comp),
            // Both models run in f32 after decoding: compute is the same, the saving is in bytes.
            "saving": "nominal",
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
        println!(
            "{:<11} {:>10} {:>12}  energy",
            "model", "weights", "sentences/s"
        );
        for (name, enc, r) in [("original", &orig, &r_orig), ("compressed", &comp, &r_comp)] {
            println!(
                "{name:<11} {:>10} {:>12.1}  {}",
                human_bytes(enc.weight_bytes()),
                n / r.seconds,
                energy_line(&r.energy)
            );
        }
        println!(
            "saving  nominal: the compressed weights are decoded to f32, so both models run the same dense compute"
        );
    }
    Ok(ExitCode::SUCCESS)
}
