//! Structured pruning as `config.json` records it: which attention heads each layer lost and how
//! wide each layer's FFN still is, so a compacted model's smaller tensors are checked against the
//! config instead of refused, and what is missing is known.
//!
//! - `pruned_heads` — Hugging Face's own `BertConfig` field, `{"layer": [head, ...]}` with the
//!   *original* head indices; transformers 4.x builds such a model with smaller attention
//!   (`num_attention_heads` and the head width stay those of the original).
//! - `joulecut_intermediate_sizes` — joulecut's field (Hugging Face has none for FFN widths): the
//!   FFN width of every layer, present only when some layer is narrower than `intermediate_size`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_transformers::models::bert::Config;
use serde_json::Value;

use crate::error::{Error, Result};

/// The Hugging Face field listing removed heads.
pub const PRUNED_HEADS: &str = "pruned_heads";
/// joulecut's field listing each layer's FFN width.
pub const INTERMEDIATE_SIZES: &str = "joulecut_intermediate_sizes";

/// Heads and FFN neurons removed from a model, as its `config.json` records them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Structure {
    /// Original indices of the heads removed from each layer (layers with none are absent).
    pub pruned_heads: BTreeMap<usize, BTreeSet<usize>>,
    /// Each layer's FFN width, when some layer is narrower than `intermediate_size`.
    pub intermediate_sizes: Option<Vec<usize>>,
}

impl Structure {
    /// Reads the fields from `config.json` (already parsed into `config`).
    pub fn read(path: &Path, config: &Config) -> Result<Structure> {
        let text =
            joulecut_checkpoint::input::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
            path: path.to_path_buf(),
            reason: format!("not JSON: {e}"),
        })?;
        Self::from_json(path, &v, config)
    }

    /// Parses and checks the fields of a `config.json` value; `path` only names the file.
    pub fn from_json(path: &Path, v: &Value, config: &Config) -> Result<Structure> {
        let bad = |reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let (layers, heads) = (config.num_hidden_layers, config.num_attention_heads);
        let mut s = Structure::default();
        match v.get(PRUNED_HEADS) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, list) in m {
                    let layer =
                        k.parse::<usize>()
                            .ok()
                            .filter(|&l| l < layers)
                            .ok_or_else(|| {
                                bad(format!(
                                    "`{PRUNED_HEADS}` names layer `{k}`; the model has {layers}"
                                ))
                            })?;
                    let ids = list
                        .as_array()
                        .map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                        .unwrap_or_default()
                        .ok_or_else(|| {
                            bad(format!(
                                "`{PRUNED_HEADS}[\"{k}\"]` must be a list of head indices"
                            ))
                        })?;
                    let set: BTreeSet<usize> = ids.into_iter().map(|i| i as usize).collect();
                    if let Some(&h) = set.iter().find(|&&h| h >= heads) {
                        return Err(bad(format!(
                            "`{PRUNED_HEADS}` removes head {h} of layer {layer}; num_attention_heads is {heads}"
                        )));
                    }
                    if set.len() >= heads {
                        return Err(bad(format!(
                            "`{PRUNED_HEADS}` removes every head of layer {layer}; joulecut keeps at least one"
                        )));
                    }
                    if !set.is_empty() {
                        s.pruned_heads.insert(layer, set);
                    }
                }
            }
            Some(other) => {
                return Err(bad(format!(
                    "`{PRUNED_HEADS}` must be an object {{\"layer\": [heads]}}, got {other}"
                )));
            }
        }
        match v.get(INTERMEDIATE_SIZES) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                let sizes = a
                    .iter()
                    .map(|x| x.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| v.len() == layers)
                    .ok_or_else(|| {
                        bad(format!(
                            "`{INTERMEDIATE_SIZES}` must list {layers} FFN widths"
                        ))
                    })?;
                if let Some(&w) = sizes
                    .iter()
                    .find(|&&w| w == 0 || w > config.intermediate_size)
                {
                    return Err(bad(format!(
                        "`{INTERMEDIATE_SIZES}` has width {w}; each must be 1 to intermediate_size ({})",
                        config.intermediate_size
                    )));
                }
                s.intermediate_sizes = Some(sizes);
            }
            Some(other) => {
                return Err(bad(format!(
                    "`{INTERMEDIATE_SIZES}` must be a list of widths, got {other}"
                )));
            }
        }
        Ok(s)
    }

    /// Whether any head or neuron was removed.
    pub fn is_pruned(&self, config: &Config) -> bool {
        !self.pruned_heads.is_empty()
            || (0..config.num_hidden_layers)
                .any(|l| self.intermediate(l, config) < config.intermediate_size)
    }

    /// Original indices of the heads layer `layer` still has, ascending.
    pub fn kept_heads(&self, layer: usize, config: &Config) -> Vec<usize> {
        let gone = self.pruned_heads.get(&layer);
        (0..config.num_attention_heads)
            .filter(|h| gone.is_none_or(|g| !g.contains(h)))
            .collect()
    }

    /// Attention heads of layer `layer`.
    pub fn heads(&self, layer: usize, config: &Config) -> usize {
        config.num_attention_heads - self.pruned_heads.get(&layer).map_or(0, BTreeSet::len)
    }

    /// FFN width of layer `layer`.
    pub fn intermediate(&self, layer: usize, config: &Config) -> usize {
        self.intermediate_sizes
            .as_ref()
            .and_then(|s| s.get(layer).copied())
            .unwrap_or(config.intermediate_size)
    }

    /// Weights of the encoder's linear layers (query, key, value, attention output, FFN).
    pub fn linear_params(&self, config: &Config) -> usize {
        let h = config.hidden_size;
        let d = h / config.num_attention_heads.max(1);
        (0..config.num_hidden_layers)
            .map(|l| 4 * h * self.heads(l, config) * d + 2 * h * self.intermediate(l, config))
            .sum()
    }

    /// Writes the fields into a `config.json` value: `pruned_heads` when heads are removed,
    /// `joulecut_intermediate_sizes` when some layer is narrower; absent otherwise.
    pub fn write_into(&self, v: &mut Value, config: &Config) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        if self.pruned_heads.is_empty() {
            obj.remove(PRUNED_HEADS);
        } else {
            let m: serde_json::Map<String, Value> = self
                .pruned_heads
                .iter()
                .map(|(l, h)| (l.to_string(), h.iter().copied().collect()))
                .collect();
            obj.insert(PRUNED_HEADS.into(), Value::Object(m));
        }
        let sizes: Vec<usize> = (0..config.num_hidden_layers)
            .map(|l| self.intermediate(l, config))
            .collect();
        if sizes.iter().all(|&w| w == config.intermediate_size) {
            obj.remove(INTERMEDIATE_SIZES);
        } else {
            obj.insert(INTERMEDIATE_SIZES.into(), sizes.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn cfg() -> (Value, Config) {
        let v = serde_json::json!({
            "model_type": "bert", "hidden_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 3, "intermediate_size": 256, "vocab_size": 100,
            "max_position_embeddings": 32
        });
        let c = parse_config(Path::new("config.json"), &v.to_string()).unwrap();
        (v, c)
    }

    #[test]
    fn round_trips_through_config_json() {
        let (mut v, c) = cfg();
        let p = Path::new("config.json");
        assert_eq!(
            Structure::from_json(p, &v, &c).unwrap(),
            Structure::default()
        );
        assert!(!Structure::default().is_pruned(&c));
        let s = Structure {
            pruned_heads: [(0, [1, 3].into()), (2, [0].into())].into(),
            intermediate_sizes: Some(vec![256, 128, 200]),
        };
        s.write_into(&mut v, &c);
        assert_eq!(v[PRUNED_HEADS], serde_json::json!({"0": [1, 3], "2": [0]}));
        let back = Structure::from_json(p, &v, &c).unwrap();
        assert_eq!(back, s);
        assert!(back.is_pruned(&c));
        assert_eq!(back.kept_heads(0, &c), [0, 2]);
        assert_eq!((back.heads(0, &c), back.heads(1, &c)), (2, 4));
        assert_eq!(back.intermediate(1, &c), 128);
        // 4·64·(2+4+3)·16 + 2·64·(256+128+200)
        assert_eq!(back.linear_params(&c), 4 * 64 * 9 * 16 + 2 * 64 * 584);
        // nothing removed: the fields go away again
        Structure::default().write_into(&mut v, &c);
        assert!(v.get(PRUNED_HEADS).is_none() && v.get(INTERMEDIATE_SIZES).is_none());
    }

    #[test]
    fn refuses_what_cannot_describe_the_model() {
        let (v, c) = cfg();
        let p = Path::new("config.json");
        for (key, val, want) in [
            (PRUNED_HEADS, serde_json::json!({"3": [0]}), "layer `3`"),
            (PRUNED_HEADS, serde_json::json!({"0": [4]}), "head 4"),
            (
                PRUNED_HEADS,
                serde_json::json!({"1": [0, 1, 2, 3]}),
                "every head",
            ),
            (
                PRUNED_HEADS,
                serde_json::json!({"0": "all"}),
                "list of head",
            ),
            (PRUNED_HEADS, serde_json::json!([1]), "must be an object"),
            (
                INTERMEDIATE_SIZES,
                serde_json::json!([1, 2]),
                "3 FFN widths",
            ),
            (
                INTERMEDIATE_SIZES,
                serde_json::json!([1, 2, 300]),
                "width 300",
            ),
            (INTERMEDIATE_SIZES, serde_json::json!([1, 0, 3]), "width 0"),
        ] {
            let mut v = v.clone();
            v[key] = val;
            let e = Structure::from_json(p, &v, &c).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // HF writes an empty object when nothing is pruned
        let mut v = v.clone();
        v[PRUNED_HEADS] = serde_json::json!({});
        assert!(!Structure::from_json(p, &v, &c).unwrap().is_pruned(&c));
    }
}
