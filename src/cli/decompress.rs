//! `joulecut decompress`: any joulecut checkpoint back to plain dense safetensors with the original
//! tensor names (int8 and sparse tensors decoded to their original float type, or f32). Streams
//! tensor by tensor; sharded inputs and model directories give a directory with the same layout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use joulecut::checkpoint::{Decode, FloatType, HistoryEntry, Source, StreamOptions, stream};

use super::output::{NonFloat, human_bytes, print_json};

/// Arguments of `joulecut decompress`.
#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// Input checkpoint: a .safetensors file, a sharded checkpoint's index.json, or a directory.
    input: PathBuf,
    /// Output checkpoint (dense): a file, or a directory for sharded input.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Write one .safetensors file even when the input is sharded or a directory.
    #[arg(long)]
    single_file: bool,
    /// Write every tensor as F32 instead of its original float type.
    #[arg(long)]
    f32: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DecompressArgs) -> anyhow::Result<ExitCode> {
    let src = Source::open(&a.input)?;
    // A file that says it holds a joulecut model must hold it, as `eval` requires: the config
    // parses and every tensor has the shape it implies (checked by loading the model).
    for shard in src.shards() {
        let ck = &shard.checkpoint;
        if ck.model_config()?.is_some() {
            let cfg = joulecut::models::Model::config_of(ck, None)?;
            joulecut::models::Model::load(
                ck,
                &cfg,
                &candle_core::Device::Cpu,
                &joulecut::models::DenseFactory,
            )?;
        }
    }
    let decoded = src
        .names()
        .iter()
        .filter(|n| src.shard_of(n).encodings().get(n).is_some())
        .count();
    let mut opts = StreamOptions::new(HistoryEntry::new(
        "decompress",
        serde_json::json!({ "input": a.input, "f32": a.f32 }),
    ));
    opts.single_file = a.single_file;
    // No int8 tensors are left for the activation setting to apply to.
    opts.metadata
        .insert(joulecut::checkpoint::meta::INT8_ACTIVATIONS.into(), None);
    let decode = Decode {
        to: a.f32.then_some(FloatType::F32),
    };
    let written = stream(&src, &a.output, &opts, &decode)
        .with_context(|| format!("decompress {} to {}", a.input.display(), a.output.display()))?;
    let bytes_before = src.file_bytes();
    let non_float = NonFloat::of(&src);
    if a.json {
        print_json(&serde_json::json!({
            "input": a.input,
            "output": a.output,
            "layout": if written.is_dir { "directory" } else { "file" },
            "files": written.files,
            "sidecars": written.sidecars,
            "tensors": src.names().len(),
            "decoded": decoded,
            "non_float": non_float.json(),
            "bytes_before": bytes_before,
            "bytes_after": written.bytes,
        }))?;
    } else {
        if let Some(line) = non_float.line() {
            println!("{line}");
        }
        println!(
            "{} tensors ({} decoded): {} -> {} written to {}",
            src.names().len(),
            decoded,
            human_bytes(bytes_before),
            human_bytes(written.bytes),
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
