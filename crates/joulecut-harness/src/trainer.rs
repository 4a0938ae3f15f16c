//! [`Trainer`]: the harness's training loop with every setting named. The model, its variables
//! and a [`TrainConfig`] are required; the objective (default [`CrossEntropy`]), the step hook
//! (default [`NoHook`]: e.g. a pruner), the observer (default [`Silent`]: progress) and the device
//! (default CPU) are set only when they differ.
//!
//! ```no_run
//! # use joulecut_harness::{QatObjective, TrainConfig, Trainer, data};
//! # use joulecut_models::{Model, ModelConfig, init_varmap};
//! # use candle_core::Device;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ModelConfig::parse("lenet-300-100")?;
//! let vm = init_varmap(&cfg, 0, &Device::Cpu)?;
//! let model = Model::from_varmap(&cfg, &vm)?;
//! let splits = data::load_fashion_mnist(None)?;
//! let tc = TrainConfig { epochs: 3, ..Default::default() };
//! let report = Trainer::new(&model, &vm, &tc).run(&splits.train, &splits.test)?;
//! // then quantization-aware fine-tuning on the same variables
//! let mut qat = QatObjective::new(&cfg, &vm, joulecut_quant::Int8Config::default());
//! let tc = TrainConfig { epochs: 1, lr: 1e-4, ..Default::default() };
//! Trainer::new(&model, &vm, &tc).objective(&mut qat).run(&splits.train, &splits.test)?;
//! # Ok(()) }
//! ```

use candle_core::Device;
use candle_nn::VarMap;
use joulecut_models::Model;

use crate::Result;
use crate::data::Dataset;
use crate::train::{
    CrossEntropy, NoHook, Objective, Observer, Silent, StepHook, TrainConfig, TrainReport, train,
};

/// A training run being set up (see the module docs).
pub struct Trainer<'a> {
    model: &'a Model,
    vars: &'a VarMap,
    cfg: &'a TrainConfig,
    objective: Option<&'a mut dyn Objective>,
    hook: Option<&'a mut dyn StepHook>,
    observer: Option<&'a mut dyn Observer>,
    device: Device,
}

impl<'a> Trainer<'a> {
    /// Trains `model`, whose layers alias the variables in `vars`, under `cfg`.
    pub fn new(model: &'a Model, vars: &'a VarMap, cfg: &'a TrainConfig) -> Self {
        Trainer {
            model,
            vars,
            cfg,
            objective: None,
            hook: None,
            observer: None,
            device: Device::Cpu,
        }
    }

    /// The loss (default: cross-entropy on the labels).
    pub fn objective(mut self, objective: &'a mut dyn Objective) -> Self {
        self.objective = Some(objective);
        self
    }

    /// Called after every optimiser step (e.g. a `Pruner` keeping masks or pruning gradually).
    pub fn hook(mut self, hook: &'a mut dyn StepHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Receives progress events.
    pub fn observer(mut self, observer: &'a mut dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Where the batches go (the model's device).
    pub fn device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// Runs the training on `train`, evaluating on `test` as the config asks.
    pub fn run(self, train_set: &Dataset, test_set: &Dataset) -> Result<TrainReport> {
        let (mut ce, mut no_hook, mut silent) = (CrossEntropy, NoHook, Silent);
        let objective: &mut dyn Objective = match self.objective {
            Some(o) => o,
            None => &mut ce,
        };
        let hook: &mut dyn StepHook = match self.hook {
            Some(h) => h,
            None => &mut no_hook,
        };
        let observer: &mut dyn Observer = match self.observer {
            Some(o) => o,
            None => &mut silent,
        };
        train(
            self.model,
            self.vars,
            train_set,
            test_set,
            self.cfg,
            objective,
            hook,
            observer,
            &self.device,
        )
    }
}
