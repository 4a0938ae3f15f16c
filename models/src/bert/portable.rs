//! The BERT encoder in candle tensor ops, for any device (the GPU above all): the same layers as
//! [`BertEncoder`](super::BertEncoder), computed in a chosen [`Precision`], with int8 weights run
//! as int8.
//!
//! joulecut's own kernels are CPU code. On a GPU the products go through candle: dense weights in
//! f32, f16 or bf16 (tensor cores for the halves), and an int8 weight stored per output channel
//! through candle's quantized matmul in GGML's Q8_0 blocks — the stored integers unchanged, each
//! 32-wide block carrying its row's scale as f16 — which on CUDA runs the MMQ/MMVQ integer kernels
//! (inputs quantized on the fly). What a layer cannot keep (packed sparse, asymmetric int8, an input
//! width that is not a multiple of 32) is decoded to dense at load, and [`PortableKind::Decoded`]
//! says so: its saving on this engine is nominal.
//!
//! Batches are padded to their longest sentence ([`PaddedBatch`]); LayerNorm, the softmax and the
//! pooling run in f32 whatever the precision, so that half precision costs only the products'
//! rounding.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use half::f16;
use joulecut_checkpoint::{Int8Tensor, TensorData};

use super::{Activation, BertConfig, PaddedBatch, Sublayer, TensorSource, TokenBatch};
use crate::error::{Error, Result};

/// The precision dense products and activations run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::BF16),
            other => Err(format!("unknown precision `{other}` (f32, f16, bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        })
    }
}

/// What runs one linear layer on the portable engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortableKind {
    /// A dense float weight, multiplied in the engine's precision.
    Dense,
    /// The stored int8 weight through candle's quantized matmul (GGML Q8_0 blocks).
    Int8Q8_0,
    /// A compressed encoding this engine has no kernel for, decoded to dense at load.
    Decoded,
}

#[derive(Debug)]
enum Op {
    Dense(Tensor),
    Int8 {
        mm: QMatMul,
        /// SmoothQuant's per-input factors (f32), applied to the input before the product.
        in_mul: Option<Tensor>,
    },
}

#[derive(Debug)]
struct Linear {
    op: Op,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match &self.op {
            Op::Dense(w) => x.matmul(&w.t()?)?,
            Op::Int8 { mm, in_mul } => {
                let x32 = x.to_dtype(DType::F32)?;
                let x32 = match in_mul {
                    Some(m) => x32.broadcast_mul(m)?,
                    None => x32,
                };
                mm.forward(&x32)?.to_dtype(x.dtype())?
            }
        };
        y.broadcast_add(&self.bias)
    }
}

#[derive(Debug)]
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

#[derive(Debug)]
struct Layer {
    heads: usize,
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// A BERT encoder on candle tensor ops (see the module docs).
#[derive(Debug)]
pub struct PortableEncoder {
    cfg: BertConfig,
    precision: Precision,
    device: Device,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    routes: Vec<(String, PortableKind)>,
}

/// The row scale as Q8_0's f16 block scale, when f16 keeps it to within 1e-3 (subnormal or
/// overflowing scales do not).
fn f16_scale(s: f32) -> Option<f16> {
    let h = f16::from_f32(s);
    let back = h.to_f32();
    (s.is_finite() && back.is_finite() && (back - s).abs() <= 1e-3 * s.abs()).then_some(h)
}

/// Q8_0 blocks holding `t`'s integers unchanged, when its scheme allows it: symmetric, per output
/// channel or per tensor, a 2-D `[out, in]` weight with `in` a multiple of 32.
fn q8_0_blocks(t: &Int8Tensor) -> Option<Vec<u8>> {
    let [rows, cols] = t.shape[..] else {
        return None;
    };
    if t.zero_points.is_some() || cols % 32 != 0 || t.values.len() != rows * cols {
        return None;
    }
    let scale = |r: usize| match t.axis {
        None => t.scales.first().copied(),
        Some(0) => t.scales.get(r).copied(),
        Some(_) => None,
    };
    let mut out = Vec::with_capacity(rows * cols / 32 * 34);
    for (r, row) in t.values.chunks_exact(cols).enumerate() {
        let d = f16_scale(scale(r)?)?;
        for block in row.chunks_exact(32) {
            out.extend_from_slice(&d.to_le_bytes());
            out.extend(block.iter().map(|&q| q as u8));
        }
    }
    Some(out)
}

/// Loads tensors onto the device.
struct Loader<'a> {
    src: &'a dyn TensorSource,
    device: &'a Device,
    dtype: DType,
    routes: Vec<(String, PortableKind)>,
}

impl Loader<'_> {
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.src.tensor(name)?;
        if t.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        Tensor::from_vec(t.to_f32(), shape, self.device)
            .and_then(|x| x.to_dtype(dtype))
            .map_err(Error::candle("load a weight onto the device"))
    }

    fn norm(&self, module: &str, width: usize) -> Result<Norm> {
        let (g, b) = if self.src.has(&format!("{module}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            gamma: self.tensor(&format!("{module}.{g}"), &[width], DType::F32)?,
            beta: self.tensor(&format!("{module}.{b}"), &[width], DType::F32)?,
        })
    }

    /// `module`'s weight `[rows, inp]` (`rows` free when `None`) and bias.
    fn linear(&mut self, module: &str, inp: usize, rows: Option<usize>) -> Result<Linear> {
        let name = format!("{module}.weight");
        let w = self.src.tensor(&name)?;
        let r = rows.unwrap_or(w.shape().first().copied().unwrap_or(0));
        if w.shape() != [r, inp] {
            return Err(Error::ShapeMismatch {
                name,
                expected: vec![r, inp],
                found: w.shape().to_vec(),
            });
        }
        let bias = self.tensor(&format!("{module}.bias"), &[r], self.dtype)?;
        let e = Error::candle("load a weight onto the device");
        let int8 = match &w {
            TensorData::Int8(t) => q8_0_blocks(t).map(|b| (b, t.in_scales.clone())),
            _ => None,
        };
        let (op, kind) = match int8 {
            Some((blocks, in_scales)) => {
                let storage =
                    QStorage::from_data(blocks.into(), self.device, GgmlDType::Q8_0).map_err(&e)?;
                let q = QTensor::new(storage, (r, inp)).map_err(&e)?;
                let in_mul = in_scales
                    .map(|s| Tensor::from_vec(s, inp, self.device))
                    .transpose()
                    .map_err(&e)?;
                let mm = QMatMul::from_qtensor(q).map_err(&e)?;
                (Op::Int8 { mm, in_mul }, PortableKind::Int8Q8_0)
            }
            None => {
                let kind = match w {
                    TensorData::Dense(_) => PortableKind::Dense,
                    _ => PortableKind::Decoded,
                };
                let t = Tensor::from_vec(w.to_f32(), (r, inp), self.device)
                    .and_then(|x| x.to_dtype(self.dtype))
                    .map_err(&e)?;
                (Op::Dense(t), kind)
            }
        };
        self.routes.push((module.to_string(), kind));
        Ok(Linear { op, bias })
    }
}

impl PortableEncoder {
    /// Loads the encoder's tensors from `src` (Hugging Face `BertModel` names, no prefix) onto
    /// `device`, dense products in `precision`.
    pub fn load(
        cfg: BertConfig,
        src: &dyn TensorSource,
        device: &Device,
        precision: Precision,
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
        let d = cfg.head_dim();
        let mut l = Loader {
            src,
            device,
            dtype: precision.dtype(),
            routes: Vec::new(),
        };
        let word = l.tensor(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab, h],
            DType::F32,
        )?;
        let position = l.tensor(
            "embeddings.position_embeddings.weight",
            &[cfg.max_positions, h],
            DType::F32,
        )?;
        let token_type = l.tensor(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab, h],
            DType::F32,
        )?;
        let embedding_norm = l.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let qkv = Sublayer::Qkv.modules(i);
            let query = l.linear(&qkv[0], h, None)?;
            let a = query.bias.dims()[0];
            if a % d != 0 {
                return Err(Error::BadConfig {
                    reason: format!(
                        "`{}.weight` has {a} rows, not a whole number of {d}-wide heads",
                        qkv[0]
                    ),
                });
            }
            let key = l.linear(&qkv[1], h, Some(a))?;
            let value = l.linear(&qkv[2], h, Some(a))?;
            let attention_output =
                l.linear(&Sublayer::AttentionOutput.modules(i)[0], a, Some(h))?;
            let p = format!("encoder.layer.{i}");
            let attention_norm = l.norm(&format!("{p}.attention.output.LayerNorm"), h)?;
            let intermediate = l.linear(&Sublayer::Intermediate.modules(i)[0], h, None)?;
            let inter = intermediate.bias.dims()[0];
            let output = l.linear(&Sublayer::Output.modules(i)[0], inter, Some(h))?;
            let output_norm = l.norm(&format!("{p}.output.LayerNorm"), h)?;
            layers.push(Layer {
                heads: a / d,
                query,
                key,
                value,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            });
        }
        Ok(PortableEncoder {
            cfg,
            precision,
            device: device.clone(),
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            routes: l.routes,
        })
    }

    /// The precision of the dense products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What runs each linear layer (module names without `.weight`), in order.
    pub fn routes(&self) -> &[(String, PortableKind)] {
        &self.routes
    }

    /// LayerNorm in f32, the result in `dtype`.
    fn norm(&self, x: &Tensor, n: &Norm, dtype: DType) -> candle_core::Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        candle_nn::ops::layer_norm(&x, &n.gamma, &n.beta, self.cfg.eps)?.to_dtype(dtype)
    }

    fn layer(&self, l: &Layer, x: &Tensor, b: &PaddedBatch) -> candle_core::Result<Tensor> {
        let (n, t) = (b.sentences(), b.width);
        let d = self.cfg.head_dim();
        let a = l.heads * d;
        let dtype = self.precision.dtype();
        let attn = if a == 0 {
            // every head removed: the sublayer adds its output bias only
            l.attention_output
                .bias
                .broadcast_as((n * t, self.cfg.hidden))?
                .contiguous()?
        } else {
            let heads = |lin: &Linear| -> candle_core::Result<Tensor> {
                lin.forward(x)?
                    .reshape((n, t, l.heads, d))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (heads(&l.query)?, heads(&l.key)?, heads(&l.value)?);
            let scores = q
                .matmul(&k.t()?)?
                .to_dtype(DType::F32)?
                .affine(1.0 / (d as f64).sqrt(), 0.0)?
                .broadcast_add(&b.attention_bias)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
            let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((n * t, a))?;
            l.attention_output.forward(&ctx)?
        };
        let x = self.norm(&(attn + x)?, &l.attention_norm, dtype)?;
        let y = l.intermediate.forward(&x)?;
        let y = match self.cfg.activation {
            Activation::Gelu => y.gelu_erf()?,
            Activation::GeluTanh => y.gelu()?,
            Activation::Relu => y.relu()?,
        };
        let y = l.output.forward(&y)?;
        self.norm(&(y + x)?, &l.output_norm, dtype)
    }

    fn forward(&self, b: &PaddedBatch) -> candle_core::Result<Tensor> {
        let (n, t, h) = (b.sentences(), b.width, self.cfg.hidden);
        let word = self.word.embedding(&b.ids.flatten_all()?)?;
        let ty = self.token_type.embedding(&b.type_ids.flatten_all()?)?;
        let pos = self.position.narrow(0, 0, t)?;
        let x = (word + ty)?
            .reshape((n, t, h))?
            .broadcast_add(&pos)?
            .reshape((n * t, h))?;
        let mut x = self.norm(&x, &self.embedding_norm, self.precision.dtype())?;
        for l in &self.layers {
            x = self.layer(l, &x, b)?;
        }
        // mean over each sentence's real tokens, in f32
        let real = x.to_dtype(DType::F32)?.index_select(&b.real, 0)?;
        b.pool.matmul(&real)
    }

    /// Mean-pooled embeddings of a batch, `[sentences · hidden]` row-major, on the host.
    pub fn encode(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        if batch.lengths.is_empty() {
            return Ok(Vec::new());
        }
        let longest = batch.lengths.iter().copied().max().unwrap_or(0);
        if longest > self.cfg.max_positions {
            return Err(Error::BadConfig {
                reason: format!(
                    "a sentence of {longest} tokens exceeds max_position_embeddings {}",
                    self.cfg.max_positions
                ),
            });
        }
        let b = PaddedBatch::new(batch, &self.device)?;
        self.forward(&b)
            .and_then(|p| p.flatten_all()?.to_vec1::<f32>())
            .map_err(Error::candle("run the encoder"))
    }
}

#[cfg(test)]
#[path = "portable_tests.rs"]
mod tests;
