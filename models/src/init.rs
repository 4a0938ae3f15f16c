//! Deterministic parameter initialisation (PyTorch's defaults) from a seed.
//!
//! candle's CPU device can't be seeded, so joulecut draws initial weights itself: PyTorch's
//! `nn.Linear`/`nn.Conv2d` default (`kaiming_uniform_(a=√5)`), i.e. U(−1/√fan_in, 1/√fan_in) for
//! weights and biases alike.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, ModelConfig, Result};

pub use joulecut_ops::Rng;

/// Fan-in of a parameter: the weight's elements per output unit; for a bias, the matching weight's.
fn fan_in(cfg: &ModelConfig, name: &str, shape: &[usize]) -> usize {
    if name.ends_with(".weight") {
        return shape[1..].iter().product();
    }
    let w = name.trim_end_matches(".bias").to_string() + ".weight";
    cfg.param_shapes()
        .into_iter()
        .find(|(n, _)| *n == w)
        .map(|(_, s)| s[1..].iter().product())
        .unwrap_or(1)
}

/// A fresh `VarMap` holding every parameter of `cfg`, initialised like PyTorch, from `seed`.
pub fn init_varmap(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<VarMap> {
    let mut rng = Rng::new(seed);
    let vm = VarMap::new();
    {
        let mut data = vm.data().lock().expect("fresh VarMap");
        for (name, shape) in cfg.param_shapes() {
            let bound = 1.0 / (fan_in(cfg, &name, &shape) as f32).sqrt();
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = (0..n)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                .collect();
            let t =
                Tensor::from_vec(vals, shape, device).map_err(Error::candle("init parameters"))?;
            data.insert(
                name,
                Var::from_tensor(&t).map_err(Error::candle("init parameters"))?,
            );
        }
    }
    Ok(vm)
}

/// Overwrites the parameters in `vm` with `tensors` (name → f32 values), checking shapes.
pub fn load_into_varmap(
    vm: &VarMap,
    tensors: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    let data = vm.data().lock().expect("VarMap lock");
    for (name, shape, values) in tensors {
        let var = data
            .get(&name)
            .ok_or_else(|| Error::UnexpectedTensor { name: name.clone() })?;
        if var.dims() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name,
                expected: var.dims().to_vec(),
                found: shape,
            });
        }
        let t = Tensor::from_vec(values, shape, var.device())
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(Error::candle("load parameters"))?;
        var.set(&t).map_err(Error::candle("load parameters"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights() {
        let cfg = ModelConfig::parse("mlp:8-4-2").unwrap();
        let a = init_varmap(&cfg, 7, &Device::Cpu).unwrap();
        let b = init_varmap(&cfg, 7, &Device::Cpu).unwrap();
        let c = init_varmap(&cfg, 8, &Device::Cpu).unwrap();
        let get = |vm: &VarMap| {
            vm.data().lock().unwrap()["fc1.weight"]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(get(&a), get(&b));
        assert_ne!(get(&a), get(&c));
        assert!(get(&a).iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        Rng::new(1).shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
