//! `joulecut distill`: train a student from a frozen teacher checkpoint (Hinton KD, optional hints)
//! on Fashion-MNIST, with the teacher's logits cached once (default) or the teacher run live.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, HistoryEntry};
use joulecut::distill::{self, HintPair, Hints, KdConfig, KdObjective, TeacherLogits};
use joulecut::harness::{self, OptimizerKind, TrainConfig, Trainer};
use joulecut::models::{DenseFactory, Model, ModelConfig, init_varmap};

use super::error::bad_input;
use super::output::{device, energy_line, meter_on, print_json, warm_up};
use super::progress::{self, Progress};
use joulecut::harness::pipeline::dense_tensors;

/// Arguments of `joulecut distill`.
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// Teacher checkpoint (any joulecut model; its architecture comes from the file). Repeatable:
    /// with several, the student learns from the mean of their logits (cached teachers only).
    /// A model directory (BERT family, Hugging Face layout) distills a sentence encoder on
    /// --corpus instead.
    #[arg(long, value_name = "FILE|DIR", required = true)]
    pub(super) teacher: Vec<PathBuf>,
    /// Student architecture (lenet-300-100, lenet5, teacher-mlp, or mlp:W0-W1-...-Wn); for a
    /// transformer teacher, the compressed model directory to train back (default: the teacher,
    /// with --keep-layers).
    #[arg(long, value_name = "ARCH|DIR")]
    pub(super) student: Option<String>,
    #[command(flatten)]
    pub(super) encoder: super::distill_encoder::EncoderArgs,
    /// Output checkpoint of the student (.safetensors), written atomically.
    #[arg(short, long, value_name = "OUT")]
    pub(super) output: PathBuf,
    /// Softmax temperature T of the soft targets (> 0) [default: 4].
    #[arg(long, allow_hyphen_values = true)]
    pub(super) temperature: Option<f64>,
    /// Weight of the teacher term, in [0, 1]; 1 - alpha weighs the labels [default: 0.9].
    #[arg(long, allow_hyphen_values = true)]
    pub(super) alpha: Option<f64>,
    /// Label smoothing of the label term, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub(super) label_smoothing: f64,
    /// Passes over the training set [default: 5; transformers: 1].
    #[arg(long)]
    pub(super) epochs: Option<usize>,
    /// Samples per step [default: 128; transformers: 32 sentences].
    #[arg(long)]
    pub(super) batch_size: Option<usize>,
    /// Learning rate [default: 1e-3 (Adam); transformers: 1e-4 (AdamW), 5e-4 with --keep-layers].
    #[arg(long)]
    pub(super) lr: Option<f64>,
    /// Learning-rate schedule: wsd (constant, then linear decay to 0 over the last 20%), cosine
    /// (decay from --lr to 0) or constant — the same default as `joulecut train`.
    #[arg(long, default_value = "wsd")]
    pub(super) lr_schedule: String,
    /// Seed for the student's initialisation and shuffling (same as `joulecut train --seed`).
    #[arg(long, default_value_t = 0)]
    pub(super) seed: u64,
    /// Compute the teacher's logits once over the training set and reuse them (the default).
    #[arg(long, conflicts_with = "live_teacher")]
    pub(super) cache_teacher: bool,
    /// Run the teacher at every step instead of caching its logits (needed for --hint).
    #[arg(long)]
    pub(super) live_teacher: bool,
    /// Keep the cached teacher logits in FILE: loaded if it matches this teacher and data,
    /// computed and written otherwise.
    #[arg(long, value_name = "FILE", conflicts_with = "live_teacher")]
    pub(super) teacher_logits: Option<PathBuf>,
    /// Feature distillation: student hidden layer S imitates teacher hidden layer T (0-based);
    /// repeatable. Needs --live-teacher.
    #[arg(long, value_name = "S:T")]
    pub(super) hint: Vec<String>,
    /// Weight of the hint (feature) loss.
    #[arg(long, default_value_t = 1.0)]
    pub(super) hint_weight: f64,
    /// Dataset directory (default: $JOULECUT_DATA or /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    pub(super) data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) card: super::card::CardArgs,
}

/// Batch size of the teacher's forward passes when caching and evaluating.
const TEACHER_BATCH: usize = 1000;

pub fn run(a: DistillArgs) -> anyhow::Result<ExitCode> {
    let Some(teacher) = a.teacher.first().cloned() else {
        return distill(a);
    };
    let (card, output, device) = (a.card, a.output.clone(), a.device.clone());
    let how = if teacher.is_dir() {
        "embedding cosine against the teacher: run `joulecut eval-embeddings TEACHER OUT --sentences FILE`"
    } else {
        "test accuracy: run `joulecut eval OUT`"
    };
    super::card::metered(
        card,
        "distill",
        &teacher,
        Some(&output),
        &device,
        how,
        || distill(a),
    )
}

fn distill(a: DistillArgs) -> anyhow::Result<ExitCode> {
    if a.teacher.len() == 1 && a.teacher[0].is_dir() {
        return super::distill_encoder::run(a);
    }
    if let Some(flag) = a.encoder.given() {
        return Err(bad_input(
            format!("{flag} is for transformer teachers (a model directory as --teacher)"),
            "drop it, or pass a BERT-family model directory as --teacher",
        ));
    }
    let Some(student) = a.student.clone() else {
        return Err(bad_input(
            "--student ARCH is required for a checkpoint teacher",
            "e.g. --student lenet-300-100",
        ));
    };
    let kd = KdConfig {
        temperature: a.temperature.unwrap_or(distill::DEFAULT_TEMPERATURE),
        alpha: a.alpha.unwrap_or(distill::DEFAULT_ALPHA),
        label_smoothing: a.label_smoothing,
    };
    let (epochs, batch_size, lr) = (
        a.epochs.unwrap_or(5),
        a.batch_size.unwrap_or(128),
        a.lr.unwrap_or(1e-3),
    );
    kd.validate()?;
    if epochs == 0 {
        return Err(bad_input("--epochs must be at least 1", "e.g. --epochs 5"));
    }
    let hints: Vec<HintPair> = a
        .hint
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, distill::Error>>()?;
    if !hints.is_empty() && !a.live_teacher {
        return Err(bad_input(
            "--hint needs the live teacher (hidden activations are not cached)",
            "add --live-teacher",
        ));
    }
    let tc = TrainConfig {
        epochs,
        batch_size,
        lr,
        optimizer: OptimizerKind::Adam,
        weight_decay: 0.0,
        momentum: 0.0,
        seed: a.seed,
        eval_every_epoch: true,
        lr_schedule: harness::LrSchedule::parse(&a.lr_schedule).ok_or_else(|| {
            bad_input(
                format!("unknown --lr-schedule `{}`", a.lr_schedule),
                "use wsd, cosine or constant",
            )
        })?,
    };
    tc.validate()?;
    if a.teacher.len() > 1 && a.live_teacher {
        return Err(bad_input(
            "several --teacher files need cached logits (their mean is taken over the cache)",
            "drop --live-teacher, or pass one --teacher",
        ));
    }
    let scfg = ModelConfig::parse(&student)?;
    let dev = device(&a.device)?;
    // Every teacher must fit the student (so all of them agree on the input and output widths).
    let mut teachers = Vec::with_capacity(a.teacher.len());
    for path in &a.teacher {
        let tck = Checkpoint::open(path)?;
        let tcfg = Model::config_of(&tck, None)?;
        distill::check_compatible(&tcfg, &scfg)?;
        let model = Model::load(&tck, &tcfg, &dev, &DenseFactory)?;
        let id = distill::file_fingerprint(path)?;
        teachers.push((tcfg, model, id));
    }
    let inputs: Vec<&std::path::Path> = a.teacher.iter().map(PathBuf::as_path).collect();
    joulecut::checkpoint::refuse_input(&a.output, &inputs)?;
    let tcfg = teachers[0].0.clone();
    let ids: Vec<String> = teachers.iter().map(|t| t.2.clone()).collect();
    let teacher_id = distill::ensemble_id(&ids);
    let splits = harness::data::load_fashion_mnist(a.data.as_deref())?;
    // Each teacher's test accuracy, and the ensemble's (argmax of the mean logits).
    let mut accuracies = Vec::with_capacity(teachers.len());
    for (_, m, _) in &teachers {
        accuracies.push(harness::evaluate(m, &splits.test, TEACHER_BATCH, &dev)?.accuracy);
    }
    let teacher_accuracy = if teachers.len() == 1 {
        accuracies[0]
    } else {
        let mut parts = Vec::with_capacity(teachers.len());
        for (_, m, id) in &teachers {
            parts.push(TeacherLogits::compute(
                m,
                &splits.test,
                TEACHER_BATCH,
                id.clone(),
                &dev,
            )?);
        }
        let mean = TeacherLogits::mean(parts)?;
        let pred = mean
            .logits()
            .argmax(candle_core::D::Minus1)?
            .to_vec1::<u32>()?;
        let hits = pred
            .iter()
            .zip(&splits.test.labels)
            .filter(|(p, y)| p == y)
            .count();
        hits as f64 / splits.test.labels.len().max(1) as f64
    };
    let teachers_json: Vec<serde_json::Value> = teachers
        .iter()
        .zip(&a.teacher)
        .zip(&accuracies)
        .map(|(((cfg, _, id), path), acc)| {
            serde_json::json!({
                "file": path, "model": cfg.name(), "fingerprint": id, "accuracy": acc,
            })
        })
        .collect();
    let teacher_name = if teachers.len() == 1 {
        tcfg.name()
    } else {
        let names: Vec<String> = teachers.iter().map(|t| t.0.name()).collect();
        format!(
            "the mean of {} teachers ({})",
            names.len(),
            names.join(", ")
        )
    };
    let meter = meter_on(&dev)?;

    // Teacher logits: loaded from disk, or computed once (metered separately from training).
    let mut logits_source = "live";
    let mut teacher_energy = None;
    let cache = if a.live_teacher {
        None
    } else {
        let (res, m) = meter.measure("teacher-logits", || -> anyhow::Result<TeacherLogits> {
            if let Some(p) = a.teacher_logits.as_ref().filter(|p| p.exists()) {
                logits_source = "loaded";
                return Ok(TeacherLogits::load(p, &teacher_id, &splits.train, &dev)?);
            }
            logits_source = "computed";
            let mut parts = Vec::with_capacity(teachers.len());
            let n = teachers.len();
            for (i, (_, m, id)) in teachers.iter().enumerate() {
                let what = match n {
                    1 => "teacher logits".to_string(),
                    _ => format!("teacher {}/{n} logits", i + 1),
                };
                let bar = progress::bar(&what, splits.train.len() as u64, "samples", a.json);
                parts.push(TeacherLogits::compute_observed(
                    m,
                    &splits.train,
                    TEACHER_BATCH,
                    id.clone(),
                    &dev,
                    &mut |done, _| bar.set_position(done as u64),
                )?);
                bar.finish_and_clear();
            }
            let c = TeacherLogits::mean(parts)?;
            if let Some(p) = &a.teacher_logits {
                c.save(p)?;
                logits_source = "computed-and-saved";
            }
            Ok(c)
        });
        teacher_energy = Some(m);
        Some(res?)
    };

    let vm = init_varmap(&scfg, a.seed, &dev)?;
    let student = Model::from_varmap(&scfg, &vm)?;
    let mut objective = match cache {
        Some(c) => KdObjective::cached(c, &scfg, kd)?,
        None => {
            let (_, teacher, _) = teachers.into_iter().next().expect("one live teacher");
            let o = KdObjective::live(teacher, &tcfg, &scfg, kd)?;
            if hints.is_empty() {
                o
            } else {
                let h = Hints::new(
                    hints.clone(),
                    a.hint_weight,
                    &scfg,
                    &tcfg,
                    &vm,
                    a.seed,
                    &dev,
                )?;
                o.with_hints(h)?
            }
        }
    };
    let mut progress = Progress::new(tc.epochs, a.json);
    // Kernel loading on a GPU goes into its own window, before the training one.
    let warmup = warm_up(&meter, &scfg, &splits, &tc, &dev)?;
    let (report, energy) = meter.measure("distill", || {
        Trainer::new(&student, &vm, &tc)
            .objective(&mut objective)
            .observer(&mut progress)
            .device(&dev)
            .run(&splits.train, &splits.test)
    });
    let report = report?;

    let mut writer = CheckpointWriter::new();
    writer.set_model_config(scfg.to_json());
    let teacher_src = if a.live_teacher { "live" } else { "cached" };
    writer.push_history(HistoryEntry::new(
        "distill",
        serde_json::json!({
            "teacher": a.teacher, "teacher_model": teacher_name, "teacher_fingerprint": teacher_id,
            "teacher_accuracy": teacher_accuracy, "kd": kd, "teacher_outputs": teacher_src,
            "hints": hints, "hint_weight": a.hint_weight, "config": tc, "data": splits.source,
            "accuracy": report.accuracy,
        }),
    ));
    for (n, t) in dense_tensors(&scfg, &vm)? {
        writer.insert(n, t);
    }
    let bytes = writer.write(&a.output, &inputs)?;
    let teacher_joules = teacher_energy.as_ref().map_or(0.0, |m| m.total().0);
    if a.json {
        let mut out = serde_json::json!({
            "student": scfg.name(),
            "teacher": if a.teacher.len() == 1 { serde_json::json!(a.teacher[0]) } else { serde_json::Value::Null },
            "teacher_model": teacher_name,
            "teachers": teachers_json,
            "output": a.output,
            "accuracy": report.accuracy,
            "teacher_accuracy": teacher_accuracy,
            "epochs": report.epochs.len(),
            "samples_per_second": report.samples_per_second,
            "train_seconds": report.train_seconds,
            "per_epoch": report.epochs,
            "bytes": bytes,
            "teacher_outputs": teacher_src,
            "teacher_logits": { "source": logits_source, "file": a.teacher_logits },
            "kd": kd,
            "hints": hints,
            "energy": energy,
            "teacher_logits_energy": teacher_energy,
            "total_joules": energy.total().0 + teacher_joules,
            "config": tc,
            "device": a.device,
        });
        warmup.add_to_json(&mut out)?;
        print_json(&out)?;
    } else {
        println!(
            "{} distilled from {} (test acc {:.4}): test accuracy {:.4}, {:.0} train samples/s; wrote {} ({bytes} bytes)",
            scfg.name(),
            teacher_name,
            teacher_accuracy,
            report.accuracy,
            report.samples_per_second,
            a.output.display()
        );
        if let Some(m) = &teacher_energy {
            println!(
                "teacher logits ({logits_source}) energy: {}",
                energy_line(m)
            );
        }
        warmup.eprint();
        println!("training energy: {}", energy_line(&energy));
    }
    Ok(ExitCode::SUCCESS)
}
