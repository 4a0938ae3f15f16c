//! Recovery: training a compressed sentence encoder back against its uncompressed teacher on
//! unlabeled text (embedding distillation), metered epoch by epoch.
//!
//! The student is a [`TrainableEncoder`] (pruned weights keep their zeros, dropped layers stay
//! dropped); the teacher's outputs come from [`TeacherTargets`], computed once. Each step: a batch
//! of sentences of similar length (the corpus is sorted by length and cut into batches, whose
//! order is shuffled every epoch, so padding costs little), the loss of
//! [`joulecut_distill::embedding_loss`] on the pooled embedding and the mapped hidden states,
//! AdamW with linear warm-up and linear decay to zero, global gradient-norm clipping, then the
//! masks put back. After each epoch the caller gets the student and the full training state
//! ([`TrainState`]) to write a checkpoint; [`Recovery::resume`] continues from such a state and
//! takes exactly the steps the uninterrupted run would have.

mod state;
mod targets;
mod write;

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use joulecut_distill::{EmbeddingLoss, embedding_loss, row_cosine};
use joulecut_energy::{Measurement, Meter};
use joulecut_models::bert::{PaddedBatch, TokenBatch, TrainableEncoder};
use joulecut_ops::Rng;
use joulecut_ops::optim::{AdamW, AdamWConfig};
use serde::{Deserialize, Serialize};

pub use state::TrainState;
pub use targets::TeacherTargets;
pub use write::{StudentWritten, write_student};

use crate::{Error, Result};

/// Settings of a recovery run (recorded in the output's history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoverConfig {
    /// Passes over the corpus.
    pub epochs: usize,
    /// Sentences per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Gradients are scaled down to this global L2 norm when above it (0: no clipping).
    pub clip_norm: f64,
    /// Seed of the batch order.
    pub seed: u64,
    /// Weights of the loss terms.
    pub loss: EmbeddingLoss,
    /// Hidden-state pairs `(student layer, teacher layer)`, 1-based layer outputs.
    pub map: Vec<(usize, usize)>,
}

impl Default for RecoverConfig {
    fn default() -> Self {
        RecoverConfig {
            epochs: 1,
            batch_size: 32,
            lr: 1e-4,
            warmup: 0.05,
            weight_decay: 0.01,
            clip_norm: 1.0,
            seed: 0,
            loss: EmbeddingLoss::default(),
            map: Vec::new(),
        }
    }
}

impl RecoverConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadSetting(m));
        if self.epochs == 0 || self.epochs > crate::MAX_EPOCHS {
            return bad(format!(
                "epochs must be 1 to {}, got {}",
                crate::MAX_EPOCHS,
                self.epochs
            ));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return bad(format!(
                "batch size must be 1 to 4096, got {}",
                self.batch_size
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0) {
            return bad(format!("learning rate must be in (0, 1), got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad(format!(
                "warm-up must be a fraction in [0, 1), got {}",
                self.warmup
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return bad(format!("clip norm must be >= 0, got {}", self.clip_norm));
        }
        self.loss.validate().map_err(Error::BadSetting)
    }

    /// The learning rate at `step` of `total`: linear warm-up, then linear decay to 0.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = (self.warmup * total as f64).round() as usize;
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let left = total.saturating_sub(warm).max(1);
        self.lr * (1.0 - (step - warm) as f64 / left as f64).max(0.0)
    }
}

/// Student layer `j` (1-based) → the teacher layer at the same relative depth: the identity for
/// a student as deep as its teacher, `j → 2j` for half the layers (DistilBERT's and TinyBERT's
/// uniform mapping; the last layers always meet).
pub fn uniform_map(student: usize, teacher: usize) -> Vec<(usize, usize)> {
    (1..=student)
        .map(|j| (j, ((j * teacher) as f64 / student as f64).round() as usize))
        .collect()
}

/// One epoch's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Steps taken.
    pub steps: usize,
    /// Mean loss over the epoch's steps.
    pub loss: f64,
    /// Mean `1 − cos` term.
    pub cosine_loss: f64,
    /// Mean hidden-state MSE term.
    pub hidden_loss: f64,
    /// Mean cosine of the student's embeddings with the teacher's on the held-out sentences.
    pub eval_cosine: Option<f64>,
    /// Training sentences per second.
    pub sentences_per_second: f64,
    /// Wall seconds of the epoch.
    pub seconds: f64,
    /// Energy of the epoch's training window (the evaluation excluded).
    pub energy: Measurement,
}

impl EpochRecord {
    /// One line for people: `epoch 2/5: loss …, held-out cosine …, 103.1 s, 195 sentences/s`.
    pub fn line(&self, epochs: usize) -> String {
        let eval = self
            .eval_cosine
            .map(|c| format!(", held-out cosine {c:.4}"))
            .unwrap_or_default();
        format!(
            "epoch {}/{epochs}: loss {:.4} (1-cos {:.4}, hidden {:.4}){eval}, {:.1} s, {:.0} sentences/s",
            self.epoch,
            self.loss,
            self.cosine_loss,
            self.hidden_loss,
            self.seconds,
            self.sentences_per_second
        )
    }
}

/// What a run reports as it goes.
pub trait RecoverObserver {
    /// After each step: epoch (1-based), step within it, steps in it, the step's loss.
    fn step(&mut self, _epoch: usize, _step: usize, _steps: usize, _loss: f32) {}
    /// After each epoch.
    fn epoch(&mut self, _record: &EpochRecord) {}
}

/// A no-op observer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl RecoverObserver for Quiet {}

/// Held-out sentences and the teacher's embeddings of them.
#[derive(Debug, Clone)]
pub struct HeldOut {
    /// Their tokens.
    pub tokens: TokenBatch,
    /// The teacher's pooled embeddings, `[sentences, hidden]`.
    pub teacher: Vec<f32>,
}

/// A recovery run in progress.
pub struct Recovery<'a> {
    student: &'a TrainableEncoder,
    targets: &'a TeacherTargets,
    cfg: RecoverConfig,
    opt: AdamW,
    /// Sentence indices of each batch (sorted by length).
    batches: Vec<Vec<usize>>,
    epochs_done: usize,
    step: usize,
    device: Device,
}

fn cerr(action: &'static str) -> impl Fn(candle_core::Error) -> Error {
    Error::candle(action)
}

impl<'a> Recovery<'a> {
    /// A fresh run of `student` against `targets`.
    pub fn new(
        student: &'a TrainableEncoder,
        targets: &'a TeacherTargets,
        cfg: RecoverConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        if targets.is_empty() {
            return Err(Error::BadSetting("the corpus has no sentences".into()));
        }
        let have = targets.layers();
        for &(s, t) in &cfg.map {
            if s == 0 || s > student.config().layers {
                return Err(Error::BadSetting(format!(
                    "student layer {s} does not exist (the student has {})",
                    student.config().layers
                )));
            }
            if !have.contains(&t) {
                return Err(Error::BadSetting(format!(
                    "the teacher outputs hold no layer {t}"
                )));
            }
        }
        let opt = AdamW::new(
            student.trainable_vars(),
            AdamWConfig {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
        )
        .map_err(cerr("set up AdamW"))?;
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by_key(|&s| (targets.tokens.lengths[s], s));
        let batches = order
            .chunks(cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        Ok(Recovery {
            student,
            targets,
            cfg,
            opt,
            batches,
            epochs_done: 0,
            step: 0,
            device: Device::Cpu,
        })
    }

    /// Continues from a state saved after an epoch of the same run.
    pub fn resume(
        student: &'a TrainableEncoder,
        targets: &'a TeacherTargets,
        cfg: RecoverConfig,
        state: TrainState,
    ) -> Result<Self> {
        let mut r = Recovery::new(student, targets, cfg)?;
        state.restore(student, &mut r.opt)?;
        r.epochs_done = state.epochs_done;
        r.step = state.step;
        Ok(r)
    }

    /// Epochs finished.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.batches.len()
    }

    /// The full state after the last finished epoch.
    pub fn state(&self) -> Result<TrainState> {
        TrainState::capture(self.student, &self.opt, self.epochs_done, self.step)
    }

    /// The batch order of epoch `e` (0-based): a shuffle seeded by the run's seed and the epoch.
    fn order(&self, e: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.batches.len()).collect();
        Rng::new(self.cfg.seed ^ (e as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .shuffle(&mut idx);
        idx
    }

    fn train_step(&mut self, sentences: &[usize], total: usize) -> Result<(f32, f32, f32)> {
        let tokens = self.targets.batch(sentences);
        let batch = PaddedBatch::new(&tokens, &self.device)?;
        let (students, teachers): (Vec<usize>, Vec<usize>) = self.cfg.map.iter().copied().unzip();
        let out = self.student.forward(&batch, &students)?;
        let h = self.student.config().hidden;
        let tp = Tensor::from_vec(
            self.targets.pooled(sentences),
            (sentences.len(), h),
            &self.device,
        )
        .map_err(cerr("teacher embeddings"))?;
        let mut pairs = Vec::with_capacity(teachers.len());
        for (s, &t) in out.hidden.iter().zip(&teachers) {
            let v = self
                .targets
                .hidden(t, sentences)
                .expect("layers checked in new()");
            let tt = Tensor::from_vec(v, s.dims(), &self.device)
                .map_err(cerr("teacher hidden states"))?;
            pairs.push((s.clone(), tt));
        }
        let parts =
            embedding_loss(&out.pooled, &tp, &pairs, &self.cfg.loss).map_err(cerr("the loss"))?;
        let loss = parts.total.to_scalar::<f32>().map_err(cerr("the loss"))?;
        if !loss.is_finite() {
            return Err(Error::Diverged {
                epoch: self.epochs_done + 1,
                step: self.step,
                loss,
            });
        }
        let mut grads = parts.total.backward().map_err(cerr("backward pass"))?;
        if self.cfg.clip_norm > 0.0 {
            let vars = self.student.trainable_vars();
            let mut sq = 0f64;
            for v in &vars {
                if let Some(g) = grads.get(v) {
                    sq += f64::from(
                        g.sqr()
                            .and_then(|x| x.sum_all())
                            .and_then(|x| x.to_scalar::<f32>())
                            .map_err(cerr("gradient norm"))?,
                    );
                }
            }
            let norm = sq.sqrt();
            if norm > self.cfg.clip_norm {
                let scale = self.cfg.clip_norm / norm;
                for v in &vars {
                    if let Some(g) = grads.remove(v) {
                        grads.insert(v, (g * scale).map_err(cerr("clip gradients"))?);
                    }
                }
            }
        }
        self.opt.set_learning_rate(self.cfg.lr_at(self.step, total));
        self.opt.step(&grads).map_err(cerr("optimiser step"))?;
        self.student.apply_masks()?;
        self.step += 1;
        Ok((loss, parts.cosine, parts.hidden))
    }

    /// Runs the remaining epochs (or only the next `limit` of them), metering each; after each,
    /// `checkpoint(student, state)` (write the model and the state there).
    pub fn run(
        &mut self,
        meter: &Meter,
        held_out: Option<&HeldOut>,
        limit: Option<usize>,
        observer: &mut dyn RecoverObserver,
        checkpoint: &mut dyn FnMut(&TrainableEncoder, &TrainState) -> Result<()>,
    ) -> Result<Vec<EpochRecord>> {
        let total = self.cfg.epochs * self.batches.len();
        let last = match limit {
            Some(n) => (self.epochs_done + n).min(self.cfg.epochs),
            None => self.cfg.epochs,
        };
        let mut records = Vec::new();
        while self.epochs_done < last {
            let e = self.epochs_done;
            let order = self.order(e);
            let steps = order.len();
            let started = Instant::now();
            let (res, energy) = meter.measure(
                &format!("recover-epoch-{}", e + 1),
                || -> Result<(f64, f64, f64, usize)> {
                    let (mut l, mut c, mut h, mut n) = (0f64, 0f64, 0f64, 0usize);
                    for (i, &b) in order.iter().enumerate() {
                        let sentences = self.batches[b].clone();
                        let (loss, cos, hid) = self.train_step(&sentences, total)?;
                        observer.step(e + 1, i + 1, steps, loss);
                        l += f64::from(loss);
                        c += f64::from(cos);
                        h += f64::from(hid);
                        n += sentences.len();
                    }
                    Ok((l, c, h, n))
                },
            );
            let (l, c, h, n) = res?;
            let seconds = started.elapsed().as_secs_f64();
            self.epochs_done += 1;
            let eval_cosine = held_out.map(|ho| self.eval(ho)).transpose()?;
            let rec = EpochRecord {
                epoch: e + 1,
                steps,
                loss: l / steps as f64,
                cosine_loss: c / steps as f64,
                hidden_loss: h / steps as f64,
                eval_cosine,
                sentences_per_second: n as f64 / seconds.max(1e-9),
                seconds,
                energy,
            };
            observer.epoch(&rec);
            checkpoint(self.student, &self.state()?)?;
            records.push(rec);
        }
        Ok(records)
    }

    /// Mean cosine of the student's embeddings with the teacher's on held-out sentences.
    pub fn eval(&self, ho: &HeldOut) -> Result<f64> {
        mean_cosine(self.student, ho, &self.device)
    }
}

/// Mean cosine of `student`'s embeddings with the teacher's on held-out sentences.
pub fn mean_cosine(student: &TrainableEncoder, ho: &HeldOut, device: &Device) -> Result<f64> {
    let h = student.config().hidden;
    let n = ho.tokens.lengths.len();
    let (mut sum, mut t) = (0f64, 0usize);
    for s in (0..n).step_by(64) {
        let e = (s + 64).min(n);
        let lengths = &ho.tokens.lengths[s..e];
        let k: usize = lengths.iter().sum();
        let tb = TokenBatch {
            ids: ho.tokens.ids[t..t + k].to_vec(),
            type_ids: ho.tokens.type_ids[t..t + k].to_vec(),
            lengths: lengths.to_vec(),
        };
        t += k;
        let out = student.forward(&PaddedBatch::new(&tb, device)?, &[])?;
        let teacher = Tensor::from_vec(ho.teacher[s * h..e * h].to_vec(), (e - s, h), device)
            .map_err(cerr("teacher embeddings"))?;
        let c = row_cosine(&out.pooled.detach(), &teacher)
            .and_then(|c| c.sum_all())
            .and_then(|c| c.to_scalar::<f32>())
            .map_err(cerr("cosine"))?;
        sum += f64::from(c);
    }
    Ok(sum / n.max(1) as f64)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a rename).
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let werr = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = joulecut_checkpoint::atomic::TmpFile::for_dest(path).map_err(werr)?;
    tmp.file().write_all(bytes).map_err(werr)?;
    tmp.persist(path).map_err(werr)
}
