//! A candle `VarBuilder` over a joulecut checkpoint (one `model.safetensors`, or the shards of a
//! `model.safetensors.index.json`): each tensor is decoded to f32 from whatever encoding it is
//! stored in (dense F32/F16/BF16, int8, sparse) when the model asks for it, so tensors the encoder
//! never uses (pooler, MLM head, an I64 `position_ids` buffer) are never touched.
//!
//! candle's loader errors say little about which tensor failed; the backend records the first
//! problem as a typed [`Error`] naming the tensor, and [`Weights::take_problem`] hands it out.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use joulecut_checkpoint::Checkpoint;

use crate::error::{Error, Result};

/// File name of a single-file checkpoint in a Hugging Face model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The weights of one model directory, opened (mmap'd) but not decoded.
#[derive(Debug, Clone)]
pub struct Weights {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What errors name: the weights file or the index.
    path: PathBuf,
    shards: Vec<Checkpoint>,
    /// Logical tensor name → shard.
    by_name: HashMap<String, usize>,
    problem: Mutex<Option<Error>>,
}

impl Weights {
    /// Opens `model.safetensors` in `dir`, or the shards listed by `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(WEIGHTS_FILE);
        if single.is_file() {
            return Self::from_shards(single.clone(), vec![Checkpoint::open(&single)?]);
        }
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let instead = ["pytorch_model.bin", "model.pt", "tf_model.h5", "model.onnx"]
            .into_iter()
            .find(|f| dir.join(f).exists())
            .map(String::from);
        Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            file: WEIGHTS_FILE,
            instead,
        })
    }

    /// Opens the shards a `model.safetensors.index.json` names (its `weight_map` values).
    pub fn open_index(index: &Path) -> Result<Self> {
        let text =
            joulecut_checkpoint::input::read_to_string(index).map_err(|source| Error::Read {
                path: index.to_path_buf(),
                source,
            })?;
        let bad = |reason: String| Error::BadConfig {
            path: index.to_path_buf(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        if files.is_empty() {
            return Err(bad("`weight_map` lists no shard".into()));
        }
        let base = index.parent().unwrap_or(Path::new("."));
        let shards = files
            .into_iter()
            .map(|f| Checkpoint::open(base.join(f)).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        Self::from_shards(index.to_path_buf(), shards)
    }

    fn from_shards(path: PathBuf, shards: Vec<Checkpoint>) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (i, ck) in shards.iter().enumerate() {
            for n in ck.names() {
                by_name.insert(n.clone(), i);
            }
        }
        Ok(Weights {
            inner: Arc::new(Inner {
                path,
                shards,
                by_name,
                problem: Mutex::new(None),
            }),
        })
    }

    /// The weights file (or index) errors name.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Logical tensor names (in no particular order).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.by_name.keys().map(String::as_str)
    }

    /// A logical tensor's shape, read from the header (nothing decoded); `None` when absent.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let ck = &self.inner.shards[*self.inner.by_name.get(name)?];
        joulecut_checkpoint::TensorRef {
            checkpoint: ck,
            name,
        }
        .shape()
        .ok()
    }

    /// Whether a logical tensor is present (a LayerNorm's `weight`/`bias` also under its
    /// `gamma`/`beta` spelling).
    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    /// Total bytes of the weight files on disk.
    pub fn file_bytes(&self) -> u64 {
        self.inner.shards.iter().map(Checkpoint::file_bytes).sum()
    }

    /// One tensor as stored (any encoding), under its name or its `gamma`/`beta` spelling.
    pub fn stored(&self, name: &str) -> Result<joulecut_checkpoint::TensorData> {
        let stored = self.resolve(name).ok_or_else(|| Error::MissingTensor {
            name: name.into(),
            path: self.inner.path.clone(),
        })?;
        Ok(self.inner.shards[self.inner.by_name[stored]].get(stored)?)
    }

    /// The first (or only) file, whose metadata speaks for the model.
    pub(crate) fn first_shard(&self) -> &Checkpoint {
        &self.inner.shards[0]
    }

    /// Decodes one tensor to f32 on `device`, checking its shape.
    pub fn tensor(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor> {
        let stored = self.resolve(name).ok_or_else(|| Error::MissingTensor {
            name: name.into(),
            path: self.inner.path.clone(),
        })?;
        let ck = &self.inner.shards[self.inner.by_name[stored]];
        let (shape, values) = ck.get_f32(stored)?;
        if shape != expected {
            return Err(Error::WrongShape {
                name: stored.into(),
                path: self.inner.path.clone(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Tensor::from_vec(values, shape, device).map_err(Error::candle(format!("load `{name}`")))
    }

    /// The stored name for `name`: itself, or the TF-era `gamma`/`beta` spelling of a LayerNorm's
    /// `weight`/`bias` (Hugging Face renames these on load too).
    fn resolve<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.inner.by_name.contains_key(name) {
            return Some(name);
        }
        let alt = if let Some(p) = name.strip_suffix("LayerNorm.weight") {
            format!("{p}LayerNorm.gamma")
        } else if let Some(p) = name.strip_suffix("LayerNorm.bias") {
            format!("{p}LayerNorm.beta")
        } else {
            return None;
        };
        self.inner
            .by_name
            .get_key_value(alt.as_str())
            .map(|(k, _)| k.as_str())
    }

    /// A `VarBuilder` that decodes from these weights (f32).
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// The first problem a `VarBuilder` from [`Weights::var_builder`] met, if any (cleared).
    pub fn take_problem(&self) -> Option<Error> {
        self.inner
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn record(&self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        let mut slot = self.inner.problem.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        candle_core::Error::Msg(msg)
    }
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self
            .tensor(name, s.dims(), dev)
            .map_err(|e| self.record(e))?;
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let stored = self.resolve(name).map(str::to_string);
        let shape = match stored.as_deref() {
            Some(n) => self.inner.shards[self.inner.by_name[n]]
                .get(n)
                .map(|t| t.shape().to_vec())
                .map_err(|e| self.record(e.into()))?,
            None => {
                return Err(self.record(Error::MissingTensor {
                    name: name.into(),
                    path: self.inner.path.clone(),
                }));
            }
        };
        self.get(shape.into(), name, candle_nn::Init::Const(0.), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }
}
