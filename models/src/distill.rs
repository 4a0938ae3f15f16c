//! How the models plug into `joulecut-distill`, which sits below them and knows only candle: a
//! [`Model`] shows its hidden activations for feature (hint) distillation, and a [`ModelConfig`]
//! converts to the [`Arch`] whose widths distillation checks, so `check_compatible(&t, &s)`,
//! `KdObjective::cached(logits, &cfg, kd)` and `Hints::new(.., &s, &t, ..)` take configs directly.

use candle_core::Tensor;
use joulecut_distill::{Arch, HiddenModule};

use crate::{Model, ModelConfig};

impl HiddenModule for Model {
    fn forward_hidden(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        Model::forward_hidden(self, xs)
    }
}

impl From<&ModelConfig> for Arch {
    fn from(cfg: &ModelConfig) -> Self {
        Arch::new(cfg.name(), cfg.input_dim(), cfg.classes()).with_hidden(cfg.hidden_widths())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::init_varmap;

    #[test]
    fn arch_lists_the_hidden_widths_the_model_returns() {
        for name in ["lenet5", "mlp:16-48-32-3"] {
            let cfg = ModelConfig::parse(name).unwrap();
            let arch = Arch::from(&cfg);
            assert_eq!(
                (arch.name.as_str(), arch.input, arch.classes),
                (cfg.name().as_str(), cfg.input_dim(), cfg.classes())
            );
            let m = Model::from_varmap(&cfg, &init_varmap(&cfg, 0, &Device::Cpu).unwrap()).unwrap();
            let x = Tensor::zeros((2, cfg.input_dim()), DType::F32, &Device::Cpu).unwrap();
            let (_, hidden) = HiddenModule::forward_hidden(&m, &x).unwrap();
            let widths: Vec<usize> = hidden.iter().map(|h| h.dims()[1]).collect();
            assert_eq!(widths, arch.hidden, "{name}");
        }
        assert_eq!(
            ModelConfig::parse("lenet5").unwrap().hidden_widths(),
            [120, 84]
        );
    }
}
