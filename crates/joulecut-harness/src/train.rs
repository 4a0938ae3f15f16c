//! The training loop, split into steps, an objective, hooks and an observer: the loop never prints;
//! a renderer (indicatif, JSON) observes it.
//!
//! [`warm_up`] runs before the timed (and metered) window on GPUs: candle loads and JIT-compiles
//! its kernel modules on first use, which on an H100 made the first epoch 25x slower than the
//! second and put that one-off cost into the training samples/s and joules.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use joulecut_models::{Model, ModelConfig, Rng, init_varmap};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::eval::{EvalStats, evaluate};
use crate::{Error, Result};

/// Which optimiser updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (PyTorch semantics; weight decay added to the gradient).
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
    /// Plain stochastic gradient descent.
    Sgd,
}

/// Training settings (recorded in checkpoints and reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Weight decay (decoupled for AdamW, L2 for Adam and SGD).
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Seed for shuffling (and, in the CLI, initialisation).
    pub seed: u64,
    /// Evaluate on the test set after every epoch (otherwise only after the last).
    pub eval_every_epoch: bool,
    /// How the learning rate changes over the run (`lr` is the peak).
    pub lr_schedule: LrSchedule,
}

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `lr` throughout (PyTorch's default).
    Constant,
    /// Cosine decay from `lr` to 0 over the run (Loshchilov & Hutter). At a constant rate, Adam's
    /// last steps leave the weights wherever the noise put them: on Fashion-MNIST the final test
    /// accuracy swings by ±0.5 pt between epochs and seeds. Decaying to 0 removes most of that.
    Cosine,
    /// "Warmup-stable-decay" without the warmup (Hägele et al. 2024): `lr` for the first
    /// 80 % of the steps, then linear decay to 0. Keeps constant-rate learning for models that
    /// are still underfitting after a few epochs (LeNet-5) and still ends on a quiet step size.
    Wsd,
}

impl LrSchedule {
    /// Fraction of the run spent decaying under [`LrSchedule::Wsd`].
    pub const WSD_DECAY: f64 = 0.2;

    /// Parses a CLI name: `cosine`, `constant` or `wsd`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cosine" => Some(LrSchedule::Cosine),
            "constant" => Some(LrSchedule::Constant),
            "wsd" => Some(LrSchedule::Wsd),
            _ => None,
        }
    }
}

impl TrainConfig {
    /// The learning rate at optimiser step `step` of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let t = step as f64 / total.max(1) as f64;
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            LrSchedule::Wsd => {
                let stable = 1.0 - LrSchedule::WSD_DECAY;
                if t <= stable {
                    self.lr
                } else {
                    self.lr * ((1.0 - t) / LrSchedule::WSD_DECAY).max(0.0)
                }
            }
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 128,
            lr: 1e-3,
            optimizer: OptimizerKind::Adam,
            weight_decay: 0.0,
            momentum: 0.0,
            seed: 0,
            eval_every_epoch: true,
            lr_schedule: LrSchedule::Wsd,
        }
    }
}

/// The most epochs a run may ask for (a typo of a few more digits would otherwise run for ever).
pub const MAX_EPOCHS: usize = 10_000;

impl TrainConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(Error::BadSetting(format!(
                "--epochs must be 1 to {MAX_EPOCHS}, got {}",
                self.epochs
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::BadSetting("--batch-size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::BadSetting(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::BadSetting(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::BadSetting(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// The loss a step minimises. Returns `(loss, logits)`; `indices` are the samples' positions in
/// the training set (so an objective can look up cached teacher outputs).
pub trait Objective {
    /// Loss and logits for one batch.
    fn loss(
        &mut self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        indices: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)>;
}

/// Mean cross-entropy, through joulecut-ops' fused kernel on CPU.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if logits.device().is_cpu() {
        joulecut_ops::cross_entropy(logits, targets)
    } else {
        candle_nn::loss::cross_entropy(logits, targets)
    }
}

/// Plain cross-entropy on the labels.
#[derive(Debug, Default, Clone, Copy)]
pub struct CrossEntropy;

impl Objective for CrossEntropy {
    fn loss(
        &mut self,
        model: &Model,
        x: &Tensor,
        y: &Tensor,
        _: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = candle_core::Module::forward(model, x)?;
        Ok((cross_entropy(&logits, y)?, logits))
    }
}

/// Called after every optimiser step (e.g. to re-apply pruning masks).
pub trait StepHook {
    /// `step` counts optimiser steps from 0 over the whole run.
    fn after_step(&mut self, vm: &VarMap, step: usize) -> Result<()>;
}

/// A pruner as a hook: after every optimiser step it prunes on its schedule (when it has one) and
/// re-applies its masks, so pruned weights stay zero whatever the optimiser's moments say.
impl StepHook for joulecut_prune::Pruner {
    fn after_step(&mut self, vm: &VarMap, step: usize) -> Result<()> {
        self.step(vm, step)?;
        Ok(())
    }
}

/// A hook that does nothing.
#[derive(Debug, Default)]
pub struct NoHook;

impl StepHook for NoHook {
    fn after_step(&mut self, _: &VarMap, _: usize) -> Result<()> {
        Ok(())
    }
}

/// Progress events.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A step finished.
    Step {
        /// Epoch, 1-based.
        epoch: usize,
        /// Step within the epoch, 1-based.
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// Running mean loss of the epoch.
        loss: f32,
        /// Running training accuracy of the epoch.
        accuracy: f32,
        /// Training samples per second so far this epoch.
        samples_per_second: f64,
    },
    /// An epoch finished.
    Epoch(EpochStats),
}

/// Receives progress events (a renderer).
pub trait Observer {
    /// One event.
    fn event(&mut self, e: &Event);
}

/// Ignores events.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {
    fn event(&mut self, _: &Event) {}
}

/// Statistics of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f32,
    /// Training accuracy.
    pub train_accuracy: f32,
    /// Seconds spent in training steps.
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Test evaluation, if run after this epoch.
    pub test: Option<EvalStats>,
}

/// What a training run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Per-epoch statistics.
    pub epochs: Vec<EpochStats>,
    /// Final test accuracy.
    pub accuracy: f64,
    /// Training samples per second over the run (steps only, evaluation excluded).
    pub samples_per_second: f64,
    /// Seconds in training steps.
    pub train_seconds: f64,
}

/// One optimiser step from a loss.
type StepFn = Box<dyn FnMut(&Tensor, f64) -> candle_core::Result<()>>;

/// Wraps an optimiser as a step function that sets the scheduled learning rate first.
fn boxed<O: Optimizer + 'static>(mut o: O) -> StepFn {
    Box::new(move |l, lr| {
        o.set_learning_rate(lr);
        o.backward_step(l)
    })
}

/// Builds the optimiser for `vm`: joulecut-ops' optimisers (PyTorch semantics): fused one-pass
/// updates for CPU variables, the same rule in candle tensor ops on other devices.
fn optimizer(vm: &VarMap, cfg: &TrainConfig) -> candle_core::Result<StepFn> {
    use joulecut_ops::optim;
    let vars = vm.all_vars();
    let (lr, wd) = (cfg.lr, cfg.weight_decay);
    Ok(match cfg.optimizer {
        OptimizerKind::Adam => boxed(optim::Adam::new(
            vars,
            optim::AdamConfig {
                lr,
                weight_decay: wd,
                ..Default::default()
            },
        )?),
        OptimizerKind::AdamW => boxed(optim::AdamW::new(
            vars,
            optim::AdamWConfig {
                lr,
                weight_decay: wd,
                ..Default::default()
            },
        )?),
        OptimizerKind::Sgd => boxed(optim::Sgd::new(
            vars,
            optim::SgdConfig {
                lr,
                momentum: cfg.momentum,
                weight_decay: wd,
                ..Default::default()
            },
        )?),
    })
}

/// Trains `model` (whose layers alias `vm`) on `train`, evaluating on `test`: the loop behind
/// [`crate::Trainer`], which is how callers outside the harness set it up.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train(
    model: &Model,
    vm: &VarMap,
    train: &Dataset,
    test: &Dataset,
    cfg: &TrainConfig,
    objective: &mut dyn Objective,
    hook: &mut dyn StepHook,
    observer: &mut dyn Observer,
    device: &Device,
) -> Result<TrainReport> {
    cfg.validate()?;
    let mcfg = model.config();
    if train.dim != mcfg.input_dim() || train.classes > mcfg.classes() {
        return Err(Error::Mismatch(format!(
            "the data has {} features and {} classes but {} takes {} inputs and has {} outputs",
            train.dim,
            train.classes,
            mcfg.name(),
            mcfg.input_dim(),
            mcfg.classes()
        )));
    }
    if train.is_empty() {
        return Err(Error::BadSetting("the training set is empty".into()));
    }
    let (xs, ys) = train.tensors(device)?;
    let mut step_fn = optimizer(vm, cfg).map_err(Error::candle("create optimiser"))?;
    let mut rng = Rng::new(cfg.seed.wrapping_add(0x5eed));
    let mut order: Vec<u32> = (0..train.len() as u32).collect();
    let bs = cfg.batch_size.min(train.len());
    let steps = train.len().div_ceil(bs);
    let total_steps = steps * cfg.epochs;
    let mut report = TrainReport {
        epochs: Vec::new(),
        accuracy: 0.0,
        samples_per_second: 0.0,
        train_seconds: 0.0,
    };
    let mut global_step = 0;
    let mut total_samples = 0usize;
    for epoch in 1..=cfg.epochs {
        rng.shuffle(&mut order);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (s, chunk) in order.chunks(bs).enumerate() {
            let idx = Tensor::from_slice(chunk, chunk.len(), device)
                .map_err(Error::candle("batch indices"))?;
            let x = xs
                .index_select(&idx, 0)
                .map_err(Error::candle("gather batch"))?;
            let y = ys
                .index_select(&idx, 0)
                .map_err(Error::candle("gather batch"))?;
            let (loss, logits) = objective
                .loss(model, &x, &y, chunk)
                .map_err(Error::candle("forward pass"))?;
            step_fn(&loss, cfg.lr_at(global_step, total_steps))
                .map_err(Error::candle("backward pass / optimiser step"))?;
            hook.after_step(vm, global_step)?;
            global_step += 1;
            let l = loss
                .to_scalar::<f32>()
                .map_err(Error::candle("read loss"))?;
            if !l.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: s + 1,
                    loss: l,
                });
            }
            let hits = logits
                .argmax(D::Minus1)
                .and_then(|p| p.eq(&y))
                .and_then(|e| e.to_dtype(DType::U32))
                .and_then(|e| e.sum_all())
                .and_then(|e| e.to_scalar::<u32>())
                .map_err(Error::candle("training accuracy"))?;
            loss_sum += l as f64 * chunk.len() as f64;
            correct += hits as usize;
            seen += chunk.len();
            observer.event(&Event::Step {
                epoch,
                step: s + 1,
                steps,
                loss: (loss_sum / seen as f64) as f32,
                accuracy: correct as f32 / seen as f32,
                samples_per_second: seen as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        report.train_seconds += secs;
        total_samples += seen;
        let test_stats = if cfg.eval_every_epoch || epoch == cfg.epochs {
            Some(evaluate(model, test, 1000, device)?)
        } else {
            None
        };
        let stats = EpochStats {
            epoch,
            loss: (loss_sum / seen as f64) as f32,
            train_accuracy: correct as f32 / seen as f32,
            seconds: secs,
            samples_per_second: seen as f64 / secs.max(1e-9),
            test: test_stats,
        };
        observer.event(&Event::Epoch(stats.clone()));
        report.epochs.push(stats);
    }
    report.samples_per_second = total_samples as f64 / report.train_seconds.max(1e-9);
    report.accuracy = match report.epochs.last().and_then(|e| e.test.as_ref()) {
        Some(t) => t.accuracy,
        None => evaluate(model, test, 1000, device)?.accuracy,
    };
    Ok(report)
}

/// What [`warm_up`] did; reported next to the training figures, never inside them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Warmup {
    /// Wall seconds of the warm-up (0 on the CPU, which needs none).
    pub seconds: f64,
    /// Optimiser steps run on the scratch model.
    pub steps: usize,
}

/// Optimiser steps the warm-up runs (one to load the kernels, one more to reach steady state).
pub const WARMUP_STEPS: usize = 2;

/// Warms `device` up before a timed training run on it: builds a scratch model of `cfg` with its
/// own `VarMap` and optimiser, trains it for [`WARMUP_STEPS`] real steps on the first batches of
/// `train`, evaluates it on one batch of `test`, and synchronises the device. The real model's
/// weights, its optimiser and its shuffling RNG are untouched, so results do not depend on it.
/// On the CPU it does nothing (there is nothing to load) and returns zeros.
pub fn warm_up(
    cfg: &ModelConfig,
    train: &Dataset,
    test: &Dataset,
    tc: &TrainConfig,
    device: &Device,
) -> Result<Warmup> {
    if device.is_cpu() {
        return Ok(Warmup::default());
    }
    run_warm_up(cfg, train, test, tc, device)
}

/// The warm-up's work on any device (the tests run it on the CPU).
fn run_warm_up(
    cfg: &ModelConfig,
    train_set: &Dataset,
    test: &Dataset,
    tc: &TrainConfig,
    device: &Device,
) -> Result<Warmup> {
    let t0 = Instant::now();
    let vm = init_varmap(cfg, tc.seed, device)?;
    let model = Model::from_varmap(cfg, &vm)?;
    let bs = tc.batch_size.clamp(1, train_set.len().max(1));
    let scratch_train = train_set.take(bs * WARMUP_STEPS);
    // `train` evaluates in batches of 1000: one such batch loads the evaluation kernels.
    let scratch_test = test.take(1000);
    let wc = TrainConfig {
        epochs: 1,
        eval_every_epoch: true,
        ..tc.clone()
    };
    let report = train(
        &model,
        &vm,
        &scratch_train,
        &scratch_test,
        &wc,
        &mut CrossEntropy,
        &mut NoHook,
        &mut Silent,
        device,
    )?;
    device
        .synchronize()
        .map_err(Error::candle("synchronize after warm-up"))?;
    Ok(Warmup {
        seconds: t0.elapsed().as_secs_f64(),
        steps: report.epochs.len() * scratch_train.len().div_ceil(bs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vm: &VarMap) -> Vec<Vec<f32>> {
        let mut vars: Vec<_> = vm.data().lock().unwrap().clone().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn warm_up_is_a_no_op_on_cpu() {
        let splits = crate::data::synthetic(64, 32, 8, 3, 0);
        let cfg = ModelConfig::parse("mlp:8-6-3").unwrap();
        let w = warm_up(
            &cfg,
            &splits.train,
            &splits.test,
            &TrainConfig::default(),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(w, Warmup::default());
    }

    #[test]
    fn warm_up_leaves_the_real_model_and_its_training_unchanged() {
        let splits = crate::data::synthetic(256, 64, 8, 3, 1);
        let cfg = ModelConfig::parse("mlp:8-6-3").unwrap();
        let tc = TrainConfig {
            epochs: 2,
            batch_size: 32,
            seed: 7,
            ..Default::default()
        };
        let run = |warm: bool| {
            let vm = init_varmap(&cfg, tc.seed, &Device::Cpu).unwrap();
            let before = values(&vm);
            if warm {
                // The work a GPU run does, forced on the CPU.
                let w = run_warm_up(&cfg, &splits.train, &splits.test, &tc, &Device::Cpu).unwrap();
                assert_eq!(w.steps, WARMUP_STEPS);
                assert!(w.seconds > 0.0);
                assert_eq!(values(&vm), before, "the real weights are untouched");
            }
            let model = Model::from_varmap(&cfg, &vm).unwrap();
            let r = train(
                &model,
                &vm,
                &splits.train,
                &splits.test,
                &tc,
                &mut CrossEntropy,
                &mut NoHook,
                &mut Silent,
                &Device::Cpu,
            )
            .unwrap();
            (values(&vm), r.accuracy, r.epochs[0].loss)
        };
        assert_eq!(run(true), run(false), "bit-identical training");
    }
}
