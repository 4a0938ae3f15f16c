//! Where a suite runs ([`RunOptions`]), and its baselines: each (model, seed) trained once with its
//! energy metered, and cached on disk so runs and shards share them.

use std::path::PathBuf;

use candle_core::Device;
use joulecut_checkpoint::{Checkpoint, CheckpointWriter, HistoryEntry};
use joulecut_energy::Meter;
use joulecut_models::{Model, ModelConfig, init_varmap};
use serde::{Deserialize, Serialize};

use super::config::SuiteConfig;
use crate::data::Splits;
use crate::pipeline::{ModelState, dense_tensors, varmap_from_checkpoint};
use crate::train::{CrossEntropy, NoHook, Silent, TrainConfig, train, warm_up};
use crate::{Error, Result};

/// Where and how a suite runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory (checkpoints go to `DIR/checkpoints`).
    pub out_dir: PathBuf,
    /// Baselines are cached here and reused across runs and shards.
    pub cache_dir: PathBuf,
    /// Run only runs `i` with `i % n == shard.0` (0-based).
    pub shard: Option<(usize, usize)>,
    /// Device for training and evaluation.
    pub device: Device,
}

/// A trained baseline.
pub(super) struct Baseline {
    pub state: ModelState,
    pub accuracy: f64,
    pub energy: serde_json::Value,
    pub joules: f64,
    /// The device warm-up before the training window (`seconds`, `steps`, `energy`); null on the
    /// CPU, which needs none.
    pub warmup: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct BaselineMeta {
    accuracy: f64,
    energy: serde_json::Value,
    joules: f64,
    #[serde(default)]
    warmup: serde_json::Value,
}

/// A file-name-safe version of `s`.
pub(super) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The baseline of `model` and `seed`: from the cache, or trained (and cached).
pub(super) fn baseline(
    suite: &SuiteConfig,
    model: &str,
    seed: u64,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Baseline> {
    let cfg = ModelConfig::parse(model)?;
    let b = &suite.baseline;
    // The learning-rate schedule is part of the key: baselines cached under another default
    // schedule are other models.
    let schedule = serde_json::to_value(TrainConfig::default().lr_schedule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let key = sanitize(&format!(
        "{model}-s{seed}-e{}-b{}-lr{}-{schedule}-{}",
        b.epochs, b.batch_size, b.lr, data.source
    ));
    let ckpt = opts.cache_dir.join(format!("baseline-{key}.safetensors"));
    let meta = opts.cache_dir.join(format!("baseline-{key}.json"));
    if let (Ok(text), true) = (std::fs::read_to_string(&meta), ckpt.is_file()) {
        if let Ok(m) = serde_json::from_str::<BaselineMeta>(&text) {
            log(&format!(
                "{model} seed {seed}: baseline from cache {}",
                ckpt.display()
            ));
            let ck = Checkpoint::open(&ckpt)?;
            let vm = varmap_from_checkpoint(&cfg, &ck, 0, &opts.device)?;
            return Ok(Baseline {
                state: ModelState { cfg, vm },
                accuracy: m.accuracy,
                energy: m.energy,
                joules: m.joules,
                warmup: m.warmup,
            });
        }
    }
    log(&format!(
        "{model} seed {seed}: training baseline ({} epochs)",
        b.epochs
    ));
    let vm = init_varmap(&cfg, seed, &opts.device)?;
    let m = Model::from_varmap(&cfg, &vm)?;
    let tc = TrainConfig {
        epochs: b.epochs,
        batch_size: b.batch_size,
        lr: b.lr,
        seed,
        ..Default::default()
    };
    // Kernel loading on a GPU goes into its own window, reported beside the training energy.
    let warmup = if opts.device.is_cpu() {
        serde_json::Value::Null
    } else {
        let (w, e) = meter.measure("warmup", || {
            warm_up(&cfg, &data.train, &data.test, &tc, &opts.device)
        });
        let w = w?;
        serde_json::json!({"seconds": w.seconds, "steps": w.steps, "energy": e})
    };
    let (report, energy) = meter.measure("baseline-training", || {
        train(
            &m,
            &vm,
            &data.train,
            &data.test,
            &tc,
            &mut CrossEntropy,
            &mut NoHook,
            &mut Silent,
            &opts.device,
        )
    });
    let report = report?;
    let joules = energy.total().0;
    let energy = serde_json::to_value(&energy).unwrap_or_default();
    let mut w = CheckpointWriter::new();
    w.set_model_config(cfg.to_json());
    w.push_history(HistoryEntry::new(
        "bench-baseline",
        serde_json::json!({"config": tc}),
    ));
    for (n, t) in dense_tensors(&cfg, &vm)? {
        w.insert(n, t);
    }
    w.write(&ckpt, &[])?;
    let meta_text = serde_json::to_string_pretty(&BaselineMeta {
        accuracy: report.accuracy,
        energy: energy.clone(),
        joules,
        warmup: warmup.clone(),
    })
    .map_err(|e| Error::Mismatch(format!("serialise the baseline record: {e}")))?;
    joulecut_checkpoint::atomic_write(&meta, |f| {
        std::io::Write::write_all(f, meta_text.as_bytes())
    })?;
    Ok(Baseline {
        state: ModelState { cfg, vm },
        accuracy: report.accuracy,
        energy,
        joules,
        warmup,
    })
}
