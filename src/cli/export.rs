//! `joulecut export`: a joulecut checkpoint in a format other runtimes load (docs/INTEROP.md).
//! `compressed-tensors` writes a model directory that vLLM and Hugging Face `transformers` read;
//! `onnx` one `.onnx` file (MLPs, LeNet-5, BERT-family model directories; int8 as QDQ) for ONNX
//! Runtime and tract.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use joulecut::interop::compressed_tensors::{self, SparseFormat};
use joulecut::interop::onnx::{Activations, OnnxOptions};

use super::output::{human_bytes, print_json};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// compressed-tensors model directory (vLLM, Hugging Face transformers).
    CompressedTensors,
    /// One ONNX file (ONNX Runtime, tract): MLPs, LeNet-5, BERT-family encoders; int8 weights as QDQ.
    Onnx,
}

/// `--sparse-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SparseFormatArg {
    /// 2:4 when every sparse weight is 2:4, else bitmask.
    Auto,
    /// sparse-bitmask (any sparsity pattern).
    Bitmask,
    /// sparse-24-bitmask (every sparse weight must be 2:4).
    #[value(name = "2:4")]
    TwoFour,
}

/// `--activations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationsArg {
    /// Each int8 layer's input quantized on joulecut's run-time grid: what `joulecut eval` runs.
    Grid,
    /// Activations left in F32: joulecut's decoded model (int8 weights only).
    F32,
}

/// Arguments of `joulecut export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Input checkpoint: a .safetensors file, a sharded checkpoint's index.json, or a model directory.
    input: PathBuf,
    /// Output: a new (or empty) directory for compressed-tensors, a file for onnx.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Target format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// compressed-tensors: the layout of sparse weights.
    #[arg(long, value_enum, default_value = "auto")]
    sparse_format: SparseFormatArg,
    /// onnx: what int8 layers' inputs are in the graph.
    #[arg(long, value_enum, default_value = "grid")]
    activations: ActivationsArg,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let sparse = match a.sparse_format {
        SparseFormatArg::Auto => SparseFormat::Auto,
        SparseFormatArg::Bitmask => SparseFormat::Bitmask,
        SparseFormatArg::TwoFour => SparseFormat::TwoFour,
    };
    if a.format == ExportFormat::Onnx {
        return run_onnx(&a);
    }
    if a.activations != ActivationsArg::Grid {
        return Err(super::error::bad_input(
            "--activations applies to --format onnx",
            "compressed-tensors stores weights only; drop --activations",
        ));
    }
    let e = compressed_tensors::export(&a.input, &a.output, sparse).with_context(|| {
        format!(
            "export {} to {} as compressed-tensors",
            a.input.display(),
            a.output.display()
        )
    })?;
    let layout = e.sparse_layout.map(|l| l.format());
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": e.path,
            "format": "compressed-tensors",
            "files": e.files,
            "sidecars": e.sidecars,
            "bytes": e.bytes,
            "int8": e.int8,
            "sparse": e.sparse,
            "sparse_format": layout,
            "padded": e.padded,
        }))?;
    } else {
        println!(
            "{} int8 and {} sparse weights{}: {} written to {}",
            e.int8.len(),
            e.sparse.len(),
            layout.map(|l| format!(" ({l})")).unwrap_or_default(),
            human_bytes(e.bytes),
            e.path.display()
        );
        if e.padded > 0 {
            println!(
                "{} zeros stored to fill 2:4 groups that held fewer than two values",
                e.padded
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_onnx(a: &ExportArgs) -> anyhow::Result<ExitCode> {
    if a.sparse_format != SparseFormatArg::Auto {
        return Err(super::error::bad_input(
            "--sparse-format applies to --format compressed-tensors",
            "ONNX export writes no sparse layouts; drop --sparse-format",
        ));
    }
    let opts = OnnxOptions {
        activations: match a.activations {
            ActivationsArg::Grid => Activations::Grid,
            ActivationsArg::F32 => Activations::Float,
        },
    };
    let e = joulecut::interop::onnx::export(&a.input, &a.output, &opts).with_context(|| {
        format!(
            "export {} to {} as ONNX",
            a.input.display(),
            a.output.display()
        )
    })?;
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": e.path,
            "format": "onnx",
            "arch": e.arch,
            "opset": joulecut::interop::onnx::OPSET,
            "input_name": e.inputs[0],
            "output_name": e.outputs[0],
            "inputs": e.inputs,
            "outputs": e.outputs,
            "nodes": e.nodes,
            "bytes": e.bytes,
            "int8": e.int8,
            "activations": match a.activations {
                ActivationsArg::Grid => "grid",
                ActivationsArg::F32 => "f32",
            },
            "quantized_inputs": e.quantized_inputs.iter()
                .map(|(m, g)| serde_json::json!({"module": m, "grid": g.as_str()}))
                .collect::<Vec<_>>(),
            "widened": e.widened,
        }))?;
    } else {
        println!(
            "{} ({} nodes, {} int8 weights as QDQ, {} int8 inputs on joulecut's grid): {} written to {}",
            e.arch,
            e.nodes,
            e.int8.len(),
            e.quantized_inputs.len(),
            human_bytes(e.bytes),
            e.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
