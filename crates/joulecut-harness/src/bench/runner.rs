//! The experiment runner: trains (or loads cached) baselines, applies each variant's plan through
//! the compression pipeline, writes the variant's checkpoint, and evaluates it through its real
//! inference path with energy metered.

use std::collections::BTreeMap;
use std::time::Instant;

use joulecut_checkpoint::{Checkpoint, CheckpointWriter, HistoryEntry};
use joulecut_energy::Meter;
use joulecut_models::Model;

use super::baseline::{Baseline, RunOptions, baseline, sanitize};
use super::config::{SuiteConfig, VariantConfig};
use super::result::{LayerRoute, RunResult, Saving, StepRecord};
use crate::data::Splits;
use crate::pipeline::{
    Context, ModelState, PrunePolicy, Step, TrainDefaults, encode, int8_activations, varmap_params,
};
use crate::{RealKernels, Result, evaluate, evaluate_for, latency};

/// The weights a variant's weight-changing steps produced, shared by every variant of the same
/// model and seed that starts with the same such steps (e.g. `prune90`, `prune90-packed` and
/// `prune90-packed-int8` fine-tune once; `distill` and `distill-int8` distil once).
struct Trained {
    state: ModelState,
    energies: Vec<StepRecord>,
    joules: f64,
    /// The variant that produced it.
    by: String,
}

/// Trained weights by `(model, seed, weight-changing steps as JSON)`.
type TrainedCache = BTreeMap<(String, u64, String), Trained>;

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
        .map_err(|source| crate::Error::Read {
            path: opts.out_dir.clone(),
            source,
        })?;
    let mine: Vec<_> = suite
        .runs()
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
        let run = Run {
            suite,
            data,
            meter,
            opts,
            model: &model,
            seed,
            base,
            t0,
        };
        let r = match variant {
            None => run.evaluate(None, &base.state, &[], Vec::new(), 0.0)?,
            Some(v) => run.variant(&suite.variants[v], &mut trained, log)?,
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

/// One run: a model and seed, with its baseline.
struct Run<'a> {
    suite: &'a SuiteConfig,
    data: &'a Splits,
    meter: &'a Meter,
    opts: &'a RunOptions,
    model: &'a str,
    seed: u64,
    base: &'a Baseline,
    t0: Instant,
}

impl Run<'_> {
    /// Applies a variant's weight-changing steps (or reuses an earlier variant's result of the
    /// same steps), then writes and evaluates it with its storage steps.
    fn variant(
        &self,
        v: &VariantConfig,
        trained: &mut TrainedCache,
        log: &mut dyn FnMut(&str),
    ) -> Result<RunResult> {
        let dev = &self.opts.device;
        let (changing, storage) = v.steps.split();
        let key = (
            self.model.to_string(),
            self.seed,
            serde_json::to_string(&changing).expect("steps serialise"),
        );
        let (state, energies, joules) = if let Some(t) = trained.get(&key) {
            // Same weights as an earlier variant: reuse them, and report the joules it took to make
            // them (the cost of this variant), marked as shared.
            let energies = t
                .energies
                .iter()
                .map(|e| StepRecord {
                    shared_with: Some(t.by.clone()),
                    ..e.clone()
                })
                .collect();
            (t.state.try_clone(dev)?, energies, t.joules)
        } else {
            let b = &self.suite.baseline;
            let ctx = Context {
                data: self.data,
                meter: self.meter,
                device: dev,
                seed: self.seed,
                defaults: TrainDefaults {
                    epochs: b.epochs,
                    batch_size: b.batch_size,
                    lr: b.lr,
                },
                teacher: &self.base.state,
                label: &v.name,
            };
            let start = self.base.state.try_clone(dev)?;
            let applied = ctx.apply(start, &changing, &PrunePolicy::default(), log)?;
            let joules = applied.joules();
            let energies: Vec<StepRecord> = applied.energies.iter().map(StepRecord::of).collect();
            trained.insert(
                key,
                Trained {
                    state: applied.state.try_clone(dev)?,
                    energies: energies.clone(),
                    joules,
                    by: v.name.clone(),
                },
            );
            (applied.state, energies, joules)
        };
        self.evaluate(Some(v), &state, &storage, energies, joules)
    }

    /// Writes the checkpoint of `state` with the storage steps, and evaluates it through its real
    /// kernels: accuracy, throughput, batch-1 latency and metered inference energy.
    fn evaluate(
        &self,
        v: Option<&VariantConfig>,
        state: &ModelState,
        storage: &[Step],
        compression_energy: Vec<StepRecord>,
        compression_joules: f64,
    ) -> Result<RunResult> {
        let (suite, base, dev) = (self.suite, self.base, &self.opts.device);
        let (model, seed) = (self.model, self.seed);
        let vname = v.map_or("baseline", |v| v.name.as_str());
        let path = self.opts.out_dir.join("checkpoints").join(format!(
            "{}-s{seed}-{}.safetensors",
            sanitize(model),
            sanitize(vname)
        ));
        let cfg = &state.cfg;
        let mut w = CheckpointWriter::new();
        w.set_model_config(cfg.to_json());
        // The same history entry for every checkpoint of this model and seed: the variant is in the
        // file name and its steps in report.json, so file sizes compare weights and architecture,
        // never the length of a variant's description.
        w.push_history(HistoryEntry::new(
            "bench",
            serde_json::json!({"suite": suite.name, "model": model, "seed": seed}),
        ));
        for (n, shape, vals) in varmap_params(cfg, &state.vm)? {
            let t = encode(&n, shape, &vals, storage)?;
            w.insert(n, t);
        }
        // An int8 variant records its activation grid in the file, as `joulecut quantize` does.
        if let Some(grid) = int8_activations(storage) {
            w.set_metadata(joulecut_checkpoint::meta::INT8_ACTIVATIONS, grid.as_str());
        }
        w.write(&path, &[])?;
        let ck = Checkpoint::open(&path)?;
        let m = Model::load(&ck, cfg, dev, &RealKernels::for_checkpoint(&ck)?)?;
        let (mut params, mut nonzero, mut weights, mut weight_nz) = (0, 0, 0, 0);
        for n in ck.names() {
            let t = ck.get(n)?;
            let numel = t.shape().iter().product::<usize>();
            params += numel;
            nonzero += t.nonzeros();
            if t.shape().len() >= 2 {
                weights += numel;
                weight_nz += t.nonzeros();
            }
        }
        let ev = &suite.eval;
        let mut stats = evaluate(&m, &self.data.test, ev.batch_size, dev)?;
        // At least `repeats` passes, and more until the window spans enough counter updates.
        let (passes, energy) = self.meter.measure("inference", || {
            evaluate_for(
                &m,
                &self.data.test,
                ev.batch_size,
                dev,
                ev.repeats,
                self.meter.min_window(),
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
        let lat = latency(&m, &self.data.test, 1, ev.latency_iters, dev)?;
        // at the eval batch size, like the throughput and joules beside it
        let real = m.saves_compute(ev.batch_size) || params < base.state.cfg.param_count();
        let saving = match (v, real) {
            (None, _) => Saving::Baseline,
            (Some(_), true) => Saving::Real,
            (Some(_), false) => Saving::Nominal,
        };
        let mut r = RunResult {
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
            provenance: energy.provenance(),
            inference_energy: serde_json::to_value(&energy).unwrap_or_default(),
            inference_below_resolution: energy.below_resolution(),
            compression_joules,
            compression_energy,
            baseline_training_joules: base.joules,
            saving,
            layers: m
                .layers()
                .map(|l| LayerRoute {
                    name: l.name.clone(),
                    path: l.path,
                })
                .collect(),
            config: cfg.clone(),
            file: path.display().to_string(),
            seconds: self.t0.elapsed().as_secs_f64(),
            stamp: None,
        };
        if v.is_none() {
            r.compression_energy = vec![StepRecord {
                step: "baseline-training".into(),
                energy: base.energy.clone(),
                shared_with: None,
                // Not part of `compression_joules`: a one-off cost of the process, shown beside it.
                warmup: (!base.warmup.is_null()).then(|| base.warmup.clone()),
            }];
            r.compression_joules = base.joules;
            debug_assert!((base.accuracy - r.accuracy).abs() < 1.0);
        }
        Ok(r)
    }
}
