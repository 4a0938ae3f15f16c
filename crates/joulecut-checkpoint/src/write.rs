//! Writing checkpoints atomically: data goes to a temporary file beside the destination (anonymous
//! where the filesystem allows, see [`crate::atomic`]), is synced, then renamed over it. A crash or
//! kill leaves the destination untouched.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::atomic::TmpFile;
use crate::encoding::{Encodings, TensorEncoding};
use crate::meta::{self, HistoryEntry};
use crate::read::Checkpoint;
use crate::tensor::{Int8Tensor, SparseValues, TensorData, numel};
use crate::{Error, Result};

/// Builds a checkpoint in memory and writes it atomically.
#[derive(Debug, Default)]
pub struct CheckpointWriter {
    metadata: BTreeMap<String, String>,
    model: Option<serde_json::Value>,
    history: Vec<HistoryEntry>,
    tensors: Vec<(String, TensorData)>,
}

struct Stored<'a> {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

impl CheckpointWriter {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from an input's metadata: foreign `__metadata__`, model config and history are kept.
    pub fn derived_from(input: &Checkpoint) -> Result<Self> {
        let mut w = Self::new();
        for (k, v) in input.metadata() {
            if ![meta::FORMAT, meta::MODEL, meta::ENCODINGS, meta::HISTORY].contains(&k.as_str()) {
                w.metadata.insert(k.clone(), v.clone());
            }
        }
        w.model = input.model_config()?;
        w.history = input.history()?;
        Ok(w)
    }

    /// Sets the `joulecut.model` config.
    pub fn set_model_config(&mut self, cfg: serde_json::Value) -> &mut Self {
        self.model = Some(cfg);
        self
    }

    /// The model config set so far.
    pub fn model_config(&self) -> Option<&serde_json::Value> {
        self.model.as_ref()
    }

    /// Appends a history entry.
    pub fn push_history(&mut self, entry: HistoryEntry) -> &mut Self {
        self.history.push(entry);
        self
    }

    /// Sets a free-form metadata entry.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds (or replaces) a logical tensor.
    pub fn insert(&mut self, name: impl Into<String>, data: TensorData) -> &mut Self {
        let name = name.into();
        if let Some(slot) = self.tensors.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = data;
        } else {
            self.tensors.push((name, data));
        }
        self
    }

    /// The tensors added so far.
    pub fn tensors(&self) -> &[(String, TensorData)] {
        &self.tensors
    }

    fn stored(&self) -> Result<(Vec<Stored<'_>>, Encodings)> {
        let mut out = Vec::new();
        let mut encodings = Encodings::default();
        for (name, data) in &self.tensors {
            tensor_parts(name, data, &mut out)?;
            if let Some(enc) = TensorEncoding::of(data) {
                encodings.insert(name.clone(), enc);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for s in &out {
            if !seen.insert(s.name.as_str()) {
                return Err(Error::BadTensor {
                    name: s.name.clone(),
                    reason: "stored twice (name clash with an encoded tensor's parts)".into(),
                });
            }
        }
        Ok((out, encodings))
    }

    /// Serialises to safetensors bytes' header (JSON, padded to 8 bytes) and the tensor list.
    fn header(&self, stored: &[Stored<'_>], encodings: &Encodings) -> Vec<u8> {
        let mut md = serde_json::Map::new();
        for (k, v) in &self.metadata {
            md.insert(k.clone(), v.clone().into());
        }
        md.insert(meta::FORMAT.into(), meta::FORMAT_VERSION.into());
        if let Some(m) = &self.model {
            md.insert(meta::MODEL.into(), m.to_string().into());
        }
        if !encodings.is_empty() {
            md.insert(meta::ENCODINGS.into(), encodings.to_json().into());
        }
        if !self.history.is_empty() {
            md.insert(
                meta::HISTORY.into(),
                serde_json::to_string(&self.history)
                    .expect("history")
                    .into(),
            );
        }
        let mut h = serde_json::Map::new();
        h.insert("__metadata__".into(), md.into());
        let mut off = 0usize;
        for s in stored {
            let end = off + s.bytes.len();
            h.insert(
                s.name.clone(),
                serde_json::json!({"dtype": s.dtype, "shape": s.shape, "data_offsets": [off, end]}),
            );
            off = end;
        }
        let mut bytes = serde_json::to_vec(&serde_json::Value::Object(h)).expect("header");
        while bytes.len() % 8 != 0 {
            bytes.push(b' ');
        }
        bytes
    }

    /// Writes the checkpoint to `path` atomically. Fails if `path` is one of `inputs`.
    pub fn write(&self, path: impl AsRef<Path>, inputs: &[&Path]) -> Result<u64> {
        let path = path.as_ref();
        refuse_input(path, inputs)?;
        let (stored, encodings) = self.stored()?;
        let header = self.header(&stored, &encodings);
        atomic_write(path, |f| {
            f.write_all(&(header.len() as u64).to_le_bytes())?;
            f.write_all(&header)?;
            for s in &stored {
                f.write_all(&s.bytes)?;
            }
            Ok(())
        })
    }
}

/// Appends the stored entries of one logical tensor (values, scales, bitmap...) to `out`.
fn tensor_parts<'a>(name: &str, data: &'a TensorData, out: &mut Vec<Stored<'a>>) -> Result<()> {
    let name = &name.to_string();
    if name.contains(':') && !matches!(data, TensorData::Dense(_)) {
        return Err(Error::BadTensor {
            name: name.clone(),
            reason: "encoded tensor names may not contain ':'".into(),
        });
    }
    match data {
        TensorData::Dense(d) => {
            if d.bytes.len() != numel(&d.shape) * d.dtype.size() {
                return Err(Error::BadTensor {
                    name: name.clone(),
                    reason: format!(
                        "{} bytes for shape {:?} of {}",
                        d.bytes.len(),
                        d.shape,
                        d.dtype
                    ),
                });
            }
            out.push(Stored {
                name: name.clone(),
                dtype: st_name(d.dtype.to_safetensors()),
                shape: d.shape.clone(),
                bytes: Cow::Borrowed(&d.bytes),
            });
        }
        TensorData::Int8(q) => {
            q.validate(name, numel(&q.shape))?;
            out.push(Stored {
                name: name.clone(),
                dtype: "I8",
                shape: q.shape.clone(),
                bytes: Cow::Owned(q.values.iter().map(|&v| v as u8).collect()),
            });
            push_scales(out, name, q);
        }
        TensorData::Sparse(s) => {
            s.validate(name)?;
            out.push(Stored {
                name: format!("{name}:bitmap"),
                dtype: "U8",
                shape: vec![s.bitmap.len()],
                bytes: Cow::Borrowed(&s.bitmap),
            });
            match &s.values {
                SparseValues::Float { dtype, bytes } => out.push(Stored {
                    name: format!("{name}:values"),
                    dtype: st_name(dtype.to_safetensors()),
                    shape: vec![bytes.len() / dtype.size()],
                    bytes: Cow::Borrowed(bytes),
                }),
                SparseValues::Int8(q) => {
                    out.push(Stored {
                        name: format!("{name}:values"),
                        dtype: "I8",
                        shape: vec![q.values.len()],
                        bytes: Cow::Owned(q.values.iter().map(|&v| v as u8).collect()),
                    });
                    push_scales(out, name, q);
                }
            }
        }
    }
    Ok(())
}

/// The stored entries of one logical tensor as `(name, dtype, shape, bytes)`, in file order, and
/// its encoding (`None` = dense): what [`CheckpointWriter`] would write for it.
#[allow(clippy::type_complexity)]
pub fn encode_tensor(
    name: &str,
    data: &TensorData,
) -> Result<(
    Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
    Option<TensorEncoding>,
)> {
    let mut out = Vec::new();
    tensor_parts(name, data, &mut out)?;
    Ok((
        out.into_iter()
            .map(|s| (s.name, s.dtype, s.shape, s.bytes.into_owned()))
            .collect(),
        TensorEncoding::of(data),
    ))
}

fn push_scales<'a>(out: &mut Vec<Stored<'a>>, name: &str, q: &'a Int8Tensor) {
    out.push(Stored {
        name: format!("{name}:scale"),
        dtype: "F32",
        shape: vec![q.scales.len()],
        bytes: Cow::Owned(q.scales.iter().flat_map(|s| s.to_le_bytes()).collect()),
    });
    if let Some(zp) = &q.zero_points {
        out.push(Stored {
            name: format!("{name}:zero_point"),
            dtype: "I32",
            shape: vec![zp.len()],
            bytes: Cow::Owned(zp.iter().flat_map(|s| s.to_le_bytes()).collect()),
        });
    }
    if let Some(f) = &q.in_scales {
        out.push(Stored {
            name: format!("{name}:in_scale"),
            dtype: "F32",
            shape: vec![f.len()],
            bytes: Cow::Owned(f.iter().flat_map(|s| s.to_le_bytes()).collect()),
        });
    }
}

fn st_name(d: safetensors::Dtype) -> &'static str {
    match d {
        safetensors::Dtype::F32 => "F32",
        safetensors::Dtype::F16 => "F16",
        safetensors::Dtype::BF16 => "BF16",
        _ => unreachable!("only float dtypes are written densely"),
    }
}

/// Errors with [`Error::OutputIsInput`] if `out` names the same file as one of `inputs`.
pub fn refuse_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let canon = |p: &Path| -> Option<PathBuf> { std::fs::canonicalize(p).ok() };
    let out_c = canon(out);
    for inp in inputs {
        if out == *inp || (out_c.is_some() && out_c == canon(inp)) {
            return Err(Error::OutputIsInput {
                path: out.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Writes through `fill` into a temporary file beside `path` (anonymous `O_TMPFILE` where
/// supported, see [`crate::atomic`]), syncs it, and renames it over `path`. Returns the number of
/// bytes written. On error or kill nothing is left and `path` is untouched.
pub fn atomic_write(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<u64> {
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(werr(std::io::Error::other(
            "the output path is a directory",
        )));
    }
    let result = (|| {
        let mut tmp = TmpFile::for_dest(path)?;
        let file = tmp.file().try_clone()?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        let len = file.metadata()?.len();
        drop(file);
        tmp.persist(path)?;
        Ok(len)
    })();
    result.map_err(werr)
}
