//! `joulecut train`: train a model on Fashion-MNIST (or continue from a checkpoint) and save it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use clap::Args;
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, DenseTensor, HistoryEntry, TensorData};
use joulecut::harness::{self, CrossEntropy, OptimizerKind, StepHook, TrainConfig};
use joulecut::models::{Model, ModelConfig, init_varmap, load_into_varmap};

use super::error::bad_input;
use super::output::{Progress, device, energy_line, meter, print_json};

/// Arguments of `joulecut train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Architecture: lenet-300-100, lenet5, teacher-mlp, or mlp:W0-W1-...-Wn.
    #[arg(long, conflicts_with = "init")]
    model: Option<String>,
    /// Continue from a checkpoint (architecture from the file); zeros of a pruned checkpoint stay zero.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Output checkpoint (.safetensors), written atomically.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Optimiser: adam, adamw or sgd.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Weight decay (decoupled for adamw, L2 for adam and sgd).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Momentum (sgd).
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Dataset directory (default: $JOULECUT_DATA or /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No per-epoch lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

/// Keeps weights that were exactly zero in the initial checkpoint at zero after every step
/// (optimiser moments would otherwise revive them).
struct KeepZeros {
    masks: Vec<(Var, Tensor)>,
}

impl KeepZeros {
    fn new(vm: &VarMap) -> anyhow::Result<Self> {
        let mut masks = Vec::new();
        for (name, var) in vm.data().lock().expect("VarMap lock").iter() {
            if !name.ends_with(".weight") {
                continue;
            }
            let mask = var.as_tensor().ne(0f32)?.to_dtype(DType::F32)?;
            let kept = mask.sum_all()?.to_scalar::<f32>()? as usize;
            if kept < var.elem_count() {
                masks.push((var.clone(), mask));
            }
        }
        Ok(KeepZeros { masks })
    }
}

impl StepHook for KeepZeros {
    fn after_step(&mut self, _: &VarMap, _: usize) -> harness::Result<()> {
        for (var, mask) in &self.masks {
            let t = (var.as_tensor() * mask).map_err(harness::Error::candle("apply mask"))?;
            var.set(&t).map_err(harness::Error::candle("apply mask"))?;
        }
        Ok(())
    }
}

/// The parameters of a model as dense F32 checkpoint tensors, in architecture order.
pub fn varmap_tensors(cfg: &ModelConfig, vm: &VarMap) -> anyhow::Result<Vec<(String, TensorData)>> {
    let data = vm.data().lock().expect("VarMap lock");
    cfg.param_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let v = data
                .get(&name)
                .with_context(|| format!("parameter {name} missing"))?;
            let vals = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            Ok((name, TensorData::Dense(DenseTensor::from_f32(shape, &vals))))
        })
        .collect()
}

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let optimizer = match a.optimizer.as_str() {
        "adam" => OptimizerKind::Adam,
        "adamw" => OptimizerKind::AdamW,
        "sgd" => OptimizerKind::Sgd,
        o => {
            return Err(bad_input(
                format!("unknown optimizer `{o}`"),
                "use --optimizer adam, adamw or sgd",
            ));
        }
    };
    if a.epochs == 0 {
        return Err(bad_input("--epochs must be at least 1", "e.g. --epochs 5"));
    }
    let tc = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        seed: a.seed,
        eval_every_epoch: true,
    };
    tc.validate()?;
    let dev = device(&a.device)?;
    let init = a.init.as_ref().map(Checkpoint::open).transpose()?;
    let (cfg, mut writer) = match (&a.model, &init) {
        (Some(m), None) => (ModelConfig::parse(m)?, CheckpointWriter::new()),
        (None, Some(ck)) => (
            Model::config_of(ck, None)?,
            CheckpointWriter::derived_from(ck)?,
        ),
        _ => {
            return Err(bad_input(
                "give --model ARCH or --init FILE",
                "e.g. joulecut train --model lenet-300-100 -o m.safetensors",
            ));
        }
    };
    if let Some(ck) = &init {
        joulecut::checkpoint::refuse_input(&a.output, &[ck.path()])?;
    }
    let splits = harness::data::load_fashion_mnist(a.data.as_deref())?;
    let vm = init_varmap(&cfg, a.seed, &dev)?;
    if let Some(ck) = &init {
        let tensors = ck
            .names()
            .iter()
            .map(|n| ck.get_f32(n).map(|(s, v)| (n.clone(), s, v)))
            .collect::<Result<Vec<_>, _>>()?;
        load_into_varmap(&vm, tensors)?;
    }
    let mut keep = KeepZeros::new(&vm)?;
    let model = Model::from_varmap(&cfg, &vm)?;
    let mut progress = Progress::new(a.quiet || a.json);
    let meter = meter()?;
    let (report, energy) = meter.measure("train", || {
        harness::train(
            &model,
            &vm,
            &splits.train,
            &splits.test,
            &tc,
            &mut CrossEntropy,
            &mut keep,
            &mut progress,
            &dev,
        )
    });
    let report = report?;
    writer.set_model_config(cfg.to_json());
    writer.push_history(HistoryEntry::new(
        "train",
        serde_json::json!({"config": tc, "init": a.init, "data": splits.source, "accuracy": report.accuracy}),
    ));
    for (n, t) in varmap_tensors(&cfg, &vm)? {
        writer.insert(n, t);
    }
    let bytes = writer.write(&a.output, &[])?;
    if a.json {
        print_json(&serde_json::json!({
            "model": cfg.name(),
            "output": a.output,
            "accuracy": report.accuracy,
            "epochs": report.epochs.len(),
            "samples_per_second": report.samples_per_second,
            "train_seconds": report.train_seconds,
            "per_epoch": report.epochs,
            "bytes": bytes,
            "kept_zero_masks": keep.masks.len(),
            "energy": energy,
            "config": tc,
        }))?;
    } else {
        eprintln!(
            "{}: test accuracy {:.4}, {:.0} train samples/s; wrote {} ({bytes} bytes)",
            cfg.name(),
            report.accuracy,
            report.samples_per_second,
            a.output.display()
        );
        eprintln!("training energy: {}", energy_line(&energy));
    }
    Ok(ExitCode::SUCCESS)
}
