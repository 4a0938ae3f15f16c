//! Model inputs in every layout users bring: one `.safetensors` file, a sharded checkpoint given by
//! its `model.safetensors.index.json`, or a Hugging Face model directory (shards or one file, plus
//! sidecar files such as `config.json` and `tokenizer.json`).
//!
//! Everything is validated when opened: every shard's header (see [`Checkpoint::open`]), the index
//! against the shards (each listed tensor stored in the shard the index names, no tensor stored in
//! two shards, no shard outside the directory).
//!
//! ```no_run
//! # fn main() -> joulecut_checkpoint::Result<()> {
//! let src = joulecut_checkpoint::Source::open("bert-base/")?;
//! for name in src.names() {
//!     let ck = src.shard_of(name);
//!     println!("{name}: {:?}", ck.get(name)?.shape());
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::read::{Checkpoint, StoredInfo};
use crate::{Error, Result};

/// File name of a single-file Hugging Face checkpoint's index, the usual one.
pub const DEFAULT_INDEX: &str = "model.safetensors.index.json";

/// Weight formats other than safetensors: not copied as sidecars (they would carry the original,
/// uncompressed weights into the compressed model directory).
const OTHER_WEIGHTS: &[&str] = &[
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
    ".safetensors",
    ".ot",
];

/// The energy card of a model directory (`energy.json`, `CARD.md` at its top level): never
/// copied as sidecars into a model made from it.
pub const CARD_FILES: &[&str] = &["energy.json", "CARD.md"];

/// One shard of a [`Source`].
#[derive(Debug)]
pub struct Shard {
    /// File name inside the model directory (the whole path for a single-file input).
    pub file_name: String,
    /// The open shard.
    pub checkpoint: Checkpoint,
}

/// A parsed `*.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct Index {
    /// The index file.
    pub path: PathBuf,
    /// Its `metadata` object (e.g. `total_size`), kept in the output's index.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// An opened model: one or more shards, maybe an index and sidecar files.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    dir: Option<PathBuf>,
    is_dir: bool,
    index: Option<Index>,
    shards: Vec<Shard>,
    owner: HashMap<String, usize>,
    names: Vec<String>,
}

fn bad_index(path: &Path, reason: String) -> Error {
    Error::BadIndex {
        path: path.to_path_buf(),
        reason,
    }
}

fn read_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let e = e.map_err(read_err(dir))?;
        v.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    v.sort();
    Ok(v)
}

impl Source {
    /// Opens a `.safetensors` file, an index file or a model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Source> {
        let path = path.as_ref().to_path_buf();
        if path.is_dir() {
            return Self::open_dir(path);
        }
        if path.extension().is_some_and(|e| e == "json") {
            let dir = crate::atomic::parent_dir(&path).to_path_buf();
            return Self::open_index(path.clone(), dir, false, path);
        }
        let ck = Checkpoint::open(&path)?;
        Self::assemble(
            path.clone(),
            None,
            false,
            None,
            vec![Shard {
                file_name: path.to_string_lossy().into_owned(),
                checkpoint: ck,
            }],
        )
    }

    fn open_dir(dir: PathBuf) -> Result<Source> {
        let entries = sorted_entries(&dir)?;
        let indexes: Vec<&(String, PathBuf)> = entries
            .iter()
            .filter(|(n, p)| n.ends_with(".safetensors.index.json") && p.is_file())
            .collect();
        let index = match indexes.as_slice() {
            [] => None,
            [one] => Some(one.1.clone()),
            many => match many.iter().find(|(n, _)| n == DEFAULT_INDEX) {
                Some(d) => Some(d.1.clone()),
                None => {
                    return Err(bad_index(
                        &dir,
                        format!("{} index files and none is {DEFAULT_INDEX}", many.len()),
                    ));
                }
            },
        };
        if let Some(ix) = index {
            return Self::open_index(ix, dir.clone(), true, dir);
        }
        let files: Vec<&(String, PathBuf)> = entries
            .iter()
            .filter(|(n, p)| n.ends_with(".safetensors") && !n.starts_with('.') && p.is_file())
            .collect();
        if files.is_empty() {
            return Err(bad_index(
                &dir,
                "the directory holds no .safetensors file".into(),
            ));
        }
        let shards = files
            .iter()
            .map(|(n, p)| {
                Ok(Shard {
                    file_name: n.clone(),
                    checkpoint: Checkpoint::open(p)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::assemble(dir.clone(), Some(dir), true, None, shards)
    }

    fn open_index(ix: PathBuf, dir: PathBuf, is_dir: bool, path: PathBuf) -> Result<Source> {
        if let Some(kind) = crate::input::not_regular(&ix) {
            return Err(bad_index(&ix, format!("it is {kind}, not a regular file")));
        }
        let text = std::fs::read(&ix).map_err(read_err(&ix))?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| bad_index(&ix, format!("the index is not JSON ({e})")))?;
        let metadata = match v.get("metadata") {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(_) => return Err(bad_index(&ix, "`metadata` is not an object".into())),
        };
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad_index(&ix, "no `weight_map` object".into()))?;
        // Shards in name order; the weight map must name a file inside the directory.
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                bad_index(
                    &ix,
                    format!("weight_map entry `{tensor}` is not a file name"),
                )
            })?;
            if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.')
            {
                return Err(bad_index(
                    &ix,
                    format!(
                        "tensor `{tensor}` points at `{file}`, which is not a file in the index's directory"
                    ),
                ));
            }
            by_file
                .entry(file.to_string())
                .or_default()
                .push(tensor.clone());
        }
        if by_file.is_empty() {
            return Err(bad_index(&ix, "the weight_map is empty".into()));
        }
        let mut shards = Vec::new();
        for (file, tensors) in &by_file {
            let p = dir.join(file);
            if !p.is_file() {
                let what = crate::input::not_regular(&p).unwrap_or("missing: it does not exist");
                return Err(bad_index(
                    &ix,
                    format!(
                        "shard `{file}` (listed for tensor `{}`) is {what}",
                        tensors[0]
                    ),
                ));
            }
            let ck = Checkpoint::open(&p)?;
            for t in tensors {
                if ck.stored_info(t).is_err() {
                    return Err(bad_index(
                        &ix,
                        format!("tensor `{t}` is listed in shard `{file}` but not stored there"),
                    ));
                }
            }
            for s in ck.stored() {
                match map.get(&s.name).and_then(|f| f.as_str()) {
                    Some(f) if f == file => {}
                    Some(f) => {
                        return Err(bad_index(
                            &ix,
                            format!("tensor `{}` is stored in shards `{file}` and `{f}`", s.name),
                        ));
                    }
                    None => {
                        return Err(bad_index(
                            &ix,
                            format!(
                                "tensor `{}` is stored in shard `{file}` but missing from the weight_map",
                                s.name
                            ),
                        ));
                    }
                }
            }
            shards.push(Shard {
                file_name: file.clone(),
                checkpoint: ck,
            });
        }
        Self::assemble(
            path,
            Some(dir),
            is_dir,
            Some(Index { path: ix, metadata }),
            shards,
        )
    }

    fn assemble(
        path: PathBuf,
        dir: Option<PathBuf>,
        is_dir: bool,
        index: Option<Index>,
        shards: Vec<Shard>,
    ) -> Result<Source> {
        let mut owner = HashMap::new();
        let mut names = Vec::new();
        let mut stored_owner: HashMap<&str, usize> = HashMap::new();
        for (i, s) in shards.iter().enumerate() {
            for st in s.checkpoint.stored() {
                if let Some(&j) = stored_owner.get(st.name.as_str()) {
                    return Err(bad_index(
                        dir.as_deref().unwrap_or(&path),
                        format!(
                            "tensor `{}` is stored in shards `{}` and `{}`",
                            st.name, shards[j].file_name, s.file_name
                        ),
                    ));
                }
                stored_owner.insert(&st.name, i);
            }
            for n in s.checkpoint.names() {
                owner.insert(n.clone(), i);
                names.push(n.clone());
            }
        }
        Ok(Source {
            path,
            dir,
            is_dir,
            index,
            shards,
            owner,
            names,
        })
    }

    /// The path the source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model directory (for index and directory inputs).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the input was given as a directory (sidecar files travel with it).
    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Whether the model is stored as a sharded set (an index, several files, or a directory).
    pub fn is_multi(&self) -> bool {
        self.dir.is_some()
    }

    /// The index, when there is one.
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// The shards, in file-name order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Logical tensor names, shard by shard in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Index of the shard holding a logical tensor.
    pub fn shard_index(&self, name: &str) -> Option<usize> {
        self.owner.get(name).copied()
    }

    /// The checkpoint holding a logical tensor (panics on a name not from [`Source::names`]; use
    /// [`Source::find`] for user-given names).
    pub fn shard_of(&self, name: &str) -> &Checkpoint {
        &self.shards[self.owner[name]].checkpoint
    }

    /// The checkpoint holding a logical tensor, or [`Error::MissingTensor`].
    pub fn find(&self, name: &str) -> Result<&Checkpoint> {
        self.owner
            .get(name)
            .map(|&i| &self.shards[i].checkpoint)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
            })
    }

    /// The tensors that are not float tensors (token ids, masks: I64, U8, BOOL, ...), stored dense
    /// and unencoded, in [`Source::names`] order. No pass changes them; commands copy them byte for
    /// byte and report them as kept.
    pub fn non_float(&self) -> Vec<&StoredInfo> {
        self.names
            .iter()
            .filter_map(|n| {
                let t = crate::stream::TensorRef {
                    checkpoint: self.shard_of(n),
                    name: n,
                };
                match t.float_type() {
                    None => t.checkpoint.stored_info(n).ok(),
                    Some(_) => None,
                }
            })
            .collect()
    }

    /// Every input file (shards and index): outputs may be none of these.
    pub fn input_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.shards.iter().map(|s| s.checkpoint.path()).collect();
        if let Some(ix) = &self.index {
            v.push(&ix.path);
        }
        v
    }

    /// Total bytes of the shards on disk.
    pub fn file_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.checkpoint.file_bytes()).sum()
    }

    /// Refuses an output path that is an input file, the input directory, or inside it.
    pub fn refuse_output(&self, out: &Path) -> Result<()> {
        crate::write::refuse_input(out, &self.input_files())?;
        if let Some(dir) = &self.dir {
            let canon_dir = std::fs::canonicalize(dir).map_err(read_err(dir))?;
            // The output may not exist yet: canonicalise its parent and re-append its name.
            let canon_out = std::fs::canonicalize(out).ok().or_else(|| {
                let parent = std::fs::canonicalize(crate::atomic::parent_dir(out)).ok()?;
                Some(parent.join(out.file_name()?))
            });
            if let Some(o) = canon_out {
                if o == canon_dir {
                    return Err(Error::OutputIsInput {
                        path: out.to_path_buf(),
                    });
                }
                if o.starts_with(&canon_dir) {
                    return Err(Error::OutputInsideInput {
                        path: out.to_path_buf(),
                        dir: dir.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sidecar files of a directory input (relative paths, recursively): everything except the
    /// shards, the index, hidden entries, other weight formats and the input's own energy card
    /// ([`CARD_FILES`]: it describes the input, not what is made from it). Empty for other inputs.
    pub fn sidecars(&self) -> Result<Vec<PathBuf>> {
        let (true, Some(dir)) = (self.is_dir, &self.dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for (name, p) in sorted_entries(&dir.join(&rel))? {
                if name.starts_with('.') {
                    continue;
                }
                // the input's own energy card describes the input, not what is made from it
                let card = rel.as_os_str().is_empty() && CARD_FILES.contains(&name.as_str());
                let r = rel.join(&name);
                if p.is_dir() {
                    stack.push(r);
                } else if p.is_file()
                    && !card
                    && !name.ends_with(".safetensors.index.json")
                    && !OTHER_WEIGHTS.iter().any(|x| name.ends_with(x))
                {
                    out.push(r);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
