//! The `recover` step: the previous step's model (a student) trained back against the f32
//! baseline (the teacher) by embedding distillation on the suite's corpus, as `joulecut distill
//! --teacher DIR --corpus FILE` does ([`crate::recover`]).
//!
//! The teacher's outputs over the corpus (pooled embeddings and the hidden states of every
//! layer, so any student's uniform layer map is covered) are computed once per run: the first
//! variant that needs them pays their metered cost, the others report it as shared, and they are
//! dropped after the last recover step.

use std::path::Path;

use candle_core::Device;
use joulecut_checkpoint::HistoryEntry;
use joulecut_embed::{Engine, SentenceEncoder};
use joulecut_energy::Meter;
use joulecut_models::bert::{StudentSpec, TrainableEncoder};

use super::config::RECOVER_BATCH_SIZE;
use super::result::StepCost;
use crate::recover::{
    EpochRecord, RecoverConfig, RecoverObserver, Recovery, TeacherTargets, uniform_map,
    write_student,
};
use crate::{Error, Result};

/// The teacher outputs of one run, computed on first use.
pub(super) struct Teacher<'a> {
    /// The baseline model directory.
    model: &'a Path,
    /// The corpus sentences, and the file holding them (named in the commands).
    corpus: &'a [String],
    corpus_file: &'a Path,
    computed: Option<Computed>,
    /// Recover steps still to run.
    uses_left: usize,
}

struct Computed {
    targets: TeacherTargets,
    depth: usize,
    cost: StepCost,
    by: String,
}

/// What a recover step trains.
pub(super) struct RecoverJob<'s> {
    /// The student's source directory.
    pub input: &'s Path,
    /// Where the trained student goes.
    pub out: &'s Path,
    /// Passes over the corpus.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The layers the student keeps (`None`: all).
    pub keep_layers: Option<&'s [usize]>,
}

/// A line per epoch on the bench's log.
struct EpochLog<'l> {
    log: &'l mut dyn FnMut(&str),
    epochs: usize,
}

impl RecoverObserver for EpochLog<'_> {
    fn epoch(&mut self, r: &EpochRecord) {
        (self.log)(&format!("      {}", r.line(self.epochs)));
    }
}

impl<'a> Teacher<'a> {
    /// The teacher `model` on `corpus`, for `uses` recover steps.
    pub fn new(model: &'a Path, corpus: (&'a [String], &'a Path), uses: usize) -> Self {
        Teacher {
            model,
            corpus: corpus.0,
            corpus_file: corpus.1,
            computed: None,
            uses_left: uses,
        }
    }

    /// The corpus file.
    pub fn corpus_file(&self) -> &Path {
        self.corpus_file
    }

    /// Computes the teacher outputs if no variant has yet (metered, charged to `by`); returns
    /// the cost this variant reports for them.
    fn ensure(&mut self, meter: &Meter, by: &str) -> Result<StepCost> {
        if let Some(c) = &self.computed {
            return Ok(c.cost.shared(&c.by));
        }
        let label = format!("teacher outputs: {} corpus sentences", self.corpus.len());
        let (res, m) = meter.measure(&label, || -> Result<(TeacherTargets, usize)> {
            let teacher = SentenceEncoder::load_with(self.model, &Device::Cpu, Engine::Joulecut)?;
            let depth = teacher.bert_config().layers;
            let layers: Vec<usize> = (1..=depth).collect();
            let ids = (
                self.model.display().to_string(),
                self.corpus_file.display().to_string(),
            );
            let t = TeacherTargets::compute(&teacher, self.corpus, &layers, ids, &mut |_, _| {})?;
            Ok((t, depth))
        });
        let (targets, depth) = res?;
        let cost = StepCost::of(label, &m);
        self.computed = Some(Computed {
            targets,
            depth,
            cost: cost.clone(),
            by: by.to_string(),
        });
        Ok(cost)
    }

    /// Runs one recover step for variant `by`: the teacher outputs (computed or shared), then the
    /// training, metered as `label`, with the student written to `job.out`. Returns both costs.
    pub fn recover(
        &mut self,
        job: &RecoverJob<'_>,
        label: String,
        meter: &Meter,
        by: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<StepCost>> {
        let shared = self.ensure(meter, by)?;
        let computed = self.computed.as_ref().expect("computed above");
        let (res, m) = meter.measure(&label, || {
            train(job, &computed.targets, computed.depth, self, meter, log)
        });
        res?;
        self.uses_left = self.uses_left.saturating_sub(1);
        if self.uses_left == 0 {
            self.computed = None;
        }
        Ok(vec![shared, StepCost::of(label, &m)])
    }
}

/// `joulecut distill`'s work for one student: load it, train it against `targets` with the
/// CLI's defaults (batch 32, the loss weights, a uniform layer map onto the teacher's `depth`
/// layers), write it.
fn train(
    job: &RecoverJob<'_>,
    targets: &TeacherTargets,
    depth: usize,
    teacher: &Teacher<'_>,
    meter: &Meter,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let dev = Device::Cpu;
    let source = SentenceEncoder::load_with(job.input, &dev, Engine::Joulecut)?;
    let spec = StudentSpec {
        keep_layers: job.keep_layers.map(<[usize]>::to_vec),
        train_embeddings: false,
        qat: false,
    };
    let student = TrainableEncoder::load(source.bert_config(), &source.tensors(), &spec, &dev)
        .map_err(|e| Error::Calibration {
            path: job.input.to_path_buf(),
            reason: e.to_string(),
            hint: "a recover step trains an f32 model directory: put it before quantize steps"
                .into(),
        })?;
    let cfg = RecoverConfig {
        epochs: job.epochs,
        batch_size: RECOVER_BATCH_SIZE,
        lr: job.lr,
        map: uniform_map(student.config().layers, depth),
        ..RecoverConfig::default()
    };
    let history = HistoryEntry::new(
        "distill",
        serde_json::json!({
            "teacher": teacher.model, "student": job.input, "keep_layers": job.keep_layers,
            "corpus": teacher.corpus_file, "corpus_sentences": teacher.corpus.len(), "config": cfg,
            "qat": false,
        }),
    );
    let mut recovery = Recovery::new(&student, targets, cfg)?;
    let mut observer = EpochLog {
        log,
        epochs: job.epochs,
    };
    recovery.run(meter, None, None, &mut observer, &mut |_, _| Ok(()))?;
    write_student(&source, &student, job.out, history)?;
    Ok(())
}
