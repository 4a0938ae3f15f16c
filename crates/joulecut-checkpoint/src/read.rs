//! Reading checkpoints: the safetensors header is parsed and validated up front (so a truncated or
//! foreign file fails with a precise error before any work starts); tensor data is read lazily from
//! an mmap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::encoding::{Encodings, TensorEncoding};
use crate::meta::{self, HistoryEntry};
use crate::tensor::{
    DenseTensor, FloatType, Int8Tensor, SparseTensor, SparseValues, TensorData, numel,
};
use crate::{Error, Result};

/// Largest header we accept (safetensors' own limit is 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One entry of the safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInfo {
    /// The stored name.
    pub name: String,
    /// The safetensors dtype string (`F32`, `I8`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range in the data section.
    pub range: std::ops::Range<usize>,
}

/// Size in bytes of a safetensors dtype, or `None` if joulecut doesn't know it.
pub fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// An open checkpoint (mmap'd; the file is never modified).
pub struct Checkpoint {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    stored: Vec<StoredInfo>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    encodings: Encodings,
    logical: Vec<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.logical.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens and validates a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(kind) = crate::input::not_regular(&path) {
            return Err(Error::NotSafetensors {
                reason: format!("it is {kind}, not a regular file"),
                path,
            });
        }
        let file = std::fs::File::open(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(Error::NotSafetensors {
                path,
                reason: "it is a directory".into(),
            });
        }
        // SAFETY: the map is read-only; joulecut never writes to its inputs. Another process truncating
        // the file while we read it is outside what any mmap-based reader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let bad = |reason: String| Error::NotSafetensors {
            path: path.clone(),
            reason,
        };
        if let Some(format) = crate::sniff::foreign(&mmap) {
            return Err(Error::OtherFormat { path, format });
        }
        let len = mmap.len() as u64;
        if len < 8 {
            return Err(bad(format!(
                "file is {len} bytes, shorter than the 8-byte header length"
            )));
        }
        let n = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes"));
        if n > MAX_HEADER {
            return Err(bad(format!(
                "header length {n} is implausible (file is {len} bytes)"
            )));
        }
        if 8 + n > len {
            return Err(bad(format!(
                "header length {n} runs past the end of the file ({len} bytes): truncated?"
            )));
        }
        let header_bytes = &mmap[8..8 + n as usize];
        let header: serde_json::Value = serde_json::from_slice(header_bytes)
            .map_err(|e| bad(format!("header is not JSON ({e})")))?;
        // a JSON object keeps the last of two equal keys: a tensor (or metadata key) stored twice
        // would silently lose one
        if let Ok(DuplicateKey(Some(k))) = serde_json::from_slice::<DuplicateKey>(header_bytes) {
            return Err(bad(format!("the header names `{k}` twice")));
        }
        let obj = header
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let data_start = 8 + n as usize;
        let data_len = mmap.len() - data_start;

        let mut metadata = BTreeMap::new();
        let mut stored = Vec::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                let m = v
                    .as_object()
                    .ok_or_else(|| bad("__metadata__ is not an object".into()))?;
                for (k, v) in m {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("__metadata__ value `{k}` is not a string")))?;
                    metadata.insert(k.clone(), s.to_string());
                }
                continue;
            }
            stored.push(parse_entry(name, v).map_err(|r| bad(format!("tensor `{name}`: {r}")))?);
        }
        // Bounds and overlaps.
        stored.sort_by_key(|s| (s.range.start, s.range.end));
        let mut prev_end = 0usize;
        for s in &stored {
            if s.range.end > data_len {
                return Err(bad(format!(
                    "tensor `{}` ends at byte {} but the data section has {data_len} bytes: truncated?",
                    s.name, s.range.end
                )));
            }
            if s.range.start < prev_end {
                return Err(bad(format!(
                    "tensor `{}` overlaps the previous tensor's bytes",
                    s.name
                )));
            }
            prev_end = s.range.end;
        }
        // then gaps (after overlaps, which say more about a damaged file)
        let mut prev_end = 0usize;
        for s in &stored {
            if s.range.start > prev_end {
                return Err(bad(format!(
                    "{} unclaimed bytes before tensor `{}` (safetensors packs tensors back to back)",
                    s.range.start - prev_end,
                    s.name
                )));
            }
            prev_end = s.range.end;
        }
        if prev_end != data_len {
            return Err(bad(format!(
                "{} bytes after the last tensor's data (safetensors ends with it)",
                data_len - prev_end
            )));
        }
        let by_name = stored
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        if let Some(v) = metadata
            .get(meta::FORMAT)
            .filter(|v| *v != meta::FORMAT_VERSION)
        {
            return Err(Error::BadMetadata {
                key: meta::FORMAT.into(),
                path,
                reason: format!(
                    "format `{v}` is not one this joulecut reads (format {}): written by another version",
                    meta::FORMAT_VERSION
                ),
            });
        }
        let encodings = match metadata.get(meta::ENCODINGS) {
            Some(s) => Encodings::parse(s).map_err(|reason| Error::BadMetadata {
                key: meta::ENCODINGS.into(),
                path: path.clone(),
                reason,
            })?,
            None => Encodings::default(),
        };
        let mut ck = Checkpoint {
            path,
            mmap,
            data_start,
            stored,
            by_name,
            metadata,
            encodings,
            logical: Vec::new(),
        };
        ck.logical = ck.compute_logical()?;
        ck.check_sparse_shapes()?;
        Ok(ck)
    }

    /// A packed tensor's logical shape must be countable and match its bitmap (one bit per
    /// element): a shape whose product overflows would otherwise pass through passes that copy
    /// the parts unchanged.
    fn check_sparse_shapes(&self) -> Result<()> {
        for (name, enc) in self.encodings.iter() {
            let TensorEncoding::Sparse { shape, .. } = enc else {
                continue;
            };
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let Some(n) = n else {
                return Err(bad_tensor(
                    name,
                    format!("sparse shape {shape:?} has more elements than can be counted"),
                ));
            };
            if let Ok(bm) = self.stored_info(&format!("{name}:bitmap")) {
                if bm.range.len() != n.div_ceil(8) {
                    return Err(bad_tensor(
                        name,
                        format!(
                            "sparse shape {shape:?} needs a {}-byte bitmap, the file stores {}",
                            n.div_ceil(8),
                            bm.range.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Logical names in file order; components of encoded tensors (`x:scale`, ...) are folded in.
    fn compute_logical(&self) -> Result<Vec<String>> {
        let mut consumed = HashSet::new();
        for (name, enc) in self.encodings.iter() {
            for part in enc.stored_names(name) {
                if !self.by_name.contains_key(&part) {
                    return Err(Error::BadTensor {
                        name: name.clone(),
                        reason: format!(
                            "its {} encoding needs stored tensor `{part}`, which is missing",
                            enc.kind()
                        ),
                    });
                }
                consumed.insert(part);
            }
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for s in &self.stored {
            let logical = if consumed.contains(&s.name) {
                self.encodings
                    .owner_of(&s.name)
                    .unwrap_or(&s.name)
                    .to_string()
            } else {
                s.name.clone()
            };
            if seen.insert(logical.clone()) {
                out.push(logical);
            }
        }
        Ok(out)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logical tensor names, in file order.
    pub fn names(&self) -> &[String] {
        &self.logical
    }

    /// The raw `__metadata__` map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Parsed `joulecut.encodings`.
    pub fn encodings(&self) -> &Encodings {
        &self.encodings
    }

    /// The JSON of `joulecut.model`, when the file holds a joulecut model.
    pub fn model_config(&self) -> Result<Option<serde_json::Value>> {
        match self.metadata.get(meta::MODEL) {
            None => Ok(None),
            Some(s) => serde_json::from_str(s)
                .map(Some)
                .map_err(|e| Error::BadMetadata {
                    key: meta::MODEL.into(),
                    path: self.path.clone(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Parsed `joulecut.history` (empty when absent).
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        match self.metadata.get(meta::HISTORY) {
            None => Ok(Vec::new()),
            Some(s) => serde_json::from_str(s).map_err(|e| Error::BadMetadata {
                key: meta::HISTORY.into(),
                path: self.path.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The stored (physical) entries, in file order.
    pub fn stored(&self) -> &[StoredInfo] {
        &self.stored
    }

    /// Raw bytes of a stored entry.
    pub fn stored_bytes(&self, info: &StoredInfo) -> &[u8] {
        &self.mmap[self.data_start + info.range.start..self.data_start + info.range.end]
    }

    /// Drops this process's mapping of an entry's pages (they stay in the page cache): streaming
    /// passes call it once a tensor is done, so resident memory tracks the tensors in flight rather
    /// than the file size.
    pub fn release(&self, info: &StoredInfo) {
        let len = info.range.len();
        if len == 0 {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only shared file mapping only drops page-table entries; the
        // next access re-reads the same (unmodified) file pages, so no observable byte changes.
        let _ = unsafe {
            self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.data_start + info.range.start,
                len,
            )
        };
    }

    /// Tells the kernel the data will be read front to back (larger read-ahead).
    pub fn advise_sequential(&self) {
        let _ = self.mmap.advise(memmap2::Advice::Sequential);
    }

    /// Bytes of the header (8-byte length + JSON): the data section starts here.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Looks up a stored entry by name.
    pub fn stored_info(&self, name: &str) -> Result<&StoredInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.stored[i])
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
            })
    }

    /// Total bytes of the file on disk.
    pub fn file_bytes(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Bytes the logical tensor occupies in the data section (all its stored parts).
    pub fn tensor_bytes(&self, name: &str) -> Result<usize> {
        let parts = match self.encodings.get(name) {
            Some(enc) => enc.stored_names(name),
            None => vec![name.to_string()],
        };
        let mut total = 0;
        for p in parts {
            total += self.stored_info(&p)?.range.len();
        }
        Ok(total)
    }

    /// Reads and decodes a logical tensor.
    pub fn get(&self, name: &str) -> Result<TensorData> {
        let data = match self.encodings.get(name) {
            None => TensorData::Dense(self.dense(name)?),
            Some(TensorEncoding::Int8 {
                axis,
                zero_point,
                dtype,
                in_scale,
            }) => {
                let v = self.stored_info(name)?;
                if v.dtype != "I8" {
                    return Err(bad_tensor(
                        name,
                        format!("int8 encoding but stored as {}", v.dtype),
                    ));
                }
                let q = self.int8_parts(
                    name,
                    v.shape.clone(),
                    i8s(self.stored_bytes(v)),
                    *axis,
                    *zero_point,
                    *dtype,
                )?;
                let q = Int8Tensor {
                    in_scales: self.in_scales(name, *in_scale)?,
                    ..q
                };
                q.validate(name, numel(&q.shape))?;
                TensorData::Int8(q)
            }
            Some(TensorEncoding::Sparse {
                shape,
                values,
                axis,
                zero_point,
                dtype,
            }) => {
                let bm = self.stored_info(&format!("{name}:bitmap"))?;
                if bm.dtype != "U8" {
                    return Err(bad_tensor(
                        name,
                        format!("sparse bitmap stored as {}, expected U8", bm.dtype),
                    ));
                }
                let bitmap = self.stored_bytes(bm).to_vec();
                let vname = format!("{name}:values");
                let vi = self.stored_info(&vname)?;
                let values = if values == "I8" {
                    if vi.dtype != "I8" {
                        return Err(bad_tensor(
                            name,
                            format!("sparse int8 values stored as {}", vi.dtype),
                        ));
                    }
                    SparseValues::Int8(self.int8_parts(
                        name,
                        shape.clone(),
                        i8s(self.stored_bytes(vi)),
                        *axis,
                        *zero_point,
                        *dtype,
                    )?)
                } else {
                    let ft = float_type(&vi.dtype).ok_or_else(|| {
                        bad_tensor(
                            name,
                            format!("sparse values have unsupported dtype {}", vi.dtype),
                        )
                    })?;
                    SparseValues::Float {
                        dtype: ft,
                        bytes: self.stored_bytes(vi).to_vec(),
                    }
                };
                let s = SparseTensor {
                    shape: shape.clone(),
                    bitmap,
                    values,
                };
                s.validate(name)?;
                TensorData::Sparse(s)
            }
        };
        Ok(data)
    }

    /// Decoded f32 values and shape of a logical tensor, whatever its encoding.
    pub fn get_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.get(name)?;
        let v = t.to_f32();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad_tensor(
                name,
                format!("element {i} is {} (NaN/Inf weights)", v[i]),
            ));
        }
        Ok((t.shape().to_vec(), v))
    }

    fn dense(&self, name: &str) -> Result<DenseTensor> {
        let info = self.stored_info(name)?;
        let dtype = float_type(&info.dtype).ok_or_else(|| {
            bad_tensor(
                name,
                format!("dtype {} is not a float type joulecut handles (F32, F16, BF16) and has no joulecut encoding", info.dtype),
            )
        })?;
        Ok(DenseTensor {
            dtype,
            shape: info.shape.clone(),
            bytes: self.stored_bytes(info).to_vec(),
        })
    }

    pub(crate) fn int8_parts(
        &self,
        name: &str,
        shape: Vec<usize>,
        values: Vec<i8>,
        axis: Option<usize>,
        has_zp: bool,
        dtype: FloatType,
    ) -> Result<Int8Tensor> {
        let scales = self.f32_part(name, "scale", "scale")?;
        let zero_points = if has_zp {
            let zi = self.stored_info(&format!("{name}:zero_point"))?;
            if zi.dtype != "I32" {
                return Err(bad_tensor(
                    name,
                    format!("zero_point stored as {}, expected I32", zi.dtype),
                ));
            }
            Some(
                self.stored_bytes(zi)
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        } else {
            None
        };
        Ok(Int8Tensor {
            shape,
            values,
            scales,
            zero_points,
            axis,
            orig_dtype: dtype,
            in_scales: None,
        })
    }

    /// `NAME:in_scale` when the encoding says it is stored.
    pub(crate) fn in_scales(&self, name: &str, stored: bool) -> Result<Option<Vec<f32>>> {
        if !stored {
            return Ok(None);
        }
        self.f32_part(name, "in_scale", "input scales").map(Some)
    }

    /// The F32 part `NAME:part` of an int8 tensor (`what` names it in the error when missing).
    fn f32_part(&self, name: &str, part: &str, what: &str) -> Result<Vec<f32>> {
        let info = self.stored_info(&format!("{name}:{part}")).map_err(|_| {
            bad_tensor(
                name,
                format!("int8 tensor has no {what} (`{name}:{part}` is missing)"),
            )
        })?;
        if info.dtype != "F32" {
            return Err(bad_tensor(
                name,
                format!("{part} stored as {}, expected F32", info.dtype),
            ));
        }
        Ok(f32s(self.stored_bytes(info)))
    }
}

fn bad_tensor(name: &str, reason: String) -> Error {
    Error::BadTensor {
        name: name.to_string(),
        reason,
    }
}

pub(crate) fn float_type(dtype: &str) -> Option<FloatType> {
    match dtype {
        "F32" => Some(FloatType::F32),
        "F16" => Some(FloatType::F16),
        "BF16" => Some(FloatType::BF16),
        _ => None,
    }
}

fn i8s(b: &[u8]) -> Vec<i8> {
    b.iter().map(|&x| x as i8).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn parse_entry(name: &str, v: &serde_json::Value) -> std::result::Result<StoredInfo, String> {
    let o = v.as_object().ok_or("entry is not an object")?;
    let dtype = o
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or("missing dtype")?
        .to_string();
    let size = dtype_size(&dtype).ok_or_else(|| format!("unknown dtype `{dtype}`"))?;
    let shape: Vec<usize> = o
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or("missing shape")?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|x| x as usize)
                .ok_or("shape has a non-integer")
        })
        .collect::<std::result::Result<_, _>>()?;
    let offs = o
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .ok_or("missing data_offsets")?;
    if offs.len() != 2 {
        return Err("data_offsets must have two entries".into());
    }
    let start = offs[0].as_u64().ok_or("bad data_offsets")? as usize;
    let end = offs[1].as_u64().ok_or("bad data_offsets")? as usize;
    if end < start {
        return Err(format!("data_offsets [{start}, {end}] run backwards"));
    }
    let expected = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    if end - start != expected {
        return Err(format!(
            "{} bytes stored but shape {shape:?} of {dtype} needs {expected}",
            end - start
        ));
    }
    Ok(StoredInfo {
        name: name.to_string(),
        dtype,
        shape,
        range: start..end,
    })
}

/// The first key a JSON object (or its `__metadata__` object) names twice, if any.
struct DuplicateKey(Option<String>);

impl<'de> serde::Deserialize<'de> for DuplicateKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = DuplicateKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<DuplicateKey, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut dup = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k == "__metadata__" {
                        if let DuplicateKey(Some(inner)) = m.next_value::<DuplicateKey>()? {
                            dup = dup.or(Some(format!("__metadata__.{inner}")));
                        }
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                    if !seen.insert(k.clone()) {
                        dup = dup.or(Some(k));
                    }
                }
                Ok(DuplicateKey(dup))
            }
        }
        d.deserialize_map(Keys)
    }
}
