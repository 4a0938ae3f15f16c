//! Making a variant's model directory: each step is one of the CLI's commands, run through the same
//! library code (`pipeline::transformer`, `pipeline::quantize_stream`), reading the previous
//! step's directory and writing its own, with its energy metered.
//!
//! Work is shared where the result is the same: a chain of steps already run by an earlier variant
//! is not run again (its directory is reused), and one calibration pass per pruning spec serves
//! every variant that writes it (dense and packed), kept in memory only until its last use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use joulecut_checkpoint::{HistoryEntry, Selection, Source};
use joulecut_energy::Meter;
use joulecut_models::bert::GridPolicy;
use joulecut_quant::{Int8Config, ScaleGranularity, Target};

use super::config::{GridChoice, TransformerStep, TransformerVariant};
use super::result::StepCost;
use crate::pipeline::transformer::{PrunedEncoder, calibrated_grids, prune_encoder};
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
    /// A builder for `variants` (counted up front, so a pass is dropped after its last use).
    pub fn new(
        model: &'a Path,
        models_dir: PathBuf,
        calibration: (&'a [String], &'a Path),
        meter: &'a Meter,
        variants: &[TransformerVariant],
    ) -> Self {
        let mut chains = std::collections::BTreeSet::new();
        let mut pass_uses = BTreeMap::new();
        for v in variants {
            for k in 0..v.steps.len() {
                if chains.insert(chain_key(&v.steps[..=k])) {
                    if let Some(key) = pass_key(&v.steps[..k], &v.steps[k]) {
                        *pass_uses.entry(key).or_insert(0) += 1;
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
                commands.push(command(step, &input, &b.dir, self.calibration_file));
                costs = b.costs.iter().map(|c| c.shared(&b.by)).collect();
                input = b.dir.clone();
                continue;
            }
            commands.push(command(step, &input, &out, self.calibration_file));
            log(&format!("    {}", commands.last().expect("pushed")));
            replace_dir(&self.models_dir, &out)?;
            let pass = pass_key(&v.steps[..k], step);
            costs.extend(self.run_step(step, &input, &out, pass, &v.name)?);
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

    fn run_step(
        &mut self,
        step: &TransformerStep,
        input: &Path,
        out: &Path,
        pass: Option<String>,
        by: &str,
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
        let (target, acts) = match dtype {
            QuantTarget::Int8 => {
                let choice = activations.unwrap_or(GridChoice::Calibrated);
                let acts = match choice.grid() {
                    Some(g) => Int8Activations::One(g),
                    None => {
                        let policy = GridPolicy {
                            max_error: max_error.unwrap_or(GridPolicy::default().max_error),
                        };
                        let chosen = calibrated_grids(input, self.calibration, &policy)?;
                        params["calibration"] = serde_json::json!({
                            "sentences": chosen.sentences, "max_error": policy.max_error,
                        });
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

/// A step in a few words (`sparsegpt 50%`, `sparsegpt 2:4 packed`, `int8 calibrated grids`).
pub(super) fn describe(step: &TransformerStep) -> String {
    match step {
        TransformerStep::Prune {
            method,
            sparsity,
            granularity,
            pack,
        } => {
            let amount = match granularity.implied_sparsity() {
                Some(_) => granularity.to_string(),
                None => format!("{:.0}%", sparsity.unwrap_or_default() * 100.0),
            };
            format!("{method} {amount}{}", if *pack { " packed" } else { "" })
        }
        TransformerStep::Quantize {
            dtype, activations, ..
        } => match (dtype, activations.unwrap_or(GridChoice::Calibrated)) {
            (QuantTarget::Int8, GridChoice::Calibrated) => "int8, calibrated grids".into(),
            (QuantTarget::Int8, g) => format!(
                "int8, {} activations",
                g.grid().expect("not calibrated").as_str()
            ),
            (d, _) => d.to_string(),
        },
    }
}

/// The `joulecut` command that runs `step` from `input` to `out`.
pub(super) fn command(step: &TransformerStep, input: &Path, out: &Path, calib: &Path) -> String {
    let (i, o, c) = (input.display(), out.display(), calib.display());
    match step {
        TransformerStep::Prune {
            method,
            sparsity,
            granularity,
            pack,
        } => {
            let amount = match granularity.implied_sparsity() {
                Some(_) => format!("--nm {granularity}"),
                None => format!("--sparsity {}", sparsity.unwrap_or_default()),
            };
            let pack = if *pack { " --pack" } else { "" };
            format!("joulecut prune {i} -o {o} --method {method} --calibration {c} {amount}{pack}")
        }
        TransformerStep::Quantize {
            dtype,
            granularity,
            activations,
            max_error,
        } => {
            let mut s = format!("joulecut quantize {i} -o {o} --dtype {dtype}");
            if *dtype == QuantTarget::Int8 {
                let g = match granularity.unwrap_or(ScaleGranularity::Channel) {
                    ScaleGranularity::Tensor => "tensor",
                    _ => "channel",
                };
                s += &format!(" --granularity {g}");
                match activations.unwrap_or(GridChoice::Calibrated).grid() {
                    Some(grid) => s += &format!(" --int8-activations {}", grid.as_str()),
                    None => {
                        s += &format!(" --calibration {c}");
                        if let Some(e) = max_error {
                            s += &format!(" --activation-error {e}");
                        }
                    }
                }
            }
            s
        }
    }
}
