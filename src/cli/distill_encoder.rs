//! `joulecut distill --teacher DIR --corpus FILE`: train a compressed sentence encoder back
//! against its teacher on unlabeled text (`joulecut_harness::recover`), then report what the
//! recovery cost, what the student saves per 1,000 sentences, and when it has paid for itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use indicatif::ProgressBar;
use joulecut::checkpoint::HistoryEntry;
use joulecut::distill::{EmbeddingLoss, fingerprint_words};
use joulecut::embed::{EncodeConfig, Engine, SentenceEncoder, read_sentences};
use joulecut::energy::break_even;
use joulecut::harness::recover::{
    EpochRecord, HeldOut, RecoverConfig, RecoverObserver, Recovery, TeacherTargets, TrainState,
    mean_cosine, uniform_map, write_student,
};
use joulecut::models::bert::{StudentSpec, TrainableEncoder};

use super::distill::DistillArgs;
use super::error::bad_input;
use super::eval_embeddings::run_model;
use super::output::{energy_line, meter, print_json};
use super::progress;

/// The transformer-only options of `joulecut distill`.
#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// Training text, one sentence a line (unlabeled; keep it apart from evaluation text).
    #[arg(long, value_name = "FILE")]
    corpus: Option<PathBuf>,
    /// Use only the first N corpus sentences.
    #[arg(long, value_name = "N")]
    max_sentences: Option<usize>,
    /// Held-out sentences: the student's mean cosine with the teacher is measured on them before
    /// training, after each epoch, and on the written model; and both models' joules per 1,000.
    #[arg(long, value_name = "FILE")]
    held_out: Option<PathBuf>,
    /// Student = the teacher (or --student) with only these layers, e.g. 0,2,4.
    #[arg(long, value_name = "LIST")]
    keep_layers: Option<String>,
    /// Hidden-state pairs STUDENT:TEACHER (1-based layer outputs), repeatable [default: uniform].
    #[arg(long = "map", value_name = "S:T")]
    map: Vec<String>,
    /// Weight of the 1 − cosine term on the pooled embedding [default: 1].
    #[arg(long)]
    loss_cosine: Option<f64>,
    /// Weight of the pooled embedding's MSE [default: 1].
    #[arg(long)]
    loss_mse: Option<f64>,
    /// Weight of the hidden-state MSE (0: no hidden states) [default: 1].
    #[arg(long)]
    loss_hidden: Option<f64>,
    /// Fraction of the steps that warm the learning rate up [default: 0.05].
    #[arg(long)]
    warmup: Option<f64>,
    /// AdamW weight decay [default: 0.01].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0: off) [default: 1].
    #[arg(long)]
    clip_norm: Option<f64>,
    /// Keep the teacher's outputs over the corpus in FILE: loaded if it matches the teacher and
    /// corpus, computed and written otherwise.
    #[arg(long, value_name = "FILE")]
    teacher_outputs: Option<PathBuf>,
    /// Continue from the state saved after the last finished epoch (OUT.train-state.safetensors).
    #[arg(long)]
    resume: bool,
    /// Quantization-aware training: the linear layers train through fake int8 weights and inputs
    /// (as `quantize --dtype int8` will store and run them); for when plain int8 of the recovered
    /// model loses too much. Quantize the output afterwards.
    #[arg(long)]
    qat: bool,
    /// Stop after this many more epochs (the state stays for --resume).
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
}

impl EncoderArgs {
    /// The first transformer-only flag given, if any.
    pub fn given(&self) -> Option<&'static str> {
        [
            (self.corpus.is_some(), "--corpus"),
            (self.max_sentences.is_some(), "--max-sentences"),
            (self.held_out.is_some(), "--held-out"),
            (self.keep_layers.is_some(), "--keep-layers"),
            (!self.map.is_empty(), "--map"),
            (self.loss_cosine.is_some(), "--loss-cosine"),
            (self.loss_mse.is_some(), "--loss-mse"),
            (self.loss_hidden.is_some(), "--loss-hidden"),
            (self.warmup.is_some(), "--warmup"),
            (self.weight_decay.is_some(), "--weight-decay"),
            (self.clip_norm.is_some(), "--clip-norm"),
            (self.teacher_outputs.is_some(), "--teacher-outputs"),
            (self.resume, "--resume"),
            (self.qat, "--qat"),
            (self.stop_after.is_some(), "--stop-after"),
        ]
        .into_iter()
        .find_map(|(g, f)| g.then_some(f))
    }
}

/// A progress bar per epoch with its ETA, and a line per epoch.
struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: usize,
}

impl RecoverObserver for Bar {
    fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f32) {
        let (epochs, quiet) = (self.epochs, self.quiet);
        let pb = self.bar.get_or_insert_with(|| {
            progress::bar(
                &format!("epoch {epoch}/{epochs}"),
                steps as u64,
                "steps",
                quiet,
            )
        });
        pb.set_position(step as u64);
        pb.set_message(format!("loss {loss:.4}"));
    }

    fn epoch(&mut self, r: &EpochRecord) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
        progress::note(
            format_args!("{}, {}", r.line(self.epochs), energy_line(&r.energy)),
            self.quiet,
        );
    }
}

fn parse_layers(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            bad_input(
                format!("--keep-layers `{s}`: not a list of layer numbers"),
                "e.g. --keep-layers 0,2,4",
            )
        })
}

fn parse_map(items: &[String]) -> anyhow::Result<Vec<(usize, usize)>> {
    items
        .iter()
        .map(|m| {
            let (s, t) = m.split_once(':').unwrap_or(("", ""));
            match (s.trim().parse(), t.trim().parse()) {
                (Ok(s), Ok(t)) if s > 0 => Ok((s, t)),
                _ => Err(bad_input(
                    format!("--map `{m}`: expected STUDENT:TEACHER layer numbers (1-based)"),
                    "e.g. --map 1:2 --map 2:4 --map 3:6",
                )),
            }
        })
        .collect()
}

/// A fingerprint of the model files of a directory (weights and config), for caches.
fn dir_fingerprint(dir: &Path) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.ends_with(".safetensors") || n == "config.json" || n.ends_with(".index.json")
        })
        .collect();
    files.sort();
    let mut ids = Vec::new();
    for f in files {
        ids.push(joulecut::distill::file_fingerprint(&f)?);
    }
    Ok(fingerprint_words(ids.join(",").bytes().map(u32::from)))
}

pub fn run(a: DistillArgs) -> anyhow::Result<ExitCode> {
    let e = &a.encoder;
    let refused = [
        (a.temperature.is_some(), "--temperature"),
        (a.alpha.is_some(), "--alpha"),
        (a.label_smoothing != 0.0, "--label-smoothing"),
        (a.live_teacher, "--live-teacher"),
        (a.cache_teacher, "--cache-teacher"),
        (a.teacher_logits.is_some(), "--teacher-logits"),
        (!a.hint.is_empty(), "--hint"),
        (a.data.is_some(), "--data"),
        (a.device != "cpu", "--device"),
        (a.lr_schedule != "wsd", "--lr-schedule"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(g, _)| *g) {
        return Err(bad_input(
            format!(
                "{flag} does not apply to a transformer teacher (embedding distillation on the CPU)"
            ),
            "see `joulecut distill --help`: --corpus, --keep-layers, --map, --loss-*",
        ));
    }
    let Some(corpus_path) = &e.corpus else {
        return Err(bad_input(
            "a transformer teacher needs --corpus FILE (one sentence a line)",
            "e.g. `joulecut text wordnet --out text/` writes text/corpus.txt",
        ));
    };
    let teacher_dir = &a.teacher[0];
    let student_dir = a
        .student
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| teacher_dir.clone());
    if a.student.is_none() && e.keep_layers.is_none() {
        return Err(bad_input(
            "nothing to train: the student would be the teacher",
            "pass the compressed model as --student DIR, or --keep-layers 0,2,4",
        ));
    }
    let inputs = [teacher_dir.as_path(), student_dir.as_path()];
    joulecut::checkpoint::refuse_input(&a.output, &inputs)?;
    let keep = e.keep_layers.as_deref().map(parse_layers).transpose()?;
    let mut corpus = read_sentences(corpus_path)?;
    if let Some(n) = e.max_sentences {
        corpus.truncate(n);
    }
    if corpus.is_empty() {
        return Err(bad_input(
            format!("{}: no sentences", corpus_path.display()),
            "one sentence a line",
        ));
    }
    let held_out = e.held_out.as_deref().map(read_sentences).transpose()?;

    let dev = candle_core::Device::Cpu;
    let teacher = SentenceEncoder::load_with(teacher_dir, &dev, Engine::Joulecut)?;
    let source = SentenceEncoder::load_with(&student_dir, &dev, Engine::Joulecut)?;
    let source_files = joulecut::checkpoint::Source::open(&student_dir)?;
    if source.dim() != teacher.dim() {
        return Err(bad_input(
            format!(
                "the student's width {} differs from the teacher's {}",
                source.dim(),
                teacher.dim()
            ),
            "the student must come from the teacher (pruned, quantized, layers dropped)",
        ));
    }
    let spec = StudentSpec {
        keep_layers: keep.clone(),
        train_embeddings: false,
        qat: e.qat,
    };
    let student = TrainableEncoder::load(source.bert_config(), &source.tensors(), &spec, &dev)
        .map_err(|err| {
            bad_input(
                format!("{}: {err}", student_dir.display()),
                "the student must be a BERT-family model directory joulecut can load",
            )
        })?;
    let (s_depth, t_depth) = (student.config().layers, teacher.bert_config().layers);
    let loss = EmbeddingLoss {
        cosine: e.loss_cosine.unwrap_or(1.0),
        mse: e.loss_mse.unwrap_or(1.0),
        hidden: e.loss_hidden.unwrap_or(1.0),
    };
    let map = match (e.map.is_empty(), loss.hidden > 0.0) {
        (_, false) => Vec::new(),
        (true, true) => uniform_map(s_depth, t_depth),
        (false, true) => parse_map(&e.map)?,
    };
    let cfg = RecoverConfig {
        epochs: a.epochs.unwrap_or(1),
        batch_size: a.batch_size.unwrap_or(32),
        lr: a.lr.unwrap_or(if keep.is_some() { 5e-4 } else { 1e-4 }),
        warmup: e.warmup.unwrap_or(0.05),
        weight_decay: e.weight_decay.unwrap_or(0.01),
        clip_norm: e.clip_norm.unwrap_or(1.0),
        seed: a.seed,
        loss,
        map: map.clone(),
    };
    cfg.validate()?;
    let mut layers: Vec<usize> = map.iter().map(|m| m.1).collect();
    layers.sort_unstable();
    layers.dedup();

    let meter = meter()?;
    let teacher_id = dir_fingerprint(teacher_dir)?;
    let corpus_id = fingerprint_words(corpus.join("\n").bytes().map(u32::from));
    let mut targets_source = "computed";
    // `-q` is checked by the progress helpers themselves; --json silences them too
    let quiet = a.json;
    let (targets, targets_energy) =
        meter.measure("teacher-outputs", || -> anyhow::Result<TeacherTargets> {
            if let Some(p) = e.teacher_outputs.as_ref().filter(|p| p.exists()) {
                targets_source = "loaded";
                return Ok(TeacherTargets::load(p, (&teacher_id, &corpus_id), &layers)?);
            }
            let bar = progress::bar("teacher outputs", corpus.len() as u64, "sentences", quiet);
            let t = TeacherTargets::compute(
                &teacher,
                &corpus,
                &layers,
                (teacher_id.clone(), corpus_id.clone()),
                &mut |d, _| bar.set_position(d as u64),
            )?;
            bar.finish_and_clear();
            if let Some(p) = &e.teacher_outputs {
                t.save(p)?;
                targets_source = "computed-and-saved";
            }
            Ok(t)
        });
    let targets = targets?;

    let ho = match &held_out {
        Some(s) => {
            let tokens = teacher.token_batch(s)?;
            let emb = teacher.encode(s, &EncodeConfig { batch_size: 32 })?;
            Some(HeldOut {
                tokens,
                teacher: emb.concat(),
            })
        }
        None => None,
    };
    let before = ho
        .as_ref()
        .map(|h| mean_cosine(&student, h, &dev))
        .transpose()?;
    if let Some(c) = before {
        progress::note(
            format_args!("held-out cosine before training: {c:.4}"),
            quiet,
        );
    }

    let run_id = fingerprint_words(
        serde_json::json!({"teacher": teacher_id, "corpus": corpus_id, "student": dir_fingerprint(&student_dir)?, "keep": keep, "qat": e.qat, "cfg": cfg})
            .to_string()
            .bytes()
            .map(u32::from),
    );
    let state_path = PathBuf::from(format!("{}.train-state.safetensors", a.output.display()));
    // the output is checked as every writer checks it, before training (a resumed run replaces
    // the directory its own earlier epochs wrote)
    if !e.resume {
        joulecut::checkpoint::check_output(&source_files, &a.output, false)?;
    }
    if e.resume && !state_path.is_file() {
        return Err(bad_input(
            format!(
                "no training state to resume from at {}",
                state_path.display()
            ),
            "run without --resume first (each finished epoch saves the state; a finished run removes it)",
        ));
    }
    let mut recovery = if e.resume {
        let st = TrainState::load(&state_path, &run_id)?;
        progress::note(
            format_args!(
                "resuming after epoch {} of {} ({})",
                st.epochs_done,
                cfg.epochs,
                state_path.display()
            ),
            quiet,
        );
        Recovery::resume(&student, &targets, cfg.clone(), st)?
    } else {
        Recovery::new(&student, &targets, cfg.clone())?
    };
    let history = HistoryEntry::new(
        "distill",
        serde_json::json!({
            "teacher": teacher_dir, "student": student_dir, "keep_layers": keep,
            "corpus": corpus_path, "corpus_sentences": corpus.len(), "config": cfg, "qat": e.qat,
        }),
    );
    let mut bar = Bar {
        bar: None,
        quiet,
        epochs: cfg.epochs,
    };
    let records = recovery.run(&meter, ho.as_ref(), e.stop_after, &mut bar, &mut |s, st| {
        write_student(&source, s, &a.output, history.clone())?;
        st.save(&state_path, &run_id)
    })?;
    let finished = recovery.epochs_done() == cfg.epochs;
    if finished {
        // the run is complete: its state is only needed to resume, and it is larger than the model
        let _ = std::fs::remove_file(&state_path);
    }

    // What the written model does, through the kernels that will run it.
    let written = SentenceEncoder::load_with(&a.output, &dev, Engine::Joulecut)?;
    let mut inference_json = serde_json::Value::Null;
    let mut after = None;
    let train_joules: f64 = records.iter().map(|r| r.energy.total().0).sum();
    let compression_joules = train_joules + targets_energy.total().0;
    let compression_provenance = records.iter().fold(targets_energy.provenance(), |p, r| {
        p.combine(r.energy.provenance())
    });
    let mut break_even_json = serde_json::Value::Null;
    let mut break_even_desc = None;
    // nominal: the teacher's kernels at its size, whose measured difference in joules is noise
    // and never pays back
    let saving = super::eval_embeddings::saving(&teacher, &written);
    if let Some(s) = &held_out {
        let cfg = EncodeConfig { batch_size: 32 };
        let t = run_model(&meter, "embed-teacher", &teacher, s, &cfg)?;
        let st = run_model(&meter, "embed-student", &written, s, &cfg)?;
        after = joulecut::embed::CosineSummary::of(&t.embeddings, &st.embeddings).map(|c| c.mean);
        let (tj, sj) = (t.joules_per_1000(), st.joules_per_1000());
        let (ts, ss) = (t.sentences_per_second(), st.sentences_per_second());
        let (tm, sm) = (&t.energy, &st.energy);
        let inference_provenance = tm.provenance().combine(sm.provenance());
        let be = break_even(
            compression_joules,
            compression_provenance,
            tj,
            sj,
            inference_provenance,
        )
        .map(|b| {
            if saving == "real" {
                b
            } else {
                b.without_payback()
            }
        });
        inference_json = serde_json::json!({
            "teacher": {"joules_per_1000_sentences": tj, "sentences_per_second": ts, "energy": tm},
            "student": {"joules_per_1000_sentences": sj, "sentences_per_second": ss, "energy": sm},
            "speed_ratio": ss / ts.max(1e-9),
        });
        break_even_desc = be.map(|b| b.describe("sentences"));
        break_even_json = serde_json::to_value(be)?;
    }
    if a.json {
        print_json(&serde_json::json!({
            "teacher": teacher_dir, "student": student_dir, "output": a.output,
            "keep_layers": keep, "qat": e.qat, "layers": s_depth, "masked_weights": student.masked(),
            "corpus_sentences": corpus.len(), "epochs_done": recovery.epochs_done(), "finished": finished,
            "state": (!finished).then_some(&state_path),
            "eval_cosine_before": before, "eval_cosine": after, "per_epoch": records,
            "teacher_outputs": {"source": targets_source, "file": e.teacher_outputs, "energy": targets_energy},
            "training_joules": train_joules, "compression_joules": compression_joules,
            "compression_provenance": compression_provenance,
            "saving": saving, "inference": inference_json, "break_even": break_even_json, "config": cfg,
        }))?;
    } else {
        let cos = match (before, after) {
            (Some(b), Some(c)) => format!(": held-out cosine {b:.4} -> {c:.4}"),
            _ => String::new(),
        };
        println!(
            "{} epoch(s) of {}{cos}; wrote {}",
            recovery.epochs_done(),
            cfg.epochs,
            a.output.display()
        );
        println!(
            "teacher outputs ({targets_source}): {}",
            energy_line(&targets_energy)
        );
        if let Some(d) = &break_even_desc {
            println!(
                "compression {compression_joules:.0} J ({compression_provenance}); saves {:.2} J per 1,000 sentences; pays for itself after {d}",
                break_even_json["saved_joules_per_1000"]
                    .as_f64()
                    .unwrap_or(0.0),
            );
        }
        if !finished {
            eprintln!(
                "stopped early; continue with --resume ({})",
                state_path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
