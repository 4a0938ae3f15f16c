//! `joulecut eval`: accuracy, throughput and latency of a checkpoint on the test set, through the
//! kernels its encoding calls for. Transformers (a Hugging Face model directory, or BERT-family
//! encoder weights) are refused with the command that evaluates them, `eval-embeddings`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use joulecut::checkpoint::{Checkpoint, Source};
use joulecut::harness;
use joulecut::models::{LayerPath, Model, ModelConfig};

use super::error::bad_input;
use super::output::{device, energy_line, human_bytes, meter_on, print_json, report_fallbacks};

/// Arguments of `joulecut eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint (.safetensors); the architecture comes from its metadata.
    file: PathBuf,
    /// Architecture, for files without joulecut metadata (e.g. a PyTorch state dict).
    #[arg(long)]
    model: Option<String>,
    /// Dataset directory (default: $JOULECUT_DATA or /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Batch size for the accuracy/throughput pass and the batched latency.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Forward calls timed for the batch-1 latency; the batched latency times a tenth as many
    /// (at least 5).
    #[arg(long, default_value_t = 200)]
    latency_iters: usize,
    /// Activation grid of int8 layers, overriding the file's `joulecut.int8_activations`:
    /// s8 (8-bit), u7 (7-bit unsigned: no sign handling in the AVX2 kernel) or u6 (6-bit unsigned:
    /// the AVX2 kernel's paired loop, fastest).
    #[arg(long, value_parser = super::output::int8_activations_parser())]
    int8_activations: Option<joulecut::quant::ActivationGrid>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Refuses what `eval` cannot run: a transformer (a file or directory whose tensors are a
/// BERT-family encoder, or a directory with a Hugging Face `config.json`), or any directory.
fn refuse_other_models(path: &Path) -> anyhow::Result<()> {
    const HINT: &str = "use joulecut eval-embeddings ORIG_DIR COMPRESSED_DIR --sentences FILE";
    let model_type = path
        .is_dir()
        .then(|| std::fs::read(path.join("config.json")).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("model_type")?.as_str().map(String::from));
    let encoder = Source::open(path).is_ok_and(|s| {
        s.names()
            .iter()
            .any(|n| joulecut::embed::is_encoder_tensor(n))
    });
    let what = match (model_type, encoder) {
        (Some(t), _) => format!("a Hugging Face model directory (model_type `{t}`)"),
        (None, true) => "a transformer (BERT-family encoder weights)".to_string(),
        (None, false) if path.is_dir() => {
            return Err(bad_input(
                format!(
                    "{} is a directory; eval reads one joulecut checkpoint file",
                    path.display()
                ),
                "pass the .safetensors file that joulecut train, prune, quantize or distill wrote",
            ));
        }
        (None, false) => return Ok(()),
    };
    Err(bad_input(
        format!(
            "{} is {what}; eval runs joulecut's Fashion-MNIST models",
            path.display()
        ),
        HINT,
    ))
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        return Err(bad_input(
            "--batch-size must be at least 1",
            "e.g. --batch-size 256",
        ));
    }
    if a.latency_iters == 0 {
        return Err(bad_input(
            "--latency-iters must be at least 1",
            "e.g. --latency-iters 200",
        ));
    }
    refuse_other_models(&a.file)?;
    let dev = device(&a.device)?;
    let ck = Checkpoint::open(&a.file)?;
    let fallback = a.model.as_deref().map(ModelConfig::parse).transpose()?;
    let cfg = Model::config_of(&ck, fallback.as_ref())?;
    let mut kernels = joulecut::harness::RealKernels::for_checkpoint(&ck)?;
    if let Some(g) = a.int8_activations {
        kernels.int8_activations = g;
    }
    let model = Model::load(&ck, &cfg, &dev, &kernels)?;
    let fallbacks = report_fallbacks(&kernels.fallbacks(&model, &ck, &dev)?);
    let splits = harness::data::load_fashion_mnist(a.data.as_deref())?;
    let meter = meter_on(&dev)?;
    // Whole passes until the window spans enough counter updates (one on CPU-only estimates);
    // accuracy and throughput are the first pass's, the joules are divided over every pass.
    let (runs, energy) = meter.measure("eval", || {
        harness::evaluate_for(
            &model,
            &splits.test,
            a.batch_size,
            &dev,
            1,
            meter.min_window(),
        )
    });
    let runs = runs?;
    let stats = runs.first().clone();
    let energy_samples = runs.samples();
    let j_per_10k = energy.total().0 * 10_000.0 / energy_samples as f64;
    let lat1 = harness::latency(&model, &splits.test, 1, a.latency_iters, &dev)?;
    let latb = harness::latency(
        &model,
        &splits.test,
        a.batch_size,
        (a.latency_iters / 10).max(5),
        &dev,
    )?;
    let (mut params, mut nonzero) = (0usize, 0usize);
    for n in ck.names() {
        let t = ck.get(n)?;
        params += t.shape().iter().product::<usize>();
        nonzero += t.nonzeros();
    }
    let layers: Vec<_> = model
        .layers()
        .map(|l| serde_json::json!({"name": l.name, "path": l.path}))
        .collect();
    // 16-bit and 2:4 weights run their own kernels for small batches only; larger ones run the
    // f32 copy
    let real = model.saves_compute(a.batch_size);
    let nominal = model.layers().any(|l| {
        matches!(
            l.path,
            LayerPath::Decoded | LayerPath::Half | LayerPath::TwoFour
        )
    }) || nonzero < params;
    let saving = if real {
        "real"
    } else if nominal {
        "nominal"
    } else {
        "none"
    };
    if a.json {
        print_json(&serde_json::json!({
            "file": a.file,
            "model": cfg.name(),
            "accuracy": stats.accuracy,
            "samples": stats.samples,
            "batch_size": stats.batch_size,
            "seconds": stats.seconds,
            "samples_per_second": stats.samples_per_second,
            "latency": {"batch_1": lat1, "batch": latb},
            "model_bytes": ck.file_bytes(),
            "params": params,
            "nonzero_params": nonzero,
            "layers": layers,
            "saving": saving,
            "energy": energy,
            "joules_per_10k": j_per_10k,
            "energy_passes": runs.passes.len(),
            "energy_samples": energy_samples,
            "device": a.device,
            "fallbacks": fallbacks,
        }))?;
    } else {
        println!(
            "{}: {} ({})",
            a.file.display(),
            cfg.name(),
            human_bytes(ck.file_bytes())
        );
        println!(
            "accuracy          {:.4} ({} / {})",
            stats.accuracy, stats.correct, stats.samples
        );
        println!(
            "throughput        {:.0} samples/s at batch {}",
            stats.samples_per_second, stats.batch_size
        );
        println!(
            "latency batch 1   median {:.1} us (p10 {:.1}, p90 {:.1})",
            lat1.median_us, lat1.p10_us, lat1.p90_us
        );
        println!(
            "latency batch {:<4}median {:.1} us",
            latb.batch_size, latb.median_us
        );
        println!("params            {params} ({nonzero} non-zero)");
        println!("saving            {saving}");
        let paths: Vec<String> = model
            .layers()
            .map(|l| {
                let path = serde_json::to_value(l.path).unwrap_or_default();
                format!("{} {}", l.name, path.as_str().unwrap_or("?"))
            })
            .collect();
        println!("layers            {}", paths.join(", "));
        let small_batch = model
            .layers()
            .any(|l| matches!(l.path, LayerPath::Half | LayerPath::TwoFour));
        if small_batch && !real {
            println!(
                "note              half and two-four layers run their own kernels for single rows \
                 (two-four: up to 2) and a dense f32 copy above: try --batch-size 1"
            );
        }
        let per_10k = if energy.below_resolution() {
            "J per 10k below the counter's resolution".to_string()
        } else {
            format!("{j_per_10k:.3} J per 10k")
        };
        let passes = match runs.passes.len() {
            1 => "1 pass".to_string(),
            n => format!("{n} passes"),
        };
        println!(
            "energy            {} for {energy_samples} samples in {passes} ({per_10k})",
            energy_line(&energy)
        );
    }
    Ok(ExitCode::SUCCESS)
}
