//! `joulecut inspect`: what a checkpoint holds — per tensor dtype, shape, encoding, bytes and
//! non-zero fraction — and totals. Non-float tensors (token ids, masks) are listed, and named
//! apart as kept as is by every command; the parameter totals count float tensors only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use joulecut::checkpoint::{Source, SparseValues, TensorData, TensorRef};

use super::output::{NonFloat, human_bytes, print_json, printable};

/// Arguments of `joulecut inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint: a .safetensors file, a sharded checkpoint's index.json, or a model directory.
    file: PathBuf,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn stored_dtype(t: &TensorData) -> String {
    match t {
        TensorData::Dense(d) => d.dtype.to_string(),
        TensorData::Int8(_) => "I8".into(),
        TensorData::Sparse(s) => match &s.values {
            SparseValues::Float { dtype, .. } => dtype.to_string(),
            SparseValues::Int8(_) => "I8".into(),
        },
        _ => "?".into(),
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let src = Source::open(&a.file)?;
    let mut rows = Vec::new();
    let (mut params, mut nonzero, mut tensor_bytes) = (0usize, 0usize, 0usize);
    for name in src.names() {
        let shard = &src.shards()[src.shard_index(name).expect("a source name")];
        let ck = &shard.checkpoint;
        let r = TensorRef {
            checkpoint: ck,
            name,
        };
        if r.float_type().is_none() {
            // Integer tensors (token ids, masks): listed as stored, non-zeros counted on the bytes.
            let info = ck.stored_info(name)?;
            let size = info.range.len() / numel_of(&info.shape).max(1);
            let numel = numel_of(&info.shape);
            let nz = ck
                .stored_bytes(info)
                .chunks(size.max(1))
                .filter(|c| c.iter().any(|b| *b != 0))
                .count();
            tensor_bytes += info.range.len();
            let mut row = serde_json::json!({
                "name": name,
                "dtype": info.dtype,
                "shape": info.shape,
                "encoding": "dense",
                "bytes": info.range.len(),
                "params": numel,
                "nonzero": nz,
                "nonzero_fraction": if numel == 0 { 0.0 } else { nz as f64 / numel as f64 },
            });
            if src.is_multi() {
                row["shard"] = shard.file_name.clone().into();
            }
            rows.push(row);
            continue;
        }
        let t = ck.get(name)?;
        let numel: usize = t.shape().iter().product();
        let nz = t.nonzeros();
        let bytes = ck.tensor_bytes(name)?;
        params += numel;
        nonzero += nz;
        tensor_bytes += bytes;
        // Keep resident memory at one tensor for big models.
        for part in (TensorRef {
            checkpoint: ck,
            name,
        })
        .stored()?
        {
            ck.release(part);
        }
        let mut row = serde_json::json!({
            "name": name,
            "dtype": stored_dtype(&t),
            "shape": t.shape(),
            "encoding": t.encoding_name(),
            "bytes": bytes,
            "params": numel,
            "nonzero": nz,
            "nonzero_fraction": if numel == 0 { 0.0 } else { nz as f64 / numel as f64 },
        });
        if src.is_multi() {
            row["shard"] = shard.file_name.clone().into();
        }
        rows.push(row);
    }
    let non_float = NonFloat::of(&src);
    let ck = &src.shards()[0].checkpoint;
    let model = ck.model_config()?;
    let history = ck.history()?;
    if a.json {
        let foreign: serde_json::Map<_, _> = ck
            .metadata()
            .iter()
            .filter(|(k, _)| !k.starts_with("joulecut."))
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        print_json(&serde_json::json!({
            "file": a.file,
            "tensors": rows,
            "totals": {
                "tensors": rows.len(),
                "params": params,
                "nonzero_params": nonzero,
                "nonzero_fraction": if params == 0 { 0.0 } else { nonzero as f64 / params as f64 },
                "tensor_bytes": tensor_bytes,
                "bytes_on_disk": src.file_bytes(),
                "shards": src.shards().len(),
            },
            "non_float": non_float.json(),
            "model": model,
            "history": history,
            "metadata": foreign,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", a.file.display());
    if let Some(m) = &model {
        println!("model: {}", printable(&m.to_string()));
    }
    println!(
        "{:<40} {:>5} {:>16} {:>11} {:>10} {:>8}",
        "tensor", "dtype", "shape", "encoding", "bytes", "nonzero"
    );
    for r in &rows {
        println!(
            "{:<40} {:>5} {:>16} {:>11} {:>10} {:>7.1}%",
            printable(r["name"].as_str().unwrap_or_default()),
            r["dtype"].as_str().unwrap_or_default(),
            format!(
                "{:?}",
                r["shape"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .map(|d| d.as_u64().unwrap_or(0))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            ),
            r["encoding"].as_str().unwrap_or_default(),
            r["bytes"],
            r["nonzero_fraction"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    println!(
        "total: {} tensors, {params} params ({nonzero} non-zero, {:.1}%), {} on disk",
        rows.len(),
        if params == 0 {
            0.0
        } else {
            100.0 * nonzero as f64 / params as f64
        },
        human_bytes(src.file_bytes())
    );
    if let Some(line) = non_float.line() {
        println!("{line}");
    }
    if src.is_multi() {
        println!("{} shards", src.shards().len());
    }
    for h in &history {
        println!(
            "history: {} {}",
            printable(&h.tool),
            printable(&h.command.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}
