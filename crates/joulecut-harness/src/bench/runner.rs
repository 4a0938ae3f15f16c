//! The experiment runner: trains (or loads cached) baselines, applies each variant's steps, writes
//! the variant's checkpoint, and evaluates it through its real inference path with energy metered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use joulecut_checkpoint::{
    Checkpoint, CheckpointWriter, DenseTensor, FloatType, HistoryEntry, SparseTensor, TensorData,
};
use joulecut_energy::{Measurement, Meter};
use joulecut_models::{LayerPath, Model, ModelConfig, init_varmap, load_into_varmap};
use serde::{Deserialize, Serialize};

use super::config::{Step, SuiteConfig, VariantConfig, kd_config, parse_granularity};
use crate::data::Splits;
use crate::train::{CrossEntropy, NoHook, Silent, StepHook, TrainConfig, train, warm_up};
use crate::{Error, RealKernels, Result, evaluate, evaluate_for, latency};

/// Where and how a suite runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory (checkpoints go to `DIR/checkpoints`).
    pub out_dir: PathBuf,
    /// Baselines are cached here and reused across runs and shards.
    pub cache_dir: PathBuf,
    /// Run only runs `i` with `i % n == shard.0` (0-based).
    pub shard: Option<(usize, usize)>,
    /// Device for training and evaluation.
    pub device: Device,
}

/// The raw result of one run (a baseline or a variant for one model and seed). Ratios against the
/// baseline are computed by the report, so shards can be merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Architecture name.
    pub model: String,
    /// Seed of the baseline.
    pub seed: u64,
    /// `baseline` or the variant's name.
    pub variant: String,
    /// The variant's steps.
    pub steps: Vec<Step>,
    /// Test accuracy.
    pub accuracy: f64,
    /// Checkpoint bytes on disk.
    pub bytes: u64,
    /// Logical parameters.
    pub params: usize,
    /// Non-zero parameters.
    pub nonzero_params: usize,
    /// Fraction of zeros over all weight matrices and conv kernels (every tensor of 2 or more
    /// dimensions, the output layer included; biases excluded).
    #[serde(default)]
    pub weight_sparsity: f64,
    /// Samples/s at the eval batch size.
    pub samples_per_second: f64,
    /// Batch size of the throughput and energy passes.
    pub batch_size: usize,
    /// Median batch-1 latency (µs).
    pub latency_b1_us: f64,
    /// Inference joules per 10,000 samples at the eval batch size.
    pub inference_joules_per_10k: f64,
    /// The inference energy window (the DESIGN `energy` object).
    pub inference_energy: serde_json::Value,
    /// Whether that window was shorter than a measured counter's update period
    /// ([`Measurement::below_resolution`]): its joules must not be read as a plain measurement.
    #[serde(default)]
    pub inference_below_resolution: bool,
    /// Joules spent producing this variant from its baseline (fine-tuning, QAT, calibration...).
    pub compression_joules: f64,
    /// Each compression step's energy.
    pub compression_energy: Vec<serde_json::Value>,
    /// Joules of training the baseline this variant starts from.
    pub baseline_training_joules: f64,
    /// Provenance of the inference joules (`measured`, `estimated`, `mixed`).
    pub provenance: String,
    /// `baseline`, `real` (runs through int8/sparse kernels or smaller layers) or `nominal`.
    pub saving: String,
    /// Which kernels each layer ran on.
    pub layers: Vec<serde_json::Value>,
    /// Model config of the variant (compaction changes it).
    pub config: serde_json::Value,
    /// Checkpoint path.
    pub file: String,
    /// Wall seconds this run took (training + compression + evaluation).
    pub seconds: f64,
}

fn provenance_of(m: &Measurement) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v["provenance"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Baseline {
    cfg: ModelConfig,
    vm: VarMap,
    accuracy: f64,
    energy: serde_json::Value,
    joules: f64,
    /// The device warm-up before the training window (`seconds`, `steps`, `energy`); null on the
    /// CPU, which needs none.
    warmup: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct BaselineMeta {
    accuracy: f64,
    energy: serde_json::Value,
    joules: f64,
    #[serde(default)]
    warmup: serde_json::Value,
}

/// The weights a variant's weight-changing steps produced, shared by every variant of the same
/// model and seed that starts with the same such steps (e.g. `prune90`, `prune90-packed` and
/// `prune90-packed-int8` fine-tune once; `distill` and `distill-int8` distil once).
struct Trained {
    cfg: ModelConfig,
    vm: VarMap,
    energies: Vec<serde_json::Value>,
    joules: f64,
    /// The variant that produced it.
    by: String,
}

/// Trained weights by `(model, seed, weight-changing steps as JSON)`.
type TrainedCache = BTreeMap<(String, u64, String), Trained>;

/// A parameter: name, shape, f32 values.
type Param = (String, Vec<usize>, Vec<f32>);

/// Dense F32 tensors of every parameter, in architecture order.
fn varmap_data(cfg: &ModelConfig, vm: &VarMap) -> Result<Vec<Param>> {
    let data = vm.data().lock().expect("VarMap lock");
    cfg.param_shapes()
        .into_iter()
        .map(|(n, shape)| {
            let v = data
                .get(&n)
                .ok_or_else(|| Error::Mismatch(format!("parameter {n} missing")))?;
            let vals = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(Error::candle("read parameters"))?;
            Ok((n, shape, vals))
        })
        .collect()
}

fn write_dense(cfg: &ModelConfig, vm: &VarMap, path: &Path, history: HistoryEntry) -> Result<u64> {
    let mut w = CheckpointWriter::new();
    w.set_model_config(cfg.to_json());
    w.push_history(history);
    for (n, shape, vals) in varmap_data(cfg, vm)? {
        w.insert(n, TensorData::Dense(DenseTensor::from_f32(shape, &vals)));
    }
    w.write(path, &[])
        .map_err(|e| Error::Mismatch(e.to_string()))
}

fn load_varmap(cfg: &ModelConfig, path: &Path, device: &Device) -> Result<VarMap> {
    let ck = Checkpoint::open(path).map_err(|e| Error::Mismatch(e.to_string()))?;
    let vm = init_varmap(cfg, 0, device)?;
    let tensors = ck
        .names()
        .iter()
        .map(|n| ck.get_f32(n).map(|(s, v)| (n.clone(), s, v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Mismatch(e.to_string()))?;
    load_into_varmap(&vm, tensors)?;
    Ok(vm)
}

fn copy_varmap(cfg: &ModelConfig, src: &VarMap, device: &Device) -> Result<VarMap> {
    let vm = init_varmap(cfg, 0, device)?;
    load_into_varmap(&vm, varmap_data(cfg, src)?)?;
    Ok(vm)
}

/// The pruning spec of a `prune` or `gradual` step. Structured pruning never removes the output
/// layer's rows (they are the classes); `exclude_output` leaves that layer dense altogether.
fn prune_spec(
    sparsity: f64,
    granularity: &str,
    scope: &str,
    exclude_output: bool,
    last_layer: &str,
    vm: &VarMap,
) -> Result<joulecut_prune::PruneSpec> {
    let g = parse_granularity(granularity).map_err(Error::BadSetting)?;
    let mut sel = joulecut_prune::Selection::default();
    if g.is_structured() || exclude_output {
        sel = sel.exclude(last_layer.to_string());
    }
    // N:M groups run along a weight's input dimension; a layer whose input dimension is not a
    // multiple of M (LeNet-5's convolutions: 1 and 6 input channels) stays dense, as NVIDIA's
    // ASP leaves such layers, and the run says so (the report's non-zeros show the sparsity).
    if let joulecut_prune::Granularity::Nm { m, .. } = g {
        let data = vm.data().lock().expect("VarMap lock");
        let mut skipped: Vec<&String> = data
            .iter()
            .filter(|(n, v)| {
                let d = v.as_tensor().dims();
                n.ends_with(".weight") && d.len() >= 2 && d[1] % m != 0
            })
            .map(|(n, _)| n)
            .collect();
        skipped.sort();
        if !skipped.is_empty() {
            eprintln!(
                "    {granularity}: {} left dense (input dimension not a multiple of {m})",
                skipped
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for n in skipped {
            sel = sel.exclude(n.clone());
        }
    }
    let scope = if scope == "global" {
        joulecut_prune::Scope::Global
    } else {
        joulecut_prune::Scope::Layer
    };
    Ok(joulecut_prune::PruneSpec::new(sparsity)
        .granularity(g)
        .scope(scope)
        .selection(sel))
}

/// Training settings of a fine-tuning step (`finetune`, `qat`, `gradual`).
fn finetune_config(
    suite: &SuiteConfig,
    seed: u64,
    epochs: usize,
    lr: Option<f64>,
    lr_schedule: Option<&str>,
) -> TrainConfig {
    let d = TrainConfig::default();
    TrainConfig {
        epochs,
        batch_size: suite.baseline.batch_size,
        lr: lr.unwrap_or(suite.baseline.lr),
        seed: seed.wrapping_add(1000),
        eval_every_epoch: false,
        lr_schedule: lr_schedule
            .and_then(crate::train::LrSchedule::parse)
            .unwrap_or(d.lr_schedule),
        ..d
    }
}

/// Prunes along a schedule during fine-tuning (masks recomputed at its update steps, re-applied
/// after every optimiser step).
struct FollowSchedule(joulecut_prune::Pruner);

impl StepHook for FollowSchedule {
    fn after_step(&mut self, vm: &VarMap, step: usize) -> Result<()> {
        self.0
            .step(vm, step)
            .map(|_| ())
            .map_err(|e| Error::Mismatch(e.to_string()))
    }
}

/// Keeps pruned weights at zero during fine-tuning.
struct KeepMasks(joulecut_prune::Pruner);

impl StepHook for KeepMasks {
    fn after_step(&mut self, _: &VarMap, _: usize) -> Result<()> {
        self.0.enforce().map_err(|e| Error::Mismatch(e.to_string()))
    }
}

/// Runs a suite (or one shard of it), returning one result per run.
pub fn run_suite(
    suite: &SuiteConfig,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<RunResult>> {
    std::fs::create_dir_all(opts.out_dir.join("checkpoints"))
        .and_then(|_| std::fs::create_dir_all(&opts.cache_dir))
        .map_err(|source| Error::Read {
            path: opts.out_dir.clone(),
            source,
        })?;
    let runs = suite.runs();
    let mine: Vec<_> = runs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| opts.shard.is_none_or(|(k, n)| i % n == k))
        .map(|(_, r)| r)
        .collect();
    let mut baselines: BTreeMap<(String, u64), Baseline> = BTreeMap::new();
    let mut trained = TrainedCache::new();
    let mut results = Vec::new();
    let total = mine.len();
    for (i, (model, seed, variant)) in mine.into_iter().enumerate() {
        let t0 = Instant::now();
        let key = (model.clone(), seed);
        if let std::collections::btree_map::Entry::Vacant(e) = baselines.entry(key.clone()) {
            e.insert(baseline(suite, &model, seed, data, meter, opts, log)?);
        }
        let base = &baselines[&key];
        let name = variant.map_or("baseline".to_string(), |v| suite.variants[v].name.clone());
        log(&format!("[{}/{total}] {model} seed {seed}: {name}", i + 1));
        let r = match variant {
            None => evaluate_variant(
                suite,
                data,
                meter,
                opts,
                &model,
                seed,
                None,
                base,
                &base.cfg,
                &base.vm,
                &[],
                Vec::new(),
                0.0,
                t0,
            )?,
            Some(v) => run_variant(
                suite,
                data,
                meter,
                opts,
                &model,
                seed,
                &suite.variants[v],
                base,
                &mut trained,
                t0,
            )?,
        };
        let j = if r.inference_below_resolution {
            format!(
                "{:.3} J/10k below the counter's resolution (window shorter than its update period)",
                r.inference_joules_per_10k
            )
        } else {
            format!("{:.3} J/10k", r.inference_joules_per_10k)
        };
        log(&format!(
            "    accuracy {:.4}, {} bytes, {:.0} samples/s, {j} ({}), {}",
            r.accuracy, r.bytes, r.samples_per_second, r.provenance, r.saving
        ));
        results.push(r);
    }
    Ok(results)
}

fn baseline(
    suite: &SuiteConfig,
    model: &str,
    seed: u64,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Baseline> {
    let cfg = ModelConfig::parse(model)?;
    let b = &suite.baseline;
    // The learning-rate schedule is part of the key: baselines cached under another default
    // schedule are other models.
    let schedule = serde_json::to_value(TrainConfig::default().lr_schedule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let key = sanitize(&format!(
        "{model}-s{seed}-e{}-b{}-lr{}-{schedule}-{}",
        b.epochs, b.batch_size, b.lr, data.source
    ));
    let ckpt = opts.cache_dir.join(format!("baseline-{key}.safetensors"));
    let meta = opts.cache_dir.join(format!("baseline-{key}.json"));
    if let (Ok(text), true) = (std::fs::read_to_string(&meta), ckpt.is_file()) {
        if let Ok(m) = serde_json::from_str::<BaselineMeta>(&text) {
            log(&format!(
                "{model} seed {seed}: baseline from cache {}",
                ckpt.display()
            ));
            let vm = load_varmap(&cfg, &ckpt, &opts.device)?;
            return Ok(Baseline {
                cfg,
                vm,
                accuracy: m.accuracy,
                energy: m.energy,
                joules: m.joules,
                warmup: m.warmup,
            });
        }
    }
    log(&format!(
        "{model} seed {seed}: training baseline ({} epochs)",
        b.epochs
    ));
    let vm = init_varmap(&cfg, seed, &opts.device)?;
    let m = Model::from_varmap(&cfg, &vm)?;
    let tc = TrainConfig {
        epochs: b.epochs,
        batch_size: b.batch_size,
        lr: b.lr,
        seed,
        ..Default::default()
    };
    // Kernel loading on a GPU goes into its own window, reported beside the training energy.
    let warmup = if opts.device.is_cpu() {
        serde_json::Value::Null
    } else {
        let (w, e) = meter.measure("warmup", || {
            warm_up(&cfg, &data.train, &data.test, &tc, &opts.device)
        });
        let w = w?;
        serde_json::json!({"seconds": w.seconds, "steps": w.steps, "energy": e})
    };
    let (report, energy) = meter.measure("baseline-training", || {
        train(
            &m,
            &vm,
            &data.train,
            &data.test,
            &tc,
            &mut CrossEntropy,
            &mut NoHook,
            &mut Silent,
            &opts.device,
        )
    });
    let report = report?;
    let joules = energy.total().0;
    let energy = serde_json::to_value(&energy).unwrap_or_default();
    write_dense(
        &cfg,
        &vm,
        &ckpt,
        HistoryEntry::new("bench-baseline", serde_json::json!({"config": tc})),
    )?;
    let meta_text = serde_json::to_string_pretty(&BaselineMeta {
        accuracy: report.accuracy,
        energy: energy.clone(),
        joules,
        warmup: warmup.clone(),
    })
    .expect("serialise");
    joulecut_checkpoint::atomic_write(&meta, |f| {
        std::io::Write::write_all(f, meta_text.as_bytes())
    })
    .map_err(|e| Error::Mismatch(e.to_string()))?;
    Ok(Baseline {
        cfg,
        vm,
        accuracy: report.accuracy,
        energy,
        joules,
        warmup,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_variant(
    suite: &SuiteConfig,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    model: &str,
    seed: u64,
    v: &VariantConfig,
    base: &Baseline,
    trained: &mut TrainedCache,
    t0: Instant,
) -> Result<RunResult> {
    let storage: Vec<Step> = v.steps.iter().filter(|s| s.is_storage()).cloned().collect();
    let changing: Vec<&Step> = v.steps.iter().filter(|s| !s.is_storage()).collect();
    let key = (
        model.to_string(),
        seed,
        serde_json::to_string(&changing).expect("steps serialise"),
    );
    let (cfg, vm, energies, joules) = if let Some(t) = trained.get(&key) {
        // Same weights as an earlier variant: reuse them, and report the joules it took to make
        // them (the cost of this variant), marked as shared.
        let energies = t
            .energies
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["shared_with"] = serde_json::json!(t.by);
                e
            })
            .collect();
        let vm = copy_varmap(&t.cfg, &t.vm, &opts.device)?;
        (t.cfg.clone(), vm, energies, t.joules)
    } else {
        let (cfg, vm, energies, joules) =
            apply_steps(suite, data, meter, opts, seed, v, base, &changing)?;
        trained.insert(
            key,
            Trained {
                cfg: cfg.clone(),
                vm: copy_varmap(&cfg, &vm, &opts.device)?,
                energies: energies.clone(),
                joules,
                by: v.name.clone(),
            },
        );
        (cfg, vm, energies, joules)
    };
    evaluate_variant(
        suite,
        data,
        meter,
        opts,
        model,
        seed,
        Some(v),
        base,
        &cfg,
        &vm,
        &storage,
        energies,
        joules,
        t0,
    )
}

/// Runs a variant's weight-changing steps on a copy of the baseline: the resulting architecture,
/// weights, per-step energies and total joules.
#[allow(clippy::too_many_arguments)]
fn apply_steps(
    suite: &SuiteConfig,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    seed: u64,
    v: &VariantConfig,
    base: &Baseline,
    steps: &[&Step],
) -> Result<(ModelConfig, VarMap, Vec<serde_json::Value>, f64)> {
    let dev = &opts.device;
    let mut cfg = base.cfg.clone();
    let mut vm = copy_varmap(&cfg, &base.vm, dev)?;
    let mut energies = Vec::new();
    let mut joules = 0.0;
    let last_layer = format!("{}.weight", cfg.layer_names().last().expect("a layer"));
    for &step in steps {
        match step {
            Step::Prune {
                sparsity,
                granularity,
                scope,
                exclude_output,
            } => {
                let spec = prune_spec(
                    *sparsity,
                    granularity,
                    scope,
                    *exclude_output,
                    &last_layer,
                    &vm,
                )?;
                joulecut_prune::prune_varmap(&vm, &spec)
                    .map_err(|e| Error::BadSetting(format!("{}: {e}", v.name)))?;
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
                let spec = prune_spec(
                    *sparsity,
                    granularity,
                    scope,
                    *exclude_output,
                    &last_layer,
                    &vm,
                )?;
                let mut tc = finetune_config(suite, seed, *epochs, *lr, lr_schedule.as_deref());
                tc.eval_every_epoch = false;
                let total = data
                    .train
                    .len()
                    .div_ceil(tc.batch_size.min(data.train.len()))
                    * epochs;
                // The last update lands on the last step of the ramp.
                let end =
                    ((total as f64 * ramp.unwrap_or(0.5)).round() as usize).clamp(1, total) - 1;
                let schedule = joulecut_prune::Schedule::agp(
                    initial_sparsity.unwrap_or(0.0),
                    0,
                    end,
                    frequency.unwrap_or(10),
                )
                .map_err(|e| Error::BadSetting(format!("{}: {e}", v.name)))?;
                let pruner = joulecut_prune::Pruner::new(spec, schedule)
                    .map_err(|e| Error::BadSetting(format!("{}: {e}", v.name)))?;
                let mut hook = FollowSchedule(pruner);
                let m = Model::from_varmap(&cfg, &vm)?;
                let (r, e) = meter.measure("gradual", || {
                    train(
                        &m,
                        &vm,
                        &data.train,
                        &data.test,
                        &tc,
                        &mut CrossEntropy,
                        &mut hook,
                        &mut Silent,
                        dev,
                    )
                });
                r?;
                joules += e.total().0;
                energies.push(serde_json::json!({"step": "gradual", "energy": e}));
            }
            Step::Compact => {
                let tensors = joulecut_prune::varmap_tensors(&vm)
                    .map_err(|e| Error::Mismatch(e.to_string()))?;
                let names = cfg.layer_names();
                let prefixes: Vec<&str> = names.iter().map(String::as_str).collect();
                let chain = joulecut_prune::Chain::from_prefixes(&prefixes, &tensors);
                let c = joulecut_prune::compact(&tensors, &chain)
                    .map_err(|e| Error::Mismatch(format!("{}: {e}", v.name)))?;
                cfg = cfg.resized(&c.widths)?;
                vm = init_varmap(&cfg, seed, dev)?;
                load_into_varmap(
                    &vm,
                    c.tensors.into_iter().map(|(n, t)| (n, t.shape, t.values)),
                )?;
            }
            Step::Finetune { epochs, lr, .. } | Step::Qat { epochs, lr } => {
                let (schedule, batch) = match step {
                    Step::Finetune {
                        lr_schedule,
                        batch_size,
                        ..
                    } => (lr_schedule.as_deref(), *batch_size),
                    _ => (None, None),
                };
                let mut tc = finetune_config(suite, seed, *epochs, *lr, schedule);
                tc.batch_size = batch.unwrap_or(tc.batch_size);
                let m = Model::from_varmap(&cfg, &vm)?;
                // Knowledge distillation from the baseline: its logits over the training set, once.
                let mut kd_objective = None;
                if let Step::Finetune {
                    kd: true,
                    temperature,
                    alpha,
                    ..
                } = step
                {
                    let bad =
                        |e: joulecut_distill::Error| Error::BadSetting(format!("{}: {e}", v.name));
                    let teacher = Model::from_varmap(&base.cfg, &base.vm)?;
                    let (cache, e) = meter.measure("teacher-logits", || {
                        joulecut_distill::TeacherLogits::compute(
                            &teacher,
                            &data.train,
                            1000,
                            format!("bench:{}:baseline", base.cfg.name()),
                            dev,
                        )
                    });
                    joules += e.total().0;
                    energies.push(serde_json::json!({"step": "teacher-logits", "energy": e}));
                    kd_objective = Some(
                        joulecut_distill::KdObjective::cached(
                            cache.map_err(bad)?,
                            &cfg,
                            kd_config(*temperature, *alpha),
                        )
                        .map_err(bad)?,
                    );
                }
                let keep =
                    joulecut_prune::Pruner::keep_zeros(&vm, &joulecut_prune::Selection::default())
                        .map_err(|e| Error::Mismatch(e.to_string()))?;
                let mut hook = KeepMasks(keep);
                let label = if matches!(step, Step::Qat { .. }) {
                    "qat"
                } else {
                    "finetune"
                };
                let (r, e) = meter.measure(label, || {
                    if matches!(step, Step::Qat { .. }) {
                        let mut obj = crate::QatObjective::new(
                            &cfg,
                            &vm,
                            joulecut_quant::Int8Config::default(),
                        );
                        train(
                            &m,
                            &vm,
                            &data.train,
                            &data.test,
                            &tc,
                            &mut obj,
                            &mut hook,
                            &mut Silent,
                            dev,
                        )
                    } else {
                        let objective: &mut dyn crate::train::Objective = match &mut kd_objective {
                            Some(o) => o,
                            None => &mut CrossEntropy,
                        };
                        train(
                            &m,
                            &vm,
                            &data.train,
                            &data.test,
                            &tc,
                            objective,
                            &mut hook,
                            &mut Silent,
                            dev,
                        )
                    }
                });
                r?;
                joules += e.total().0;
                energies.push(serde_json::json!({"step": label, "energy": e}));
            }
            Step::Distill {
                student,
                epochs,
                lr,
                temperature,
                alpha,
            } => {
                let (scfg, svm, e) = distill(
                    suite,
                    data,
                    meter,
                    opts,
                    seed,
                    &v.name,
                    (&cfg, &vm),
                    student,
                    epochs.unwrap_or(suite.baseline.epochs),
                    lr.unwrap_or(suite.baseline.lr),
                    kd_config(*temperature, *alpha),
                )?;
                for (label, m) in e {
                    joules += m.total().0;
                    energies.push(serde_json::json!({"step": label, "energy": m}));
                }
                (cfg, vm) = (scfg, svm);
            }
            Step::Quantize { .. } | Step::Pack => {}
        }
    }
    Ok((cfg, vm, energies, joules))
}

/// Metered sub-steps of a step, by label.
type StepEnergies = Vec<(&'static str, Measurement)>;

/// Distils `student` from `teacher` (the model so far): its logits over the training set once,
/// then the student trained on them (`joulecut distill`'s cached-teacher path), each metered.
#[allow(clippy::too_many_arguments)]
fn distill(
    suite: &SuiteConfig,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    seed: u64,
    variant: &str,
    teacher: (&ModelConfig, &VarMap),
    student: &str,
    epochs: usize,
    lr: f64,
    kd: joulecut_distill::KdConfig,
) -> Result<(ModelConfig, VarMap, StepEnergies)> {
    let dev = &opts.device;
    let bad = |e: joulecut_distill::Error| Error::BadSetting(format!("{variant}: {e}"));
    let scfg = ModelConfig::parse(student)?;
    joulecut_distill::check_compatible(teacher.0, &scfg).map_err(bad)?;
    let t = Model::from_varmap(teacher.0, teacher.1)?;
    let (cache, e_logits) = meter.measure("teacher-logits", || {
        joulecut_distill::TeacherLogits::compute(
            &t,
            &data.train,
            1000,
            format!("bench:{}:{variant}", teacher.0.name()),
            dev,
        )
    });
    let mut objective =
        joulecut_distill::KdObjective::cached(cache.map_err(bad)?, &scfg, kd).map_err(bad)?;
    // The student starts where `joulecut train --seed` would: the comparison with the same
    // student trained alone is the one docs/DISTILLATION.md makes.
    let svm = init_varmap(&scfg, seed, dev)?;
    let sm = Model::from_varmap(&scfg, &svm)?;
    let tc = TrainConfig {
        epochs,
        batch_size: suite.baseline.batch_size,
        lr,
        seed,
        eval_every_epoch: false,
        ..Default::default()
    };
    let (r, e_train) = meter.measure("distill", || {
        train(
            &sm,
            &svm,
            &data.train,
            &data.test,
            &tc,
            &mut objective,
            &mut NoHook,
            &mut Silent,
            dev,
        )
    });
    r?;
    Ok((
        scfg,
        svm,
        vec![("teacher-logits", e_logits), ("distill", e_train)],
    ))
}

/// Applies the storage steps (pack, quantize) to the weights, in order.
fn encode(name: &str, shape: Vec<usize>, values: &[f32], storage: &[Step]) -> Result<TensorData> {
    let mut data = TensorData::Dense(DenseTensor::from_f32(shape.clone(), values));
    if shape.len() < 2 {
        return Ok(data);
    }
    for s in storage {
        data = match s {
            Step::Pack => {
                let zeros = values.iter().filter(|v| **v == 0.0).count();
                // Packing pays only when most weights are zero (bitmap = 1 bit/weight).
                if zeros * 2 >= values.len() && matches!(data, TensorData::Dense(_)) {
                    TensorData::Sparse(SparseTensor::pack_f32(
                        shape.clone(),
                        values,
                        FloatType::F32,
                    ))
                } else {
                    data
                }
            }
            Step::Quantize {
                dtype, granularity, ..
            } => match dtype.as_str() {
                "int8" => {
                    let cfg = joulecut_quant::Int8Config {
                        granularity: if granularity == "tensor" {
                            joulecut_quant::ScaleGranularity::Tensor
                        } else {
                            joulecut_quant::ScaleGranularity::Channel
                        },
                        ..Default::default()
                    };
                    joulecut_quant::quantize_data(name, &data, &cfg)
                        .map_err(|e| Error::Mismatch(e.to_string()))?
                }
                half => {
                    let ft = if half == "bf16" {
                        FloatType::BF16
                    } else {
                        FloatType::F16
                    };
                    joulecut_quant::cast_data(name, &data, ft)
                        .map_err(|e| Error::Mismatch(e.to_string()))?
                }
            },
            _ => data,
        };
    }
    Ok(data)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_variant(
    suite: &SuiteConfig,
    data: &Splits,
    meter: &Meter,
    opts: &RunOptions,
    model: &str,
    seed: u64,
    v: Option<&VariantConfig>,
    base: &Baseline,
    cfg: &ModelConfig,
    vm: &VarMap,
    storage: &[Step],
    compression_energy: Vec<serde_json::Value>,
    compression_joules: f64,
    t0: Instant,
) -> Result<RunResult> {
    let vname = v.map_or("baseline", |v| v.name.as_str());
    let path = opts.out_dir.join("checkpoints").join(format!(
        "{}-s{seed}-{}.safetensors",
        sanitize(model),
        sanitize(vname)
    ));
    let mut w = CheckpointWriter::new();
    w.set_model_config(cfg.to_json());
    // The same history entry for every checkpoint of this model and seed: the variant is in the
    // file name and its steps in report.json, so file sizes compare weights and architecture,
    // never the length of a variant's description.
    w.push_history(HistoryEntry::new(
        "bench",
        serde_json::json!({"suite": suite.name, "model": model, "seed": seed}),
    ));
    for (n, shape, vals) in varmap_data(cfg, vm)? {
        let t = encode(&n, shape, &vals, storage)?;
        w.insert(n, t);
    }
    // An int8 variant records its activation grid in the file, as `joulecut quantize` does.
    for s in storage {
        if let Step::Quantize {
            dtype, activations, ..
        } = s
            && dtype == "int8"
        {
            w.set_metadata(
                joulecut_checkpoint::meta::INT8_ACTIVATIONS,
                activations
                    .as_deref()
                    .unwrap_or(joulecut_quant::ActivationGrid::RECOMMENDED.as_str()),
            );
        }
    }
    w.write(&path, &[])
        .map_err(|e| Error::Mismatch(e.to_string()))?;
    let ck = Checkpoint::open(&path).map_err(|e| Error::Mismatch(e.to_string()))?;
    let m = Model::load(&ck, cfg, &opts.device, &RealKernels::for_checkpoint(&ck)?)?;
    let (mut params, mut nonzero, mut weights, mut weight_nz) = (0, 0, 0, 0);
    for n in ck.names() {
        let t = ck.get(n).map_err(|e| Error::Mismatch(e.to_string()))?;
        let numel = t.shape().iter().product::<usize>();
        params += numel;
        nonzero += t.nonzeros();
        if t.shape().len() >= 2 {
            weights += numel;
            weight_nz += t.nonzeros();
        }
    }
    let ev = &suite.eval;
    let mut stats = evaluate(&m, &data.test, ev.batch_size, &opts.device)?;
    // At least `repeats` passes, and more until the window spans enough counter updates.
    let (passes, energy) = meter.measure("inference", || {
        evaluate_for(
            &m,
            &data.test,
            ev.batch_size,
            &opts.device,
            ev.repeats,
            meter.min_window(),
        )
    });
    let passes = passes?;
    let samples = passes.samples();
    // Throughput: the median pass (the first, outside the energy window, included), so one pass
    // slowed by another process does not decide the ratio.
    let mut rates: Vec<f64> = passes.passes.iter().map(|p| p.samples_per_second).collect();
    rates.push(stats.samples_per_second);
    rates.sort_by(|a, b| a.total_cmp(b));
    stats.samples_per_second = rates[rates.len() / 2];
    let lat = latency(&m, &data.test, 1, ev.latency_iters, &opts.device)?;
    let real = m
        .layers()
        .any(|l| matches!(l.path, LayerPath::Int8 | LayerPath::Sparse))
        || params < base.cfg.param_count();
    let saving = if v.is_none() {
        "baseline"
    } else if real {
        "real"
    } else {
        "nominal"
    };
    Ok(RunResult {
        model: model.to_string(),
        seed,
        variant: vname.to_string(),
        steps: v.map(|v| v.steps.clone()).unwrap_or_default(),
        accuracy: stats.accuracy,
        bytes: ck.file_bytes(),
        params,
        nonzero_params: nonzero,
        weight_sparsity: 1.0 - weight_nz as f64 / weights.max(1) as f64,
        samples_per_second: stats.samples_per_second,
        batch_size: ev.batch_size,
        latency_b1_us: lat.median_us,
        inference_joules_per_10k: energy.total().0 * 10_000.0 / samples as f64,
        provenance: provenance_of(&energy),
        inference_energy: serde_json::to_value(&energy).unwrap_or_default(),
        inference_below_resolution: energy.below_resolution(),
        compression_joules,
        compression_energy,
        baseline_training_joules: base.joules,
        saving: saving.into(),
        layers: m
            .layers()
            .map(|l| serde_json::json!({"name": l.name, "path": l.path}))
            .collect(),
        config: cfg.to_json(),
        file: path.display().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
    })
    .map(|mut r| {
        if v.is_none() {
            let mut step = serde_json::json!({"step": "baseline-training", "energy": base.energy});
            // Not part of `compression_joules`: a one-off cost of the process, shown beside it.
            if !base.warmup.is_null() {
                step["warmup"] = base.warmup.clone();
            }
            r.compression_energy = vec![step];
            r.compression_joules = base.joules;
            debug_assert!((base.accuracy - r.accuracy).abs() < 1.0);
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn nm_prune_leaves_indivisible_layers_dense_and_prunes_the_rest() {
        let vm = VarMap::new();
        for (n, shape) in [
            ("conv1.weight", vec![6, 1, 5, 5]),
            ("conv2.weight", vec![16, 6, 5, 5]),
            ("fc1.weight", vec![120, 400]),
            ("fc1.bias", vec![120]),
        ] {
            vm.get(
                shape,
                n,
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        }
        let spec = prune_spec(0.5, "2:4", "layer", false, "fc3.weight", &vm).unwrap();
        assert_eq!(spec.selection.exclude, vec!["conv1.weight", "conv2.weight"]);
        // The spec applies: fc1 gets exactly 2 of every 4, the convolutions stay dense.
        joulecut_prune::prune_varmap(&vm, &spec).unwrap();
        let data = vm.data().lock().unwrap();
        let zeros = |n: &str| {
            data[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .filter(|v| **v == 0.0)
                .count()
        };
        assert_eq!(zeros("fc1.weight"), 120 * 400 / 2);
        assert_eq!(zeros("conv1.weight"), 0);
        assert_eq!(zeros("conv2.weight"), 0);
        // Unstructured pruning excludes nothing extra.
        let spec = prune_spec(0.5, "unstructured", "layer", false, "fc3.weight", &vm).unwrap();
        assert!(spec.selection.exclude.is_empty());
    }
}
