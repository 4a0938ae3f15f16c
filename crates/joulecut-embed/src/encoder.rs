//! A BERT-family sentence encoder as Hugging Face ships it — `config.json`, `tokenizer.json`,
//! `model.safetensors` (any joulecut encoding) — producing mean-pooled sentence embeddings.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{D, DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use joulecut_models::bert::{
    BertConfig, BertEncoder, LinearKind, PortableEncoder, PortableKind, Precision, TensorSource,
    TokenBatch, Workspace,
};

use crate::config::read_config;
use crate::error::{Error, Result};
use crate::structure::Structure;
use crate::weights::Weights;

/// Settings for [`SentenceEncoder::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EncodeConfig {
    /// Sentences per forward pass (unpadded on joulecut's kernels; padded to the longest sentence
    /// of the batch on candle-transformers').
    pub batch_size: usize,
}

/// Which implementation runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// joulecut's own kernels on the CPU: each linear layer on the kernel its encoding calls for
    /// (int8 GEMM, sparse, dense f32), sentences unpadded.
    #[default]
    Joulecut,
    /// candle-transformers' BERT with every weight decoded to f32 (any device; the reference
    /// the joulecut engine is checked against).
    Candle,
    /// joulecut's BERT in candle tensor ops, for any device (the GPU's engine): dense products in
    /// f32, f16 or bf16, int8 weights through candle's quantized matmul as stored, structurally
    /// pruned layers at their smaller sizes.
    Portable,
}

impl Engine {
    /// The engine [`SentenceEncoder::load`] picks: joulecut's kernels on the CPU, the portable
    /// engine elsewhere.
    pub fn for_device(device: &Device) -> Engine {
        if device.is_cpu() {
            Engine::Joulecut
        } else {
            Engine::Portable
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "joulecut" => Ok(Engine::Joulecut),
            "candle" => Ok(Engine::Candle),
            "portable" => Ok(Engine::Portable),
            other => Err(format!(
                "unknown engine `{other}` (joulecut, candle, portable)"
            )),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Joulecut => "joulecut",
            Engine::Candle => "candle",
            Engine::Portable => "portable",
        })
    }
}

/// The network behind a [`SentenceEncoder`].
enum Net {
    Joulecut {
        model: BertEncoder,
        /// Scratch reused across batches.
        workspace: Mutex<Workspace>,
    },
    Candle(BertModel),
    Portable(PortableEncoder),
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig { batch_size: 32 }
    }
}

/// Where a BERT model's tensors live in the file: HF's task models (`BertForMaskedLM`, ...) nest
/// the encoder under `bert.`; `BertModel` exports and sentence-transformers have no prefix.
const PREFIXES: &[&str] = &["", "bert."];
const PROBE: &str = "embeddings.word_embeddings.weight";

/// A loaded encoder.
pub struct SentenceEncoder {
    dir: PathBuf,
    config: Config,
    structure: Structure,
    tokenizer: Tokenizer,
    net: Net,
    weights: Weights,
    prefix: &'static str,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("dir", &self.dir)
            .field("hidden_size", &self.config.hidden_size)
            .field("layers", &self.config.num_hidden_layers)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn required(dir: &Path, file: &'static str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingFile {
            dir: dir.to_path_buf(),
            file,
            instead: None,
        })
    }
}

/// Loads `tokenizer.json` and sets it up for batches: pad to the longest sentence on the right
/// (a shipped fixed-length padding would waste compute), truncate at the model's position limit.
fn load_tokenizer(path: &Path, config: &Config) -> Result<Tokenizer> {
    let err = |reason: String| Error::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let mut tok = Tokenizer::from_file(path).map_err(|e| err(format!("does not load: {e}")))?;
    let max_id = tok.get_vocab(true).into_values().max().unwrap_or(0) as usize;
    if max_id >= config.vocab_size {
        return Err(err(format!(
            "token id {max_id} is outside the model's vocab_size {} (config.json)",
            config.vocab_size
        )));
    }
    let mut padding = tok.get_padding().cloned().unwrap_or_else(|| {
        let pad_token = "[PAD]".to_string();
        PaddingParams {
            pad_id: tok
                .token_to_id(&pad_token)
                .unwrap_or(config.pad_token_id as u32),
            pad_token,
            ..PaddingParams::default()
        }
    });
    padding.strategy = PaddingStrategy::BatchLongest;
    padding.direction = PaddingDirection::Right;
    padding.pad_to_multiple_of = None;
    tok.with_padding(Some(padding));
    let limit = config.max_position_embeddings;
    let trunc = match tok.get_truncation().cloned() {
        Some(t) => TruncationParams {
            max_length: t.max_length.min(limit),
            stride: 0,
            ..t
        },
        None => TruncationParams {
            max_length: limit,
            ..TruncationParams::default()
        },
    };
    tok.with_truncation(Some(trunc))
        .map_err(|e| err(format!("truncation at {limit} tokens: {e}")))?;
    Ok(tok)
}

impl SentenceEncoder {
    /// Loads a model directory on `device`: on the CPU with joulecut's kernels, elsewhere with
    /// the portable engine in the precision the weights are stored in.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(dir, device, Engine::for_device(device))
    }

    /// Loads a model directory with the given engine ([`Engine::Joulecut`] runs on the CPU only;
    /// [`Engine::Portable`] computes in the precision the weights are stored in).
    pub fn load_with(dir: impl AsRef<Path>, device: &Device, engine: Engine) -> Result<Self> {
        Self::load_opts(dir, device, engine, None)
    }

    /// [`SentenceEncoder::load_with`], with the portable engine's precision chosen (`None`: as
    /// stored). A precision for another engine is refused.
    pub fn load_opts(
        dir: impl AsRef<Path>,
        device: &Device,
        engine: Engine,
        precision: Option<Precision>,
    ) -> Result<Self> {
        if engine == Engine::Joulecut && !device.is_cpu() {
            return Err(Error::WrongEngine(
                "joulecut's transformer kernels run on the CPU; use the portable engine on a GPU"
                    .into(),
            ));
        }
        if let (Some(p), false) = (precision, engine == Engine::Portable) {
            return Err(Error::WrongEngine(format!(
                "a {p} precision is the portable engine's setting; the {engine} engine computes \
                 in f32 (or as the weights are stored)"
            )));
        }
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::NotADirectory { path: dir });
        }
        let config_path = required(&dir, "config.json")?;
        let tokenizer_path = required(&dir, "tokenizer.json")?;
        let config = read_config(&config_path)?;
        let tokenizer = load_tokenizer(&tokenizer_path, &config)?;
        let structure = Structure::read(&config_path, &config)?;
        if engine == Engine::Candle && structure.is_pruned(&config) {
            return Err(Error::StructurallyPruned { path: config_path });
        }
        let weights = Weights::open_dir(&dir)?;
        crate::config::check_structured_weights(&config_path, &config, &structure, &weights)?;
        let prefix = PREFIXES
            .iter()
            .copied()
            .find(|p| weights.contains(&format!("{p}{PROBE}")))
            .ok_or_else(|| Error::MissingTensor {
                name: format!("{PROBE}` (or `bert.{PROBE}"),
                path: weights.path().to_path_buf(),
            })?;
        let net = match engine {
            Engine::Joulecut => Net::Joulecut {
                model: crate::native::load(&weights, prefix, &config)?,
                workspace: Mutex::new(Workspace::default()),
            },
            Engine::Candle => {
                let vb = weights.var_builder(device);
                let vb = match prefix.strip_suffix('.') {
                    Some(p) => vb.pp(p),
                    None => vb,
                };
                Net::Candle(BertModel::load(vb, &config).map_err(|e| {
                    weights
                        .take_problem()
                        .unwrap_or_else(|| Error::candle("build the BERT model")(e))
                })?)
            }
            Engine::Portable => {
                let src = crate::native::Prefixed {
                    weights: &weights,
                    prefix,
                };
                let precision = precision.unwrap_or_else(|| crate::native::stored_precision(&src));
                let model = PortableEncoder::load(
                    crate::native::bert_config(&config),
                    &src,
                    device,
                    precision,
                )
                .map_err(|e| crate::native::model_err(&weights, prefix, e))?;
                Net::Portable(model)
            }
        };
        Ok(SentenceEncoder {
            dir,
            config,
            structure,
            tokenizer,
            net,
            weights,
            prefix,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The heads and FFN neurons structured pruning removed, as `config.json` records them.
    pub fn structure(&self) -> &Structure {
        &self.structure
    }

    /// Weights of the encoder's linear layers as the model runs them (fewer after structured
    /// pruning; the same for any encoding of the same shapes).
    pub fn linear_params(&self) -> usize {
        self.structure.linear_params(&self.config)
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The engine running the encoder.
    pub fn engine(&self) -> Engine {
        match self.net {
            Net::Joulecut { .. } => Engine::Joulecut,
            Net::Candle(_) => Engine::Candle,
            Net::Portable(_) => Engine::Portable,
        }
    }

    /// The precision of the portable engine's dense products (`None` on the other engines).
    pub fn precision(&self) -> Option<Precision> {
        match &self.net {
            Net::Portable(m) => Some(m.precision()),
            _ => None,
        }
    }

    /// The kernel behind each linear layer (module names without `.weight`), in order, on
    /// joulecut's engine; on the others see [`SentenceEncoder::kernels`].
    pub fn routes(&self) -> Vec<(String, LinearKind)> {
        match &self.net {
            Net::Joulecut { model, .. } => crate::native::routes(model),
            Net::Candle(_) | Net::Portable(_) => Vec::new(),
        }
    }

    /// What runs each linear layer, by name as reports print it: `dense-f32`, `int8`, `sparse`
    /// (joulecut's kernels); `dense-f16`, `dense-bf16`, `int8-q8_0`, `decoded-f32`, ... (the
    /// portable engine). Empty on the candle engine, where every layer is dense f32.
    pub fn kernels(&self) -> Vec<(String, String)> {
        match &self.net {
            Net::Joulecut { model, .. } => crate::native::routes(model)
                .into_iter()
                .map(|(m, k)| {
                    let name = match k {
                        LinearKind::Dense => "dense-f32",
                        LinearKind::Int8 => "int8",
                        LinearKind::Sparse => "sparse",
                    };
                    (m, name.to_string())
                })
                .collect(),
            Net::Candle(_) => Vec::new(),
            Net::Portable(m) => m
                .routes()
                .iter()
                .map(|(name, k)| {
                    let kernel = match k {
                        PortableKind::Dense => format!("dense-{}", m.precision()),
                        PortableKind::Int8Q8_0 => "int8-q8_0".to_string(),
                        PortableKind::Decoded => format!("decoded-{}", m.precision()),
                    };
                    (name.clone(), kernel)
                })
                .collect(),
        }
    }

    /// The stored tensors under the encoder's names (no `bert.` prefix), in their stored
    /// encodings: what training a student starts from.
    pub fn tensors(&self) -> impl TensorSource + '_ {
        crate::native::Prefixed {
            weights: &self.weights,
            prefix: self.prefix,
        }
    }

    /// The sizes and constants of the encoder (`config.json`; structured pruning's smaller
    /// layers come from the weights).
    pub fn bert_config(&self) -> BertConfig {
        crate::native::bert_config(&self.config)
    }

    /// Whether this model saves compute against `original` (a `real` saving): an int8 or sparse
    /// kernel runs some linear layer, or the linear layers are physically smaller (fewer layers,
    /// heads or FFN neurons). Otherwise the saving is `nominal`: a smaller file, the same dense
    /// compute.
    pub fn saves_compute_against(&self, original: &SentenceEncoder) -> bool {
        self.kernels().iter().any(|(_, k)| kernel_saves_compute(k))
            || self.linear_params() < original.linear_params()
    }

    /// The joulecut encoder itself (`None` on the other engines), for calibrated compression.
    pub fn native(&self) -> Option<&BertEncoder> {
        match &self.net {
            Net::Joulecut { model, .. } => Some(model),
            _ => None,
        }
    }

    /// The joulecut encoder, mutable (`None` on the other engines): calibrated compression changes
    /// its weights in place.
    pub fn native_mut(&mut self) -> Option<&mut BertEncoder> {
        match &mut self.net {
            Net::Joulecut { model, .. } => Some(model),
            _ => None,
        }
    }

    /// Tokenizes sentences unpadded, as the joulecut engine runs them.
    pub fn token_batch(&self, sentences: &[String]) -> Result<TokenBatch> {
        let enc = self.tokenize(sentences)?;
        let mut b = TokenBatch::default();
        for e in &enc {
            // padding sits on the right, after the mask's ones
            let n = e.get_attention_mask().iter().filter(|&&m| m != 0).count();
            b.push(&e.get_ids()[..n], &e.get_type_ids()[..n]);
        }
        Ok(b)
    }

    /// The tensor-name prefix the weights use (`""` or `"bert."`).
    pub fn prefix(&self) -> &str {
        self.prefix
    }

    /// Bytes of the weight files on disk.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.file_bytes()
    }

    /// Number of tokens (with special tokens, before padding) of each sentence.
    pub fn token_counts(&self, sentences: &[String]) -> Result<Vec<usize>> {
        let enc = self.tokenize(sentences)?;
        Ok(enc
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|&&m| m != 0).count())
            .collect())
    }

    fn tokenize(&self, sentences: &[String]) -> Result<Vec<tokenizers::Encoding>> {
        self.tokenizer
            .encode_batch(sentences.to_vec(), true)
            .map_err(|e| Error::Tokenizer {
                path: self.dir.join("tokenizer.json"),
                reason: format!("cannot tokenize: {e}"),
            })
    }

    /// Mean-pooled embeddings, one row of [`SentenceEncoder::dim`] values per sentence, in order.
    pub fn encode(&self, sentences: &[String], cfg: &EncodeConfig) -> Result<Vec<Vec<f32>>> {
        if cfg.batch_size == 0 {
            return Err(Error::BadSetting("batch size must be at least 1".into()));
        }
        let mut out = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(cfg.batch_size) {
            let enc = self.tokenize(chunk)?;
            let rows = self.forward(&enc)?;
            out.extend(rows);
        }
        Ok(out)
    }

    fn forward(&self, enc: &[tokenizers::Encoding]) -> Result<Vec<Vec<f32>>> {
        let unpadded = || {
            let mut b = TokenBatch::default();
            for e in enc {
                let n = e.get_attention_mask().iter().filter(|&&m| m != 0).count();
                b.push(&e.get_ids()[..n], &e.get_type_ids()[..n]);
            }
            b
        };
        let h = self.config.hidden_size;
        let pooled = match &self.net {
            Net::Candle(m) => return self.forward_candle(m, enc),
            Net::Joulecut { model, workspace } => {
                let mut ws = workspace.lock().unwrap_or_else(|p| p.into_inner());
                model.encode(&unpadded(), &mut ws)
            }
            Net::Portable(model) => model.encode(&unpadded()),
        };
        let pooled =
            pooled.map_err(|e| crate::native::run_err(&self.dir.join("config.json"), e))?;
        Ok(pooled.chunks_exact(h).map(<[f32]>::to_vec).collect())
    }

    fn forward_candle(
        &self,
        model: &BertModel,
        enc: &[tokenizers::Encoding],
    ) -> Result<Vec<Vec<f32>>> {
        let dev = &model.device;
        let stack = |f: fn(&tokenizers::Encoding) -> &[u32], what: &str| -> Result<Tensor> {
            let rows = enc
                .iter()
                .map(|e| Tensor::new(f(e), dev))
                .collect::<candle_core::Result<Vec<_>>>()
                .and_then(|r| Tensor::stack(&r, 0));
            rows.map_err(Error::candle(format!("batch the {what}")))
        };
        let ids = stack(tokenizers::Encoding::get_ids, "token ids")?;
        let types = stack(tokenizers::Encoding::get_type_ids, "token type ids")?;
        let mask = stack(tokenizers::Encoding::get_attention_mask, "attention mask")?;
        let hidden = model
            .forward(&ids, &types, Some(&mask))
            .map_err(Error::candle("run the BERT encoder"))?;
        let pooled = mean_pool(&hidden, &mask).map_err(Error::candle("mean-pool"))?;
        pooled.to_vec2().map_err(Error::candle("read embeddings"))
    }
}

/// Whether a kernel named by [`SentenceEncoder::kernels`] computes differently from the dense
/// f32 baseline (a compressed kernel, or dense products in half precision).
pub fn kernel_saves_compute(kernel: &str) -> bool {
    !matches!(kernel, "dense-f32" | "decoded-f32")
}

/// Mean of the token states over the attention mask: `hidden` `[batch, seq, dim]`, `mask`
/// `[batch, seq]` (1 = token, 0 = padding) → `[batch, dim]`, as sentence-transformers' mean
/// pooling does.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    // clamp like sentence-transformers (1e-9): an all-padding row gives zeros, not NaN
    let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    sum.broadcast_div(&count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_padding() {
        let dev = Device::Cpu;
        // two sentences: 3 tokens, and 1 token + 2 padding rows holding garbage
        let h = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [5., 6.]],
                [[10., -10.], [99., 99.], [-99., 7.]],
            ],
            &dev,
        )
        .unwrap();
        let m = Tensor::new(&[[1u32, 1, 1], [1, 0, 0]], &dev).unwrap();
        let p = mean_pool(&h, &m).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p, vec![vec![3., 4.], vec![10., -10.]]);
    }
}
