//! compressed-tensors model directory → joulecut checkpoint: int8 weights with their
//! `weight_scale` (and `weight_zero_point`) become joulecut's `int8` encoding, `sparse-bitmask`
//! and `sparse-24-bitmask` weights its packed `sparse` encoding (int8 values too), every other
//! tensor is copied byte for byte. Streams through joulecut-checkpoint's [`stream`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use joulecut_checkpoint::{
    Checkpoint, EntrySpec, FloatType, HistoryEntry, Int8Tensor, Plan, Produced, Source,
    SparseTensor, SparseValues, StreamOptions, TensorData, TensorEncoding, TensorRef, Transform,
    encode_tensor, numel, stream,
};
use serde_json::{Value, json};

use super::bitmask;
use super::config::{self, SparseLayout};
use super::{CONFIG, DTYPES_KEY};
use crate::{Error, Result};

/// What [`import`] wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The output (a file or a directory).
    pub path: PathBuf,
    /// The safetensors files written.
    pub files: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Weights imported as joulecut `int8`.
    pub int8: Vec<String>,
    /// Weights imported as joulecut `sparse`.
    pub sparse: Vec<String>,
    /// The sparse layout of the input, when it had sparse weights.
    pub sparse_layout: Option<SparseLayout>,
}

/// Scales as f32, the channel axis they imply, and the zero-points.
type Scales = (Vec<f32>, Option<usize>, Option<Vec<i32>>);

/// The stored entries of one imported weight.
#[derive(Debug, Clone)]
struct Parts {
    /// joulecut's logical name (`X.weight`).
    name: String,
    scale: Option<String>,
    zero_point: Option<String>,
    sparse: Option<SparseParts>,
    dtype: FloatType,
}

#[derive(Debug, Clone)]
struct SparseParts {
    compressed: String,
    shape: String,
    bitmask: String,
    row_offsets: Option<String>,
}

fn bad(tensor: &str, reason: impl Into<String>) -> Error {
    Error::BadPart {
        tensor: tensor.to_string(),
        reason: reason.into(),
    }
}

fn float_type(dtype: &str) -> Option<FloatType> {
    match dtype {
        "F32" => Some(FloatType::F32),
        "F16" => Some(FloatType::F16),
        "BF16" => Some(FloatType::BF16),
        _ => None,
    }
}

/// The float type a weight had before compression: recorded by joulecut's export, else the
/// model's `torch_dtype` / `dtype`, else F32.
fn orig_dtype(name: &str, recorded: &BTreeMap<String, String>, config: &Value) -> FloatType {
    if let Some(t) = recorded.get(name).and_then(|d| float_type(d)) {
        return t;
    }
    let torch = ["torch_dtype", "dtype"]
        .iter()
        .find_map(|k| config.get(k).and_then(Value::as_str));
    match torch {
        Some("float16") => FloatType::F16,
        Some("bfloat16") => FloatType::BF16,
        _ => FloatType::F32,
    }
}

struct Import<'a> {
    src: &'a Source,
    /// Anchor tensor (the int8 weight, or the sparse `.compressed`) → its parts.
    anchors: BTreeMap<String, Parts>,
    consumed: BTreeSet<String>,
}

impl Import<'_> {
    fn info(&self, name: &str) -> Result<&joulecut_checkpoint::StoredInfo> {
        Ok(self.src.find(name)?.stored_info(name)?)
    }

    fn bytes(&self, name: &str) -> Result<&[u8]> {
        let ck: &Checkpoint = self.src.find(name)?;
        Ok(ck.stored_bytes(ck.stored_info(name)?))
    }

    /// The scales of `p` as f32 and the channel axis they imply for `rows` output channels.
    fn scales(&self, p: &Parts, rows: usize) -> Result<Scales> {
        let sname = p
            .scale
            .as_ref()
            .ok_or_else(|| bad(&p.name, format!("int8 values but no `{}_scale`", p.name)))?;
        let info = self.info(sname)?;
        let ft = float_type(&info.dtype).ok_or_else(|| {
            bad(
                sname,
                format!("scale stored as {}, expected a float", info.dtype),
            )
        })?;
        let mut scales = Vec::new();
        ft.decode(self.bytes(sname)?, &mut scales);
        let axis = match (scales.len(), info.shape.as_slice()) {
            (1, _) => None,
            (n, [r] | [r, 1]) if n == rows && *r == rows => Some(0),
            _ => {
                return Err(bad(
                    sname,
                    format!(
                        "shape {:?}: expected [1] (per tensor) or [{rows}, 1] (per output channel)",
                        info.shape
                    ),
                ));
            }
        };
        let zp = match &p.zero_point {
            None => None,
            Some(z) => {
                let zi = self.info(z)?;
                if zi.shape != info.shape {
                    return Err(bad(
                        z,
                        format!("shape {:?}, scale has {:?}", zi.shape, info.shape),
                    ));
                }
                let b = self.bytes(z)?;
                Some(match zi.dtype.as_str() {
                    "I8" => b.iter().map(|&x| x as i8 as i32).collect(),
                    "I32" => b
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    d => return Err(bad(z, format!("zero-point stored as {d}, expected I8"))),
                })
            }
        };
        Ok((scales, axis, zp))
    }

    fn sparse_shape(&self, s: &SparseParts) -> Result<Vec<usize>> {
        let info = self.info(&s.shape)?;
        let b = self.bytes(&s.shape)?;
        let dims: Vec<i64> = match info.dtype.as_str() {
            "I64" => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "I32" => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            d => return Err(bad(&s.shape, format!("stored as {d}, expected I64"))),
        };
        if dims.len() != 2 || dims.iter().any(|&d| d <= 0) {
            return Err(bad(
                &s.shape,
                format!("{dims:?} is not the shape of a matrix"),
            ));
        }
        Ok(dims.iter().map(|&d| d as usize).collect())
    }

    /// The joulecut tensor of one anchor.
    fn tensor(&self, anchor: &str, p: &Parts) -> Result<TensorData> {
        let Some(s) = &p.sparse else {
            let info = self.info(anchor)?;
            let shape = info.shape.clone();
            let rows = shape.first().copied().unwrap_or(1);
            let (scales, axis, zero_points) = self.scales(p, rows)?;
            let values = self.bytes(anchor)?.iter().map(|&v| v as i8).collect();
            return Ok(TensorData::Int8(Int8Tensor {
                shape,
                values,
                scales,
                zero_points,
                axis,
                orig_dtype: p.dtype,
                in_scales: None,
            }));
        };
        let shape = self.sparse_shape(s)?;
        let (rows, cols) = (shape[0], shape[1]);
        let flat = bitmask::flat_from_rows(self.bytes(&s.bitmask)?, rows, cols)
            .map_err(|why| bad(&s.bitmask, why))?;
        let cinfo = self.info(&s.compressed)?;
        let nnz = numel(&cinfo.shape);
        let counts = bitmask::row_counts(&flat, rows, cols);
        if counts.iter().sum::<usize>() != nnz {
            return Err(bad(
                &s.compressed,
                format!(
                    "{nnz} values, the bitmask marks {}",
                    counts.iter().sum::<usize>()
                ),
            ));
        }
        if let Some(ro) = &s.row_offsets {
            let b = self.bytes(ro)?;
            let mut start = 0i64;
            let ok = b.len() == rows * 8
                && b.chunks_exact(8).zip(&counts).all(|(c, n)| {
                    let v = i64::from_le_bytes(c.try_into().unwrap());
                    let good = v == start;
                    start += *n as i64;
                    good
                });
            if !ok {
                return Err(bad(ro, "row offsets disagree with the bitmask"));
            }
        }
        let bytes = self.bytes(&s.compressed)?.to_vec();
        let values = if cinfo.dtype == "I8" {
            let (scales, axis, zero_points) = self.scales(p, rows)?;
            if zero_points.is_some() {
                return Err(bad(
                    &p.name,
                    "sparse int8 with a zero-point: joulecut's unstored elements are 0, not -zero_point·scale",
                ));
            }
            SparseValues::Int8(Int8Tensor {
                shape: shape.clone(),
                values: bytes.iter().map(|&v| v as i8).collect(),
                scales,
                zero_points,
                axis,
                orig_dtype: p.dtype,
                in_scales: None,
            })
        } else {
            let dtype = float_type(&cinfo.dtype)
                .ok_or_else(|| bad(&s.compressed, format!("values stored as {}", cinfo.dtype)))?;
            SparseValues::Float { dtype, bytes }
        };
        let t = SparseTensor {
            shape,
            bitmap: flat,
            values,
        };
        t.validate(&p.name)?;
        Ok(TensorData::Sparse(t))
    }

    /// The entries and encoding an anchor becomes, from the header alone.
    fn entries(&self, anchor: &str, p: &Parts) -> Result<(Vec<EntrySpec>, TensorEncoding)> {
        let scale_shape = |rows: usize| -> Result<(usize, Option<usize>)> {
            let s = p
                .scale
                .as_ref()
                .ok_or_else(|| bad(&p.name, format!("int8 values but no `{}_scale`", p.name)))?;
            let n = numel(&self.info(s)?.shape);
            Ok((
                n,
                (n != 1 || rows == 1)
                    .then_some(0)
                    .filter(|_| n == rows && n != 1),
            ))
        };
        let mut v = Vec::new();
        let enc = match &p.sparse {
            None => {
                let info = self.info(anchor)?;
                let rows = info.shape.first().copied().unwrap_or(1);
                let (c, axis) = scale_shape(rows)?;
                v.push(EntrySpec::new(&p.name, "I8", info.shape.clone()));
                v.push(EntrySpec::new(format!("{}:scale", p.name), "F32", vec![c]));
                if p.zero_point.is_some() {
                    v.push(EntrySpec::new(
                        format!("{}:zero_point", p.name),
                        "I32",
                        vec![c],
                    ));
                }
                TensorEncoding::Int8 {
                    axis,
                    zero_point: p.zero_point.is_some(),
                    dtype: p.dtype,
                    in_scale: false,
                }
            }
            Some(s) => {
                let shape = self.sparse_shape(s)?;
                let cinfo = self.info(&s.compressed)?;
                v.push(EntrySpec::new(
                    format!("{}:bitmap", p.name),
                    "U8",
                    vec![numel(&shape).div_ceil(8)],
                ));
                v.push(EntrySpec::new(
                    format!("{}:values", p.name),
                    cinfo.dtype.clone(),
                    vec![numel(&cinfo.shape)],
                ));
                let int8 = cinfo.dtype == "I8";
                let axis = if int8 {
                    let (c, axis) = scale_shape(shape[0])?;
                    v.push(EntrySpec::new(format!("{}:scale", p.name), "F32", vec![c]));
                    axis
                } else {
                    None
                };
                TensorEncoding::Sparse {
                    shape,
                    values: cinfo.dtype.clone(),
                    axis,
                    zero_point: false,
                    dtype: if int8 {
                        p.dtype
                    } else {
                        float_type(&cinfo.dtype).unwrap_or(p.dtype)
                    },
                }
            }
        };
        Ok((v, enc))
    }
}

impl Transform for Import<'_> {
    type Error = Error;
    type Report = ();

    fn plan(&self, t: &TensorRef<'_>) -> Result<Plan> {
        if let Some(p) = self.anchors.get(t.name) {
            let (entries, encoding) = self.entries(t.name, p)?;
            return Ok(Plan::ReplaceAs {
                name: p.name.clone(),
                entries,
                encoding: Some(encoding),
            });
        }
        if self.consumed.contains(t.name) {
            return Ok(Plan::Drop);
        }
        Ok(Plan::Keep)
    }

    fn produce(&self, t: &TensorRef<'_>, entries: &[EntrySpec]) -> Result<Produced<()>> {
        let p = &self.anchors[t.name];
        let data = self.tensor(t.name, p)?;
        let (parts, _) = encode_tensor(&p.name, &data)?;
        let mut out = Vec::with_capacity(parts.len());
        for ((name, dtype, shape, bytes), e) in parts.into_iter().zip(entries) {
            if name != e.name || dtype != e.dtype || shape != e.shape {
                return Err(bad(
                    &p.name,
                    format!("`{name}` {dtype} {shape:?} differs from its header entry"),
                ));
            }
            out.push(bytes);
        }
        Ok((out, ()))
    }
}

/// Finds every compressed weight of `src` and the tensors it is made of.
fn survey(
    src: &Source,
    layout: Option<SparseLayout>,
    config: &Value,
    recorded: &BTreeMap<String, String>,
) -> Result<(BTreeMap<String, Parts>, BTreeSet<String>)> {
    let names: BTreeSet<&str> = src.names().iter().map(String::as_str).collect();
    let has = |n: &str| names.contains(n);
    let mut anchors = BTreeMap::new();
    let mut consumed = BTreeSet::new();
    for &n in &names {
        let sparse = match (layout, n.strip_suffix(".compressed")) {
            // Both layouts name the parts after the module (`fc1.compressed`).
            (Some(l), Some(m)) => Some((
                format!("{m}.weight"),
                m.to_string(),
                l == SparseLayout::Bitmask,
            )),
            _ => None,
        };
        let (weight, sp) = match sparse {
            Some((weight, prefix, bitmask_layout)) => {
                let part = |s: &str| -> Result<String> {
                    let full = format!("{prefix}.{s}");
                    if has(&full) {
                        Ok(full)
                    } else {
                        Err(bad(&weight, format!("`{n}` without `{full}`")))
                    }
                };
                let sp = SparseParts {
                    compressed: n.to_string(),
                    shape: part("shape")?,
                    bitmask: part("bitmask")?,
                    row_offsets: if bitmask_layout {
                        Some(part("row_offsets")?)
                    } else {
                        None
                    },
                };
                (weight, Some(sp))
            }
            None => {
                let dtype = src.shard_of(n).stored_info(n)?.dtype.as_str();
                if dtype != "I8" || !n.ends_with("weight") {
                    continue;
                }
                (n.to_string(), None)
            }
        };
        let opt = |s: String| has(&s).then_some(s);
        let p = Parts {
            scale: opt(format!("{weight}_scale")),
            zero_point: opt(format!("{weight}_zero_point")),
            dtype: orig_dtype(&weight, recorded, config),
            name: weight.clone(),
            sparse: sp,
        };
        if p.sparse.is_none() && p.scale.is_none() {
            return Err(bad(
                &weight,
                format!("int8 weight without `{weight}_scale`"),
            ));
        }
        if p.sparse.is_some() && has(&weight) {
            return Err(bad(&weight, "stored both dense and sparse"));
        }
        consumed.extend(p.scale.iter().chain(&p.zero_point).cloned());
        if let Some(s) = &p.sparse {
            consumed.extend([s.shape.clone(), s.bitmask.clone()]);
            consumed.extend(s.row_offsets.iter().cloned());
        }
        anchors.insert(n.to_string(), p);
    }
    for &n in &names {
        let scale_like = [
            "weight_scale",
            "weight_zero_point",
            "input_scale",
            "input_zero_point",
            "output_scale",
        ]
        .iter()
        .any(|s| n.ends_with(s));
        if scale_like && !consumed.contains(n) {
            return Err(bad(
                n,
                "a quantization parameter without the int8 weight it belongs to (joulecut imports int8 weights and dynamic activations only)",
            ));
        }
    }
    Ok((anchors, consumed))
}

/// Imports a compressed-tensors model directory into joulecut's encodings: a directory at `out`
/// (sidecar files copied, `quantization_config` removed from config.json), or one file when
/// `out` ends in `.safetensors`. See docs/INTEROP.md.
pub fn import(input: &Path, out: &Path) -> Result<Imported> {
    let cfg_path = input.join(CONFIG);
    if !input.is_dir() || !cfg_path.is_file() {
        return Err(Error::BadInput {
            path: input.to_path_buf(),
            reason: "not a model directory with a config.json".into(),
            hint: "a compressed-tensors checkpoint is a directory: its .safetensors files and a config.json with a quantization_config".into(),
        });
    }
    let text = joulecut_checkpoint::input::read_to_string(&cfg_path).map_err(|source| {
        joulecut_checkpoint::Error::Read {
            path: cfg_path.clone(),
            source,
        }
    })?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| Error::BadInput {
        path: cfg_path.clone(),
        reason: format!("config.json is not JSON ({e})"),
        hint: "fix the model directory's config.json".into(),
    })?;
    let layout = config::check(&config, &cfg_path)?.sparse;
    let src = Source::open(input)?;
    let single_file = out.extension().is_some_and(|e| e == "safetensors");
    joulecut_checkpoint::check_output(&src, out, single_file)?;
    let recorded: BTreeMap<String, String> = src
        .shards()
        .iter()
        .filter_map(|s| s.checkpoint.metadata().get(DTYPES_KEY))
        .filter_map(|j| serde_json::from_str::<BTreeMap<String, String>>(j).ok())
        .flatten()
        .collect();
    let (anchors, consumed) = survey(&src, layout, &config, &recorded)?;

    let mut opts = StreamOptions::new(HistoryEntry::new(
        "import",
        json!({ "format": "compressed-tensors", "input": input }),
    ));
    opts.single_file = single_file;
    opts.metadata.insert(DTYPES_KEY.into(), None);
    if let Some(o) = config.as_object_mut() {
        o.remove("quantization_config");
        if !single_file {
            opts.sidecar_contents.insert(
                CONFIG.into(),
                serde_json::to_vec_pretty(&config).expect("config serialises"),
            );
        }
    }
    let t = Import {
        src: &src,
        anchors,
        consumed,
    };
    let written = stream(&src, out, &opts, &t)?;
    let (mut int8, mut sparse) = (Vec::new(), Vec::new());
    for p in t.anchors.values() {
        if p.sparse.is_some() {
            sparse.push(p.name.clone())
        } else {
            int8.push(p.name.clone())
        }
    }
    Ok(Imported {
        path: out.to_path_buf(),
        files: written.files,
        bytes: written.bytes,
        int8,
        sparse,
        sparse_layout: layout,
    })
}
