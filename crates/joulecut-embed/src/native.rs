//! The encoder on joulecut's own kernels ([`joulecut_models::bert`]) for a model directory: the
//! config and weights the directory holds, each linear layer routed by its stored encoding.

use std::collections::BTreeMap;

use candle_transformers::models::bert::{Config, HiddenAct};
use joulecut_checkpoint::{FloatType, TensorData};
use joulecut_models::RealKernels;
use joulecut_models::bert::{
    Activation, BertConfig, BertEncoder, LinearKind, Precision, Sublayer, TensorSource,
};
use joulecut_quant::ActivationGrid;

use crate::error::{Error, Result};
use crate::weights::Weights;

/// The typed sizes joulecut's encoder needs, from the checked candle config.
pub(crate) fn bert_config(c: &Config) -> BertConfig {
    BertConfig {
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        intermediate: c.intermediate_size,
        layers: c.num_hidden_layers,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        type_vocab: c.type_vocab_size,
        eps: c.layer_norm_eps as f32,
        activation: match c.hidden_act {
            HiddenAct::Gelu => Activation::Gelu,
            HiddenAct::GeluApproximate => Activation::GeluTanh,
            HiddenAct::Relu => Activation::Relu,
        },
    }
}

/// [`Weights`] seen under a prefix (`bert.` for task models), as the encoder's tensor source.
pub(crate) struct Prefixed<'a> {
    pub(crate) weights: &'a Weights,
    pub(crate) prefix: &'a str,
}

impl TensorSource for Prefixed<'_> {
    fn has(&self, name: &str) -> bool {
        self.weights.contains(&format!("{}{name}", self.prefix))
    }

    fn tensor(&self, name: &str) -> joulecut_models::Result<TensorData> {
        self.weights
            .stored(&format!("{}{name}", self.prefix))
            .map_err(|e| match e {
                Error::Checkpoint(c) => joulecut_models::Error::Checkpoint(c),
                _ => joulecut_models::Error::MissingTensor { name: name.into() },
            })
    }
}

/// Loads the encoder from `weights` (tensor names under `prefix`).
pub(crate) fn load(weights: &Weights, prefix: &str, config: &Config) -> Result<BertEncoder> {
    let kernels = weights.kernels()?;
    let src = Prefixed { weights, prefix };
    let mut enc = BertEncoder::load(bert_config(config), &src, &kernels)
        .map_err(|e| model_err(weights, prefix, e))?;
    let grids = weights.layer_grids()?;
    if !grids.is_empty() {
        let unprefixed = grids
            .into_iter()
            .map(|(m, g)| (m.strip_prefix(prefix).unwrap_or(&m).to_string(), g))
            .collect();
        enc.set_activation_grids(&unprefixed);
    }
    Ok(enc)
}

/// The precision the portable engine runs a model in when none is asked for: that of the
/// stored dense weights of the first layer's query (f16 and bf16 files compute in half
/// precision; anything else in f32).
pub(crate) fn stored_precision(src: &Prefixed<'_>) -> Precision {
    match src.tensor(&format!("{}.weight", Sublayer::Qkv.modules(0)[0])) {
        Ok(TensorData::Dense(d)) => match d.dtype {
            FloatType::F16 => Precision::F16,
            FloatType::BF16 => Precision::BF16,
            _ => Precision::F32,
        },
        _ => Precision::F32,
    }
}

/// A models error from a forward pass: device (candle) failures stay internal errors, anything
/// else is the model's configuration at `path`.
pub(crate) fn run_err(path: &std::path::Path, e: joulecut_models::Error) -> Error {
    match e {
        joulecut_models::Error::Candle { action, source } => Error::Candle { action, source },
        other => Error::BadConfig {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Names the file in a models error, keeping the shape and missing-tensor cases typed.
pub(crate) fn model_err(weights: &Weights, prefix: &str, e: joulecut_models::Error) -> Error {
    let path = weights.path().to_path_buf();
    match e {
        joulecut_models::Error::MissingTensor { name } => Error::MissingTensor {
            name: format!("{prefix}{name}"),
            path,
        },
        joulecut_models::Error::ShapeMismatch {
            name,
            expected,
            found,
        } => Error::WrongShape {
            name: format!("{prefix}{name}"),
            path,
            expected,
            found,
        },
        joulecut_models::Error::Checkpoint(c) => Error::Checkpoint(c),
        joulecut_models::Error::Candle { action, source } => Error::Candle { action, source },
        other => Error::BadConfig {
            path,
            reason: other.to_string(),
        },
    }
}

/// Which kernel runs each linear layer (`encoder.layer.0.attention.self.query` ..., in order).
pub(crate) fn routes(enc: &BertEncoder) -> Vec<(String, LinearKind)> {
    let mut out = Vec::new();
    for (i, l) in enc.layers().iter().enumerate() {
        for s in Sublayer::ALL {
            let kind = l.linear(s).kind();
            out.extend(s.modules(i).into_iter().map(|m| (m, kind)));
        }
    }
    out
}

impl Weights {
    /// The per-layer activation grids `joulecut.int8_activations.layers` records (empty when
    /// absent).
    pub fn layer_grids(&self) -> Result<BTreeMap<String, ActivationGrid>> {
        let key = joulecut_checkpoint::meta::INT8_ACTIVATIONS_LAYERS;
        let Some(text) = self.first_shard().metadata().get(key) else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_str(text).map_err(|e| Error::BadConfig {
            path: self.path().to_path_buf(),
            reason: format!("`{key}` is not an object of s8/u7/u6 tags: {e}"),
        })
    }

    /// The kernel settings the weights ask for (the first file's `joulecut.int8_activations`).
    pub fn kernels(&self) -> Result<RealKernels> {
        RealKernels::for_checkpoint(self.first_shard()).map_err(|e| Error::BadConfig {
            path: self.path().to_path_buf(),
            reason: e.to_string(),
        })
    }
}
