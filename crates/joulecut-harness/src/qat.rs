//! Quantization-aware training as a [`Trainer`](crate::Trainer) objective.
//!
//! Every weight tensor (linear matrices and conv kernels; never biases) is fake-quantised with the
//! same int8 grid the checkpoint conversion will use, with a straight-through gradient, so the
//! float weights learn to sit where rounding hurts least. After training, quantising the
//! `VarMap`'s weights with the same [`Int8Config`] gives the real int8 checkpoint.
//!
//! ```no_run
//! # use joulecut_harness::{QatObjective, TrainConfig, Trainer, data};
//! # use joulecut_models::{Model, ModelConfig, init_varmap};
//! # use candle_core::Device;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ModelConfig::parse("lenet-300-100")?;
//! let vm = init_varmap(&cfg, 0, &Device::Cpu)?; // or trained weights loaded into it
//! let model = Model::from_varmap(&cfg, &vm)?;
//! let splits = data::load_fashion_mnist(None)?;
//! let mut qat = QatObjective::new(&cfg, &vm, joulecut_quant::Int8Config::default());
//! let tc = TrainConfig { epochs: 1, lr: 1e-4, ..Default::default() };
//! Trainer::new(&model, &vm, &tc).objective(&mut qat).run(&splits.train, &splits.test)?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use candle_core::Tensor;
use candle_nn::VarMap;
use joulecut_models::{Model, ModelConfig};
use joulecut_quant::Int8Config;

use crate::train::{Objective, cross_entropy};

/// Cross-entropy of the model whose weights are fake-quantised per `int8`.
pub struct QatObjective<'a> {
    cfg: &'a ModelConfig,
    vm: &'a VarMap,
    int8: Int8Config,
}

impl<'a> QatObjective<'a> {
    /// QAT of the model `cfg` whose parameters live in `vm`, on the grid `int8`.
    pub fn new(cfg: &'a ModelConfig, vm: &'a VarMap, int8: Int8Config) -> Self {
        QatObjective { cfg, vm, int8 }
    }

    /// The grid the weights are trained for.
    pub fn int8(&self) -> &Int8Config {
        &self.int8
    }
}

/// Whether QAT fake-quantises `name` (weights of linear and conv layers, not biases).
pub fn is_quantised(name: &str) -> bool {
    name.ends_with(".weight")
}

/// The parameters in `vm` as the int8 checkpoint will hold them: weights fake-quantised on the
/// grid `int8` (straight-through), biases as they are.
pub fn fake_quantised(
    vm: &VarMap,
    int8: &Int8Config,
) -> candle_core::Result<BTreeMap<String, Tensor>> {
    let data = vm.data().lock().expect("VarMap lock");
    data.iter()
        .map(|(name, var)| {
            let t = var.as_tensor();
            let t = if is_quantised(name) {
                joulecut_quant::fake_quant(t, int8)?
            } else {
                t.clone()
            };
            Ok((name.clone(), t))
        })
        .collect()
}

impl Objective for QatObjective<'_> {
    fn loss(
        &mut self,
        _: &Model,
        x: &Tensor,
        y: &Tensor,
        _: &[u32],
    ) -> candle_core::Result<(Tensor, Tensor)> {
        // Rebuild the model around fake-quantised views of the variables each step: the views
        // are differentiable (STE), so the optimiser updates the float variables underneath.
        let tensors = fake_quantised(self.vm, &self.int8)?;
        let model = Model::from_fn(self.cfg, |n| tensors.get(n).cloned())
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let logits = candle_core::Module::forward(&model, x)?;
        Ok((cross_entropy(&logits, y)?, logits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;
    use crate::{TrainConfig, Trainer};
    use candle_core::Device;
    use joulecut_models::init_varmap;

    #[test]
    fn qat_trained_weights_keep_their_accuracy_on_the_int8_grid() {
        let cfg = ModelConfig::parse("mlp:16-12-3").unwrap();
        let vm = init_varmap(&cfg, 1, &Device::Cpu).unwrap();
        let model = Model::from_varmap(&cfg, &vm).unwrap();
        let splits = synthetic(300, 100, 16, 3, 7);
        let tc = TrainConfig {
            epochs: 8,
            batch_size: 32,
            lr: 1e-2,
            ..Default::default()
        };
        let mut qat = QatObjective::new(&cfg, &vm, Int8Config::default());
        let r = Trainer::new(&model, &vm, &tc)
            .objective(&mut qat)
            .run(&splits.train, &splits.test)
            .unwrap();
        // The synthetic classes are separable: a QAT model that learned anything beats chance.
        assert!(r.accuracy > 0.6, "accuracy {}", r.accuracy);
        // The model the checkpoint will hold — every weight on its int8 grid — keeps that accuracy.
        let q = fake_quantised(&vm, &Int8Config::default()).unwrap();
        let qm = Model::from_fn(&cfg, |n| q.get(n).cloned()).unwrap();
        let stats = crate::evaluate(&qm, &splits.test, 50, &Device::Cpu).unwrap();
        assert!(
            (stats.accuracy - r.accuracy).abs() <= 0.03,
            "int8 {} vs float {}",
            stats.accuracy,
            r.accuracy
        );
    }
}
