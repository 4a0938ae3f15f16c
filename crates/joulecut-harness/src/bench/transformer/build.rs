//! Making a variant's model directory: each step is one of the CLI's commands, run through the same
//! library code (`pipeline::transformer`, `pipeline::quantize_stream`, `recover`), reading the
//! previous step's directory and writing its own, with its energy metered.
//!
//! Work is shared where the result is the same: a chain of steps already run by an earlier variant
//! is not run again (its directory is reused), one calibration pass per pruning spec serves every
//! variant that writes it (dense and packed), and one set of teacher outputs serves every recover
//! step; each is kept in memory only until its last use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use joulecut_checkpoint::{HistoryEntry, Selection, Source};
use joulecut_energy::Meter;
use joulecut_models::bert::{GridPolicy, UnitScore};
use joulecut_prune::Method;
use joulecut_quant::{Int8Config, ScaleGranularity, Target};

use super::command::{Named, command, describe};
use super::config::{GridChoice, TransformerStep, TransformerVariant};
use super::recover::{RecoverJob, Teacher};
use super::result::StepCost;
use crate::pipeline::transformer::{
    PrunedEncoder, UnitPrune, calibrated_grids, prune_encoder, prune_units,
};
use crate::pipeline::{Int8Activations, QuantTarget, QuantizeJob, quantize_stream};
use crate::{Error, Result};

/// A directory some chain of steps produced.
struct Built {
    dir: PathBuf,
    costs: Vec<StepCost>,
    by: String,
}

/// A calibration pass kept for the variants that still write it.
struct Pass {
    pruned: PrunedEncoder,
    cost: StepCost,
    by: String,
    uses_left: usize,
}

/// Builds the variants of one suite run, sharing work between them.
pub(super) struct Builder<'a> {
    /// The baseline model directory (never written).
    pub model: &'a Path,
    /// Where variant directories go (`OUT/models`).
    pub models_dir: PathBuf,
    /// The calibration sentences, and the file holding them (named in the commands).
    pub calibration: &'a [String],
    /// The calibration file.
    pub calibration_file: &'a Path,
    /// Meters every step.
    pub meter: &'a Meter,
    /// The teacher outputs of recover steps (`None`: the suite has no corpus, so no recover step).
    teacher: Option<Teacher<'a>>,
    built: BTreeMap<String, Built>,
    passes: BTreeMap<String, Pass>,
    pass_uses: BTreeMap<String, usize>,
}

/// A step chain's key: its JSON.
fn chain_key(steps: &[TransformerStep]) -> String {
    serde_json::to_string(steps).expect("steps serialise")
}

/// A calibration pass's key: the steps before it and its spec (`pack` only changes the write).
fn pass_key(before: &[TransformerStep], step: &TransformerStep) -> Option<String> {
    let spec = step.prune_spec()?;
    Some(format!(
        "{}|{}",
        chain_key(before),
        serde_json::to_string(&spec).expect("spec serialises")
    ))
}

impl<'a> Builder<'a> {
    /// A builder for `variants` (counted up front, so a calibration pass or the teacher outputs
    /// are dropped after their last use); `corpus`: the training sentences and their file.
    pub fn new(
        model: &'a Path,
        models_dir: PathBuf,
        calibration: (&'a [String], &'a Path),
        corpus: Option<(&'a [String], &'a Path)>,
        meter: &'a Meter,
        variants: &[TransformerVariant],
    ) -> Self {
        let mut chains = std::collections::BTreeSet::new();
        let mut pass_uses = BTreeMap::new();
        let mut recovers = 0;
        for v in variants {
            for k in 0..v.steps.len() {
                if chains.insert(chain_key(&v.steps[..=k])) {
                    if let Some(key) = pass_key(&v.steps[..k], &v.steps[k]) {
                        *pass_uses.entry(key).or_insert(0) += 1;
                    }
                    if matches!(v.steps[k], TransformerStep::Recover { .. }) {
                        recovers += 1;
                    }
                }
            }
        }
        Builder {
            model,
            models_dir,
            calibration: calibration.0,
            calibration_file: calibration.1,
            meter,
            teacher: corpus.map(|c| Teacher::new(model, c, recovers)),
            built: BTreeMap::new(),
            passes: BTreeMap::new(),
            pass_uses,
        }
    }

    /// Makes `v`'s directory; returns it, the cost of every step, and the commands that make it.
    pub fn build(
        &mut self,
        v: &TransformerVariant,
        log: &mut dyn FnMut(&str),
    ) -> Result<(PathBuf, Vec<StepCost>, Vec<String>)> {
        let mut input = self.model.to_path_buf();
        let mut costs: Vec<StepCost> = Vec::new();
        let mut commands = Vec::new();
        let last = v.steps.len() - 1;
        for (k, step) in v.steps.iter().enumerate() {
            let key = chain_key(&v.steps[..=k]);
            let out = if k == last {
                self.models_dir.join(&v.name)
            } else {
                self.models_dir.join(format!("{}.step{}", v.name, k + 1))
            };
            if let Some(b) = self.built.get(&key) {
                commands.push(command(step, &input, &b.dir, &self.named()));
                costs = b.costs.iter().map(|c| c.shared(&b.by)).collect();
                input = b.dir.clone();
                continue;
            }
            commands.push(command(step, &input, &out, &self.named()));
            log(&format!("    {}", commands.last().expect("pushed")));
            replace_dir(&self.models_dir, &out)?;
            let pass = pass_key(&v.steps[..k], step);
            costs.extend(self.run_step(step, (&input, &out), pass, &v.name, log)?);
            self.built.insert(
                key,
                Built {
                    dir: out.clone(),
                    costs: costs.clone(),
                    by: v.name.clone(),
                },
            );
            input = out;
        }
        Ok((input, costs, commands))
    }

    /// The files the commands name.
    fn named(&self) -> Named<'_> {
        Named {
            baseline: self.model,
            calibration: self.calibration_file,
            corpus: self.teacher.as_ref().map(Teacher::corpus_file),
        }
    }

    fn run_step(
        &mut self,
        step: &TransformerStep,
        (input, out): (&Path, &Path),
        pass: Option<String>,
        by: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Vec<StepCost>> {
        let meter = self.meter;
        match step {
            TransformerStep::Prune { pack, .. } => {
                let spec = step.prune_spec().expect("a prune step");
                let key = pass.expect("a prune step has a pass key");
                let mut costs = Vec::new();
                if let Some(p) = self.passes.get(&key) {
                    costs.push(p.cost.shared(&p.by));
                } else {
                    let label = format!("prune {}: calibrate + prune", describe(step));
                    let (res, m) =
                        meter.measure(&label, || prune_encoder(input, self.calibration, &spec));
                    let cost = StepCost::of(label, &m);
                    costs.push(cost.clone());
                    let uses_left = self.pass_uses.get(&key).copied().unwrap_or(1);
                    self.passes.insert(
                        key.clone(),
                        Pass {
                            pruned: res?,
                            cost,
                            by: by.to_string(),
                            uses_left,
                        },
                    );
                }
                let p = self.passes.get_mut(&key).expect("inserted above");
                let (res, m) = meter.measure("write", || p.pruned.write(out, *pack));
                res?;
                costs.push(StepCost::of(
                    if *pack { "write packed" } else { "write" },
                    &m,
                ));
                p.uses_left = p.uses_left.saturating_sub(1);
                if p.uses_left == 0 {
                    self.passes.remove(&key);
                }
                Ok(costs)
            }
            TransformerStep::Quantize { .. } => {
                let label = format!("quantize {}", describe(step));
                let (res, m) = meter.measure(&label, || self.quantize(step, input, out));
                res?;
                Ok(vec![StepCost::of(label, &m)])
            }
            TransformerStep::Structured {
                granularity,
                sparsity,
                method,
            } => {
                let calibrated = *method == Method::Wanda;
                let p = UnitPrune {
                    units: *granularity,
                    sparsity: *sparsity,
                    score: if calibrated {
                        UnitScore::Activation
                    } else {
                        UnitScore::Magnitude
                    },
                };
                let calib = if calibrated { self.calibration } else { &[] };
                let label = format!(
                    "structured {}: {}prune + compact",
                    describe(step),
                    if calibrated { "calibrate + " } else { "" }
                );
                let (res, m) = meter.measure(&label, || prune_units(input, calib, &p));
                let pruned = res?;
                let prune_cost = StepCost::of(label, &m);
                let (res, m) = meter.measure("write", || pruned.write(out));
                res?;
                Ok(vec![prune_cost, StepCost::of("write", &m)])
            }
            TransformerStep::Recover {
                epochs,
                keep_layers,
                ..
            } => {
                let job = RecoverJob {
                    input,
                    out,
                    epochs: *epochs,
                    lr: step.recover_lr().expect("a recover step"),
                    keep_layers: keep_layers.as_deref(),
                };
                let teacher = self.teacher.as_mut().ok_or_else(|| {
                    Error::BadSetting(format!(
                        "{by}: a recover step trains on the suite's corpus, and `text` names none"
                    ))
                })?;
                teacher.recover(&job, format!("recover {}", describe(step)), meter, by, log)
            }
        }
    }

    /// `joulecut quantize`'s work for one step.
    fn quantize(&self, step: &TransformerStep, input: &Path, out: &Path) -> Result<()> {
        let TransformerStep::Quantize {
            dtype,
            granularity,
            activations,
            max_error,
        } = step
        else {
            unreachable!("called for quantize steps")
        };
        let cfg = Int8Config {
            granularity: granularity.unwrap_or(ScaleGranularity::Channel),
            ..Int8Config::default()
        };
        let mut params = serde_json::json!({"dtype": dtype.to_string(), "input": input});
        let mut in_scales = BTreeMap::new();
        let (target, acts) = match dtype {
            QuantTarget::Int8 => {
                let choice = activations.unwrap_or(GridChoice::Calibrated);
                let acts = match choice.grid() {
                    Some(g) => Int8Activations::One(g),
                    None => {
                        let policy = GridPolicy {
                            max_error: max_error.unwrap_or(GridPolicy::default().max_error),
                            ..GridPolicy::default()
                        };
                        let chosen = calibrated_grids(input, self.calibration, &policy, &cfg)?;
                        params["calibration"] = serde_json::json!({
                            "sentences": chosen.sentences, "max_error": policy.max_error,
                            "smoothed": chosen.in_scales.len(),
                        });
                        in_scales = chosen.weight_in_scales();
                        Int8Activations::PerLayer(chosen.grids)
                    }
                };
                params["int8"] = serde_json::to_value(cfg).unwrap_or_default();
                (Target::Int8(cfg), acts)
            }
            half => {
                let ft = if *half == QuantTarget::Bf16 {
                    joulecut_checkpoint::FloatType::BF16
                } else {
                    joulecut_checkpoint::FloatType::F16
                };
                (Target::Half(ft), Int8Activations::One(Default::default()))
            }
        };
        let job = QuantizeJob {
            target,
            selection: Selection::default(),
            activations: acts,
            in_scales,
            history: HistoryEntry::new("quantize", params),
            single_file: false,
        };
        quantize_stream(&Source::open(input)?, out, &job)?;
        Ok(())
    }
}

/// Removes an earlier run's directory at `out` (only ever under `models_dir`, which the bench
/// owns), so the step can write it afresh.
fn replace_dir(models_dir: &Path, out: &Path) -> Result<()> {
    debug_assert!(out.starts_with(models_dir));
    let io = |source| Error::Read {
        path: out.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(models_dir).map_err(|source| Error::Read {
        path: models_dir.to_path_buf(),
        source,
    })?;
    if out.is_dir() {
        std::fs::remove_dir_all(out).map_err(io)?;
    } else if out.exists() {
        std::fs::remove_file(out).map_err(io)?;
    }
    Ok(())
}
