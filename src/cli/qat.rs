//! `joulecut quantize --qat`: quantization-aware fine-tuning before the int8 conversion.
//!
//! The model is fine-tuned on Fashion-MNIST with every weight fake-quantised on the grid the
//! conversion will use (straight-through gradient, [`harness::QatObjective`]), zeros of a pruned
//! input kept at zero; the fine-tuned f32 weights go to a hidden temporary checkpoint beside the
//! output, which the ordinary int8 pass then converts. The temporary file is removed either way.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clap::Args;
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, HistoryEntry};
use joulecut::energy::Measurement;
use joulecut::harness::pipeline::{dense_tensors, varmap_from_checkpoint};
use joulecut::harness::{self, TrainConfig, Trainer};
use joulecut::models::Model;
use joulecut::quant::Int8Config;

use super::error::bad_input;
use super::output::meter;
use super::progress::Progress;

/// `--qat` and its settings (flattened into `joulecut quantize`).
#[derive(Debug, Args)]
pub struct QatArgs {
    /// int8 only: quantization-aware fine-tuning on Fashion-MNIST before converting (joulecut
    /// model checkpoints).
    #[arg(long)]
    pub qat: bool,
    /// QAT epochs.
    #[arg(long, default_value_t = 1, requires = "qat")]
    pub epochs: usize,
    /// QAT peak learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 2e-4, requires = "qat")]
    pub lr: f64,
    /// QAT batch size.
    #[arg(long, default_value_t = 128, requires = "qat")]
    pub batch_size: usize,
    /// QAT shuffling seed.
    #[arg(long, default_value_t = 0, requires = "qat")]
    pub seed: u64,
    /// Dataset directory for QAT (default: $JOULECUT_DATA or /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR", requires = "qat")]
    pub data: Option<PathBuf>,
}

/// What QAT produced: the fine-tuned f32 checkpoint (deleted on drop) and its record.
pub struct QatOutcome {
    /// The temporary f32 checkpoint to convert.
    pub path: PathBuf,
    /// Test accuracy of the fake-quantised model after fine-tuning.
    pub accuracy: f64,
    /// The fine-tuning window.
    pub energy: Measurement,
    /// For the JSON and the history.
    pub params: serde_json::Value,
}

impl Drop for QatOutcome {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Fine-tunes `input` with fake-quantised weights on the grid `int8`; writes the result to a
/// hidden temporary file beside `output`. `quiet_progress` (e.g. `--json`) hides the epoch bars.
pub fn fine_tune(
    input: &Path,
    output: &Path,
    int8: &Int8Config,
    a: &QatArgs,
    quiet_progress: bool,
) -> anyhow::Result<QatOutcome> {
    if a.epochs == 0 || a.batch_size == 0 {
        return Err(bad_input(
            "--epochs and --batch-size must be at least 1 with --qat",
            "e.g. --qat --epochs 1",
        ));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(bad_input(
            format!("--lr {} must be a positive number", a.lr),
            "e.g. --lr 2e-4",
        ));
    }
    if !input.is_file() {
        return Err(bad_input(
            format!(
                "--qat needs a single checkpoint file, got {}",
                input.display()
            ),
            "QAT fine-tunes joulecut models (lenet-300-100, lenet5, mlp:...) from one .safetensors file",
        ));
    }
    let ck = Checkpoint::open(input)?;
    if ck.metadata().get("joulecut.model").is_none() {
        return Err(bad_input(
            format!(
                "{}: --qat needs a joulecut model checkpoint (no `joulecut.model` metadata)",
                input.display()
            ),
            "QAT trains on Fashion-MNIST, so it needs the architecture; quantize without --qat for foreign checkpoints",
        ));
    }
    let cfg = Model::config_of(&ck, None)?;
    let dev = Device::Cpu;
    let splits = harness::data::load_fashion_mnist(a.data.as_deref())?;
    let vm = varmap_from_checkpoint(&cfg, &ck, a.seed, &dev)?;
    let mut keep =
        joulecut::prune::Pruner::keep_zeros(&vm, &joulecut::prune::Selection::default())?;
    let tc = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        eval_every_epoch: false,
        ..Default::default()
    };
    tc.validate()?;
    let model = Model::from_varmap(&cfg, &vm)?;
    let mut objective = harness::QatObjective::new(&cfg, &vm, *int8);
    let (report, energy) = meter()?.measure("qat", || {
        Trainer::new(&model, &vm, &tc)
            .objective(&mut objective)
            .hook(&mut keep)
            .observer(&mut Progress::new(a.epochs, quiet_progress))
            .device(&dev)
            .run(&splits.train, &splits.test)
    });
    let report = report?;
    // The accuracy that matters is the quantised model's: evaluate with the weights on the grid.
    let q = harness::qat::fake_quantised(&vm, int8)?;
    let qmodel = Model::from_fn(&cfg, |n| q.get(n).cloned())?;
    let accuracy = harness::evaluate(&qmodel, &splits.test, 1000, &dev)?.accuracy;
    let params = serde_json::json!({
        "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size, "seed": a.seed,
        "data": splits.source, "float_accuracy": report.accuracy, "int8_grid_accuracy": accuracy,
    });
    let mut writer = CheckpointWriter::derived_from(&ck)?;
    writer.push_history(HistoryEntry::new("qat", params.clone()));
    for (n, t) in dense_tensors(&cfg, &vm)? {
        writer.insert(n, t);
    }
    let name = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let path = output.with_file_name(format!(".{name}.qat-{}.safetensors", std::process::id()));
    let outcome = QatOutcome {
        path,
        accuracy,
        energy,
        params,
    };
    writer.write(&outcome.path, &[input])?;
    Ok(outcome)
}
