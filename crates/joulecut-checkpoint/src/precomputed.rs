//! [`Precomputed`]: the [`Transform`] of a pass that computes its new tensors in memory (pruning,
//! compaction) and writes them through [`stream`](crate::stream::stream), so its output gets every layout the
//! streaming passes have — one file, or a model directory with the input's shards, index and
//! sidecar files — atomically, with every other tensor (token ids included) copied byte for byte.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use joulecut_checkpoint::{DenseTensor, HistoryEntry, Precomputed, Source, StreamOptions, TensorData, stream};
//! # fn main() -> joulecut_checkpoint::Result<()> {
//! let src = Source::open("bert-base/")?;
//! let (shape, mut w) = src.shard_of("encoder.layer.0.output.dense.weight")
//!     .get_f32("encoder.layer.0.output.dense.weight")?;
//! w.iter_mut().filter(|x| x.abs() < 1e-3).for_each(|x| *x = 0.0);
//! let mut changed = BTreeMap::new();
//! changed.insert(
//!     "encoder.layer.0.output.dense.weight".to_string(),
//!     TensorData::Dense(DenseTensor::from_f32(shape, &w)),
//! );
//! let opts = StreamOptions::new(HistoryEntry::new("prune", serde_json::json!({})));
//! stream(&src, "bert-pruned".as_ref(), &opts, &Precomputed::new(changed)?)?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::encoding::TensorEncoding;
use crate::stream::{EntrySpec, Plan, Produced, TensorRef, Transform};
use crate::tensor::TensorData;
use crate::write::encode_tensor;
use crate::{Error, Result};

/// One tensor's stored entries, encoded up front.
struct Encoded {
    entries: Vec<EntrySpec>,
    encoding: Option<TensorEncoding>,
    bytes: Option<Vec<Vec<u8>>>,
}

/// Replaces the named tensors by the given data; keeps every other tensor as stored.
pub struct Precomputed {
    tensors: Mutex<BTreeMap<String, Encoded>>,
    dropped: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Precomputed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.tensors.lock().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("Precomputed").field("tensors", &n).finish()
    }
}

impl Precomputed {
    /// Encodes the replacement tensors (by logical name) into their stored entries.
    pub fn new(tensors: BTreeMap<String, TensorData>) -> Result<Self> {
        let mut out = BTreeMap::new();
        for (name, data) in tensors {
            let (parts, encoding) = encode_tensor(&name, &data)?;
            drop(data);
            let mut entries = Vec::with_capacity(parts.len());
            let mut bytes = Vec::with_capacity(parts.len());
            for (n, dtype, shape, b) in parts {
                entries.push(EntrySpec::new(n, dtype, shape));
                bytes.push(b);
            }
            out.insert(
                name,
                Encoded {
                    entries,
                    encoding,
                    bytes: Some(bytes),
                },
            );
        }
        Ok(Precomputed {
            tensors: Mutex::new(out),
            dropped: Default::default(),
        })
    }

    /// Also leaves these tensors (logical names) out of the output.
    pub fn dropping(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.dropped.extend(names);
        self
    }
}

impl Transform for Precomputed {
    type Error = Error;
    type Report = ();

    fn plan(&self, t: &TensorRef<'_>) -> Result<Plan> {
        if self.dropped.contains(t.name) {
            return Ok(Plan::Drop);
        }
        let map = self.tensors.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match map.get(t.name) {
            None => Plan::Keep,
            Some(e) => Plan::Replace {
                entries: e.entries.clone(),
                encoding: e.encoding.clone(),
            },
        })
    }

    fn produce(&self, t: &TensorRef<'_>, _entries: &[EntrySpec]) -> Result<Produced<()>> {
        let mut map = self.tensors.lock().unwrap_or_else(|p| p.into_inner());
        // Handed over, not copied: each tensor is produced once.
        let bytes = map
            .get_mut(t.name)
            .and_then(|e| e.bytes.take())
            .ok_or_else(|| Error::BadTensor {
                name: t.name.to_string(),
                reason: "produced twice, or never planned".into(),
            })?;
        Ok((bytes, ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Checkpoint, CheckpointWriter, DenseTensor, HistoryEntry, Source, StreamOptions};

    #[test]
    fn replaces_the_given_tensors_and_copies_the_rest_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.safetensors");
        let mut w = CheckpointWriter::new();
        w.insert(
            "a.weight",
            TensorData::Dense(DenseTensor::from_f32(vec![2, 2], &[1., 2., 3., 4.])),
        );
        w.insert(
            "b.weight",
            TensorData::Dense(DenseTensor::from_f32(vec![2], &[5., 6.])),
        );
        w.write(&input, &[]).unwrap();
        let src = Source::open(&input).unwrap();
        let mut changed = BTreeMap::new();
        changed.insert(
            "a.weight".to_string(),
            TensorData::Dense(DenseTensor::from_f32(vec![2, 2], &[0., 2., 0., 4.])),
        );
        let out = dir.path().join("out.safetensors");
        let opts = StreamOptions::new(HistoryEntry::new("test", serde_json::json!({})));
        crate::stream(&src, &out, &opts, &Precomputed::new(changed).unwrap()).unwrap();
        let ck = Checkpoint::open(&out).unwrap();
        assert_eq!(ck.get_f32("a.weight").unwrap().1, [0., 2., 0., 4.]);
        let orig = Checkpoint::open(&input).unwrap();
        let b = |c: &Checkpoint| c.stored_bytes(c.stored_info("b.weight").unwrap()).to_vec();
        assert_eq!(b(&ck), b(&orig));
        assert_eq!(ck.history().unwrap()[0].command, "test");
        // rewritten sidecar files need a directory output
        let mut opts = opts.clone();
        opts.sidecar_contents
            .insert("config.json".into(), b"{}".to_vec());
        let out2 = dir.path().join("out2.safetensors");
        let e = crate::stream(
            &src,
            &out2,
            &opts,
            &Precomputed::new(BTreeMap::new()).unwrap(),
        )
        .unwrap_err();
        assert!(matches!(e, crate::Error::BadOutput { .. }), "{e}");
        assert!(!out2.exists());
    }
}
