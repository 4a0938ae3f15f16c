//! `joulecut prune DIR -o OUT --granularity heads|neurons --sparsity F [--method wanda
//! --calibration FILE]`: structured pruning of a BERT-family model directory. A fraction of every
//! encoder layer's attention heads or FFN neurons is removed and the layers are compacted
//! (`BertEncoder::prune_structured`): the output's tensors are physically smaller, `config.json`
//! records what is gone (`pruned_heads`, `joulecut_intermediate_sizes`), and every other tensor and
//! file is copied unchanged. `--method magnitude` ranks units by their weights; `--method wanda`
//! by their output change on the calibration sentences, with their mean folded into the bias.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Device;
use joulecut::checkpoint::{
    DenseTensor, FloatType, HistoryEntry, Precomputed, Source, StreamOptions, TensorData,
    TensorRef, check_output, stream,
};
use joulecut::embed::{Engine, SentenceEncoder, Structure, read_sentences};
use joulecut::models::bert::{StructuredReport, StructuredSpec, UnitScore};
use joulecut::prune::Method;

use super::error::bad_input;
use super::eval_embeddings::embed_err;
use super::output::{human_bytes, print_json};

/// Which units are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Attention heads.
    Heads,
    /// FFN neurons.
    Neurons,
}

impl Units {
    fn name(self) -> &'static str {
        match self {
            Units::Heads => "heads",
            Units::Neurons => "neurons",
        }
    }
}

/// What the command needs beyond the generic prune arguments.
pub struct StructuredArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub units: Units,
    pub sparsity: f64,
    pub method: Method,
    pub calibration: Option<&'a Path>,
    pub json: bool,
}

/// The validated spec: the fraction in range, the method one that ranks whole units.
fn spec_of(a: &StructuredArgs<'_>) -> anyhow::Result<StructuredSpec> {
    if !(0.0..1.0).contains(&a.sparsity) {
        return Err(bad_input(
            format!(
                "--sparsity {} is outside [0, 1) for --granularity {}",
                a.sparsity,
                a.units.name()
            ),
            "e.g. --sparsity 0.25 removes a quarter of every layer's units (each layer keeps at least one)",
        ));
    }
    let score = match (a.method, a.calibration) {
        (Method::Magnitude, None) => UnitScore::Magnitude,
        (Method::Wanda, Some(_)) => UnitScore::Activation,
        (Method::Magnitude, Some(c)) => {
            return Err(bad_input(
                format!(
                    "--calibration {} is unused by --method magnitude",
                    c.display()
                ),
                "use --method wanda to rank heads and neurons on calibration sentences",
            ));
        }
        (Method::Wanda, None) => {
            return Err(bad_input(
                format!(
                    "--method wanda --granularity {} needs --calibration FILE",
                    a.units.name()
                ),
                "give sentences like the ones the model will embed, one per line (128 is plenty)",
            ));
        }
        (m, _) => {
            return Err(bad_input(
                format!(
                    "--method {m} updates single weights; it does not rank {}",
                    a.units.name()
                ),
                "use --method wanda --calibration FILE (activation-aware) or --method magnitude",
            ));
        }
    };
    let (heads, neurons) = match a.units {
        Units::Heads => (a.sparsity, 0.0),
        Units::Neurons => (0.0, a.sparsity),
    };
    Ok(StructuredSpec {
        heads,
        neurons,
        score,
    })
}

/// The config's record of what is gone, after this pass removed `reports`' units.
fn new_structure(enc: &SentenceEncoder, reports: &[StructuredReport]) -> Structure {
    let cfg = enc.config();
    let mut s = enc.structure().clone();
    for r in reports {
        let kept = s.kept_heads(r.layer, cfg);
        for &h in &r.removed_heads {
            s.pruned_heads.entry(r.layer).or_default().insert(kept[h]);
        }
    }
    let sizes: Vec<usize> = (0..cfg.num_hidden_layers)
        .map(|l| {
            reports
                .iter()
                .find(|r| r.layer == l)
                .map_or(s.intermediate(l, cfg), |r| r.neurons_after)
        })
        .collect();
    s.intermediate_sizes = sizes
        .iter()
        .any(|&w| w < cfg.intermediate_size)
        .then_some(sizes);
    s
}

pub fn run(a: StructuredArgs<'_>) -> anyhow::Result<ExitCode> {
    let units = a.units.name();
    if !a.input.is_dir() {
        return Err(bad_input(
            format!(
                "--granularity {units} removes attention heads or FFN neurons of a BERT-family model directory; {} is not one",
                a.input.display()
            ),
            "pass the Hugging Face directory (config.json, tokenizer.json, model.safetensors); for other models use --granularity rows --compact",
        ));
    }
    let spec = spec_of(&a)?;
    let src = Source::open(a.input)?;
    check_output(&src, a.output, false)?;
    let calib = match a.calibration {
        Some(p) => read_sentences(p).map_err(embed_err)?,
        None => Vec::new(),
    };
    let mut enc =
        SentenceEncoder::load_with(a.input, &Device::Cpu, Engine::Joulecut).map_err(embed_err)?;
    let batch = enc.token_batch(&calib).map_err(embed_err)?;
    let params_before = enc.linear_params();
    let prefix = enc.prefix().to_string();
    let model = enc.native_mut().expect("the joulecut engine was asked for");
    let fail = |e: joulecut::models::Error| {
        bad_input(
            format!("{}: {e}", a.input.display()),
            "remove heads and neurons from the f32 model, then quantize or pack; `joulecut inspect DIR` lists its tensors",
        )
    };
    let reports = model.prune_structured(&batch, &spec).map_err(fail)?;
    let tensors = model.dense_linear_tensors().map_err(fail)?;
    let structure = new_structure(&enc, &reports);

    // the compacted tensors in the dtype each had
    let mut replaced = BTreeMap::new();
    for (name, shape, values) in tensors {
        let name = format!("{prefix}{name}");
        let dtype = src
            .names()
            .iter()
            .find(|n| **n == name)
            .and_then(|n| {
                TensorRef {
                    checkpoint: src.shard_of(n),
                    name: n,
                }
                .float_type()
            })
            .unwrap_or(FloatType::F32);
        let bytes = dtype.encode(&values);
        replaced.insert(
            name,
            TensorData::Dense(DenseTensor {
                dtype,
                shape,
                bytes,
            }),
        );
    }
    let config_path = a.input.join("config.json");
    let text = std::fs::read_to_string(&config_path)?;
    let mut config_json: serde_json::Value = serde_json::from_str(&text)?;
    structure.write_into(&mut config_json, enc.config());
    let mut config_text = serde_json::to_string_pretty(&config_json)?;
    config_text.push('\n');

    let history = HistoryEntry::new(
        "prune",
        serde_json::json!({
            "granularity": units,
            "sparsity": a.sparsity,
            "score": spec.score,
            "calibration_sentences": calib.len(),
            "calibration_tokens": batch.tokens(),
        }),
    );
    let mut opts = StreamOptions::new(history);
    opts.sidecar_contents
        .insert(PathBuf::from("config.json"), config_text.into_bytes());
    let written = stream(&src, a.output, &opts, &Precomputed::new(replaced)?)?;

    let params_after = structure.linear_params(enc.config());
    let saving = if params_after < params_before {
        "real"
    } else {
        "nominal"
    };
    let (heads, neurons) = reports.iter().fold((0, 0), |(h, n), r| {
        (
            h + r.removed_heads.len(),
            n + r.neurons_before - r.neurons_after,
        )
    });
    let bytes_before = src.file_bytes();
    if a.json {
        let layers: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "layer": r.layer,
                    "heads_before": r.heads_before,
                    "heads_after": r.heads_before - r.removed_heads.len(),
                    "pruned_heads": structure.pruned_heads.get(&r.layer),
                    "neurons_before": r.neurons_before,
                    "neurons_after": r.neurons_after,
                    "head_score_removed": r.head_score_removed,
                    "neuron_score_removed": r.neuron_score_removed,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "input": a.input,
            "output": written.path,
            "granularity": units,
            "sparsity": a.sparsity,
            "score": spec.score,
            "calibration": {"sentences": calib.len(), "tokens": batch.tokens()},
            "removed": {"heads": heads, "neurons": neurons},
            "layers": layers,
            "linear_params": {"before": params_before, "after": params_after},
            "bytes": {"before": bytes_before, "after": written.bytes},
            "sidecars": written.sidecars,
            // smaller dense layers: every kernel does less work
            "saving": saving,
        }))?;
    } else {
        let how = match spec.score {
            UnitScore::Activation => format!(
                "by output change on {} calibration sentences ({} tokens)",
                calib.len(),
                batch.tokens()
            ),
            _ => "by weight magnitude".into(),
        };
        println!(
            "removed {heads} attention heads and {neurons} FFN neurons from {} layers, ranked {how}",
            reports.len()
        );
        println!(
            "encoder linear weights {params_before} -> {params_after} ({:.1}% fewer)",
            100.0 * (1.0 - params_after as f64 / params_before.max(1) as f64)
        );
        println!(
            "wrote {} ({} -> {}); saving {saving}: physically smaller dense layers (config.json records the pruning; the candle engine cannot run it)",
            written.path.display(),
            human_bytes(bytes_before),
            human_bytes(written.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
