//! `joulecut quantize`: int8 (symmetric/asymmetric, per tensor/per channel, calibrated clipping) or
//! fp16/bf16 storage of the selected tensors; reports bytes before/after and per-tensor error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use joulecut::checkpoint::{
    Checkpoint, CheckpointWriter, FloatType, HistoryEntry, Selection, SparseValues, TensorData,
};
use joulecut::quant::{Calibration, DEFAULT_PERCENTILE, Granularity, Int8Config, Symmetry};

use super::error::bad_input;
use super::output::{human_bytes, print_json};

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
    /// Input checkpoint (.safetensors; joulecut or foreign, F32/F16/BF16).
    input: PathBuf,
    /// Output checkpoint.
    #[arg(short, long)]
    output: PathBuf,
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
    /// Quantize only tensors matching this glob (repeatable; default: weights of rank ≥ 2, no
    /// embeddings/norms/classifier heads).
    #[arg(long)]
    include: Vec<String>,
    /// Never quantize tensors matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn int8_config(a: &QuantizeArgs) -> anyhow::Result<Int8Config> {
    if a.dtype != QuantDtype::Int8
        && (a.granularity.is_some() || a.scheme.is_some() || a.calibrate.is_some())
    {
        return Err(bad_input(
            "--granularity, --scheme and --calibrate apply to --dtype int8 only",
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
            GranularityArg::Tensor => Granularity::Tensor,
            GranularityArg::Channel => Granularity::Channel,
        },
        calibration,
    })
}

/// Bytes the tensor's stored entries take (values + scales + zero-points + bitmap).
fn data_bytes(t: &TensorData) -> usize {
    let int8 = |q: &joulecut::checkpoint::Int8Tensor| {
        q.values.len() + 4 * q.scales.len() + 4 * q.zero_points.as_ref().map_or(0, Vec::len)
    };
    match t {
        TensorData::Dense(d) => d.bytes.len(),
        TensorData::Int8(q) => int8(q),
        TensorData::Sparse(s) => {
            s.bitmap.len()
                + match &s.values {
                    SparseValues::Float { bytes, .. } => bytes.len(),
                    SparseValues::Int8(q) => int8(q),
                }
        }
        _ => 0,
    }
}

/// Relative L2 and max abs error of `b` against `a`.
fn errors(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut d2, mut n2, mut max) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let d = f64::from(*x) - f64::from(*y);
        d2 += d * d;
        n2 += f64::from(*x) * f64::from(*x);
        max = max.max(d.abs());
    }
    (
        if n2 > 0.0 {
            (d2 / n2).sqrt()
        } else {
            d2.sqrt()
        },
        max,
    )
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<ExitCode> {
    let cfg = int8_config(&a)?;
    let ck = Checkpoint::open(&a.input)?;
    joulecut::checkpoint::refuse_input(&a.output, &[ck.path()])?;
    let selection = Selection::new(&a.include, &a.exclude).map_err(|e| {
        bad_input(
            format!("{e}"),
            "globs look like `fc*.weight` or `encoder.*`",
        )
    })?;
    let mut data = Vec::new();
    for name in ck.names() {
        data.push((name.clone(), ck.get(name)?));
    }
    let selected: Vec<&str> = selection
        .apply(data.iter().map(|(n, t)| (n.as_str(), t.shape())))
        .map_err(|e| {
            bad_input(
                format!("{e}"),
                "`joulecut inspect FILE` lists the tensor names",
            )
        })?;

    let mut writer = CheckpointWriter::derived_from(&ck)?;
    let mut rows = Vec::new();
    for (name, t) in &data {
        if !selected.contains(&name.as_str()) {
            writer.insert(name.clone(), t.clone());
            continue;
        }
        let out = match a.dtype {
            QuantDtype::Int8 => joulecut::quant::quantize_data(name, t, &cfg)?,
            QuantDtype::F16 => joulecut::quant::cast_data(name, t, FloatType::F16)?,
            QuantDtype::Bf16 => joulecut::quant::cast_data(name, t, FloatType::BF16)?,
        };
        let (rel_l2, max_abs) = errors(&t.to_f32(), &out.to_f32());
        rows.push(serde_json::json!({
            "name": name,
            "shape": t.shape(),
            "encoding_before": t.encoding_name(),
            "encoding": out.encoding_name(),
            "bytes_before": data_bytes(t),
            "bytes_after": data_bytes(&out),
            "rel_l2": rel_l2,
            "max_abs": max_abs,
        }));
        writer.insert(name.clone(), out);
    }
    let params = serde_json::json!({
        "dtype": format!("{:?}", a.dtype).to_lowercase(),
        "int8": if a.dtype == QuantDtype::Int8 { serde_json::to_value(cfg)? } else { serde_json::Value::Null },
        "include": a.include,
        "exclude": a.exclude,
        "input": a.input,
    });
    writer.push_history(HistoryEntry::new("quantize", params.clone()));
    let bytes_after = writer
        .write(&a.output, &[ck.path()])
        .with_context(|| format!("write {}", a.output.display()))?;
    let bytes_before = ck.file_bytes();
    let ratio = bytes_after as f64 / bytes_before.max(1) as f64;
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": a.output,
            "params": params,
            "tensors": rows,
            "bytes": { "before": bytes_before, "after": bytes_after, "ratio": ratio },
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
        }))?;
    } else {
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
        println!(
            "{} tensors quantized; {} -> {} ({:.3}x) written to {}",
            rows.len(),
            human_bytes(bytes_before),
            human_bytes(bytes_after),
            ratio,
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
