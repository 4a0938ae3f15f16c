//! Streaming rewrite of a checkpoint, tensor by tensor, in bounded memory.
//!
//! A [`Transform`] decides for every logical tensor whether it is kept (its stored bytes copied
//! unchanged) or replaced by new stored entries whose dtypes and shapes it declares up front. So the
//! whole header is known before any data is produced: it is written first, then the tensors' bytes
//! in order. Tensors are produced in parallel (rayon) in *windows* whose input + output bytes stay
//! under [`StreamOptions::budget`] (a bigger tensor goes alone, and is parallel inside itself), while
//! a writer thread writes the previous window. Input pages are dropped from the mapping as soon as a
//! tensor is done ([`Checkpoint::release`]), so resident memory follows the tensors in flight, not
//! the file size.
//!
//! Output layouts ([`stream`]): one file (a single-file input, or `single_file`), or a directory
//! with the input's shard layout, its own index and the input directory's sidecar files. Either
//! appears complete or not at all ([`crate::atomic`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::atomic::{DirCommit, TmpFile, check_dir_dest};
use crate::encoding::{Encodings, TensorEncoding};
use crate::meta::{self, HistoryEntry};
use crate::read::{Checkpoint, StoredInfo, dtype_size};
use crate::source::{DEFAULT_INDEX, Source};
use crate::tensor::{FloatType, numel};
use crate::{Error, Result};

/// Default bytes (input + output) in flight.
pub const DEFAULT_BUDGET: usize = 256 << 20;

/// One stored safetensors entry an output tensor will have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// Stored name (`NAME`, `NAME:scale`, ...).
    pub name: String,
    /// Safetensors dtype (`I8`, `F32`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

impl EntrySpec {
    /// An entry.
    pub fn new(name: impl Into<String>, dtype: impl Into<String>, shape: Vec<usize>) -> Self {
        EntrySpec {
            name: name.into(),
            dtype: dtype.into(),
            shape,
        }
    }

    /// Size of its data in bytes.
    pub fn byte_len(&self) -> usize {
        numel(&self.shape) * dtype_size(&self.dtype).unwrap_or(1)
    }
}

/// What happens to one logical tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Copied unchanged (every stored part, same encoding).
    Keep,
    /// Replaced by these stored entries (in file order) with this encoding (`None` = dense).
    Replace {
        /// The entries [`Transform::produce`] fills, in order.
        entries: Vec<EntrySpec>,
        /// The tensor's encoding in the output.
        encoding: Option<TensorEncoding>,
    },
    /// Replaced, like [`Plan::Replace`], by the entries of a logical tensor with another name:
    /// a pass that reads another format's layout (`fc1.weight.compressed` + `fc1.weight.bitmask`
    /// becomes `fc1.weight` with its `:bitmap` and `:values`), so the encoding is recorded under
    /// `name`.
    ReplaceAs {
        /// The logical name in the output.
        name: String,
        /// The entries [`Transform::produce`] fills, in order.
        entries: Vec<EntrySpec>,
        /// The tensor's encoding in the output.
        encoding: Option<TensorEncoding>,
    },
    /// Left out of the output (a pass that removes layers).
    Drop,
}

/// A logical tensor of the input, as handed to a [`Transform`].
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// The shard holding it.
    pub checkpoint: &'a Checkpoint,
    /// Logical name.
    pub name: &'a str,
}

impl<'a> TensorRef<'a> {
    /// Its encoding (`None` = dense or a non-float tensor).
    pub fn encoding(&self) -> Option<&'a TensorEncoding> {
        self.checkpoint.encodings().get(self.name)
    }

    /// Its stored parts, in file order.
    pub fn stored(&self) -> Result<Vec<&'a StoredInfo>> {
        let names = match self.encoding() {
            Some(e) => e.stored_names(self.name),
            None => vec![self.name.to_string()],
        };
        let mut v = names
            .iter()
            .map(|n| self.checkpoint.stored_info(n))
            .collect::<Result<Vec<_>>>()?;
        v.sort_by_key(|s| s.range.start);
        Ok(v)
    }

    /// Logical shape, read from the header (no data touched).
    pub fn shape(&self) -> Result<Vec<usize>> {
        Ok(match self.encoding() {
            Some(TensorEncoding::Sparse { shape, .. }) => shape.clone(),
            _ => self.checkpoint.stored_info(self.name)?.shape.clone(),
        })
    }

    /// The safetensors dtype of a dense tensor's entry, or `None` when encoded.
    pub fn stored_dtype(&self) -> Option<&'a str> {
        match self.encoding() {
            None => self
                .checkpoint
                .stored_info(self.name)
                .ok()
                .map(|s| s.dtype.as_str()),
            Some(_) => None,
        }
    }

    /// The float type it decodes to; `None` for a non-float dense tensor (e.g. I64 ids).
    pub fn float_type(&self) -> Option<FloatType> {
        match self.encoding() {
            None => self.stored_dtype().and_then(crate::read::float_type),
            Some(TensorEncoding::Int8 { dtype, .. } | TensorEncoding::Sparse { dtype, .. }) => {
                Some(*dtype)
            }
        }
    }

    /// Bytes of all its stored parts.
    pub fn stored_bytes(&self) -> Result<usize> {
        Ok(self.stored()?.iter().map(|s| s.range.len()).sum())
    }
}

/// The stored parts' bytes of one produced tensor, and its report.
pub type Produced<R> = (Vec<Vec<u8>>, R);

/// Reports of the replaced tensors, by name, in file order.
type Reports<R> = Vec<(String, R)>;

/// A per-tensor rewrite (quantize, cast, decode, ...).
pub trait Transform: Sync {
    /// Error type (this crate's errors convert into it).
    type Error: From<Error> + Send;
    /// What [`Transform::produce`] reports for each replaced tensor.
    type Report: Send;

    /// Decides what happens to a tensor: cheap, from the header only.
    fn plan(&self, t: &TensorRef<'_>) -> std::result::Result<Plan, Self::Error>;

    /// The bytes of the planned entries, in order (each exactly [`EntrySpec::byte_len`] long).
    fn produce(
        &self,
        t: &TensorRef<'_>,
        entries: &[EntrySpec],
    ) -> std::result::Result<Produced<Self::Report>, Self::Error>;
}

/// Settings of [`stream`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Write one `.safetensors` file even for a sharded input.
    pub single_file: bool,
    /// Input + output bytes produced concurrently (one bigger tensor is always allowed).
    pub budget: usize,
    /// Appended to each output file's `joulecut.history`.
    pub history: HistoryEntry,
    /// `__metadata__` entries to set (`Some`) or drop (`None`) in every output file, over what
    /// the input carried.
    pub metadata: std::collections::BTreeMap<String, Option<String>>,
    /// Files of a directory output (relative paths) written with these bytes instead of copied
    /// from the input: a pass that changes the model's shapes rewrites its `config.json`.
    pub sidecar_contents: std::collections::BTreeMap<PathBuf, Vec<u8>>,
}

impl StreamOptions {
    /// Defaults with this history entry.
    pub fn new(history: HistoryEntry) -> Self {
        StreamOptions {
            single_file: false,
            budget: DEFAULT_BUDGET,
            history,
            metadata: Default::default(),
            sidecar_contents: Default::default(),
        }
    }
}

/// What [`stream`] wrote.
#[derive(Debug)]
pub struct Written<R> {
    /// The output path (a file or a directory).
    pub path: PathBuf,
    /// Whether the output is a directory.
    pub is_dir: bool,
    /// Safetensors files written (shard names within the directory, or the file).
    pub files: Vec<String>,
    /// Total bytes of the safetensors files.
    pub bytes: u64,
    /// One report per replaced tensor, in file order.
    pub reports: Vec<(String, R)>,
    /// Sidecar files copied (relative paths).
    pub sidecars: Vec<PathBuf>,
}

struct Item<'a> {
    t: TensorRef<'a>,
    plan: Plan,
    entries: Vec<EntrySpec>,
    cost: usize,
}

struct OutFile<'a> {
    name: String,
    sources: Vec<&'a Checkpoint>,
    items: Vec<Item<'a>>,
}

enum Done<R> {
    Keep(usize),
    Bytes(usize, Vec<Vec<u8>>, R),
}

fn werr(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `out` can take [`stream`]'s output of `src` — not an input, and a directory (absent
/// or empty) for a sharded or directory input unless `single_file`, else a file path — before any
/// work is done. Returns whether the output is a directory. [`stream`] calls it too; passes that
/// compute for a while before streaming call it first, so bad output paths fail fast.
pub fn check_output(src: &Source, out: &Path, single_file: bool) -> Result<bool> {
    src.refuse_output(out)?;
    let as_dir = src.is_multi() && !single_file;
    if as_dir {
        if out.extension().is_some_and(|e| e == "safetensors") {
            return Err(Error::BadOutput {
                path: out.to_path_buf(),
                reason: "the input is a sharded checkpoint or model directory, so the output is a directory".into(),
            });
        }
        check_dir_dest(out).map_err(|_| Error::OutputNotEmpty {
            path: out.to_path_buf(),
        })?;
    } else if out.is_dir() {
        return Err(Error::BadOutput {
            path: out.to_path_buf(),
            reason: "it is a directory; a single-file output needs a file path".into(),
        });
    }
    Ok(as_dir)
}

/// Rewrites `src` to `out` through `t`; see the module docs.
pub fn stream<T: Transform>(
    src: &Source,
    out: &Path,
    opts: &StreamOptions,
    t: &T,
) -> std::result::Result<Written<T::Report>, T::Error> {
    let as_dir = check_output(src, out, opts.single_file)?;
    if !as_dir && !opts.sidecar_contents.is_empty() {
        return Err(Error::BadOutput {
            path: out.to_path_buf(),
            reason:
                "the pass rewrites the model directory's config.json, so the output is a directory"
                    .into(),
        }
        .into());
    }

    // Plan everything first: headers need every entry's size.
    let mut files: Vec<OutFile<'_>> = if as_dir {
        src.shards()
            .iter()
            .map(|s| OutFile {
                name: s.file_name.clone(),
                sources: vec![&s.checkpoint],
                items: Vec::new(),
            })
            .collect()
    } else {
        vec![OutFile {
            name: out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sources: src.shards().iter().map(|s| &s.checkpoint).collect(),
            items: Vec::new(),
        }]
    };
    for name in src.names() {
        let shard = src.shard_index(name).expect("names come from the source");
        let r = TensorRef {
            checkpoint: &src.shards()[shard].checkpoint,
            name,
        };
        let plan = t.plan(&r)?;
        if matches!(plan, Plan::Drop) {
            continue;
        }
        let input = r.stored_bytes()?;
        let entries = match &plan {
            Plan::Keep => r
                .stored()?
                .iter()
                .map(|s| EntrySpec::new(s.name.clone(), s.dtype.clone(), s.shape.clone()))
                .collect(),
            Plan::Replace { entries, .. } | Plan::ReplaceAs { entries, .. } => entries.clone(),
            Plan::Drop => Vec::new(),
        };
        let output: usize = match &plan {
            Plan::Keep | Plan::Drop => 0,
            Plan::Replace { .. } | Plan::ReplaceAs { .. } => {
                entries.iter().map(EntrySpec::byte_len).sum()
            }
        };
        let f = if as_dir { shard } else { 0 };
        files[f].items.push(Item {
            t: r,
            plan,
            entries,
            cost: input + output,
        });
    }

    let mut written = Written {
        path: out.to_path_buf(),
        is_dir: as_dir,
        files: Vec::new(),
        bytes: 0,
        reports: Vec::new(),
        sidecars: Vec::new(),
    };
    let mut done_files = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    for f in &files {
        let (header, data_len) = header_of(f, opts)?;
        for it in &f.items {
            for e in &it.entries {
                weight_map.insert(e.name.clone(), f.name.clone());
            }
        }
        total_size += data_len as u64;
        let mut tmp = if as_dir {
            TmpFile::for_dir_entry(out, &f.name)
        } else {
            TmpFile::for_dest(out)
        }
        .map_err(werr(out))?;
        let len = write_file(
            tmp.file(),
            &header,
            f,
            opts.budget,
            t,
            &mut written.reports,
            out,
        )?;
        written.bytes += len;
        written.files.push(f.name.clone());
        done_files.push((f.name.clone(), tmp));
    }

    if !as_dir {
        let (_, tmp) = done_files.pop().expect("one file");
        tmp.persist(out).map_err(werr(out))?;
        return Ok(written);
    }
    // Publish the directory: shards, index, sidecars.
    let commit = DirCommit::new(out).map_err(werr(out))?;
    for (name, tmp) in done_files {
        tmp.link_as(&commit.path_of(&name)).map_err(werr(out))?;
    }
    if src.index().is_some() || src.shards().len() > 1 {
        let (index_name, mut md) = match src.index() {
            Some(ix) => (
                ix.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| DEFAULT_INDEX.into()),
                ix.metadata.clone(),
            ),
            None => (DEFAULT_INDEX.to_string(), serde_json::Map::new()),
        };
        md.insert("total_size".into(), total_size.into());
        let index = serde_json::json!({ "metadata": md, "weight_map": weight_map });
        let text = serde_json::to_string_pretty(&index).expect("index serialises");
        std::fs::write(commit.path_of(&index_name), text).map_err(werr(out))?;
    }
    if let Some(dir) = src.dir() {
        for rel in src.sidecars()? {
            let to = commit.path_of(&rel);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(werr(out))?;
            }
            match opts.sidecar_contents.get(&rel) {
                Some(bytes) => std::fs::write(&to, bytes).map_err(werr(out))?,
                None => std::fs::copy(dir.join(&rel), &to)
                    .map(|_| ())
                    .map_err(werr(out))?,
            }
            written.sidecars.push(rel);
        }
    }
    for (rel, bytes) in &opts.sidecar_contents {
        if !written.sidecars.contains(rel) {
            let to = commit.path_of(rel);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(werr(out))?;
            }
            std::fs::write(&to, bytes).map_err(werr(out))?;
            written.sidecars.push(rel.clone());
        }
    }
    commit.commit().map_err(werr(out))?;
    Ok(written)
}

/// The safetensors header of one output file, and its data section's length.
fn header_of(f: &OutFile<'_>, opts: &StreamOptions) -> Result<(Vec<u8>, usize)> {
    let mut md = serde_json::Map::new();
    let mut hist = None;
    for ck in &f.sources {
        for (k, v) in ck.metadata() {
            if [meta::FORMAT, meta::ENCODINGS, meta::HISTORY].contains(&k.as_str()) {
                continue;
            }
            md.entry(k.clone()).or_insert_with(|| v.clone().into());
        }
        if hist.is_none() && ck.metadata().contains_key(meta::HISTORY) {
            hist = Some(ck.history()?);
        }
    }
    for (k, v) in &opts.metadata {
        match v {
            Some(v) => md.insert(k.clone(), v.clone().into()),
            None => md.remove(k),
        };
    }
    let mut hist = hist.unwrap_or_default();
    hist.push(opts.history.clone());
    md.insert(meta::FORMAT.into(), meta::FORMAT_VERSION.into());
    md.insert(
        meta::HISTORY.into(),
        serde_json::to_string(&hist).expect("history").into(),
    );
    let mut enc = Encodings::default();
    let mut h = serde_json::Map::new();
    let mut off = 0usize;
    for it in &f.items {
        let (name, e) = match &it.plan {
            Plan::Keep => (it.t.name, it.t.encoding().cloned()),
            Plan::Replace { encoding, .. } => (it.t.name, encoding.clone()),
            Plan::ReplaceAs { name, encoding, .. } => (name.as_str(), encoding.clone()),
            Plan::Drop => (it.t.name, None),
        };
        if let Some(e) = e {
            if enc.get(name).is_some() {
                return Err(Error::BadTensor {
                    name: name.to_string(),
                    reason: "two input tensors are written under this name".into(),
                });
            }
            enc.insert(name.to_string(), e);
        }
        for e in &it.entries {
            let end = off + e.byte_len();
            let prev = h.insert(
                e.name.clone(),
                serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [off, end]}),
            );
            if prev.is_some() || e.name == "__metadata__" {
                return Err(Error::BadTensor {
                    name: e.name.clone(),
                    reason:
                        "stored twice in the output (name clash with an encoded tensor's parts)"
                            .into(),
                });
            }
            off = end;
        }
    }
    if !enc.is_empty() {
        md.insert(meta::ENCODINGS.into(), enc.to_json().into());
    }
    h.insert("__metadata__".into(), md.into());
    let mut bytes = serde_json::to_vec(&serde_json::Value::Object(h)).expect("header");
    while bytes.len() % 8 != 0 {
        bytes.push(b' ');
    }
    Ok((bytes, off))
}

/// Writes one output file: header, then every item's bytes in order. Returns the file's length.
fn write_file<T: Transform>(
    file: &mut std::fs::File,
    header: &[u8],
    f: &OutFile<'_>,
    budget: usize,
    t: &T,
    reports: &mut Reports<T::Report>,
    out: &Path,
) -> std::result::Result<u64, T::Error> {
    for ck in &f.sources {
        ck.advise_sequential();
    }
    // Windows of consecutive items under the budget (at least one item each).
    let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut cost) = (0, 0);
    for (i, it) in f.items.iter().enumerate() {
        if i > start && cost + it.cost > budget {
            windows.push(start..i);
            (start, cost) = (i, 0);
        }
        cost += it.cost;
    }
    if start < f.items.len() {
        windows.push(start..f.items.len());
    }

    let (tx, rx) = sync_channel::<Vec<Done<T::Report>>>(0);
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(u64, Reports<T::Report>)> {
            let mut w = std::io::BufWriter::with_capacity(4 << 20, &mut *file);
            let mut reps = Vec::new();
            let mut len = 8 + header.len() as u64;
            let mut synced = 0u64;
            w.write_all(&(header.len() as u64).to_le_bytes())
                .and_then(|_| w.write_all(header))
                .map_err(werr(out))?;
            for window in rx {
                for d in window {
                    match d {
                        Done::Keep(i) => {
                            let it = &f.items[i];
                            for s in it.t.stored()? {
                                w.write_all(it.t.checkpoint.stored_bytes(s))
                                    .map_err(werr(out))?;
                                len += s.range.len() as u64;
                                it.t.checkpoint.release(s);
                            }
                        }
                        Done::Bytes(i, parts, r) => {
                            for p in &parts {
                                w.write_all(p).map_err(werr(out))?;
                                len += p.len() as u64;
                            }
                            reps.push((f.items[i].t.name.to_string(), r));
                        }
                    }
                }
                // Start writing this window back now, so the final fsync finds little to do.
                w.flush().map_err(werr(out))?;
                start_writeback(w.get_ref(), synced, len);
                synced = len;
            }
            w.flush().map_err(werr(out))?;
            Ok((len, reps))
        });
        let mut failure = None;
        for range in windows {
            let produced: std::result::Result<Vec<Done<T::Report>>, T::Error> = range
                .into_par_iter()
                .map(|i| {
                    let it = &f.items[i];
                    match &it.plan {
                        Plan::Keep | Plan::Drop => Ok(Done::Keep(i)),
                        Plan::Replace { .. } | Plan::ReplaceAs { .. } => {
                            let (parts, r) = t.produce(&it.t, &it.entries)?;
                            check_sizes(&it.entries, &parts)?;
                            for s in it.t.stored()? {
                                it.t.checkpoint.release(s);
                            }
                            Ok(Done::Bytes(i, parts, r))
                        }
                    }
                })
                .collect();
            match produced {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let res = writer.join().expect("writer thread does not panic");
        if let Some(e) = failure {
            return Err(e);
        }
        let (len, reps) = res?;
        reports.extend(reps);
        Ok(len)
    })
}

/// Asks the kernel to start writing `file[from..to]` to disk without waiting (Linux); a no-op
/// elsewhere. Overlaps the output's disk I/O with computing the next window.
fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        if to > from {
            // SAFETY: a plain syscall on an open descriptor; errors are ignored (advisory).
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    from as libc::off64_t,
                    (to - from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

fn check_sizes(entries: &[EntrySpec], parts: &[Vec<u8>]) -> Result<()> {
    if entries.len() != parts.len() {
        return Err(Error::BadTensor {
            name: entries.first().map(|e| e.name.clone()).unwrap_or_default(),
            reason: format!(
                "{} parts produced for {} planned",
                parts.len(),
                entries.len()
            ),
        });
    }
    for (e, p) in entries.iter().zip(parts) {
        if e.byte_len() != p.len() {
            return Err(Error::BadTensor {
                name: e.name.clone(),
                reason: format!("{} bytes produced, {} planned", p.len(), e.byte_len()),
            });
        }
    }
    Ok(())
}

/// Decodes every encoded tensor (int8, sparse) back to a dense float tensor of its original type,
/// or of `to` when set: what `joulecut decompress` does. Non-float tensors are kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decode {
    /// Write every float tensor as this type instead of its original one.
    pub to: Option<FloatType>,
}

impl Transform for Decode {
    type Error = Error;
    type Report = ();

    fn plan(&self, t: &TensorRef<'_>) -> Result<Plan> {
        let Some(orig) = t.float_type() else {
            return Ok(Plan::Keep);
        };
        let target = self.to.unwrap_or(orig);
        if t.encoding().is_none() && t.stored_dtype() == Some(target.to_string().as_str()) {
            return Ok(Plan::Keep);
        }
        Ok(Plan::Replace {
            entries: vec![EntrySpec::new(t.name, target.to_string(), t.shape()?)],
            encoding: None,
        })
    }

    fn produce(&self, t: &TensorRef<'_>, entries: &[EntrySpec]) -> Result<(Vec<Vec<u8>>, ())> {
        let v = t.checkpoint.values(t.name)?;
        let target = crate::read::float_type(&entries[0].dtype).expect("planned a float type");
        let mut out = vec![0u8; v.len() * target.size()];
        const CHUNK: usize = 1 << 16;
        out.par_chunks_mut(CHUNK * target.size())
            .enumerate()
            .for_each(|(k, dst)| {
                let mut buf = vec![0f32; dst.len() / target.size()];
                v.read(k * CHUNK, &mut buf);
                target.encode_into(&buf, dst);
            });
        Ok((vec![out], ()))
    }
}
