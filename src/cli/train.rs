//! `joulecut train`: train a model on Fashion-MNIST (or continue from a checkpoint) and save it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, HistoryEntry, TensorEncoding};
use joulecut::harness::pipeline::{
    Indivisible, PrunePolicy, encode, prune_spec, storage_steps_of, varmap_from_checkpoint,
    varmap_params,
};
use joulecut::harness::{self, OptimizerKind, TrainConfig, Trainer};
use joulecut::models::{Model, ModelConfig, init_varmap};

use super::error::bad_input;
use super::output::{device, energy_line, meter_on, print_json, warm_up};
use super::progress::Progress;

/// Arguments of `joulecut train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Architecture: lenet-300-100, lenet5, teacher-mlp, or mlp:W0-W1-...-Wn.
    #[arg(long, conflicts_with = "init")]
    model: Option<String>,
    /// Continue from a checkpoint (architecture from the file); zeros of a pruned checkpoint stay zero.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// With --init: write the retrained weights in the encoding they had in that file (packed
    /// sparse, f16/bf16); `--keep-encoding false` writes dense f32. int8 is always written as f32
    /// (re-quantize with `joulecut quantize`, or train for int8 with `quantize --qat`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    keep_encoding: bool,
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
    /// Learning-rate schedule: wsd (constant, then linear decay to 0 over the last 20%), cosine
    /// (decay from --lr to 0 over the run) or constant.
    #[arg(long, default_value = "wsd")]
    lr_schedule: String,
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
    /// Prune while training: agp (gradual, Zhu & Gupta), oneshot or iterative.
    #[arg(long, value_name = "SCHEDULE", requires = "target_sparsity")]
    prune_schedule: Option<String>,
    /// Final sparsity of gradual pruning, in [0, 1).
    #[arg(long, value_name = "F", requires = "prune_schedule")]
    target_sparsity: Option<f64>,
    /// Granularity of gradual pruning: unstructured, rows, channels or N:M.
    #[arg(long, default_value = "unstructured")]
    prune_granularity: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Energy card of the output (with --init only).
    #[command(flatten)]
    card: super::card::CardArgs,
}

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    // `--init` continues a (compressed) checkpoint: its output is a compressed model and gets a
    // card; training from scratch makes a baseline, which has nothing to compare against.
    match a.init.clone() {
        Some(init) => {
            let (card, output, device) = (a.card, a.output.clone(), a.device.clone());
            super::card::metered(
                card,
                "train",
                &init,
                Some(&output),
                &device,
                "test accuracy: run `joulecut eval OUT`",
                || train(a),
            )
        }
        // a flag that would do nothing is refused rather than ignored
        None if a.card.no_card => Err(bad_input(
            "--no-card applies to `train --init` only",
            "training from scratch writes no energy card (a baseline has nothing to compare against); drop --no-card",
        )),
        None => train(a),
    }
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
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
        lr_schedule: harness::LrSchedule::parse(&a.lr_schedule).ok_or_else(|| {
            bad_input(
                format!("unknown --lr-schedule `{}`", a.lr_schedule),
                "use cosine, wsd or constant",
            )
        })?,
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
    let vm = match &init {
        Some(ck) => varmap_from_checkpoint(&cfg, ck, a.seed, &dev)?,
        None => init_varmap(&cfg, a.seed, &dev)?,
    };
    let steps_per_epoch = splits.train.len().div_ceil(a.batch_size.max(1));
    let total_steps = steps_per_epoch * a.epochs;
    let pruner = match (&a.prune_schedule, a.target_sparsity) {
        (Some(kind), Some(target)) => {
            use joulecut::prune::{Granularity, Pruner, Schedule, Scope};
            let schedule = match kind.as_str() {
                // Ramp over the first 80% of training, updating ~10 times per epoch, then
                // fine-tune at the final sparsity.
                "agp" => Schedule::Agp {
                    initial_sparsity: 0.0,
                    start: 0,
                    end: (total_steps * 4 / 5).max(1),
                    frequency: (steps_per_epoch / 10).max(1),
                },
                "oneshot" => Schedule::OneShot { at_step: 0 },
                "iterative" => Schedule::Iterative {
                    rounds: a.epochs.max(2) - 1,
                    start: 0,
                    every: steps_per_epoch,
                },
                other => {
                    return Err(bad_input(
                        format!("unknown --prune-schedule `{other}`"),
                        "use agp, oneshot or iterative",
                    ));
                }
            };
            let g: Granularity = a.prune_granularity.parse()?;
            let policy = PrunePolicy::for_model(Some(&cfg), Indivisible::Refuse);
            let shapes = cfg.param_shapes();
            let spec = policy
                .fit(
                    prune_spec(target, g, Scope::Global),
                    shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())),
                )
                .spec;
            Pruner::new(spec, schedule)?
        }
        _ => joulecut::prune::Pruner::keep_zeros(&vm, &joulecut::prune::Selection::default())?,
    };
    let mut keep = pruner;
    let model = Model::from_varmap(&cfg, &vm)?;
    let mut progress = Progress::new(tc.epochs, a.json);
    let meter = meter_on(&dev)?;
    // Kernel loading on a GPU goes into its own window, before the training one.
    let warmup = warm_up(&meter, &cfg, &splits, &tc, &dev)?;
    let (report, energy) = meter.measure("train", || {
        Trainer::new(&model, &vm, &tc)
            .hook(&mut keep)
            .observer(&mut progress)
            .device(&dev)
            .run(&splits.train, &splits.test)
    });
    let report = report?;
    writer.set_model_config(cfg.to_json());
    writer.push_history(HistoryEntry::new(
        "train",
        serde_json::json!({"config": tc, "init": a.init, "data": splits.source, "accuracy": report.accuracy}),
    ));
    // --init of a packed or half-precision file writes the retrained weights the same way
    // (int8 is re-quantized by `joulecut quantize` or QAT, never silently)
    let mut kept = 0usize;
    for (n, shape, values) in varmap_params(&cfg, &vm)? {
        let steps = match (&init, a.keep_encoding) {
            (Some(ck), true) => storage_steps_of(ck, &n),
            _ => Vec::new(),
        };
        kept += usize::from(!steps.is_empty());
        let t = encode(&n, shape, &values, &steps)?;
        writer.insert(n, t);
    }
    let bytes = writer.write(&a.output, &[])?;
    if let Some(ck) = &init {
        let int8 = ck
            .encodings()
            .iter()
            .filter(|(_, e)| {
                matches!(e, TensorEncoding::Int8 { .. })
                    || matches!(e, TensorEncoding::Sparse { values, .. } if values == "I8")
            })
            .count();
        if int8 > 0 {
            super::progress::note(
                format_args!(
                    "note: {int8} int8 tensors of --init were retrained and written as f32; re-quantize with `joulecut quantize --dtype int8` (or `--qat`)"
                ),
                a.json,
            );
        }
    }
    if a.json {
        let mut out = serde_json::json!({
            "model": cfg.name(),
            "output": a.output,
            "accuracy": report.accuracy,
            "epochs": report.epochs.len(),
            "samples_per_second": report.samples_per_second,
            "train_seconds": report.train_seconds,
            "per_epoch": report.epochs,
            "bytes": bytes,
            "kept_encoding": kept,
            "sparsity": keep.report(),
            "energy": energy,
            "config": tc,
            "device": a.device,
        });
        warmup.add_to_json(&mut out)?;
        print_json(&out)?;
    } else {
        let kept_note = match kept {
            0 => String::new(),
            k => format!(", {k} tensors in their --init encoding"),
        };
        println!(
            "{}: test accuracy {:.4}, {:.0} train samples/s; wrote {} ({bytes} bytes{kept_note})",
            cfg.name(),
            report.accuracy,
            report.samples_per_second,
            a.output.display()
        );
        warmup.eprint();
        println!("training energy: {}", energy_line(&energy));
    }
    Ok(ExitCode::SUCCESS)
}
