//! `joulecut import`: a compressed-tensors model directory into joulecut's own encodings
//! (docs/INTEROP.md), so models compressed elsewhere run through joulecut's kernels and meters.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use joulecut::interop::compressed_tensors;

use super::output::{human_bytes, print_json};

/// Arguments of `joulecut import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A compressed-tensors model directory (safetensors files + config.json).
    input: PathBuf,
    /// Output: a directory (sidecar files copied), or one file when it ends in .safetensors.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let i = compressed_tensors::import(&a.input, &a.output)
        .with_context(|| format!("import {} to {}", a.input.display(), a.output.display()))?;
    let layout = i.sparse_layout.map(|l| l.format());
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": i.path,
            "format": "compressed-tensors",
            "files": i.files,
            "bytes": i.bytes,
            "int8": i.int8,
            "sparse": i.sparse,
            "sparse_format": layout,
        }))?;
    } else {
        println!(
            "{} int8 and {} sparse weights{}: {} written to {}",
            i.int8.len(),
            i.sparse.len(),
            layout.map(|l| format!(" ({l})")).unwrap_or_default(),
            human_bytes(i.bytes),
            i.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
