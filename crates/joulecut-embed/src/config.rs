//! `config.json` → candle-transformers' BERT [`Config`], checked before any weight is read, then
//! against the weights' shapes ([`check_weights`]).
//!
//! Hugging Face's `BertConfig` gives every field a default; the dimension fields are required here
//! anyway, because a config without them is almost certainly not a BERT config. Activation names
//! HF uses that candle spells differently (`gelu_new`, `gelu_pytorch_tanh`) are mapped.
//!
//! Only `model_type` `bert` is accepted ([`SUPPORTED_MODEL_TYPES`]): the encoder numbers positions
//! from 0 and has BERT's tensor names, so RoBERTa-style models (positions offset past the padding
//! id), DistilBERT, MPNet and the like would load wrongly or not at all.

use std::path::Path;

use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::structure::{INTERMEDIATE_SIZES, Structure};
use crate::weights::Weights;

/// `model_type` values this loader accepts.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

/// The tensor every BERT-family encoder has (under a task model's prefix, e.g. `bert.`).
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// Whether a tensor name marks a BERT-family encoder's weights (its word-embedding table, bare or
/// under a prefix such as `bert.` or `roberta.`).
pub fn is_encoder_tensor(name: &str) -> bool {
    name.ends_with(WORD_EMBEDDINGS)
}

/// Reads and validates `config.json`.
pub fn read_config(path: &Path) -> Result<Config> {
    let text = joulecut_checkpoint::input::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(path, &text)
}

/// Parses a BERT config from JSON text; `path` only names the file in errors.
pub fn parse_config(path: &Path, text: &str) -> Result<Config> {
    let bad = |reason: String| Error::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let model_type = obj.get("model_type").and_then(Value::as_str);
    match model_type {
        Some(t) if !SUPPORTED_MODEL_TYPES.contains(&t) => {
            return Err(Error::NotBert {
                path: path.to_path_buf(),
                found: t.into(),
            });
        }
        Some(_) => {}
        None => {
            // No model_type: trust `architectures` if it names something else.
            if let Some(archs) = obj.get("architectures").and_then(Value::as_array) {
                let names: Vec<&str> = archs.iter().filter_map(Value::as_str).collect();
                if !names.is_empty() && !names.iter().any(|a| a.starts_with("Bert")) {
                    return Err(Error::NotBert {
                        path: path.to_path_buf(),
                        found: names.join(", "),
                    });
                }
            }
        }
    }
    let dim = |key: &str| -> Result<usize> {
        match obj.get(key) {
            None => Err(bad(format!("missing `{key}`"))),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(bad(format!("`{key}` must be a positive integer, got {v}"))),
            },
        }
    };
    let opt_dim = |key: &str, default: usize| -> Result<usize> {
        if obj.contains_key(key) {
            dim(key)
        } else {
            Ok(default)
        }
    };
    let float = |key: &str, default: f64| -> Result<f64> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(format!("`{key}` must be a number, got {v}"))),
        }
    };
    let hidden_size = dim("hidden_size")?;
    let num_attention_heads = dim("num_attention_heads")?;
    if hidden_size % num_attention_heads != 0 {
        return Err(bad(format!(
            "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
        )));
    }
    let hidden_act = match obj
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu")
    {
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HiddenAct::GeluApproximate,
        "relu" => HiddenAct::Relu,
        other => {
            return Err(bad(format!(
                "hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            )));
        }
    };
    match obj.get("position_embedding_type").and_then(Value::as_str) {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(bad(format!(
                "position_embedding_type `{other}` is not supported (absolute only)"
            )));
        }
    }
    let layer_norm_eps = float("layer_norm_eps", 1e-12)?;
    if layer_norm_eps.is_nan() || layer_norm_eps <= 0.0 {
        return Err(bad(format!(
            "layer_norm_eps must be positive, got {layer_norm_eps}"
        )));
    }
    Ok(Config {
        vocab_size: dim("vocab_size")?,
        hidden_size,
        num_hidden_layers: dim("num_hidden_layers")?,
        num_attention_heads,
        intermediate_size: dim("intermediate_size")?,
        hidden_act,
        hidden_dropout_prob: float("hidden_dropout_prob", 0.1)?,
        max_position_embeddings: dim("max_position_embeddings")?,
        type_vocab_size: opt_dim("type_vocab_size", 2)?,
        initializer_range: float("initializer_range", 0.02)?,
        layer_norm_eps,
        pad_token_id: obj.get("pad_token_id").and_then(Value::as_u64).unwrap_or(0) as usize,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: false,
        classifier_dropout: None,
        model_type: Some("bert".into()),
    })
}

/// Checks `config.json`'s sizes against the weights' shapes (headers only): `vocab_size` and
/// `hidden_size` against the word embeddings, `max_position_embeddings` against the position
/// table, `num_hidden_layers` against the layers stored, and each layer's attention heads and FFN
/// width against `num_attention_heads` and `intermediate_size` — less the heads and neurons a
/// structurally pruned model's config records as removed ([`Structure`], read from `path`).
/// Without it a wrong config fails later on one tensor's shape, or — with fewer layers than the
/// weights hold — silently runs a truncated model. Weights without a word-embedding table are left
/// to the loader, which names the missing tensor.
pub fn check_weights(path: &Path, config: &Config, weights: &Weights) -> Result<()> {
    check_structured_weights(path, config, &Structure::read(path, config)?, weights)
}

/// [`check_weights`] with the config's [`Structure`] already read.
pub fn check_structured_weights(
    path: &Path,
    config: &Config,
    structure: &Structure,
    weights: &Weights,
) -> Result<()> {
    let Some(word) = weights
        .names()
        .filter(|n| is_encoder_tensor(n))
        .min_by_key(|n| n.len())
    else {
        return Ok(());
    };
    let prefix = &word[..word.len() - WORD_EMBEDDINGS.len()];
    let mismatch = |field: &'static str, value: usize, found: String| Error::ConfigMismatch {
        path: path.to_path_buf(),
        field,
        value,
        found,
    };
    let has_shape = |name: String, fields: [(&'static str, usize); 2]| -> Result<()> {
        let Some(shape) = weights.shape(&name) else {
            return Ok(()); // missing: the loader names it
        };
        for (axis, (field, value)) in fields.into_iter().enumerate() {
            if shape.len() != 2 || shape[axis] != value {
                return Err(mismatch(
                    field,
                    value,
                    format!("tensor `{name}` has shape {shape:?}"),
                ));
            }
        }
        Ok(())
    };
    let hidden = ("hidden_size", config.hidden_size);
    has_shape(
        word.to_string(),
        [("vocab_size", config.vocab_size), hidden],
    )?;
    has_shape(
        format!("{prefix}embeddings.position_embeddings.weight"),
        [
            ("max_position_embeddings", config.max_position_embeddings),
            hidden,
        ],
    )?;
    let head_dim = config.hidden_size / config.num_attention_heads;
    for l in 0..config.num_hidden_layers {
        let (heads, inter) = (
            structure.heads(l, config),
            structure.intermediate(l, config),
        );
        let query = format!("{prefix}encoder.layer.{l}.attention.self.query.weight");
        if let Some(shape) = weights.shape(&query)
            && shape.first() != Some(&(heads * head_dim))
        {
            let after = if structure.pruned_heads.contains_key(&l) {
                format!(", {heads} after `pruned_heads`,")
            } else {
                String::new()
            };
            return Err(mismatch(
                "num_attention_heads",
                config.num_attention_heads,
                format!(
                    "layer {l}{after} needs {} query rows of {head_dim}-wide heads and tensor `{query}` has shape {shape:?}",
                    heads * head_dim
                ),
            ));
        }
        let inter_field = if structure.intermediate_sizes.is_some() {
            INTERMEDIATE_SIZES
        } else {
            "intermediate_size"
        };
        has_shape(
            format!("{prefix}encoder.layer.{l}.intermediate.dense.weight"),
            [(inter_field, inter), hidden],
        )?;
    }
    let layer_prefix = format!("{prefix}encoder.layer.");
    let layers: std::collections::BTreeSet<usize> = weights
        .names()
        .filter_map(|n| n.strip_prefix(layer_prefix.as_str()))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    if layers.len() != config.num_hidden_layers {
        let found = match (layers.first(), layers.last()) {
            (Some(a), Some(b)) => format!(
                "the weights hold {} layers (`{layer_prefix}{a}` to `{layer_prefix}{b}`)",
                layers.len()
            ),
            _ => format!("the weights hold no `{layer_prefix}N` layer"),
        };
        return Err(mismatch(
            "num_hidden_layers",
            config.num_hidden_layers,
            found,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{
      "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
      "architectures": ["BertModel"],
      "attention_probs_dropout_prob": 0.1,
      "gradient_checkpointing": false,
      "hidden_act": "gelu",
      "hidden_dropout_prob": 0.1,
      "hidden_size": 384,
      "initializer_range": 0.02,
      "intermediate_size": 1536,
      "layer_norm_eps": 1e-12,
      "max_position_embeddings": 512,
      "model_type": "bert",
      "num_attention_heads": 12,
      "num_hidden_layers": 6,
      "pad_token_id": 0,
      "position_embedding_type": "absolute",
      "transformers_version": "4.8.2",
      "type_vocab_size": 2,
      "use_cache": true,
      "vocab_size": 30522
    }"#;

    fn p() -> &'static Path {
        Path::new("config.json")
    }

    #[test]
    fn parses_a_real_sentence_transformers_config() {
        let c = parse_config(p(), MINILM).unwrap();
        assert_eq!(c.hidden_size, 384);
        assert_eq!(c.num_hidden_layers, 6);
        assert_eq!(c.num_attention_heads, 12);
        assert_eq!(c.intermediate_size, 1536);
        assert_eq!(c.vocab_size, 30522);
        assert_eq!(c.hidden_act, HiddenAct::Gelu);
    }

    #[test]
    fn rejects_other_architectures() {
        let t = MINILM.replace("\"bert\"", "\"gpt2\"");
        assert!(
            matches!(parse_config(p(), &t), Err(Error::NotBert { found, .. }) if found == "gpt2")
        );
        let t = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 8}"#;
        assert!(matches!(parse_config(p(), t), Err(Error::NotBert { .. })));
    }

    #[test]
    fn names_the_missing_or_bad_field() {
        let t = MINILM.replace("\"hidden_size\": 384,", "");
        let e = parse_config(p(), &t).unwrap_err().to_string();
        assert!(e.contains("missing `hidden_size`"), "{e}");
        let t = MINILM.replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 5");
        let e = parse_config(p(), &t).unwrap_err().to_string();
        assert!(e.contains("not a multiple"), "{e}");
        let e = parse_config(p(), "{not json").unwrap_err().to_string();
        assert!(e.contains("not JSON"), "{e}");
        let t = MINILM.replace("\"absolute\"", "\"relative_key\"");
        assert!(parse_config(p(), &t).is_err());
    }

    #[test]
    fn maps_hf_activation_names() {
        let t = MINILM.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"gelu_new\"");
        assert_eq!(
            parse_config(p(), &t).unwrap().hidden_act,
            HiddenAct::GeluApproximate
        );
    }
}
