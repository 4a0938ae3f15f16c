//! joulecut checkpoint → compressed-tensors model directory. Every tensor is planned from the
//! header and checked before anything is written; the safetensors files are written through
//! joulecut-checkpoint's [`stream`], the directory published at once ([`DirCommit`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use joulecut_checkpoint::atomic::{DirCommit, check_dir_dest};
use joulecut_checkpoint::{
    EntrySpec, HistoryEntry, Plan, Produced, Source, SparseValues, StreamOptions, TensorData,
    TensorEncoding, TensorRef, Transform, numel, stream,
};
use serde_json::{Value, json};

use super::bitmask;
use super::config::{self, Int8Module, SparseLayout, SparseModules};
use super::{CONFIG, DTYPES_KEY, WEIGHTS};
use crate::{Error, Result};

const FORMAT: &str = "compressed-tensors";

/// Which compressed-tensors layout sparse weights get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SparseFormat {
    /// `sparse-24-bitmask` when every sparse weight is 2:4, else `sparse-bitmask`.
    #[default]
    Auto,
    /// `sparse-bitmask` (unstructured).
    Bitmask,
    /// `sparse-24-bitmask`; a weight that is not 2:4 is an error.
    TwoFour,
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The output directory.
    pub path: PathBuf,
    /// The safetensors files in it.
    pub files: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Weights written as int8 + `weight_scale`.
    pub int8: Vec<String>,
    /// Weights written in a sparse layout.
    pub sparse: Vec<String>,
    /// That layout, when there are sparse weights.
    pub sparse_layout: Option<SparseLayout>,
    /// Zero elements added to fill 2:4 groups that stored fewer than two (they come back from an
    /// import as stored zeros; the decoded values are the same).
    pub padded: usize,
    /// Sidecar files copied or written (relative paths).
    pub sidecars: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
enum Kind {
    Int8 {
        per_channel: bool,
        zero_point: bool,
    },
    Sparse {
        int8: Option<bool>,
        nnz: usize,
        rows: usize,
        cols: usize,
        dtype: String,
    },
}

fn unsupported(tensor: &str, encoding: String, reason: impl Into<String>) -> Error {
    Error::Unsupported {
        tensor: tensor.to_string(),
        encoding,
        format: FORMAT,
        reason: reason.into(),
        can: "compressed-tensors stores dense F32/F16/BF16 tensors, int8 `.weight` matrices \
              (symmetric or with int8 zero-points; per output channel or per tensor) and sparse \
              `.weight` matrices (bitmask, 2:4; float or symmetric int8 values); \
              `joulecut decompress` the model, or re-quantize with --granularity channel"
            .into(),
    }
}

fn describe(e: &TensorEncoding) -> String {
    match e {
        TensorEncoding::Int8 { axis: None, .. } => "int8 per-tensor".into(),
        TensorEncoding::Int8 { axis: Some(a), .. } => format!("int8 per-channel on axis {a}"),
        TensorEncoding::Sparse { values, .. } => format!("sparse, {values} values"),
        _ => "an encoding".into(),
    }
}

/// Checks one encoded tensor against what compressed-tensors can express.
fn survey(t: &TensorRef<'_>, enc: &TensorEncoding) -> Result<Kind> {
    let name = t.name;
    let what = describe(enc);
    let shape = t.shape()?;
    if !name.ends_with(".weight") || shape.len() != 2 {
        return Err(unsupported(
            name,
            what,
            format!(
                "only the 2-D weights of Linear and Embedding modules are compressed (shape {shape:?})"
            ),
        ));
    }
    let check_axis = |axis: &Option<usize>| match axis {
        None | Some(0) => Ok(axis.is_some()),
        Some(_) => Err(unsupported(
            name,
            what.clone(),
            "scales run along the output channels (axis 0) or are one per tensor",
        )),
    };
    match enc {
        TensorEncoding::Int8 {
            axis,
            zero_point,
            in_scale,
            ..
        } => {
            if *in_scale {
                return Err(unsupported(
                    name,
                    format!("{what} with input scales (smoothed)"),
                    "compressed-tensors has no per-input-column factor; quantize with \
                     `--no-smoothing` for this export, or export to ONNX, which multiplies the \
                     input by them",
                ));
            }
            let per_channel = check_axis(axis)?;
            if *zero_point {
                let TensorData::Int8(q) = t.checkpoint.get(name)? else {
                    unreachable!("an int8 encoding reads as int8")
                };
                let zp = q.zero_points.unwrap_or_default();
                if let Some(z) = zp.iter().find(|z| i8::try_from(**z).is_err()) {
                    return Err(unsupported(
                        name,
                        what,
                        format!("zero-point {z} does not fit the int8 `weight_zero_point`"),
                    ));
                }
            }
            Ok(Kind::Int8 {
                per_channel,
                zero_point: *zero_point,
            })
        }
        TensorEncoding::Sparse {
            values,
            axis,
            zero_point,
            ..
        } => {
            let int8 = if values == "I8" {
                if *zero_point {
                    return Err(unsupported(
                        name,
                        what,
                        "with a zero-point, an unstored element would decode to -zero_point·scale, not 0",
                    ));
                }
                Some(check_axis(axis)?)
            } else {
                None
            };
            let vals = t.checkpoint.stored_info(&format!("{name}:values"))?;
            Ok(Kind::Sparse {
                int8,
                nnz: numel(&vals.shape),
                rows: shape[0],
                cols: shape[1],
                dtype: vals.dtype.clone(),
            })
        }
        _ => Err(unsupported(name, what, "unknown encoding")),
    }
}

/// Picks the sparse layout: 2:4 when asked or when every sparse weight fits it.
fn choose_layout(
    src: &Source,
    kinds: &BTreeMap<String, Kind>,
    asked: SparseFormat,
) -> Result<Option<SparseLayout>> {
    let sparse: Vec<(&String, usize, usize)> = kinds
        .iter()
        .filter_map(|(n, k)| match k {
            Kind::Sparse { rows, cols, .. } => Some((n, *rows, *cols)),
            Kind::Int8 { .. } => None,
        })
        .collect();
    if sparse.is_empty() {
        return Ok(None);
    }
    if asked == SparseFormat::Bitmask {
        return Ok(Some(SparseLayout::Bitmask));
    }
    for (name, rows, cols) in sparse {
        let ck = src.shard_of(name);
        let bm = ck.stored_bytes(ck.stored_info(&format!("{name}:bitmap"))?);
        if let Some(why) = bitmask::not_2_4(bm, rows, cols) {
            if asked == SparseFormat::TwoFour {
                return Err(Error::Unsupported {
                    tensor: name.clone(),
                    encoding: "sparse".into(),
                    format: "sparse-24-bitmask",
                    reason: format!("it is not 2:4 sparse ({why})"),
                    can: "export with --sparse-format bitmask (any sparsity pattern), or prune with --nm 2:4".into(),
                });
            }
            return Ok(Some(SparseLayout::Bitmask));
        }
    }
    Ok(Some(SparseLayout::TwoFour))
}

struct Export {
    kinds: BTreeMap<String, Kind>,
    layout: Option<SparseLayout>,
}

fn scale_entries(name: &str, per_channel: bool, rows: usize, zp: bool, v: &mut Vec<EntrySpec>) {
    let shape = if per_channel { vec![rows, 1] } else { vec![1] };
    v.push(EntrySpec::new(
        format!("{name}_scale"),
        "F32",
        shape.clone(),
    ));
    if zp {
        v.push(EntrySpec::new(format!("{name}_zero_point"), "I8", shape));
    }
}

/// The prefix of a sparse weight's stored names: its module (`fc1` for `fc1.weight`), as the
/// reference's `BaseSparseCompressor.compress` strips `.weight` before naming the parts.
fn sparse_prefix(name: &str) -> &str {
    name.strip_suffix(".weight").unwrap_or(name)
}

impl Transform for Export {
    type Error = Error;
    type Report = usize;

    fn plan(&self, t: &TensorRef<'_>) -> Result<Plan> {
        let Some(kind) = self.kinds.get(t.name) else {
            return Ok(Plan::Keep);
        };
        let name = t.name;
        let mut entries = Vec::new();
        match kind {
            Kind::Int8 {
                per_channel,
                zero_point,
            } => {
                let shape = t.shape()?;
                entries.push(EntrySpec::new(name, "I8", shape.clone()));
                scale_entries(name, *per_channel, shape[0], *zero_point, &mut entries);
            }
            Kind::Sparse {
                int8,
                nnz,
                rows,
                cols,
                dtype,
            } => {
                let layout = self
                    .layout
                    .expect("a layout is chosen when weights are sparse");
                let p = sparse_prefix(name);
                let mask = vec![*rows, cols.div_ceil(8)];
                match layout {
                    SparseLayout::Bitmask => {
                        entries.push(EntrySpec::new(format!("{p}.shape"), "I64", vec![2]));
                        entries.push(EntrySpec::new(format!("{p}.compressed"), dtype, vec![*nnz]));
                        entries.push(EntrySpec::new(format!("{p}.bitmask"), "U8", mask));
                        entries.push(EntrySpec::new(
                            format!("{p}.row_offsets"),
                            "I64",
                            vec![*rows],
                        ));
                    }
                    SparseLayout::TwoFour => {
                        entries.push(EntrySpec::new(format!("{p}.shape"), "I64", vec![2, 1]));
                        let half = vec![*rows, cols / 2];
                        entries.push(EntrySpec::new(format!("{p}.compressed"), dtype, half));
                        entries.push(EntrySpec::new(format!("{p}.bitmask"), "U8", mask));
                    }
                }
                if let Some(per_channel) = int8 {
                    scale_entries(name, *per_channel, *rows, false, &mut entries);
                }
            }
        }
        Ok(Plan::Replace {
            entries,
            encoding: None,
        })
    }

    fn produce(&self, t: &TensorRef<'_>, _entries: &[EntrySpec]) -> Result<Produced<usize>> {
        let i64s =
            |v: &[usize]| -> Vec<u8> { v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect() };
        let scales = |q: &joulecut_checkpoint::Int8Tensor, parts: &mut Vec<Vec<u8>>| {
            parts.push(q.scales.iter().flat_map(|s| s.to_le_bytes()).collect());
            if let Some(zp) = &q.zero_points {
                parts.push(zp.iter().map(|&z| z as i8 as u8).collect());
            }
        };
        let mut parts = Vec::new();
        let mut padded = 0;
        match t.checkpoint.get(t.name)? {
            TensorData::Int8(q) => {
                parts.push(q.values.iter().map(|&v| v as u8).collect());
                scales(&q, &mut parts);
            }
            TensorData::Sparse(s) => {
                let (rows, cols) = (s.shape[0], s.shape[1]);
                let (bytes, size) = match &s.values {
                    SparseValues::Float { dtype, bytes } => (bytes.clone(), dtype.size()),
                    SparseValues::Int8(q) => (q.values.iter().map(|&v| v as u8).collect(), 1),
                };
                parts.push(i64s(&s.shape));
                match self.layout.expect("planned sparse") {
                    SparseLayout::Bitmask => {
                        let counts = bitmask::row_counts(&s.bitmap, rows, cols);
                        let offsets: Vec<usize> = counts
                            .iter()
                            .scan(0, |acc, c| {
                                let start = *acc;
                                *acc += c;
                                Some(start)
                            })
                            .collect();
                        parts.push(bytes);
                        parts.push(bitmask::rows_from_flat(&s.bitmap, rows, cols));
                        parts.push(i64s(&offsets));
                    }
                    SparseLayout::TwoFour => {
                        let n = rows * cols;
                        let (full, added) = bitmask::pad_2_4(&s.bitmap, n);
                        padded = added;
                        parts.push(bitmask::spread_values(&s.bitmap, &full, n, &bytes, size));
                        parts.push(bitmask::rows_from_flat(&full, rows, cols));
                    }
                }
                if let SparseValues::Int8(q) = &s.values {
                    scales(q, &mut parts);
                }
            }
            _ => {
                return Err(Error::BadPart {
                    tensor: t.name.to_string(),
                    reason: "planned as encoded but reads as dense".into(),
                });
            }
        }
        Ok((parts, padded))
    }
}

/// The `config.json` of the export: the input directory's (every field kept) or, for a single
/// joulecut file, `joulecut_model` (its `joulecut.model`), plus `quantization_config`.
fn config_json(src: &Source, qc: Value) -> Result<Value> {
    let mut cfg = match src.dir().filter(|_| src.is_dir()).map(|d| d.join(CONFIG)) {
        Some(p) if p.is_file() => {
            let text = joulecut_checkpoint::input::read_to_string(&p).map_err(|source| {
                joulecut_checkpoint::Error::Read {
                    path: p.clone(),
                    source,
                }
            })?;
            let v: Value = serde_json::from_str(&text).map_err(|e| Error::BadInput {
                path: p.clone(),
                reason: format!("config.json is not JSON ({e})"),
                hint: "fix or remove the model directory's config.json".into(),
            })?;
            if !v.is_object() {
                return Err(Error::BadInput {
                    path: p,
                    reason: "config.json is not a JSON object".into(),
                    hint: "fix or remove the model directory's config.json".into(),
                });
            }
            if v.get("quantization_config").is_some() {
                return Err(Error::BadInput {
                    path: p,
                    reason: "config.json already has a quantization_config".into(),
                    hint: "the model was quantized by another tool: `joulecut import` it first, or export its source".into(),
                });
            }
            v
        }
        _ => {
            let model = src.shards()[0].checkpoint.model_config()?;
            match model {
                Some(m) => json!({ "joulecut_model": m }),
                None => json!({}),
            }
        }
    };
    cfg["quantization_config"] = qc;
    Ok(cfg)
}

/// Exports a joulecut checkpoint (a file, a sharded checkpoint, or a model directory) as a
/// compressed-tensors model directory at `out` (absent or empty). See docs/INTEROP.md.
pub fn export(input: &Path, out: &Path, sparse: SparseFormat) -> Result<Exported> {
    let src = Source::open(input)?;
    src.refuse_output(out)?;
    if out.extension().is_some_and(|e| e == "safetensors") {
        return Err(Error::BadOutput {
            path: out.to_path_buf(),
            reason: "a compressed-tensors model is a directory (weights + config.json)".into(),
        });
    }
    check_dir_dest(out).map_err(|_| joulecut_checkpoint::Error::OutputNotEmpty {
        path: out.to_path_buf(),
    })?;

    let mut kinds = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for name in src.names() {
        let t = TensorRef {
            checkpoint: src.shard_of(name),
            name,
        };
        if let Some(enc) = t.encoding() {
            kinds.insert(name.clone(), survey(&t, enc)?);
            dtypes.insert(name.clone(), t.float_type().map(|f| f.to_string()));
        }
    }
    let layout = choose_layout(&src, &kinds, sparse)?;
    let module = |n: &str| n.strip_suffix(".weight").unwrap_or(n).to_string();
    let mut int8 = Vec::new();
    let mut sparse_names = Vec::new();
    let (mut zeros, mut total) = (0usize, 0usize);
    for (name, k) in &kinds {
        match k {
            Kind::Int8 {
                per_channel,
                zero_point,
            } => int8.push(Int8Module {
                module: module(name),
                per_channel: *per_channel,
                symmetric: !zero_point,
            }),
            Kind::Sparse {
                int8: q,
                nnz,
                rows,
                cols,
                ..
            } => {
                sparse_names.push(name.clone());
                zeros += rows * cols - nnz;
                total += rows * cols;
                if let Some(per_channel) = q {
                    int8.push(Int8Module {
                        module: module(name),
                        per_channel: *per_channel,
                        symmetric: true,
                    });
                }
            }
        }
    }
    let sparse_cfg = layout.map(|layout| SparseModules {
        layout,
        modules: sparse_names.iter().map(|n| module(n)).collect(),
        sparsity: zeros as f64 / total.max(1) as f64,
    });
    let cfg = config_json(&src, config::build(&int8, sparse_cfg.as_ref()))?;
    let cfg_bytes = serde_json::to_vec_pretty(&cfg).expect("config serialises");

    let mut opts = StreamOptions::new(HistoryEntry::new(
        "export",
        json!({ "format": FORMAT, "sparse_format": layout.map(SparseLayout::format) }),
    ));
    // transformers refuses safetensors files whose `format` is not a framework it knows.
    opts.metadata.insert("format".into(), Some("pt".into()));
    opts.metadata.insert(
        DTYPES_KEY.into(),
        Some(serde_json::to_string(&dtypes).expect("dtypes serialise")),
    );
    let t = Export { kinds, layout };
    let werr = |source| Error::Write {
        path: out.to_path_buf(),
        source,
    };
    let written = if src.is_multi() {
        opts.sidecar_contents.insert(CONFIG.into(), cfg_bytes);
        stream(&src, out, &opts, &t)?
    } else {
        // A single file becomes a directory: the weights and config.json, published together.
        let commit = DirCommit::new(out).map_err(werr)?;
        let mut w = stream(&src, &commit.path_of(WEIGHTS), &opts, &t)?;
        std::fs::write(commit.path_of(CONFIG), cfg_bytes).map_err(werr)?;
        commit.commit().map_err(werr)?;
        w.files = vec![WEIGHTS.into()];
        w.sidecars = vec![CONFIG.into()];
        w
    };
    Ok(Exported {
        path: out.to_path_buf(),
        files: written.files,
        bytes: written.bytes,
        padded: written.reports.iter().map(|(_, p)| p).sum(),
        int8: int8
            .iter()
            .map(|m| format!("{}.weight", m.module))
            .collect(),
        sparse: sparse_names,
        sparse_layout: layout,
        sidecars: written.sidecars,
    })
}
