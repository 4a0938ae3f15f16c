//! Applying a plan's weight-changing steps (prune, gradual, compact, fine-tune, QAT, distill) to a
//! model, each training step metered. The storage steps are applied when the checkpoint is written
//! ([`super::encode`]).

use candle_core::Device;
use candle_nn::VarMap;
use joulecut_energy::{Measurement, Meter};
use joulecut_models::{Model, ModelConfig, init_varmap, load_into_varmap};
use joulecut_prune::{Pruner, Schedule, Selection};
use serde::Serialize;

use super::policy::PrunePolicy;
use super::step::{Step, kd_config};
use super::weights::{compact_model, copy_varmap};
use crate::data::Splits;
use crate::train::{CrossEntropy, LrSchedule, NoHook, Objective, Silent, TrainConfig, train};
use crate::{Error, Result};

/// A model being compressed: its architecture and its weights.
pub struct ModelState {
    /// The architecture (compaction and distillation change it).
    pub cfg: ModelConfig,
    /// The weights.
    pub vm: VarMap,
}

impl ModelState {
    /// A copy with its own weights.
    pub fn try_clone(&self, device: &Device) -> Result<ModelState> {
        Ok(ModelState {
            cfg: self.cfg.clone(),
            vm: copy_varmap(&self.cfg, &self.vm, device)?,
        })
    }
}

/// The training settings steps fall back on where they give none (a bench suite's baseline).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainDefaults {
    /// Epochs (distillation).
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
}

/// What the steps run with.
pub struct Context<'a> {
    /// Training and test data.
    pub data: &'a Splits,
    /// Meters every training step.
    pub meter: &'a Meter,
    /// Where training runs.
    pub device: &'a Device,
    /// The run's seed (fine-tuning shuffles with `seed + 1000`; a distilled student starts where
    /// `joulecut train --seed` would).
    pub seed: u64,
    /// Settings the steps default to.
    pub defaults: TrainDefaults,
    /// The model KD fine-tuning learns from (the uncompressed baseline).
    pub teacher: &'a ModelState,
    /// A name for the run in teacher-logit fingerprints and errors.
    pub label: &'a str,
}

/// One metered piece of a step.
#[derive(Debug, Clone, Serialize)]
pub struct StepEnergy {
    /// `gradual`, `finetune`, `qat`, `teacher-logits`, `distill`.
    pub step: &'static str,
    /// Its energy window.
    pub energy: Measurement,
}

/// The result of the weight-changing steps.
pub struct Applied {
    /// The compressed model.
    pub state: ModelState,
    /// Each metered piece, in order.
    pub energies: Vec<StepEnergy>,
}

impl Applied {
    /// Joules of all the pieces.
    pub fn joules(&self) -> f64 {
        // A fold from +0.0: an empty sum must read 0, not the -0.0 `Sum` starts from.
        self.energies
            .iter()
            .fold(0.0, |j, e| j + e.energy.total().0)
    }
}

impl Context<'_> {
    fn bad(&self, e: impl std::fmt::Display) -> Error {
        Error::BadSetting(format!("{}: {e}", self.label))
    }

    /// Training settings of a fine-tuning step (`finetune`, `qat`, `gradual`).
    fn finetune_config(
        &self,
        epochs: usize,
        lr: Option<f64>,
        schedule: Option<LrSchedule>,
    ) -> TrainConfig {
        let d = TrainConfig::default();
        TrainConfig {
            epochs,
            batch_size: self.defaults.batch_size,
            lr: lr.unwrap_or(self.defaults.lr),
            seed: self.seed.wrapping_add(1000),
            eval_every_epoch: false,
            lr_schedule: schedule.unwrap_or(d.lr_schedule),
            ..d
        }
    }

    /// Trains `state` in a metered window labelled `label`.
    fn train_metered(
        &self,
        state: &ModelState,
        tc: &TrainConfig,
        objective: &mut dyn Objective,
        hook: &mut dyn crate::StepHook,
        label: &'static str,
    ) -> Result<StepEnergy> {
        let m = Model::from_varmap(&state.cfg, &state.vm)?;
        let (r, energy) = self.meter.measure(label, || {
            train(
                &m,
                &state.vm,
                &self.data.train,
                &self.data.test,
                tc,
                objective,
                hook,
                &mut Silent,
                self.device,
            )
        });
        r?;
        Ok(StepEnergy {
            step: label,
            energy,
        })
    }

    /// The teacher's logits over the training set, computed once and metered.
    fn teacher_logits(
        &self,
        teacher: &ModelState,
        id: String,
    ) -> Result<(joulecut_distill::TeacherLogits, StepEnergy)> {
        let t = Model::from_varmap(&teacher.cfg, &teacher.vm)?;
        let (cache, energy) = self.meter.measure("teacher-logits", || {
            joulecut_distill::TeacherLogits::compute(&t, &self.data.train, 1000, id, self.device)
        });
        let step = StepEnergy {
            step: "teacher-logits",
            energy,
        };
        Ok((cache.map_err(|e| self.bad(e))?, step))
    }

    /// Applies the weight-changing `steps` to `state`, in order; `policy` fits pruning specs to the
    /// model (its output layer is filled in from the current architecture).
    pub fn apply(
        &self,
        mut state: ModelState,
        steps: &[&Step],
        policy: &PrunePolicy,
        log: &mut dyn FnMut(&str),
    ) -> Result<Applied> {
        let mut energies = Vec::new();
        for &step in steps {
            match step {
                Step::Prune {
                    sparsity,
                    granularity,
                    scope,
                    exclude_output,
                } => {
                    let spec = self.fit(
                        &state,
                        policy,
                        *sparsity,
                        *granularity,
                        *scope,
                        *exclude_output,
                        log,
                    )?;
                    joulecut_prune::prune_varmap(&state.vm, &spec).map_err(|e| self.bad(e))?;
                }
                Step::Gradual {
                    sparsity,
                    granularity,
                    scope,
                    exclude_output,
                    epochs,
                    lr,
                    lr_schedule,
                    ramp,
                    frequency,
                    initial_sparsity,
                } => {
                    let spec = self.fit(
                        &state,
                        policy,
                        *sparsity,
                        *granularity,
                        *scope,
                        *exclude_output,
                        log,
                    )?;
                    let tc = self.finetune_config(*epochs, *lr, *lr_schedule);
                    let train_len = self.data.train.len();
                    let total = train_len.div_ceil(tc.batch_size.min(train_len)) * epochs;
                    // The last update lands on the last step of the ramp.
                    let end =
                        ((total as f64 * ramp.unwrap_or(0.5)).round() as usize).clamp(1, total) - 1;
                    let schedule = Schedule::agp(
                        initial_sparsity.unwrap_or(0.0),
                        0,
                        end,
                        frequency.unwrap_or(10),
                    )
                    .map_err(|e| self.bad(e))?;
                    let mut pruner = Pruner::new(spec, schedule).map_err(|e| self.bad(e))?;
                    energies.push(self.train_metered(
                        &state,
                        &tc,
                        &mut CrossEntropy,
                        &mut pruner,
                        "gradual",
                    )?);
                }
                Step::Compact => {
                    let tensors = joulecut_prune::varmap_tensors(&state.vm)?;
                    let c = compact_model(&state.cfg, &tensors).map_err(|e| self.bad(e))?;
                    let vm = init_varmap(&c.cfg, self.seed, self.device)?;
                    load_into_varmap(
                        &vm,
                        c.tensors.into_iter().map(|(n, t)| (n, t.shape, t.values)),
                    )?;
                    state = ModelState { cfg: c.cfg, vm };
                }
                Step::Finetune {
                    epochs,
                    lr,
                    lr_schedule,
                    batch_size,
                    kd,
                    temperature,
                    alpha,
                } => {
                    let mut tc = self.finetune_config(*epochs, *lr, *lr_schedule);
                    tc.batch_size = batch_size.unwrap_or(tc.batch_size);
                    // Knowledge distillation from the baseline: its logits over the training set, once.
                    let mut kd_objective = None;
                    if *kd {
                        let id = format!("bench:{}:baseline", self.teacher.cfg.name());
                        let (cache, e) = self.teacher_logits(self.teacher, id)?;
                        energies.push(e);
                        kd_objective = Some(
                            joulecut_distill::KdObjective::cached(
                                cache,
                                &state.cfg,
                                kd_config(*temperature, *alpha),
                            )
                            .map_err(|e| self.bad(e))?,
                        );
                    }
                    let objective: &mut dyn Objective = match &mut kd_objective {
                        Some(o) => o,
                        None => &mut CrossEntropy,
                    };
                    let mut keep = Pruner::keep_zeros(&state.vm, &Selection::default())?;
                    energies
                        .push(self.train_metered(&state, &tc, objective, &mut keep, "finetune")?);
                }
                Step::Qat { epochs, lr } => {
                    let tc = self.finetune_config(*epochs, *lr, None);
                    let mut keep = Pruner::keep_zeros(&state.vm, &Selection::default())?;
                    let mut obj = crate::QatObjective::new(
                        &state.cfg,
                        &state.vm,
                        joulecut_quant::Int8Config::default(),
                    );
                    energies.push(self.train_metered(&state, &tc, &mut obj, &mut keep, "qat")?);
                }
                Step::Distill {
                    student,
                    epochs,
                    lr,
                    temperature,
                    alpha,
                } => {
                    let kd = kd_config(*temperature, *alpha);
                    let epochs = epochs.unwrap_or(self.defaults.epochs);
                    let lr = lr.unwrap_or(self.defaults.lr);
                    let (s, e) = self.distill(&state, student, epochs, lr, kd)?;
                    energies.extend(e);
                    state = s;
                }
                Step::Quantize { .. } | Step::Pack => {}
            }
        }
        Ok(Applied { state, energies })
    }

    /// The spec of a `prune` or `gradual` step, fitted to the model by the policy.
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        state: &ModelState,
        policy: &PrunePolicy,
        sparsity: f64,
        granularity: joulecut_prune::Granularity,
        scope: joulecut_prune::Scope,
        exclude_output: bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<joulecut_prune::PruneSpec> {
        let policy = PrunePolicy {
            exclude_output: policy.exclude_output || exclude_output,
            ..PrunePolicy::for_model(Some(&state.cfg), policy.indivisible)
        };
        let shapes = state.cfg.param_shapes();
        let fitted = policy.fit(
            super::policy::spec(sparsity, granularity, scope),
            shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())),
        );
        if !fitted.left_dense.is_empty() {
            log(&format!(
                "    {granularity}: {} left dense (input dimension not a multiple of the group)",
                fitted.left_dense.join(", ")
            ));
        }
        Ok(fitted.spec)
    }

    /// Distils `student` from `teacher` (the model so far): its logits over the training set once,
    /// then the student trained on them (`joulecut distill`'s cached-teacher path), each metered.
    fn distill(
        &self,
        teacher: &ModelState,
        student: &str,
        epochs: usize,
        lr: f64,
        kd: joulecut_distill::KdConfig,
    ) -> Result<(ModelState, Vec<StepEnergy>)> {
        let scfg = ModelConfig::parse(student)?;
        joulecut_distill::check_compatible(&teacher.cfg, &scfg).map_err(|e| self.bad(e))?;
        let id = format!("bench:{}:{}", teacher.cfg.name(), self.label);
        let (cache, e_logits) = self.teacher_logits(teacher, id)?;
        let mut objective =
            joulecut_distill::KdObjective::cached(cache, &scfg, kd).map_err(|e| self.bad(e))?;
        // The student starts where `joulecut train --seed` would: the comparison with the same
        // student trained alone is the one docs/DISTILLATION.md makes.
        let s = ModelState {
            vm: init_varmap(&scfg, self.seed, self.device)?,
            cfg: scfg,
        };
        let tc = TrainConfig {
            epochs,
            batch_size: self.defaults.batch_size,
            lr,
            seed: self.seed,
            eval_every_epoch: false,
            ..Default::default()
        };
        let e_train = self.train_metered(&s, &tc, &mut objective, &mut NoHook, "distill")?;
        Ok((s, vec![e_logits, e_train]))
    }
}
