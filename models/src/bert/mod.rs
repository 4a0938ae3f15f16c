//! A BERT-family encoder on joulecut's own kernels: embeddings, self-attention, GELU FFN,
//! LayerNorm, mean pooling.
//!
//! Sentences run unpadded: a batch is its sentences' tokens back to back ([`TokenBatch`]), so no
//! product is spent on padding and attention needs no mask. Each linear layer runs on the kernel
//! its stored encoding calls for ([`LinearOp`], routed by [`RealKernels`](crate::RealKernels)):
//! dense f32, int8 or packed sparse. A structurally pruned checkpoint (heads or FFN neurons
//! removed) loads as a physically smaller layer: the sizes come from the weights, the head width
//! from the config.
//! Buffers live in a [`Workspace`] reused across batches, so the hot path does not allocate.
//!
//! Tensor names are Hugging Face's `BertModel` names without a prefix
//! (`encoder.layer.0.attention.self.query.weight`); the caller strips `bert.` where a task
//! model nests them.

mod attention;
mod calibrate;
mod compact;
mod grids;
mod importance;
mod layer;
mod linear;
mod load;
mod portable;
mod smooth;
mod structured;
#[cfg(test)]
mod structured_tests;
mod trainable;
#[cfg(test)]
mod trainable_tests;

pub use calibrate::SublayerReport;
pub use compact::NamedTensor;
pub use grids::{
    GridErrors, GridPolicy, ProductChoice, SmoothedErrors, choose_grids, choose_in_scales,
};
pub use importance::{UnitImportance, UnitStats, keep_top, magnitude_importance};
pub use layer::{EncoderLayer, Sublayer};
pub use linear::{LinearKind, LinearOp};
pub use load::TensorSource;
pub use portable::{PortableEncoder, PortableKind, Precision};
pub use structured::{StructuredReport, StructuredSpec, UnitScore};
pub use trainable::{NamedValues, PaddedBatch, StudentOutput, StudentSpec, TrainableEncoder};

use std::borrow::Cow;

use joulecut_ops::rows::{LayerNorm, layer_norm};
use rayon::prelude::*;

/// The sizes and constants of a BERT encoder (Hugging Face `config.json` names in the docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    /// `hidden_size`.
    pub hidden: usize,
    /// `num_attention_heads` of the original model (the head width is `hidden / heads`).
    pub heads: usize,
    /// `intermediate_size`.
    pub intermediate: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// `type_vocab_size`.
    pub type_vocab: usize,
    /// `layer_norm_eps`.
    pub eps: f32,
    /// `hidden_act`.
    pub activation: Activation,
}

/// The feed-forward block's activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `gelu`: the exact, erf-based GELU (BERT's).
    #[default]
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// `y ← act(y + bias)` for `y` `[rows, bias.len()]` (no bias when `bias` is empty).
    pub(crate) fn apply(self, y: &mut [f32], width: usize, bias: &[f32]) {
        let act = match self {
            Activation::Gelu => return joulecut_ops::rows::bias_gelu(y, width, bias),
            Activation::GeluTanh => {
                |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
            }
            Activation::Relu => |x: f32| x.max(0.0),
        };
        for row in y.chunks_exact_mut(width) {
            for (i, v) in row.iter_mut().enumerate() {
                *v = act(*v + bias.get(i).copied().unwrap_or(0.0));
            }
        }
    }
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }
}

/// Sentences as token ids back to back: sentence `i` is the next `lengths[i]` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, one per token.
    pub type_ids: Vec<u32>,
    /// Tokens per sentence.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// Total tokens.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Appends one sentence.
    pub fn push(&mut self, ids: &[u32], type_ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.type_ids.extend_from_slice(type_ids);
        self.lengths.push(ids.len());
    }
}

/// Scratch buffers of one forward pass, reused across batches (grown, never shrunk).
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    /// Hidden states `[T, hidden]`.
    pub(crate) x: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) ctx: Vec<f32>,
    pub(crate) proj: Vec<f32>,
    pub(crate) ffn: Vec<f32>,
    /// One workspace per part of a batch [`BertEncoder::encode`] splits over threads.
    parts: Vec<Workspace>,
}

/// Grows `v` to `n` elements (never shrinks), returning the first `n`.
pub(crate) fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Token, position and segment embeddings and their LayerNorm.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// A loaded BERT encoder.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    cfg: BertConfig,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
}

/// What a problem with a [`TokenBatch`] is.
fn bad_batch(reason: String) -> crate::Error {
    crate::Error::BadConfig { reason }
}

impl BertEncoder {
    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The encoder layers, in order.
    pub fn layers(&self) -> &[EncoderLayer] {
        &self.layers
    }

    /// The encoder layers, for calibrated compression.
    pub fn layers_mut(&mut self) -> &mut [EncoderLayer] {
        &mut self.layers
    }

    /// Checks that every id is inside its table and no sentence is longer than the position table.
    pub fn check(&self, batch: &TokenBatch) -> crate::Result<()> {
        if batch.type_ids.len() != batch.ids.len()
            || batch.lengths.iter().sum::<usize>() != batch.ids.len()
        {
            return Err(bad_batch(
                "token batch: ids, type ids and lengths disagree".into(),
            ));
        }
        if let Some(&id) = batch.ids.iter().find(|&&i| i as usize >= self.cfg.vocab) {
            return Err(bad_batch(format!(
                "token id {id} is outside vocab_size {}",
                self.cfg.vocab
            )));
        }
        if let Some(&t) = batch
            .type_ids
            .iter()
            .find(|&&i| i as usize >= self.cfg.type_vocab)
        {
            return Err(bad_batch(format!(
                "token type {t} is outside type_vocab_size {}",
                self.cfg.type_vocab
            )));
        }
        if let Some(&l) = batch.lengths.iter().find(|&&l| l > self.cfg.max_positions) {
            return Err(bad_batch(format!(
                "a sentence of {l} tokens is longer than max_position_embeddings {}",
                self.cfg.max_positions
            )));
        }
        Ok(())
    }

    /// Embeds the batch's tokens into `ws`'s hidden states (`[T, hidden]`).
    pub fn embed(&self, batch: &TokenBatch, ws: &mut Workspace) -> crate::Result<()> {
        self.check(batch)?;
        let h = self.cfg.hidden;
        let x = buf(&mut ws.x, batch.tokens() * h);
        let e = &self.embeddings;
        let mut t = 0;
        for &len in &batch.lengths {
            for p in 0..len {
                let (id, ty) = (batch.ids[t] as usize, batch.type_ids[t] as usize);
                let row = &mut x[t * h..(t + 1) * h];
                let (w, pe, te) = (
                    &e.word[id * h..(id + 1) * h],
                    &e.position[p * h..(p + 1) * h],
                    &e.token_type[ty * h..(ty + 1) * h],
                );
                for c in 0..h {
                    row[c] = w[c] + pe[c] + te[c];
                }
                t += 1;
            }
        }
        layer_norm(
            x,
            &LayerNorm {
                gamma: &e.gamma,
                beta: &e.beta,
                eps: self.cfg.eps,
            },
        );
        Ok(())
    }

    /// The final hidden states of every token (`[T, hidden]`, in `ws`).
    pub fn hidden_states<'w>(
        &self,
        batch: &TokenBatch,
        ws: &'w mut Workspace,
    ) -> crate::Result<&'w [f32]> {
        self.embed(batch, ws)?;
        for l in &self.layers {
            l.forward(
                ws,
                &batch.lengths,
                (self.cfg.eps, self.cfg.activation),
                &mut |_, _, _| {},
            );
        }
        Ok(&ws.x[..batch.tokens() * self.cfg.hidden])
    }

    /// Runs the batch and hands every layer's output to `each(l, states)`: `l = 0` for the
    /// embeddings, `l` for the output of layer `l` (1-based), states `[T, hidden]`.
    pub fn each_hidden_state(
        &self,
        batch: &TokenBatch,
        ws: &mut Workspace,
        each: &mut dyn FnMut(usize, &[f32]),
    ) -> crate::Result<()> {
        self.embed(batch, ws)?;
        let n = batch.tokens() * self.cfg.hidden;
        each(0, &ws.x[..n]);
        for (i, l) in self.layers.iter().enumerate() {
            l.forward(
                ws,
                &batch.lengths,
                (self.cfg.eps, self.cfg.activation),
                &mut |_, _, _| {},
            );
            each(i + 1, &ws.x[..n]);
        }
        Ok(())
    }

    /// Mean-pooled sentence embeddings, `[sentences, hidden]` row-major.
    ///
    /// A batch large enough is cut into one part per rayon thread (whole sentences, about equal
    /// tokens), and each part runs the whole encoder on its own thread: the kernels inside see a
    /// rayon worker and stay single-threaded, so a forward pass has one fork and one join instead
    /// of one per linear layer, attention, GELU and LayerNorm (seven per layer, each a wake-up
    /// and a wait for the slower thread). Every sentence's arithmetic is the same either way.
    pub fn encode(&self, batch: &TokenBatch, ws: &mut Workspace) -> crate::Result<Vec<f32>> {
        self.encode_in_parts(batch, ws, joulecut_ops::pool_threads())
    }

    /// [`BertEncoder::encode`] with the batch cut into up to `threads` parts.
    fn encode_in_parts(
        &self,
        batch: &TokenBatch,
        ws: &mut Workspace,
        threads: usize,
    ) -> crate::Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let parts = split_batch(batch, threads);
        if parts.len() < 2 {
            let states = self.hidden_states(batch, ws)?;
            return Ok(mean_pool(states, &batch.lengths, h));
        }
        self.check(batch)?;
        if ws.parts.len() < parts.len() {
            ws.parts.resize_with(parts.len(), Workspace::default);
        }
        let pooled: Vec<crate::Result<Vec<f32>>> = parts
            .par_iter()
            .zip(ws.parts.par_iter_mut())
            .map(|(part, pws)| {
                let states = self.hidden_states(part, pws)?;
                Ok(mean_pool(states, &part.lengths, h))
            })
            .collect();
        let mut out = Vec::with_capacity(batch.lengths.len() * h);
        for p in pooled {
            out.extend(p?);
        }
        Ok(out)
    }
}

/// Tokens below which [`BertEncoder::encode`] keeps a batch in one part (a part's products are
/// then too small to pay for a thread of their own).
const SPLIT_MIN_TOKENS: usize = 64;

/// `batch` cut into up to `threads` runs of whole sentences with about equal tokens, or one part
/// (`batch` itself, not copied) when it is too small to split.
fn split_batch(batch: &TokenBatch, threads: usize) -> Vec<Cow<'_, TokenBatch>> {
    let parts = threads.min(batch.lengths.len());
    if parts < 2 || batch.tokens() < SPLIT_MIN_TOKENS {
        return vec![Cow::Borrowed(batch)];
    }
    let total = batch.tokens();
    let mut out = Vec::with_capacity(parts);
    let (mut part, mut t) = (TokenBatch::default(), 0);
    for (i, &len) in batch.lengths.iter().enumerate() {
        // Part k ends at the sentence boundary nearest to token (k + 1) · total / parts, leaving
        // at least one sentence for each later part.
        let target = (out.len() + 1) * total / parts;
        let later = parts - out.len() - 1;
        if !part.lengths.is_empty()
            && later > 0
            && (2 * t + len > 2 * target || batch.lengths.len() - i == later)
        {
            out.push(Cow::Owned(std::mem::take(&mut part)));
        }
        part.push(&batch.ids[t..t + len], &batch.type_ids[t..t + len]);
        t += len;
    }
    if !part.lengths.is_empty() {
        out.push(Cow::Owned(part));
    }
    out
}

/// Mean of each sentence's token states: `states` `[Σ lengths, width]` → `[sentences, width]`
/// (an empty sentence pools to zeros).
pub fn mean_pool(states: &[f32], lengths: &[usize], width: usize) -> Vec<f32> {
    let mut out = vec![0f32; lengths.len() * width];
    let mut t = 0;
    for (s, &len) in lengths.iter().enumerate() {
        let dst = &mut out[s * width..(s + 1) * width];
        for row in states[t * width..(t + len) * width].chunks_exact(width) {
            for (d, &v) in dst.iter_mut().zip(row) {
                *d += v;
            }
        }
        let inv = 1.0 / len.max(1) as f32;
        dst.iter_mut().for_each(|d| *d *= inv);
        t += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::structured_tests::{load, tensors};
    use super::*;

    fn long_batch() -> TokenBatch {
        let mut b = TokenBatch::default();
        for (i, len) in [5usize, 9, 1, 13, 7, 11, 16, 2, 8, 14, 3, 12]
            .into_iter()
            .enumerate()
        {
            let ids: Vec<u32> = (0..len).map(|t| ((i * 7 + t * 3) % 30) as u32).collect();
            b.push(&ids, &vec![(i % 2) as u32; len]);
        }
        b
    }

    #[test]
    fn split_parts_are_the_batch_in_order_with_balanced_tokens() {
        let b = long_batch();
        for threads in [2, 3, 4, 20] {
            let parts = split_batch(&b, threads);
            assert_eq!(
                parts.len(),
                threads.min(b.lengths.len()),
                "{threads} threads"
            );
            let mut joined = TokenBatch::default();
            for p in &parts {
                assert!(!p.lengths.is_empty());
                let mut t = 0;
                for &len in &p.lengths {
                    joined.push(&p.ids[t..t + len], &p.type_ids[t..t + len]);
                    t += len;
                }
            }
            assert_eq!(joined, b);
            if threads == 2 {
                let (a, c) = (parts[0].tokens(), parts[1].tokens());
                assert!(a.abs_diff(c) <= 16, "{a} vs {c} tokens");
            }
        }
        // Too few tokens or one thread: the batch itself.
        assert!(matches!(split_batch(&b, 1)[..], [Cow::Borrowed(_)]));
        let mut short = TokenBatch::default();
        short.push(&[1, 2, 3], &[0, 0, 0]);
        short.push(&[4, 5], &[0, 0]);
        assert!(matches!(split_batch(&short, 2)[..], [Cow::Borrowed(_)]));
    }

    #[test]
    fn a_batch_split_over_threads_encodes_as_one_part() {
        let enc = load(&tensors(5));
        let b = long_batch();
        let whole = enc
            .encode_in_parts(&b, &mut Workspace::default(), 1)
            .unwrap();
        let mut ws = Workspace::default();
        for threads in [2, 3] {
            let split = enc.encode_in_parts(&b, &mut ws, threads).unwrap();
            assert_eq!(ws.parts.len(), threads);
            let d = whole
                .iter()
                .zip(&split)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-6, "{threads} threads: {d}");
        }
    }
}
