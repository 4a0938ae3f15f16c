//! `joulecut decompress`: any joulecut checkpoint back to a plain dense safetensors file with the
//! original tensor names (int8 and sparse tensors decoded to their original float type, or f32).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use joulecut::checkpoint::{
    Checkpoint, CheckpointWriter, DenseTensor, FloatType, HistoryEntry, TensorData,
};

use super::output::{human_bytes, print_json};

/// Arguments of `joulecut decompress`.
#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// Input checkpoint.
    input: PathBuf,
    /// Output checkpoint (dense).
    #[arg(short, long)]
    output: PathBuf,
    /// Write every tensor as F32 instead of its original float type.
    #[arg(long)]
    f32: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DecompressArgs) -> anyhow::Result<ExitCode> {
    let ck = Checkpoint::open(&a.input)?;
    joulecut::checkpoint::refuse_input(&a.output, &[ck.path()])?;
    let mut writer = CheckpointWriter::derived_from(&ck)?;
    let mut decoded = 0usize;
    for name in ck.names() {
        let t = ck.get(name)?;
        if !matches!(t, TensorData::Dense(_)) {
            decoded += 1;
        }
        let dtype = if a.f32 {
            FloatType::F32
        } else {
            t.float_type()
        };
        let out = match t {
            TensorData::Dense(d) if d.dtype == dtype => d,
            other => DenseTensor {
                dtype,
                shape: other.shape().to_vec(),
                bytes: dtype.encode(&other.to_f32()),
            },
        };
        writer.insert(name.clone(), TensorData::Dense(out));
    }
    writer.push_history(HistoryEntry::new(
        "decompress",
        serde_json::json!({ "input": a.input, "f32": a.f32 }),
    ));
    let bytes_after = writer
        .write(&a.output, &[ck.path()])
        .with_context(|| format!("write {}", a.output.display()))?;
    let bytes_before = ck.file_bytes();
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": a.output,
            "tensors": ck.names().len(),
            "decoded": decoded,
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
        }))?;
    } else {
        println!(
            "{} tensors ({} decoded): {} -> {} written to {}",
            ck.names().len(),
            decoded,
            human_bytes(bytes_before),
            human_bytes(bytes_after),
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
