//! `joulecut eval-embeddings`: does a compressed BERT-family sentence encoder still embed like the
//! original? Mean and minimum cosine between the two models' mean-pooled embeddings, and the joules
//! and throughput of each (docs/EMBEDDINGS.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::Args;
use joulecut::embed::{
    CosineSummary, EncodeConfig, Engine, Precision, SentenceEncoder, neighbour_agreement,
    read_sentences,
};
use joulecut::energy::{Measurement, Meter};
use joulecut::models::device_name;

use super::error::bad_input;
use super::output::{device, energy_line, human_bytes, meter_on, print_json};

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
    /// Where the compressed model runs: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where the original model runs (default: --device). `--orig-device cpu --device cuda`
    /// on the same directory checks the GPU's embeddings against the CPU's.
    #[arg(long)]
    orig_device: Option<String>,
    /// What runs the compressed model: `joulecut` (its own int8, sparse and f32 kernels,
    /// unpadded; the CPU's default), `portable` (candle tensor ops on any device, int8 through
    /// candle's quantized matmul; the GPU's default) or `candle` (candle-transformers with every
    /// weight decoded to f32).
    #[arg(long)]
    engine: Option<Engine>,
    /// What runs the original model (default: the same as --engine on its device).
    /// `--orig-engine candle` against the same directory checks joulecut's engine against
    /// candle-transformers'.
    #[arg(long)]
    orig_engine: Option<Engine>,
    /// The portable engine's precision for the compressed model's dense products: f32, f16 or
    /// bf16 (default: as its weights are stored). The original runs as stored.
    #[arg(long)]
    precision: Option<Precision>,
    /// The same for the original model (portable engine only; default: as stored).
    #[arg(long)]
    orig_precision: Option<Precision>,
    /// Also time both models at each of these batch sizes (comma-separated, e.g. 1,32,256):
    /// sentences/s and joules per 1,000 sentences, each in its own energy window.
    #[arg(long, value_delimiter = ',', value_name = "SIZES")]
    sweep: Vec<usize>,
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
    /// The embeddings of the first pass, in sentence order.
    pub(super) embeddings: Vec<Vec<f32>>,
    /// Seconds of the whole window.
    pub(super) seconds: f64,
    /// Sentences embedded inside the window (whole passes).
    pub(super) sentences: usize,
    pub(super) energy: Measurement,
    /// Sentences/s at batch 1 over the first `batch1_sentences` (None when skipped).
    batch1: Option<f64>,
}

impl Run {
    /// Sentences per second over the window.
    pub(super) fn sentences_per_second(&self) -> f64 {
        self.sentences as f64 / self.seconds.max(1e-9)
    }

    /// Joules per 1,000 sentences over the window.
    pub(super) fn joules_per_1000(&self) -> f64 {
        self.energy.total().0 * 1000.0 / self.sentences.max(1) as f64
    }
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
fn kernel_counts(enc: &SentenceEncoder) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, k) in enc.kernels() {
        *m.entry(k).or_insert(0) += 1;
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

/// Embeds `sentences` inside one energy window: one warm-up batch outside it (first-touch
/// allocation is not the model's cost), then whole passes until the window spans the meter's
/// shortest trustworthy window (NVML's counter steps every ~100 ms; one pass on a GPU is shorter).
pub(super) fn run_model(
    meter: &Meter,
    label: &str,
    enc: &SentenceEncoder,
    sentences: &[String],
    cfg: &EncodeConfig,
) -> anyhow::Result<Run> {
    enc.encode(&sentences[..cfg.batch_size.min(sentences.len())], cfg)
        .map_err(embed_err)?;
    let min_window = meter.min_window();
    let (res, energy) = meter.measure(label, || {
        let t = Instant::now();
        let first = enc.encode(sentences, cfg)?;
        let mut passes = 1;
        while t.elapsed() < min_window {
            enc.encode(sentences, cfg)?;
            passes += 1;
        }
        Ok::<_, joulecut::embed::Error>((first, passes, t.elapsed()))
    });
    let (embeddings, passes, elapsed) = res.map_err(embed_err)?;
    Ok(Run {
        embeddings,
        seconds: elapsed.as_secs_f64(),
        sentences: sentences.len() * passes,
        energy,
        batch1: None,
    })
}

/// One point of a batch-size sweep.
#[derive(serde::Serialize)]
struct SweepPoint {
    batch_size: usize,
    sentences_per_second: f64,
    joules_per_1000_sentences: f64,
    energy_provenance: String,
    energy: Measurement,
}

/// Both models at each batch size of `sizes`, each in its own window.
fn sweep(
    meter: &Meter,
    models: [(&str, &SentenceEncoder); 2],
    sentences: &[String],
    sizes: &[usize],
) -> anyhow::Result<Vec<(String, Vec<SweepPoint>)>> {
    let mut out = Vec::new();
    for (name, enc) in models {
        let mut points = Vec::new();
        for &b in sizes {
            let cfg = EncodeConfig { batch_size: b };
            let r = run_model(meter, &format!("sweep-{name}-b{b}"), enc, sentences, &cfg)?;
            points.push(SweepPoint {
                batch_size: b,
                sentences_per_second: r.sentences_per_second(),
                joules_per_1000_sentences: r.joules_per_1000(),
                energy_provenance: r.energy.provenance().to_string(),
                energy: r.energy,
            });
        }
        out.push((name.to_string(), points));
    }
    Ok(out)
}

pub fn run(a: EvalEmbeddingsArgs) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        return Err(bad_input(
            "--batch-size must be at least 1",
            "e.g. --batch-size 32",
        ));
    }
    if a.sweep.contains(&0) {
        return Err(bad_input(
            "--sweep batch sizes must be at least 1",
            "e.g. --sweep 1,32,256",
        ));
    }
    let dev = device(&a.device)?;
    let orig_dev = match &a.orig_device {
        Some(d) => device(d)?,
        None => dev.clone(),
    };
    let sentences = read_sentences(&a.sentences).map_err(embed_err)?;
    let engine = a.engine.unwrap_or(Engine::for_device(&dev));
    // --orig-engine defaults to --engine, unless that cannot run on the original's device
    let orig_engine = a.orig_engine.unwrap_or(match (engine, orig_dev.is_cpu()) {
        (Engine::Joulecut, false) => Engine::Portable,
        (Engine::Portable, true) if a.engine.is_none() => Engine::Joulecut,
        (e, _) => e,
    });
    let meter = meter_on(&dev)?;
    // The first load and batch on a GPU initialise the context and its libraries: metered
    // apart, never inside a model's figures.
    let warm = Instant::now();
    let (loaded, warmup_energy) = meter.measure("warmup", || -> anyhow::Result<_> {
        let orig =
            SentenceEncoder::load_opts(&a.orig_dir, &orig_dev, orig_engine, a.orig_precision)
                .map_err(embed_err)?;
        let comp = SentenceEncoder::load_opts(&a.compressed_dir, &dev, engine, a.precision)
            .map_err(embed_err)?;
        let first = &sentences[..a.batch_size.min(sentences.len())];
        let cfg = EncodeConfig {
            batch_size: a.batch_size,
        };
        orig.encode(first, &cfg).map_err(embed_err)?;
        comp.encode(first, &cfg).map_err(embed_err)?;
        Ok((orig, comp))
    });
    let (orig, comp) = loaded?;
    let warmup_seconds = warm.elapsed().as_secs_f64();
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
    let mut r_orig = run_model(&meter, "embed-original", &orig, &sentences, &cfg)?;
    let mut r_comp = run_model(&meter, "embed-compressed", &comp, &sentences, &cfg)?;
    let b1 = &sentences[..a.batch1_sentences.min(sentences.len())];
    r_orig.batch1 = batch1_rate(&orig, b1)?;
    r_comp.batch1 = batch1_rate(&comp, b1)?;
    let sweeps = sweep(
        &meter,
        [("original", &orig), ("compressed", &comp)],
        &sentences,
        &a.sweep,
    )?;
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
    let side = |enc: &SentenceEncoder, r: &Run, dev: &Device, name: &str| {
        serde_json::json!({
            "dir": enc.dir(),
            "device": device_name(dev),
            "engine": enc.engine(),
            "precision": enc.precision(),
            "kernels": kernel_counts(enc),
            "linear_params": enc.linear_params(),
            "weight_bytes": enc.weight_bytes(),
            "seconds": r.seconds,
            "sentences_embedded": r.sentences,
            "sentences_per_second": r.sentences_per_second(),
            "batch1_sentences_per_second": r.batch1,
            "energy": r.energy,
            "joules_per_sentence": r.joules_per_1000() / 1000.0,
            "joules_per_1000_sentences": r.joules_per_1000(),
            "energy_provenance": r.energy.provenance().to_string(),
            "sweep": sweeps.iter().find(|(n, _)| n == name).map(|(_, p)| p),
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
            "device": device_name(&dev),
            "warmup_seconds": warmup_seconds,
            "warmup_energy": warmup_energy,
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
            "original": side(&orig, &r_orig, &orig_dev, "original"),
            "compressed": side(&comp, &r_comp, &dev, "compressed"),
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
            "{:<11} {:>8} {:>10} {:>12} {:>12} {:>10}  energy",
            "model", "device", "weights", "sentences/s", "batch-1 s/s", "J/1000"
        );
        for (name, enc, r, d) in [
            ("original", &orig, &r_orig, &orig_dev),
            ("compressed", &comp, &r_comp, &dev),
        ] {
            println!(
                "{name:<11} {:>8} {:>10} {:>12.1} {:>12} {:>10.3}  {}",
                device_name(d),
                human_bytes(enc.weight_bytes()),
                r.sentences_per_second(),
                r.batch1.map_or("-".into(), |v| format!("{v:.1}")),
                r.joules_per_1000(),
                energy_line(&r.energy)
            );
        }
        for (name, points) in &sweeps {
            for p in points {
                println!(
                    "sweep  {name:<11} batch {:>4}  {:>10.1} sentences/s  {:>10.3} J/1000  ({})",
                    p.batch_size,
                    p.sentences_per_second,
                    p.joules_per_1000_sentences,
                    p.energy_provenance
                );
            }
        }
        if !dev.is_cpu() || !orig_dev.is_cpu() {
            println!(
                "warm-up  {warmup_seconds:.2} s, {} (loading both models and a first batch; not in the figures above)",
                energy_line(&warmup_energy)
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
