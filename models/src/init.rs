//! Deterministic parameter initialisation (PyTorch's defaults) from a seed.
//!
//! candle's CPU device can't be seeded, so joulecut draws initial weights itself: PyTorch's
//! `nn.Linear`/`nn.Conv2d` default (`kaiming_uniform_(a=√5)`), i.e. U(−1/√fan_in, 1/√fan_in) for
//! weights and biases alike.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, ModelConfig, Result};

/// A small, fast, seedable generator (SplitMix64). Good enough for init and shuffling; not for
/// cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f32().max(1e-12);
        let u2 = self.next_f32();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

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
