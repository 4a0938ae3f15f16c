//! `joulecut quantize`: int8 (symmetric/asymmetric, per tensor/per channel, calibrated clipping) or
//! fp16/bf16 storage of the selected tensors; reports bytes before/after and per-tensor error.
//! Streams tensor by tensor (bounded memory) and takes sharded checkpoints and model directories
//! (`joulecut_harness::pipeline::quantize_stream`, which the transformer bench runs too).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use joulecut::checkpoint::{FloatType, HistoryEntry, Selection, Source, TensorRef, check_output};
use joulecut::harness::card::{Figure, Quality};
use joulecut::harness::pipeline::{Int8Activations, QuantizeJob, quantize_stream};
use joulecut::quant::{
    ActivationGrid, Calibration, DEFAULT_PERCENTILE, Int8Config, ScaleGranularity, Symmetry, Target,
};

use joulecut::models::bert::GridPolicy;

use super::error::bad_input;
use super::output::{NonFloat, human_bytes, print_json};

/// Target storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantDtype {
    /// int8 values + f32 scales (and zero-points).
    Int8,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// `--granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    /// One scale per tensor.
    Tensor,
    /// One scale per output channel.
    Channel,
}

/// `--scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    /// Zero-point 0, values in [-127, 127].
    Symmetric,
    /// With a zero-point, values in [-128, 127].
    Asymmetric,
}

/// `--calibrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CalibrateArg {
    /// The data's min and max (no clipping).
    Minmax,
    /// Clip at --percentile.
    Percentile,
    /// Clip to minimise the mean squared error.
    Mse,
}

/// Arguments of `joulecut quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Input checkpoint: a .safetensors file, a sharded checkpoint's index.json, or a model
    /// directory (joulecut or foreign, F32/F16/BF16).
    input: PathBuf,
    /// Output checkpoint: a file, or a directory (same shards, index, sidecars) for sharded input.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Write one .safetensors file even when the input is sharded or a directory.
    #[arg(long)]
    single_file: bool,
    /// Storage type of the selected tensors.
    #[arg(long, value_enum)]
    dtype: QuantDtype,
    /// int8 only: one scale per tensor or per output channel [default: channel].
    #[arg(long, value_enum)]
    granularity: Option<GranularityArg>,
    /// int8 only: symmetric or asymmetric grid [default: symmetric].
    #[arg(long, value_enum)]
    scheme: Option<SchemeArg>,
    /// int8 only: how the clipping range is chosen [default: minmax].
    #[arg(long, value_enum)]
    calibrate: Option<CalibrateArg>,
    /// Percentile for --calibrate percentile, in (0, 100].
    #[arg(long)]
    percentile: Option<f32>,
    /// int8 only: how int8 layers quantize their input activations at inference, stored in the
    /// file (`joulecut.int8_activations`): u6 = 6-bit unsigned (the AVX2 kernel adds two products
    /// in 16 bits before widening, for any weights), u7 = 7-bit unsigned (PyTorch's
    /// `reduce_range`; no sign handling, ~1.4x faster than s8, and as fast as u6 where the weights
    /// keep the paired loop exact, e.g. a transformer's), s8 = 8-bit [default: u6; s8 for a
    /// transformer, whose grids --calibration chooses per layer].
    #[arg(long, value_parser = super::output::int8_activations_parser())]
    int8_activations: Option<ActivationGrid>,
    /// int8 on a transformer directory: calibration sentences (one per line); each linear layer
    /// gets the fastest activation grid whose int8 product's output error on them stays within
    /// --activation-error (recorded per layer in `joulecut.int8_activations.layers`), smoothed
    /// SmoothQuant-style where that lowers the error (the weight's `:in_scale`).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// With --calibration: the largest relative output error a layer's int8 product (weights and
    /// activations) may have.
    #[arg(long, default_value_t = GridPolicy::default().max_error)]
    activation_error: f64,
    /// With --calibration: never smooth (files for runtimes that cannot apply input scales, e.g.
    /// a compressed-tensors export).
    #[arg(long, requires = "calibration")]
    no_smoothing: bool,
    /// Quantize only tensors matching this glob (repeatable; default: weights of rank ≥ 2, no
    /// embeddings/norms/classifier heads).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Never quantize tensors matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    qat: super::qat::QatArgs,
    #[command(flatten)]
    card: super::card::CardArgs,
}

fn int8_config(a: &QuantizeArgs) -> anyhow::Result<Int8Config> {
    if a.dtype != QuantDtype::Int8
        && (a.granularity.is_some()
            || a.scheme.is_some()
            || a.calibrate.is_some()
            || a.int8_activations.is_some())
    {
        return Err(bad_input(
            "--granularity, --scheme, --calibrate and --int8-activations apply to --dtype int8 only",
            "drop them, or use --dtype int8",
        ));
    }
    if a.percentile.is_some() && a.calibrate != Some(CalibrateArg::Percentile) {
        return Err(bad_input(
            "--percentile needs --calibrate percentile",
            "add --calibrate percentile",
        ));
    }
    let calibration = match a.calibrate.unwrap_or(CalibrateArg::Minmax) {
        CalibrateArg::Minmax => Calibration::MinMax,
        CalibrateArg::Mse => Calibration::Mse,
        CalibrateArg::Percentile => {
            let p = a.percentile.unwrap_or(DEFAULT_PERCENTILE);
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad_input(
                    format!("--percentile {p} is outside (0, 100]"),
                    "e.g. --percentile 99.99",
                ));
            }
            Calibration::Percentile { percentile: p }
        }
    };
    Ok(Int8Config {
        symmetry: match a.scheme.unwrap_or(SchemeArg::Symmetric) {
            SchemeArg::Symmetric => Symmetry::Symmetric,
            SchemeArg::Asymmetric => Symmetry::Asymmetric,
        },
        granularity: match a.granularity.unwrap_or(GranularityArg::Channel) {
            GranularityArg::Tensor => ScaleGranularity::Tensor,
            GranularityArg::Channel => ScaleGranularity::Channel,
        },
        calibration,
    })
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<ExitCode> {
    let cfg = int8_config(&a)?;
    // The whole compression, QAT included, is the card's energy.
    let meter = super::output::meter()?;
    let window = meter.window("quantize");
    let input = Source::open(&a.input)?;
    check_output(&input, &a.output, a.single_file)?;
    let bytes_before = input.file_bytes();
    // --qat: fine-tune first; the int8 pass then converts the fine-tuned weights.
    let qat = if a.qat.qat {
        if a.dtype != QuantDtype::Int8 {
            return Err(bad_input(
                "--qat applies to --dtype int8 only",
                "use --dtype int8 --qat, or drop --qat",
            ));
        }
        drop(input);
        Some(super::qat::fine_tune(
            &a.input, &a.output, &cfg, &a.qat, a.json,
        )?)
    } else {
        None
    };
    let src = match &qat {
        Some(q) => Source::open(&q.path)?,
        None => Source::open(&a.input)?,
    };
    let non_float = NonFloat::of(&src);
    let selection =
        Selection::new(&a.include, &a.exclude).map_err(|e| bad_input(e.to_string(), e.hint()))?;
    let shapes = src
        .names()
        .iter()
        .map(|n| {
            let t = TensorRef {
                checkpoint: src.shard_of(n),
                name: n,
            };
            Ok((n.as_str(), t.shape()?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    selection
        .select(shapes.iter().map(|(n, s)| (*n, s.as_slice())))
        .map_err(|e| bad_input(e.to_string(), e.hint()))?;
    let target = match a.dtype {
        QuantDtype::Int8 => Target::Int8(cfg),
        QuantDtype::F16 => Target::Half(FloatType::F16),
        QuantDtype::Bf16 => Target::Half(FloatType::BF16),
    };
    // A transformer's layers need their grids chosen per layer (--calibration): one 6-bit grid for
    // all costs ~7x the error of 8 bits on all-MiniLM-L6-v2, so without calibration they get 8.
    let transformer = src
        .names()
        .iter()
        .any(|n| joulecut::embed::is_encoder_tensor(n));
    let default_grid = if transformer {
        ActivationGrid::S8
    } else {
        ActivationGrid::RECOMMENDED
    };
    let params = serde_json::json!({
        "dtype": format!("{:?}", a.dtype).to_lowercase(),
        "int8": if a.dtype == QuantDtype::Int8 { serde_json::to_value(cfg)? } else { serde_json::Value::Null },
        "int8_activations": (a.dtype == QuantDtype::Int8)
            .then(|| a.int8_activations.unwrap_or(default_grid).as_str()),
        "include": a.include,
        "exclude": a.exclude,
        "input": a.input,
        "qat": qat.as_ref().map(|q| q.params.clone()),
    });
    let chosen = match &a.calibration {
        Some(_) if a.dtype != QuantDtype::Int8 => {
            return Err(bad_input(
                "--calibration chooses int8 activation grids; it applies to --dtype int8 only",
                "drop --calibration",
            ));
        }
        Some(_) if a.int8_activations.is_some() => {
            return Err(bad_input(
                "--calibration chooses the activation grid of each layer; --int8-activations sets one for all",
                "use one of them",
            ));
        }
        Some(c) => Some(super::quantize_grids::choose(
            &a.input,
            c,
            &GridPolicy {
                max_error: a.activation_error,
                smoothing: !a.no_smoothing,
            },
            &cfg,
        )?),
        None => None,
    };
    let mut params = params;
    if let Some(c) = &chosen {
        params["calibration"] = serde_json::json!({
            "file": a.calibration,
            "sentences": c.sentences,
            "max_error": a.activation_error,
            "smoothing": !a.no_smoothing,
        });
    }
    let activations = match &chosen {
        Some(c) => Int8Activations::PerLayer(c.grids.clone()),
        None => Int8Activations::One(a.int8_activations.unwrap_or(default_grid)),
    };
    let job = QuantizeJob {
        target,
        selection,
        activations,
        in_scales: chosen
            .as_ref()
            .map(joulecut::harness::pipeline::transformer::ChosenGrids::weight_in_scales)
            .unwrap_or_default(),
        history: HistoryEntry::new("quantize", params.clone()),
        single_file: a.single_file,
    };
    let written = quantize_stream(&src, &a.output, &job)
        .with_context(|| format!("quantize {} to {}", a.input.display(), a.output.display()))?;
    let rows: Vec<serde_json::Value> = written
        .reports
        .iter()
        .map(|(name, r)| {
            serde_json::json!({
                "name": name,
                "shape": r.shape,
                "encoding_before": r.encoding_before,
                "encoding": r.encoding,
                "bytes_before": r.bytes_before,
                "bytes_after": r.bytes_after,
                "rel_l2": r.stats.rel_l2(),
                "max_abs": r.stats.max_abs,
            })
        })
        .collect();
    let bytes_after = written.bytes;
    let ratio = bytes_after as f64 / bytes_before.max(1) as f64;
    let energy = window.finish();
    super::card::write(
        a.card,
        joulecut::harness::card::CardFacts {
            command: "quantize",
            input: &a.input,
            output: &a.output,
            bytes_before,
            quality: quality(&rows, qat.as_ref()),
            energy: &energy,
            break_even: None,
            host: joulecut::harness::Host::detect("cpu", &meter),
        },
    )?;
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": a.output,
            "layout": if written.is_dir { "directory" } else { "file" },
            "files": written.files,
            "sidecars": written.sidecars,
            "params": params,
            "tensors": rows,
            "non_float": non_float.json(),
            "bytes": { "before": bytes_before, "after": bytes_after, "ratio": ratio },
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
            "qat": qat.as_ref().map(|q| serde_json::json!({
                "accuracy": q.accuracy, "params": q.params, "energy": q.energy,
            })),
            "activation_grids": chosen.as_ref().map(|c| serde_json::json!({
                "chosen": c.grids,
                "smoothed": c.in_scales.keys().collect::<Vec<_>>(),
                "errors": c.errors,
            })),
        }))?;
    } else {
        if let Some(q) = &qat {
            println!(
                "QAT: {} epoch(s), int8-grid test accuracy {:.4}, {}",
                a.qat.epochs,
                q.accuracy,
                super::output::energy_line(&q.energy)
            );
        }
        if let Some(c) = &chosen {
            let count = c.counts();
            println!(
                "activation grids from {} calibration sentences (max output error {}): {}",
                c.sentences,
                a.activation_error,
                count
                    .iter()
                    .map(|(g, n)| format!("{n} layers {g}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if !c.in_scales.is_empty() {
                println!(
                    "smoothed (SmoothQuant-style input scales): {} of {} layers",
                    c.in_scales.len(),
                    c.grids.len()
                );
            }
        }
        for r in &rows {
            println!(
                "{:<40} {:>10} -> {:<12} rel_l2 {:.2e}  max_abs {:.2e}",
                r["name"].as_str().unwrap_or(""),
                r["encoding_before"].as_str().unwrap_or(""),
                r["encoding"].as_str().unwrap_or(""),
                r["rel_l2"].as_f64().unwrap_or(0.0),
                r["max_abs"].as_f64().unwrap_or(0.0),
            );
        }
        if let Some(line) = non_float.line() {
            println!("{line}");
        }
        println!(
            "{} tensors quantized; {} -> {} ({:.3}x) written to {}{}",
            rows.len(),
            human_bytes(bytes_before),
            human_bytes(bytes_after),
            ratio,
            a.output.display(),
            if written.is_dir {
                format!(
                    " ({} shards, {} sidecar files)",
                    written.files.len(),
                    written.sidecars.len()
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What quantize measured: the weights' error against the originals, and the QAT accuracy.
fn quality(rows: &[serde_json::Value], qat: Option<&super::qat::QatOutcome>) -> Quality {
    let mut q = Quality::default();
    if let Some(max) = rows
        .iter()
        .filter_map(|r| r["rel_l2"].as_f64())
        .reduce(f64::max)
    {
        q.measured.push(Figure {
            name: "weight_rel_l2_max".into(),
            value: max,
            note: format!(
                "largest relative L2 error of a quantized tensor against the original, over {} tensors",
                rows.len()
            ),
        });
    }
    match qat {
        Some(o) => q.measured.push(Figure {
            name: "test_accuracy".into(),
            value: o.accuracy,
            note: "after QAT, on the int8 grid, on the test set".into(),
        }),
        None => q.not_measured.push(
            "task quality (accuracy or embedding cosine): run `joulecut eval OUT` or `joulecut eval-embeddings IN OUT`".into(),
        ),
    }
    q
}
