//! The teacher's outputs over a corpus, computed once (joulecut's f32 kernels, unpadded) and kept
//! in memory and optionally on disk, so a recovery epoch never runs the teacher.
//!
//! Per sentence: its tokens, its pooled embedding (f32) and, for each mapped teacher layer, every
//! token's hidden state (f16: half the bytes, and the hidden-state loss does not need more). The
//! file is a safetensors file (`ids`, `type_ids`, `lengths` U32; `pooled` F32; `hidden.L` F16)
//! whose `__metadata__` names the teacher, the corpus and the layers; [`TeacherTargets::load`]
//! refuses a file made for another teacher or corpus, or without a layer now asked for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::f16;
use joulecut_embed::SentenceEncoder;
use joulecut_models::bert::{TokenBatch, Workspace, mean_pool};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{Error, Result};

const KIND: &str = "teacher-embeddings";
/// Sentences per teacher forward pass.
const BATCH: usize = 64;

/// The teacher's outputs for every corpus sentence (see the module docs).
#[derive(Debug, Clone)]
pub struct TeacherTargets {
    /// The corpus tokens, sentence by sentence.
    pub tokens: TokenBatch,
    /// First token of each sentence.
    offsets: Vec<usize>,
    /// `[sentences, hidden]`.
    pooled: Vec<f32>,
    /// Teacher layer (0 = embeddings, `l` = output of layer `l`) → `[tokens, hidden]`.
    hidden: BTreeMap<usize, Vec<f16>>,
    width: usize,
    /// The teacher's fingerprint and the corpus's.
    pub teacher: String,
    /// See [`TeacherTargets::teacher`].
    pub corpus: String,
}

fn offsets(lengths: &[usize]) -> Vec<usize> {
    let mut o = Vec::with_capacity(lengths.len());
    let mut t = 0;
    for &l in lengths {
        o.push(t);
        t += l;
    }
    o
}

fn cache_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadInput {
        what: format!("teacher outputs file {}", path.display()),
        reason: reason.into(),
        hint: "delete it (it is recomputed), or pass another --teacher-outputs file".into(),
    }
}

impl TeacherTargets {
    /// Runs `teacher` (joulecut's engine) over `corpus`, keeping the pooled embeddings and the
    /// hidden states of `layers`; `progress(done, total)` after each batch.
    pub fn compute(
        teacher: &SentenceEncoder,
        corpus: &[String],
        layers: &[usize],
        ids: (String, String),
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let model = teacher.native().ok_or_else(|| Error::BadInput {
            what: "teacher".into(),
            reason: "the teacher must run on joulecut's engine".into(),
            hint: "load it with Engine::Joulecut".into(),
        })?;
        let h = model.config().hidden;
        if let Some(&bad) = layers.iter().find(|&&l| l > model.config().layers) {
            return Err(Error::BadInput {
                what: "layer map".into(),
                reason: format!(
                    "teacher layer {bad} does not exist (it has {})",
                    model.config().layers
                ),
                hint: "map student layers to teacher layers 1 to the teacher's depth".into(),
            });
        }
        let tokens = teacher.token_batch(corpus)?;
        let mut pooled = Vec::with_capacity(corpus.len() * h);
        let mut hidden: BTreeMap<usize, Vec<f16>> = layers
            .iter()
            .map(|&l| (l, Vec::with_capacity(tokens.tokens() * h)))
            .collect();
        let mut ws = Workspace::default();
        let (mut s, mut t) = (0, 0);
        while s < corpus.len() {
            let e = (s + BATCH).min(corpus.len());
            let lengths = &tokens.lengths[s..e];
            let n: usize = lengths.iter().sum();
            let batch = TokenBatch {
                ids: tokens.ids[t..t + n].to_vec(),
                type_ids: tokens.type_ids[t..t + n].to_vec(),
                lengths: lengths.to_vec(),
            };
            let mut last = Vec::new();
            model.each_hidden_state(&batch, &mut ws, &mut |l, states| {
                if let Some(dst) = hidden.get_mut(&l) {
                    dst.extend(states.iter().map(|&x| f16::from_f32(x)));
                }
                if l == model.config().layers {
                    last = states.to_vec();
                }
            })?;
            pooled.extend(mean_pool(&last, lengths, h));
            progress(e, corpus.len());
            (s, t) = (e, t + n);
        }
        Ok(TeacherTargets {
            offsets: offsets(&tokens.lengths),
            tokens,
            pooled,
            hidden,
            width: h,
            teacher: ids.0,
            corpus: ids.1,
        })
    }

    /// Sentences.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The teacher layers whose hidden states are kept.
    pub fn layers(&self) -> Vec<usize> {
        self.hidden.keys().copied().collect()
    }

    /// The tokens of the given sentences, back to back.
    pub fn batch(&self, sentences: &[usize]) -> TokenBatch {
        let mut b = TokenBatch::default();
        for &s in sentences {
            let (o, l) = (self.offsets[s], self.tokens.lengths[s]);
            b.push(&self.tokens.ids[o..o + l], &self.tokens.type_ids[o..o + l]);
        }
        b
    }

    /// The pooled embeddings of the given sentences, `[n, hidden]`.
    pub fn pooled(&self, sentences: &[usize]) -> Vec<f32> {
        let h = self.width;
        sentences
            .iter()
            .flat_map(|&s| self.pooled[s * h..(s + 1) * h].iter().copied())
            .collect()
    }

    /// Teacher layer `layer`'s states of the given sentences' tokens, `[tokens, hidden]`.
    pub fn hidden(&self, layer: usize, sentences: &[usize]) -> Option<Vec<f32>> {
        let states = self.hidden.get(&layer)?;
        let h = self.width;
        let mut out = Vec::new();
        for &s in sentences {
            let (o, l) = (self.offsets[s], self.tokens.lengths[s]);
            out.extend(states[o * h..(o + l) * h].iter().map(|x| x.to_f32()));
        }
        Some(out)
    }

    /// Writes the targets to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let u32s = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let lengths: Vec<u32> = self.tokens.lengths.iter().map(|&l| l as u32).collect();
        let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "ids".into(),
                Dtype::U32,
                vec![self.tokens.ids.len()],
                u32s(&self.tokens.ids),
            ),
            (
                "type_ids".into(),
                Dtype::U32,
                vec![self.tokens.type_ids.len()],
                u32s(&self.tokens.type_ids),
            ),
            (
                "lengths".into(),
                Dtype::U32,
                vec![lengths.len()],
                u32s(&lengths),
            ),
            (
                "pooled".into(),
                Dtype::F32,
                vec![self.len(), self.width],
                self.pooled.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ];
        for (l, v) in &self.hidden {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            bufs.push((
                format!("hidden.{l}"),
                Dtype::F16,
                vec![v.len() / self.width.max(1), self.width],
                bytes,
            ));
        }
        let views = bufs
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| cache_err(path, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = [
            ("joulecut.kind", KIND.to_string()),
            ("joulecut.teacher", self.teacher.clone()),
            ("joulecut.corpus", self.corpus.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| cache_err(path, e.to_string()))?;
        super::write_atomic(path, &bytes)
    }

    /// Reads targets written by [`TeacherTargets::save`], checking they were made by this teacher
    /// on this corpus and hold every layer in `layers`.
    pub fn load(path: &Path, ids: (&str, &str), layers: &[usize]) -> Result<Self> {
        let bytes = joulecut_checkpoint::input::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| cache_err(path, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).map(String::as_str).unwrap_or("");
        if get("joulecut.kind") != KIND {
            return Err(cache_err(path, "not a teacher-outputs file"));
        }
        if get("joulecut.teacher") != ids.0 || get("joulecut.corpus") != ids.1 {
            return Err(cache_err(path, "made for another teacher or corpus"));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| cache_err(path, e.to_string()))?;
        let raw = |name: &str, dtype: Dtype| -> Result<(Vec<usize>, &[u8])> {
            let t = st
                .tensor(name)
                .map_err(|_| cache_err(path, format!("no tensor `{name}`")))?;
            if t.dtype() != dtype {
                return Err(cache_err(
                    path,
                    format!("`{name}` is {:?}, not {dtype:?}", t.dtype()),
                ));
            }
            Ok((t.shape().to_vec(), t.data()))
        };
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let ids_v = u32s(raw("ids", Dtype::U32)?.1);
        let type_ids = u32s(raw("type_ids", Dtype::U32)?.1);
        let lengths: Vec<usize> = u32s(raw("lengths", Dtype::U32)?.1)
            .into_iter()
            .map(|l| l as usize)
            .collect();
        let (ps, pb) = raw("pooled", Dtype::F32)?;
        let pooled: Vec<f32> = pb
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let tokens: usize = lengths.iter().sum();
        if ids_v.len() != tokens
            || type_ids.len() != tokens
            || ps != [lengths.len(), ps.get(1).copied().unwrap_or(0)]
        {
            return Err(cache_err(path, "token counts and shapes disagree"));
        }
        let width = ps[1];
        let mut hidden = BTreeMap::new();
        for &l in layers {
            let (s, b) = raw(&format!("hidden.{l}"), Dtype::F16).map_err(|_| {
                cache_err(path, format!("holds no hidden states of teacher layer {l}"))
            })?;
            if s != [tokens, width] {
                return Err(cache_err(
                    path,
                    format!("`hidden.{l}` is {s:?}, not [{tokens}, {width}]"),
                ));
            }
            hidden.insert(
                l,
                b.chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            );
        }
        Ok(TeacherTargets {
            offsets: offsets(&lengths),
            tokens: TokenBatch {
                ids: ids_v,
                type_ids,
                lengths,
            },
            pooled,
            hidden,
            width,
            teacher: ids.0.to_string(),
            corpus: ids.1.to_string(),
        })
    }
}
