//! [`FakeQuantLinear`]: a drop-in `candle_nn::Linear` for quantization-aware training in a user's
//! own loop. Its weight is fake-quantized on the int8 grid the checkpoint conversion will use
//! (straight-through gradient), and, optionally, its input rows on the run-time activation grid
//! [`Int8Linear`](crate::Int8Linear) uses; the weights it trains convert with
//! `joulecut quantize --dtype int8` (or [`crate::quantize_tensor`]) under the same [`Int8Config`].
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use joulecut_quant::{FakeQuantLinear, Int8Config};
//! let vm = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
//! let fc = FakeQuantLinear::new(4, 3, vb.pp("fc1"), Int8Config::default())?.with_activations(true);
//! let y = fc.forward(&Tensor::ones((2, 4), DType::F32, &Device::Cpu)?)?;
//! assert_eq!(y.dims(), &[2, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::qat::{fake_quant, fake_quant_rows};
use crate::scheme::Int8Config;

/// A linear layer `y = x·Wᵀ + b` trained for int8 (see the module docs).
#[derive(Debug, Clone)]
pub struct FakeQuantLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    int8: Int8Config,
    activations: bool,
}

impl FakeQuantLinear {
    /// A layer of `in_dim → out_dim` whose `weight` `[out, in]` and `bias` `[out]` come from `vb`
    /// (initialised as `candle_nn::linear` does when `vb` is backed by a `VarMap`).
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder, int8: Int8Config) -> Result<Self> {
        let lin = candle_nn::linear(in_dim, out_dim, vb)?;
        Ok(Self::from_parts(
            lin.weight().clone(),
            lin.bias().cloned(),
            int8,
        ))
    }

    /// A layer over existing tensors (e.g. `Var`s of a trained model).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, int8: Int8Config) -> Self {
        FakeQuantLinear {
            weight,
            bias,
            int8,
            activations: false,
        }
    }

    /// Also fake-quantize the input rows on the asymmetric per-row 8-bit grid (the int8 kernel's
    /// `s8` grid; files quantized with the default `u6` grid round activations more coarsely at
    /// run time), so training sees the activation error too.
    pub fn with_activations(mut self, on: bool) -> Self {
        self.activations = on;
        self
    }

    /// The float weight being trained.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for FakeQuantLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = fake_quant(&self.weight, &self.int8)?;
        let x = if self.activations {
            // per row of the flattened batch, as the kernel sees it
            let dims = x.dims().to_vec();
            let k = *dims.last().unwrap_or(&1);
            fake_quant_rows(&x.reshape(((), k))?)?.reshape(dims)?
        } else {
            x.clone()
        };
        let y = x.broadcast_matmul(&w.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use candle_nn::Linear;

    use super::*;
    use crate::tensor::quantize_tensor;

    fn parts() -> (Var, Var, Tensor) {
        let d = Device::Cpu;
        let w = Var::new(&[[0.3f32, -1.2, 0.05], [0.7, 0.01, -0.4]], &d).unwrap();
        let b = Var::new(&[0.1f32, -0.2], &d).unwrap();
        let x = Tensor::new(&[[1.0f32, 2.0, -0.5], [0.25, -1.0, 3.0]], &d).unwrap();
        (w, b, x)
    }

    #[test]
    fn forward_is_the_int8_models_and_gradients_pass_straight_through() {
        let (w, b, x) = parts();
        let cfg = Int8Config::default();
        let fq =
            FakeQuantLinear::from_parts(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg);
        let y = fq.forward(&x).unwrap();
        // the same layer with its weight replaced by the int8 checkpoint's decoded weight
        let values = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let q = quantize_tensor("w", &values, &[2, 3], &cfg)
            .unwrap()
            .dequantize();
        let wq = Tensor::from_vec(q, (2, 3), &Device::Cpu).unwrap();
        let want = Linear::new(wq, Some(b.as_tensor().clone()))
            .forward(&x)
            .unwrap();
        let diff = (y - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        // d(sum y)/dW = sum over the batch of x, as for a plain linear layer
        let g = fq
            .forward(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gw: Vec<Vec<f32>> = g.get(&w).unwrap().to_vec2().unwrap();
        assert_eq!(gw, vec![vec![1.25, 1.0, 2.5], vec![1.25, 1.0, 2.5]]);
    }

    #[test]
    fn activation_rounding_changes_the_output_a_little() {
        let (w, b, x) = parts();
        let cfg = Int8Config::default();
        let plain =
            FakeQuantLinear::from_parts(w.as_tensor().clone(), Some(b.as_tensor().clone()), cfg);
        let act = plain.clone().with_activations(true);
        let (y0, y1) = (plain.forward(&x).unwrap(), act.forward(&x).unwrap());
        let d = (y0 - y1)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d > 0.0 && d < 0.05, "{d}");
    }
}
