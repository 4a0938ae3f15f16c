//! The `quantization_config` object of a compressed-tensors model's `config.json`, as the reference
//! implementation (`compressed_tensors.ModelCompressor.update_config`, `QuantizationConfig`,
//! `QuantizationScheme`, `QuantizationArgs`, `SparsityCompressionConfig`) writes it: written for an
//! export, checked on import.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::{Error, Result};

/// `quant_method` of compressed-tensors.
pub const QUANT_METHOD: &str = "compressed-tensors";
/// `format` of int8 weights stored as int8 with their scales (`NaiveQuantizationCompressor`).
pub const NAIVE_QUANTIZED: &str = "naive-quantized";
/// `sparsity_config.format` of unstructured sparsity.
pub const SPARSE_BITMASK: &str = "sparse-bitmask";
/// `sparsity_config.format` of 2:4 sparsity.
pub const SPARSE_24_BITMASK: &str = "sparse-24-bitmask";

/// How sparse weights are laid out in a compressed-tensors checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseLayout {
    /// `sparse-bitmask`: `M.shape`, `M.compressed`, `M.bitmask`, `M.row_offsets` (`M`: the module).
    Bitmask,
    /// `sparse-24-bitmask`: `M.shape`, `M.compressed` `[rows, cols/2]`, `M.bitmask`.
    TwoFour,
}

impl SparseLayout {
    /// The `sparsity_config.format` string.
    pub fn format(self) -> &'static str {
        match self {
            SparseLayout::Bitmask => SPARSE_BITMASK,
            SparseLayout::TwoFour => SPARSE_24_BITMASK,
        }
    }
}

/// One int8 weight of an export: its module and scheme.
#[derive(Debug, Clone)]
pub(crate) struct Int8Module {
    pub module: String,
    pub per_channel: bool,
    pub symmetric: bool,
}

/// The sparse weights of an export.
#[derive(Debug, Clone)]
pub(crate) struct SparseModules {
    pub layout: SparseLayout,
    pub modules: Vec<String>,
    /// Zeros over all elements of the sparse weights.
    pub sparsity: f64,
}

/// `quantization_config` for an export. Modules are targeted by their exact names (the
/// reference matches a target equal to a module's name), one config group per scheme.
pub(crate) fn build(int8: &[Int8Module], sparse: Option<&SparseModules>) -> Value {
    let sparsity_config = match sparse {
        None => json!({}),
        Some(s) => json!({
            "format": s.layout.format(),
            "targets": s.modules,
            "ignore": [],
            "global_sparsity": s.sparsity,
            "sparsity_structure": match s.layout {
                SparseLayout::Bitmask => "unstructured",
                SparseLayout::TwoFour => "2:4",
            },
        }),
    };
    if int8.is_empty() && sparse.is_some() {
        // A sparse-only model: no quantization fields at all, as the reference writes it.
        return json!({
            "quant_method": QUANT_METHOD,
            "sparsity_config": sparsity_config,
            "transform_config": {},
        });
    }
    let mut groups: BTreeMap<(bool, bool), Vec<String>> = BTreeMap::new();
    for m in int8 {
        groups
            .entry((m.per_channel, m.symmetric))
            .or_default()
            .push(m.module.clone());
    }
    let config_groups: serde_json::Map<String, Value> = groups
        .into_iter()
        .enumerate()
        .map(|(i, ((per_channel, symmetric), targets))| {
            let group = json!({
                "targets": targets,
                "weights": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": symmetric,
                    "group_size": null,
                    "strategy": if per_channel { "channel" } else { "tensor" },
                    "dynamic": false,
                },
                "input_activations": null,
                "output_activations": null,
                "format": NAIVE_QUANTIZED,
            });
            (format!("group_{i}"), group)
        })
        .collect();
    json!({
        "quant_method": QUANT_METHOD,
        "format": if int8.is_empty() { "dense" } else { NAIVE_QUANTIZED },
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": [],
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": sparsity_config,
        "transform_config": {},
    })
}

/// What an import needs from a checked `quantization_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Imported {
    /// The sparse layout, when the model stores sparse weights.
    pub sparse: Option<SparseLayout>,
}

fn not_importable(path: &Path, reason: String) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        reason,
        hint: "joulecut imports compressed-tensors checkpoints with int8 weights (naive-quantized or int-quantized, \
               per-channel or per-tensor) and sparse-bitmask or sparse-24-bitmask sparsity"
            .into(),
    }
}

/// Checks the `quantization_config` of `config.json` (at `path`) and says how to read the weights.
pub(crate) fn check(config: &Value, path: &Path) -> Result<Imported> {
    let Some(qc) = config.get("quantization_config") else {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            reason: "config.json has no `quantization_config`: not a compressed-tensors checkpoint"
                .into(),
            hint: "a dense Hugging Face model needs no import: joulecut reads it as it is".into(),
        });
    };
    let method = qc.get("quant_method").and_then(Value::as_str);
    if method != Some(QUANT_METHOD) {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            reason: format!(
                "quant_method is {}, not \"{QUANT_METHOD}\"",
                method.map_or("missing".to_string(), |m| format!("\"{m}\""))
            ),
            hint: "joulecut imports compressed-tensors checkpoints only (GPTQ, AWQ, bitsandbytes ... are other formats)"
                .into(),
        });
    }
    if let Some(status) = qc.get("quantization_status").and_then(Value::as_str) {
        if status != "compressed" {
            return Err(Error::BadInput {
                path: path.to_path_buf(),
                reason: format!(
                    "quantization_status is \"{status}\": the weights are not stored compressed"
                ),
                hint: "save the model compressed (llm-compressor: save_compressed=True) and import that".into(),
            });
        }
    }
    let format = qc.get("format").and_then(Value::as_str);
    check_format(format, path)?;
    if let Some(groups) = qc.get("config_groups").and_then(Value::as_object) {
        for (name, g) in groups {
            check_format(g.get("format").and_then(Value::as_str), path)?;
            check_group(name, g, path)?;
        }
    }
    let sparse = match qc.get("sparsity_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.is_empty() => None,
        Some(s) => match s.get("format").and_then(Value::as_str) {
            Some(SPARSE_BITMASK) => Some(SparseLayout::Bitmask),
            Some(SPARSE_24_BITMASK) => Some(SparseLayout::TwoFour),
            Some("dense") => None,
            other => {
                return Err(not_importable(
                    path,
                    format!("sparsity format {other:?} is not supported"),
                ));
            }
        },
    };
    Ok(Imported { sparse })
}

fn check_format(format: Option<&str>, path: &Path) -> Result<()> {
    match format {
        None | Some("dense" | NAIVE_QUANTIZED | "int-quantized") => Ok(()),
        Some(f) => Err(not_importable(
            path,
            format!("quantization format \"{f}\" is not supported"),
        )),
    }
}

fn check_group(name: &str, g: &Value, path: &Path) -> Result<()> {
    let bad = |why: String| {
        Err(not_importable(
            path,
            format!("config group `{name}`: {why}"),
        ))
    };
    let Some(w) = g.get("weights").filter(|w| !w.is_null()) else {
        return bad("it quantizes no weights".into());
    };
    if w.get("num_bits").and_then(Value::as_u64) != Some(8)
        || w.get("type").and_then(Value::as_str) != Some("int")
    {
        return bad(format!(
            "weights are {} {}-bit, joulecut imports 8-bit int",
            w.get("type").unwrap_or(&Value::Null),
            w.get("num_bits").unwrap_or(&Value::Null)
        ));
    }
    match w.get("strategy").and_then(Value::as_str) {
        Some("channel" | "tensor") => {}
        other => {
            return bad(format!(
                "weight strategy {other:?} (joulecut: channel or tensor)"
            ));
        }
    }
    if w.get("group_size").is_some_and(|v| !v.is_null()) {
        return bad("grouped weight scales are not supported".into());
    }
    if let Some(a) = g.get("input_activations").filter(|a| !a.is_null()) {
        if a.get("dynamic").and_then(Value::as_bool) != Some(true) {
            return bad(
                "static input-activation scales are not supported (joulecut chooses activation grids itself)"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_config_is_what_import_accepts() {
        let int8 = [
            Int8Module {
                module: "fc1".into(),
                per_channel: true,
                symmetric: true,
            },
            Int8Module {
                module: "fc2".into(),
                per_channel: false,
                symmetric: true,
            },
        ];
        let qc = build(&int8, None);
        assert_eq!(
            qc["config_groups"]["group_0"]["weights"]["strategy"],
            "tensor"
        );
        assert_eq!(qc["config_groups"]["group_1"]["targets"], json!(["fc1"]));
        let cfg = json!({ "quantization_config": qc });
        assert_eq!(check(&cfg, Path::new("c")).unwrap().sparse, None);
        let s = SparseModules {
            layout: SparseLayout::TwoFour,
            modules: vec!["fc1".into()],
            sparsity: 0.5,
        };
        let cfg = json!({ "quantization_config": build(&[], Some(&s)) });
        assert_eq!(
            check(&cfg, Path::new("c")).unwrap().sparse,
            Some(SparseLayout::TwoFour)
        );
    }

    #[test]
    fn unknown_methods_and_schemes_are_refused() {
        let p = Path::new("c");
        let gptq = json!({"quantization_config": {"quant_method": "gptq", "bits": 4}});
        assert!(
            check(&gptq, p)
                .unwrap_err()
                .to_string()
                .contains("\"gptq\"")
        );
        assert!(check(&json!({}), p).is_err());
        let int4 = json!({"quantization_config": {"quant_method": QUANT_METHOD, "format": "pack-quantized"}});
        assert!(
            check(&int4, p)
                .unwrap_err()
                .to_string()
                .contains("pack-quantized")
        );
        let group = json!({"quantization_config": {"quant_method": QUANT_METHOD, "config_groups": {
            "g": {"weights": {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 128}}}}});
        assert!(
            check(&group, p)
                .unwrap_err()
                .to_string()
                .contains("strategy")
        );
    }
}
