//! A BERT encoder as candle variables, for training a compressed student back against its
//! teacher: the same layers as [`BertEncoder`](super::BertEncoder), differentiable.
//!
//! It loads from any [`TensorSource`] (every encoding decoded to f32), keeps what compression
//! fixed — the zeros of a pruned weight stay zero through training ([`TrainableEncoder::apply_masks`]
//! after each optimiser step), heads and FFN neurons removed by structured pruning stay removed
//! (the layers are built at their stored sizes) — and can drop layers (`keep_layers`, each kept
//! layer initialised from the source's). Batches are padded to their longest sentence
//! ([`PaddedBatch`]); sort sentences by length so that little work goes to padding. The
//! row-wise ops are `joulecut_ops`' differentiable kernels (LayerNorm, softmax, GELU) and every
//! product one `gemm` call.
//!
//! The word, position and token-type embeddings and their LayerNorm are frozen unless asked for:
//! compression leaves them alone, and the word table alone is half of MiniLM's weights.

use candle_core::{Device, Result as CResult, Tensor, Var};

use super::{Activation, BertConfig, TensorSource, TokenBatch};
use crate::error::{Error, Result};

/// What to build a student from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudentSpec {
    /// Source layers to keep, in order (`None`: all). The student's layer `j` starts from source
    /// layer `keep_layers[j]`.
    pub keep_layers: Option<Vec<usize>>,
    /// Train the embeddings (word, position, token type) and their LayerNorm too.
    pub train_embeddings: bool,
    /// Quantization-aware training: every encoder linear layer runs on fake-quantized int8
    /// weights (per output channel, symmetric) and inputs (one 8-bit grid per token, as the int8
    /// kernel's `s8` grid), gradients passing straight through, so that the weights learn to
    /// survive `joulecut quantize --dtype int8`.
    pub qat: bool,
}

/// A batch of sentences padded to the longest, with what the loss and pooling need to skip the
/// padding.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// Token ids `[B, T]`.
    pub ids: Tensor,
    /// Token type ids `[B, T]`.
    pub type_ids: Tensor,
    /// `0` for a real key, a large negative number for padding, `[B, 1, 1, T]`.
    pub attention_bias: Tensor,
    /// Row indices (into `B·T`) of the real tokens, sentence by sentence: `N` of them.
    pub real: Tensor,
    /// Mean pooling over each sentence's real tokens as a matrix, `[B, N]`.
    pub pool: Tensor,
    /// Tokens per sentence.
    pub lengths: Vec<usize>,
    /// `T`.
    pub width: usize,
}

impl PaddedBatch {
    /// Pads an unpadded batch (sentences back to back) to its longest sentence.
    pub fn new(batch: &TokenBatch, device: &Device) -> Result<Self> {
        let b = batch.lengths.len();
        let t = batch.lengths.iter().copied().max().unwrap_or(0).max(1);
        let n = batch.tokens();
        let mut ids = vec![0u32; b * t];
        let mut types = vec![0u32; b * t];
        let mut bias = vec![-1e9f32; b * t];
        let mut real = Vec::with_capacity(n);
        let mut pool = vec![0f32; b * n];
        let mut k = 0;
        for (s, &len) in batch.lengths.iter().enumerate() {
            for p in 0..len {
                ids[s * t + p] = batch.ids[k];
                types[s * t + p] = batch.type_ids[k];
                bias[s * t + p] = 0.0;
                real.push((s * t + p) as u32);
                pool[s * n + k] = 1.0 / len as f32;
                k += 1;
            }
        }
        let e = cerr;
        Ok(PaddedBatch {
            ids: Tensor::from_vec(ids, (b, t), device).map_err(e)?,
            type_ids: Tensor::from_vec(types, (b, t), device).map_err(e)?,
            attention_bias: Tensor::from_vec(bias, (b, 1, 1, t), device).map_err(e)?,
            real: Tensor::from_vec(real, n, device).map_err(e)?,
            pool: Tensor::from_vec(pool, (b, n), device).map_err(e)?,
            lengths: batch.lengths.clone(),
            width: t,
        })
    }

    /// Sentences.
    pub fn sentences(&self) -> usize {
        self.lengths.len()
    }
}

/// A tensor as `(name, shape, values)`.
pub type NamedValues = (String, Vec<usize>, Vec<f32>);

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct StudentOutput {
    /// Mean-pooled sentence embeddings `[B, hidden]`.
    pub pooled: Tensor,
    /// The requested hidden states, real tokens only (`[N, hidden]`, sentence by sentence), in
    /// the order asked for.
    pub hidden: Vec<Tensor>,
}

#[derive(Debug, Clone)]
struct Lin {
    w: Var,
    b: Var,
}

#[derive(Debug, Clone)]
struct Ln {
    g: Var,
    b: Var,
}

#[derive(Debug, Clone)]
struct Layer {
    heads: usize,
    qkv: Lin,
    attention_output: Lin,
    attention_norm: Ln,
    intermediate: Lin,
    output: Lin,
    output_norm: Ln,
}

/// A trainable BERT encoder (see the module docs).
#[derive(Debug, Clone)]
pub struct TrainableEncoder {
    cfg: BertConfig,
    word: Var,
    position: Var,
    token_type: Var,
    embedding_norm: Ln,
    layers: Vec<Layer>,
    origin: Vec<usize>,
    train_embeddings: bool,
    qat: bool,
    /// Every variable by its (student-numbered) name; the fused query/key/value is
    /// `encoder.layer.{i}.attention.self.qkv.{weight,bias}`.
    named: Vec<(String, Var)>,
    /// The zero pattern of each pruned weight, as a 0/1 tensor, by index into `named`.
    masks: Vec<(usize, Tensor)>,
}

fn cerr(e: candle_core::Error) -> Error {
    Error::Candle {
        action: "train the encoder".into(),
        source: e,
    }
}

/// Collects the variables (and the zero masks of pruned weights) while a student is built.
struct Builder<'a> {
    src: &'a dyn TensorSource,
    device: &'a Device,
    hidden: usize,
    named: Vec<(String, Var)>,
    masks: Vec<(usize, Tensor)>,
}

impl Builder<'_> {
    /// The f32 values of `name`, checked to be `shape` when given; with the stored shape.
    fn load(&self, name: &str, shape: Option<&[usize]>) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.src.tensor(name)?;
        if let Some(s) = shape {
            if t.shape() != s {
                return Err(Error::ShapeMismatch {
                    name: name.into(),
                    expected: s.to_vec(),
                    found: t.shape().to_vec(),
                });
            }
        }
        Ok((t.shape().to_vec(), t.to_f32()))
    }

    /// A variable named `name`; `masked`: its zeros (if any) are kept through training.
    fn add(&mut self, name: String, shape: &[usize], v: Vec<f32>, masked: bool) -> Result<Var> {
        if masked && v.contains(&0.0) {
            let m: Vec<f32> = v
                .iter()
                .map(|&x| if x == 0.0 { 0.0 } else { 1.0 })
                .collect();
            let m = Tensor::from_vec(m, shape, self.device).map_err(cerr)?;
            self.masks.push((self.named.len(), m));
        }
        let var = Var::from_vec(v, shape, self.device).map_err(cerr)?;
        self.named.push((name, var.clone()));
        Ok(var)
    }

    fn stored(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        let (s, v) = self.load(name, Some(shape))?;
        self.add(name.to_string(), &s, v, false)
    }

    /// `LayerNorm.weight`/`.bias` (or the `gamma`/`beta` of older exports) of `module`, named
    /// `out.weight`/`out.bias`.
    fn norm(&mut self, module: &str, out: &str) -> Result<Ln> {
        let (g, b) = if self.src.has(&format!("{module}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let h = self.hidden;
        let (_, gv) = self.load(&format!("{module}.{g}"), Some(&[h]))?;
        let (_, bv) = self.load(&format!("{module}.{b}"), Some(&[h]))?;
        Ok(Ln {
            g: self.add(format!("{out}.weight"), &[h], gv, false)?,
            b: self.add(format!("{out}.bias"), &[h], bv, false)?,
        })
    }

    /// The linear layer `module` (`[rows, inp]`; `rows` free when `None`) with its bias, named
    /// `out.*`.
    fn linear(
        &mut self,
        modules: &[String],
        out: &str,
        inp: usize,
        rows: Option<usize>,
    ) -> Result<Lin> {
        let (mut ws, mut bs, mut first) = (Vec::new(), Vec::new(), None);
        for m in modules {
            let name = format!("{m}.weight");
            let (s, w) = self.load(&name, None)?;
            let r = rows.or(first).unwrap_or(s.first().copied().unwrap_or(0));
            if s != [r, inp] {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: vec![r, inp],
                    found: s,
                });
            }
            first = Some(r);
            let (_, b) = self.load(&format!("{m}.bias"), Some(&[r]))?;
            ws.extend(w);
            bs.extend(b);
        }
        let r = bs.len();
        Ok(Lin {
            w: self.add(format!("{out}.weight"), &[r, inp], ws, true)?,
            b: self.add(format!("{out}.bias"), &[r], bs, false)?,
        })
    }
}

impl TrainableEncoder {
    /// Builds the student from `src` (Hugging Face `BertModel` names, no prefix) on `device`.
    pub fn load(
        cfg: BertConfig,
        src: &dyn TensorSource,
        spec: &StudentSpec,
        device: &Device,
    ) -> Result<Self> {
        let h = cfg.hidden;
        if cfg.heads == 0 || h % cfg.heads != 0 {
            return Err(Error::BadConfig {
                reason: format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {}",
                    cfg.heads
                ),
            });
        }
        let keep: Vec<usize> = match &spec.keep_layers {
            Some(k) => k.clone(),
            None => (0..cfg.layers).collect(),
        };
        if keep.is_empty() {
            return Err(Error::BadConfig {
                reason: "a student needs at least one layer".into(),
            });
        }
        if let Some(&bad) = keep.iter().find(|&&l| l >= cfg.layers) {
            return Err(Error::BadConfig {
                reason: format!(
                    "layer {bad} does not exist: the model has {} (0 to {})",
                    cfg.layers,
                    cfg.layers - 1
                ),
            });
        }
        if keep.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::BadConfig {
                reason: format!("kept layers must be increasing: {keep:?}"),
            });
        }
        let d = cfg.head_dim();
        let mut b = Builder {
            src,
            device,
            hidden: h,
            named: Vec::new(),
            masks: Vec::new(),
        };
        let word = b.stored("embeddings.word_embeddings.weight", &[cfg.vocab, h])?;
        let position = b.stored(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, h],
        )?;
        let token_type = b.stored(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, h],
        )?;
        let embedding_norm = b.norm("embeddings.LayerNorm", "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(keep.len());
        for (j, &i) in keep.iter().enumerate() {
            let (p, q) = (format!("encoder.layer.{i}"), format!("encoder.layer.{j}"));
            let module = |m: &str| vec![format!("{p}.{m}")];
            let qkv = b.linear(
                &["query", "key", "value"].map(|m| format!("{p}.attention.self.{m}")),
                &format!("{q}.attention.self.qkv"),
                h,
                None,
            )?;
            let a = qkv.w.dims()[0] / 3;
            if a % d != 0 {
                return Err(Error::BadConfig {
                    reason: format!(
                        "`{p}.attention.self.query.weight` has {a} rows, not a whole number of \
                         {d}-wide heads"
                    ),
                });
            }
            let attention_output = b.linear(
                &module("attention.output.dense"),
                &format!("{q}.attention.output.dense"),
                a,
                Some(h),
            )?;
            let attention_norm = b.norm(
                &format!("{p}.attention.output.LayerNorm"),
                &format!("{q}.attention.output.LayerNorm"),
            )?;
            let intermediate = b.linear(
                &module("intermediate.dense"),
                &format!("{q}.intermediate.dense"),
                h,
                None,
            )?;
            let inter = intermediate.w.dims()[0];
            let output = b.linear(
                &module("output.dense"),
                &format!("{q}.output.dense"),
                inter,
                Some(h),
            )?;
            let output_norm = b.norm(
                &format!("{p}.output.LayerNorm"),
                &format!("{q}.output.LayerNorm"),
            )?;
            layers.push(Layer {
                heads: a / d,
                qkv,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        Ok(TrainableEncoder {
            cfg: BertConfig {
                layers: keep.len(),
                ..cfg
            },
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            origin: keep,
            train_embeddings: spec.train_embeddings,
            qat: spec.qat,
            named: b.named,
            masks: b.masks,
        })
    }

    /// The student's configuration (`layers` counts the kept ones).
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The source layer each student layer started from.
    pub fn origin(&self) -> &[usize] {
        &self.origin
    }

    /// Attention heads and FFN width of each layer.
    pub fn layer_sizes(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .map(|l| (l.heads, l.intermediate.w.dims()[0]))
            .collect()
    }

    /// Every variable by name (the fused query/key/value as `…attention.self.qkv.*`).
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.named
    }

    /// The variables an optimiser should update (the embeddings only when trained).
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.named
            .iter()
            .filter(|(n, _)| self.train_embeddings || !n.starts_with("embeddings."))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Weights with a zero pattern that training keeps.
    pub fn masked(&self) -> usize {
        self.masks.len()
    }

    /// Puts the zeros back into every pruned weight (call after each optimiser step: an update
    /// moves them, and 2:4 stays 2:4 only if they return).
    pub fn apply_masks(&self) -> Result<()> {
        for (i, m) in &self.masks {
            let v = &self.named[*i].1;
            v.set(&v.as_tensor().mul(m).map_err(cerr)?).map_err(cerr)?;
        }
        Ok(())
    }

    fn embed(&self, b: &PaddedBatch) -> CResult<Tensor> {
        let (n, t, h) = (b.sentences(), b.width, self.cfg.hidden);
        let word = self.word.embedding(&b.ids.flatten_all()?)?;
        let ty = self.token_type.embedding(&b.type_ids.flatten_all()?)?;
        let pos = self.position.narrow(0, 0, t)?;
        let x = (word + ty)?
            .reshape((n, t, h))?
            .broadcast_add(&pos)?
            .reshape((n * t, h))?;
        let x = joulecut_ops::layer_norm(
            &x,
            &self.embedding_norm.g,
            &self.embedding_norm.b,
            self.cfg.eps,
        )?;
        Ok(if self.train_embeddings { x } else { x.detach() })
    }

    /// `x·Wᵀ + b`, through fake int8 weights and inputs under QAT.
    fn linear(&self, x: &Tensor, l: &Lin) -> CResult<Tensor> {
        if self.qat {
            let w = joulecut_quant::fake_quant(&l.w, &joulecut_quant::Int8Config::default())?;
            joulecut_ops::linear(&joulecut_quant::fake_quant_rows(x)?, &w, &l.b)
        } else {
            joulecut_ops::linear(x, &l.w, &l.b)
        }
    }

    fn layer(&self, l: &Layer, x: &Tensor, b: &PaddedBatch) -> CResult<Tensor> {
        let (n, t, h) = (b.sentences(), b.width, self.cfg.hidden);
        let d = self.cfg.head_dim();
        let a = l.heads * d;
        let attn = if a == 0 {
            l.attention_output
                .b
                .broadcast_as((n * t, h))?
                .contiguous()?
        } else {
            let qkv = self.linear(x, &l.qkv)?;
            let qkv = qkv
                .reshape((n, t, 3, l.heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let scores = q.matmul(&k.t()?)?.affine(1.0 / (d as f64).sqrt(), 0.0)?;
            let p = joulecut_ops::softmax_last_dim(&scores.broadcast_add(&b.attention_bias)?)?;
            let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((n * t, a))?;
            self.linear(&ctx, &l.attention_output)?
        };
        let x = joulecut_ops::layer_norm(
            &(x + attn)?,
            &l.attention_norm.g,
            &l.attention_norm.b,
            self.cfg.eps,
        )?;
        let f = self.linear(&x, &l.intermediate)?;
        let f = match self.cfg.activation {
            Activation::Gelu => joulecut_ops::gelu(&f)?,
            Activation::GeluTanh => f.gelu()?,
            Activation::Relu => f.relu()?,
        };
        let o = self.linear(&f, &l.output)?;
        joulecut_ops::layer_norm(&(x + o)?, &l.output_norm.g, &l.output_norm.b, self.cfg.eps)
    }

    /// Runs the student. `hidden`: the layer outputs to return (`0` = the embeddings, `l` = the
    /// output of layer `l`, 1-based), real tokens only.
    pub fn forward(&self, b: &PaddedBatch, hidden: &[usize]) -> Result<StudentOutput> {
        if let Some(&bad) = hidden.iter().find(|&&l| l > self.layers.len()) {
            return Err(Error::BadConfig {
                reason: format!(
                    "hidden state {bad} asked of a {}-layer student",
                    self.layers.len()
                ),
            });
        }
        let run = || -> CResult<StudentOutput> {
            let mut states: Vec<Option<Tensor>> = vec![None; hidden.len()];
            let mut x = self.embed(b)?;
            let mut keep = |l: usize, x: &Tensor| -> CResult<()> {
                for (slot, _) in states.iter_mut().zip(hidden).filter(|(_, h)| **h == l) {
                    *slot = Some(x.index_select(&b.real, 0)?);
                }
                Ok(())
            };
            keep(0, &x)?;
            for (i, l) in self.layers.iter().enumerate() {
                x = self.layer(l, &x, b)?;
                keep(i + 1, &x)?;
            }
            let last = x.index_select(&b.real, 0)?;
            let pooled = b.pool.matmul(&last)?;
            Ok(StudentOutput {
                pooled,
                hidden: states
                    .into_iter()
                    .map(|s| s.expect("every index checked"))
                    .collect(),
            })
        };
        run().map_err(cerr)
    }

    /// The student's tensors under Hugging Face names (layers numbered `0..` in the student), the
    /// query, key and value split again: `(name, shape, values)`. The embeddings are included
    /// only when they were trained.
    pub fn export(&self) -> Result<Vec<NamedValues>> {
        let mut out = Vec::new();
        for (name, v) in &self.named {
            if !self.train_embeddings && name.starts_with("embeddings.") {
                continue;
            }
            let shape = v.dims().to_vec();
            let values = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(cerr)?;
            match name.split_once("attention.self.qkv.") {
                Some((prefix, part)) => {
                    let third = shape[0] / 3;
                    let per = values.len() / 3;
                    for (k, m) in ["query", "key", "value"].iter().enumerate() {
                        let mut s = shape.clone();
                        s[0] = third;
                        out.push((
                            format!("{prefix}attention.self.{m}.{part}"),
                            s,
                            values[k * per..(k + 1) * per].to_vec(),
                        ));
                    }
                }
                None => out.push((name.clone(), shape, values)),
            }
        }
        Ok(out)
    }
}
