//! Teacher logits computed once over the training set, kept in memory and optionally on disk as a
//! safetensors file, so each distillation step costs a gather instead of a teacher forward pass.
//!
//! The file holds one F32 tensor `logits` `[samples, classes]` and, in `__metadata__`,
//! `joulecut.kind = teacher-logits`, the teacher's and the data's fingerprints, and the shape.
//! [`TeacherLogits::load`] refuses a file made for another teacher or dataset.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Module, Tensor};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Error, Result};

/// A labelled training set as distillation sees it: `len * dim` row-major f32 inputs and one
/// label per sample. `joulecut_harness::data::Dataset` implements it; [`Samples`] wraps plain
/// slices.
pub trait TrainingSet {
    /// `len * dim` inputs, row-major, already normalised the way the models expect.
    fn inputs(&self) -> &[f32];
    /// One class index per sample.
    fn labels(&self) -> &[u32];
    /// Features per sample.
    fn dim(&self) -> usize;
    /// Number of classes.
    fn classes(&self) -> usize;
}

/// Borrowed slices as a [`TrainingSet`].
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// `labels.len() * dim` row-major inputs.
    pub inputs: &'a [f32],
    /// One class index per sample.
    pub labels: &'a [u32],
    /// Features per sample.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

impl TrainingSet for Samples<'_> {
    fn inputs(&self) -> &[f32] {
        self.inputs
    }
    fn labels(&self) -> &[u32] {
        self.labels
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn classes(&self) -> usize {
        self.classes
    }
}

/// The teacher's logits for every training sample, row `i` for sample `i`.
#[derive(Debug, Clone)]
pub struct TeacherLogits {
    logits: Tensor,
    teacher: String,
    data: String,
}

const KIND: &str = "teacher-logits";

/// A 64-bit FNV-1a-style fingerprint of f32 and u32 words, as 16 hex digits.
pub fn fingerprint_words(words: impl IntoIterator<Item = u32>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        h ^= u64::from(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The fingerprint of a dataset: its shape, labels and pixels.
pub fn dataset_fingerprint(d: &(impl TrainingSet + ?Sized)) -> String {
    let head = [d.labels().len() as u32, d.dim() as u32, d.classes() as u32];
    fingerprint_words(
        head.into_iter()
            .chain(d.labels().iter().copied())
            .chain(d.inputs().iter().map(|v| v.to_bits())),
    )
}

/// The fingerprint of a file's bytes (e.g. the teacher checkpoint).
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

/// The id of an ensemble teacher, for caches of averaged logits: the teacher's own id for one
/// teacher, `mean(ID1+ID2+...)` for several (in the order given: the mean is the same in any
/// order, but the id, and so a saved cache, is tied to the order).
pub fn ensemble_id(ids: &[String]) -> String {
    match ids {
        [one] => one.clone(),
        _ => format!("mean({})", ids.join("+")),
    }
}

impl TeacherLogits {
    /// Runs `teacher` (any candle forward) over `data` in batches of `batch_size` without
    /// gradients. `teacher_id` names the teacher (e.g. [`file_fingerprint`] of its checkpoint) so
    /// a saved cache can be checked.
    pub fn compute(
        teacher: &(impl Module + ?Sized),
        data: &(impl TrainingSet + ?Sized),
        batch_size: usize,
        teacher_id: impl Into<String>,
        device: &Device,
    ) -> Result<Self> {
        Self::compute_observed(
            teacher,
            data,
            batch_size,
            teacher_id,
            device,
            &mut |_, _| {},
        )
    }

    /// [`TeacherLogits::compute`], calling `progress(samples done, samples)` after each batch.
    pub fn compute_observed(
        teacher: &(impl Module + ?Sized),
        data: &(impl TrainingSet + ?Sized),
        batch_size: usize,
        teacher_id: impl Into<String>,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::BadSetting("batch size must be at least 1".into()));
        }
        let n = data.labels().len();
        if data.inputs().len() != n * data.dim() {
            return Err(Error::BadSetting(format!(
                "the training set has {} inputs for {n} samples of {} features",
                data.inputs().len(),
                data.dim()
            )));
        }
        let xs = Tensor::from_slice(data.inputs(), (n, data.dim()), device)
            .map_err(Error::candle("copy inputs to device"))?;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = batch_size.min(n - start);
            let x = xs
                .narrow(0, start, len)
                .map_err(Error::candle("slice batch"))?;
            let y = teacher
                .forward(&x)
                .map_err(Error::candle("teacher forward pass"))?;
            parts.push(y.detach());
            start += len;
            progress(start, n);
        }
        let logits = Tensor::cat(&parts, 0).map_err(Error::candle("gather teacher logits"))?;
        Ok(TeacherLogits {
            logits,
            teacher: teacher_id.into(),
            data: dataset_fingerprint(data),
        })
    }

    /// The element-wise mean of several teachers' logits over the same training set: an ensemble
    /// teacher whose soft targets come from the averaged logits. The parts must share the shape
    /// and the data fingerprint; the result's teacher id is [`ensemble_id`] of theirs. One part
    /// is returned unchanged.
    pub fn mean(parts: Vec<TeacherLogits>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::BadSetting("no teacher logits to average".into()));
        };
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let (dims, data) = (first.logits.dims().to_vec(), first.data.clone());
        for (i, p) in parts.iter().enumerate().skip(1) {
            if p.logits.dims()[1] != dims[1] {
                return Err(Error::BadSetting(format!(
                    "teachers disagree on the output width: teacher 1 ({}) has {} classes, teacher {} ({}) has {}",
                    first.teacher,
                    dims[1],
                    i + 1,
                    p.teacher,
                    p.classes()
                )));
            }
            if p.logits.dims() != dims.as_slice() || p.data != data {
                return Err(Error::BadSetting(format!(
                    "teacher logits {} and {} were computed on different training sets",
                    first.teacher, p.teacher
                )));
            }
        }
        let mut sum = first.logits.clone();
        for p in &parts[1..] {
            sum = (sum + &p.logits).map_err(Error::candle("average teacher logits"))?;
        }
        let logits = (sum / parts.len() as f64).map_err(Error::candle("average teacher logits"))?;
        let ids: Vec<String> = parts.iter().map(|p| p.teacher.clone()).collect();
        Ok(TeacherLogits {
            logits,
            teacher: ensemble_id(&ids),
            data,
        })
    }

    /// Wraps precomputed logits `[samples, classes]`.
    pub fn from_tensor(
        logits: Tensor,
        teacher_id: impl Into<String>,
        data_fingerprint: impl Into<String>,
    ) -> Result<Self> {
        if logits.rank() != 2 {
            return Err(Error::BadSetting(format!(
                "teacher logits must be [samples, classes], got {:?}",
                logits.dims()
            )));
        }
        Ok(TeacherLogits {
            logits: logits.detach(),
            teacher: teacher_id.into(),
            data: data_fingerprint.into(),
        })
    }

    /// All logits `[samples, classes]`.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.logits.dims()[0]
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.logits.dims()[1]
    }

    /// The teacher fingerprint this cache was made with.
    pub fn teacher_id(&self) -> &str {
        &self.teacher
    }

    /// The logits of the samples at `indices` (positions in the training set), `[len, classes]`.
    pub fn gather(&self, indices: &[u32]) -> candle_core::Result<Tensor> {
        if let Some(&i) = indices.iter().find(|&&i| i as usize >= self.len()) {
            candle_core::bail!(
                "sample index {i} is outside the cached teacher logits ({} samples)",
                self.len()
            );
        }
        let idx = Tensor::from_slice(indices, indices.len(), self.logits.device())?;
        self.logits.index_select(&idx, 0)
    }

    /// Writes the cache atomically (a temporary file renamed over `path`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let vals = self
            .logits
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(Error::candle("read teacher logits"))?;
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            TensorView::new(Dtype::F32, self.logits.dims().to_vec(), &bytes).map_err(|e| {
                Error::BadCache {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        let meta: HashMap<String, String> = [
            ("joulecut.kind", KIND.to_string()),
            ("joulecut.teacher", self.teacher.clone()),
            ("joulecut.data", self.data.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(vec![("logits", view)], Some(meta), &tmp).map_err(|e| {
            Error::Io {
                action: "write",
                path: tmp.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a cache and checks it was made by `teacher_id` on `data`.
    pub fn load(
        path: &Path,
        teacher_id: &str,
        data: &(impl TrainingSet + ?Sized),
        device: &Device,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| Error::BadCache {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("joulecut.kind").map(String::as_str) != Some(KIND) {
            return Err(bad("not a joulecut teacher-logits file".into()));
        }
        let stale = |reason: String| Error::StaleCache {
            path: path.to_path_buf(),
            reason,
        };
        if meta.get("joulecut.teacher").map(String::as_str) != Some(teacher_id) {
            return Err(stale("it was computed with a different teacher".into()));
        }
        let data_id = dataset_fingerprint(data);
        if meta.get("joulecut.data") != Some(&data_id) {
            return Err(stale("it was computed on a different training set".into()));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let v = st.tensor("logits").map_err(|e| bad(e.to_string()))?;
        let shape = v.shape().to_vec();
        let n = data.labels().len();
        if v.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != n {
            return Err(stale(format!(
                "expected F32 logits [{n}, classes], found {:?} {:?}",
                v.dtype(),
                shape
            )));
        }
        let vals: Vec<f32> = v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let logits =
            Tensor::from_vec(vals, shape, device).map_err(Error::candle("build teacher logits"))?;
        Ok(TeacherLogits {
            logits,
            teacher: teacher_id.to_string(),
            data: data_id,
        })
    }
}
