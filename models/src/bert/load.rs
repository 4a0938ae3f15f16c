//! Building a [`BertEncoder`] from stored tensors (any joulecut encoding), with every shape checked
//! against the config before anything runs.

use joulecut_checkpoint::{Checkpoint, TensorData};

use super::layer::{EncoderLayer, Norm, Sublayer};
use super::linear::LinearOp;
use super::{BertConfig, BertEncoder, Embeddings};
use crate::error::{Error, Result};
use crate::kernels::RealKernels;

/// Where the encoder's tensors come from (a checkpoint, the shards of a model directory).
pub trait TensorSource {
    /// Whether a tensor is stored.
    fn has(&self, name: &str) -> bool;
    /// The stored tensor.
    fn tensor(&self, name: &str) -> Result<TensorData>;
}

impl TensorSource for Checkpoint {
    fn has(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }

    fn tensor(&self, name: &str) -> Result<TensorData> {
        if !self.has(name) {
            return Err(Error::MissingTensor { name: name.into() });
        }
        Ok(self.get(name)?)
    }
}

fn shape_err(name: &str, expected: Vec<usize>, found: &[usize]) -> Error {
    Error::ShapeMismatch {
        name: name.into(),
        expected,
        found: found.to_vec(),
    }
}

/// A tensor of exactly `shape`, decoded to f32.
fn vector(src: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = src.tensor(name)?;
    if t.shape() != shape {
        return Err(shape_err(name, shape.to_vec(), t.shape()));
    }
    Ok(t.to_f32())
}

/// `LayerNorm.weight`/`.bias`, or the `gamma`/`beta` names of older exports.
fn norm(src: &dyn TensorSource, module: &str, width: usize) -> Result<Norm> {
    let (g, b) = if src.has(&format!("{module}.gamma")) {
        ("gamma", "beta")
    } else {
        ("weight", "bias")
    };
    Ok(Norm {
        gamma: vector(src, &format!("{module}.{g}"), &[width])?,
        beta: vector(src, &format!("{module}.{b}"), &[width])?,
    })
}

/// The sublayer's linear op; checks each part is `[rows, inp]` (rows free when `rows` is `None`).
fn linear(
    src: &dyn TensorSource,
    modules: &[String],
    inp: usize,
    rows: Option<usize>,
    kernels: &RealKernels,
) -> Result<LinearOp> {
    let mut ws = Vec::with_capacity(modules.len());
    let mut bs = Vec::with_capacity(modules.len());
    let mut first_rows = None;
    for m in modules {
        let name = format!("{m}.weight");
        let w = src.tensor(&name)?;
        let want_rows = rows
            .or(first_rows)
            .unwrap_or(w.shape().first().copied().unwrap_or(0));
        if w.shape() != [want_rows, inp] {
            return Err(shape_err(&name, vec![want_rows, inp], w.shape()));
        }
        first_rows = Some(want_rows);
        // BERT's linear layers all have biases: one missing means a broken file
        bs.push(Some(vector(src, &format!("{m}.bias"), &[want_rows])?));
        ws.push(w);
    }
    let refs: Vec<&TensorData> = ws.iter().collect();
    LinearOp::from_parts(&modules[0], &refs, &bs, kernels)
}

impl BertEncoder {
    /// Loads the encoder's tensors from `src` (Hugging Face `BertModel` names, no prefix) and
    /// routes each linear layer to its kernel.
    pub fn load(cfg: BertConfig, src: &dyn TensorSource, kernels: &RealKernels) -> Result<Self> {
        let h = cfg.hidden;
        if cfg.heads == 0 || h % cfg.heads != 0 {
            return Err(Error::BadConfig {
                reason: format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {}",
                    cfg.heads
                ),
            });
        }
        let d = cfg.head_dim();
        let embeddings = Embeddings {
            word: vector(src, "embeddings.word_embeddings.weight", &[cfg.vocab, h])?,
            position: vector(
                src,
                "embeddings.position_embeddings.weight",
                &[cfg.max_positions, h],
            )?,
            token_type: vector(
                src,
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, h],
            )?,
            gamma: Vec::new(),
            beta: Vec::new(),
        };
        let n = norm(src, "embeddings.LayerNorm", h)?;
        let embeddings = Embeddings {
            gamma: n.gamma,
            beta: n.beta,
            ..embeddings
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            let qkv = linear(src, &Sublayer::Qkv.modules(i), h, None, kernels)?;
            let w = qkv.out_features() / 3;
            if w % d != 0 {
                return Err(Error::BadConfig {
                    reason: format!(
                        "`{p}.attention.self.query.weight` has {w} rows, not a whole number of \
                         {d}-wide heads (hidden_size / num_attention_heads)"
                    ),
                });
            }
            let attention_output = linear(
                src,
                &Sublayer::AttentionOutput.modules(i),
                w,
                Some(h),
                kernels,
            )?;
            let intermediate = linear(src, &Sublayer::Intermediate.modules(i), h, None, kernels)?;
            let inter = intermediate.out_features();
            let output = linear(src, &Sublayer::Output.modules(i), inter, Some(h), kernels)?;
            layers.push(EncoderLayer {
                qkv,
                heads: w / d,
                head_dim: d,
                attention_output,
                attention_norm: norm(src, &format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate,
                output,
                output_norm: norm(src, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(BertEncoder {
            cfg,
            embeddings,
            layers,
        })
    }
}
