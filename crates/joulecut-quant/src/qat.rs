//! Quantization-aware training: fake quantization with a straight-through estimator (STE).
//!
//! [`fake_quant`] returns `dequantize(quantize(x))` in the forward pass and passes the gradient
//! through unchanged (identity) in the backward pass. On the CPU it is one fused [`CustomOp1`]; on
//! other devices it is built from tensor ops as `x + (q(x) − x).detach()`. Grids come from the tensor
//! itself (min-max, or the config's calibration on CPU), per tensor or per output channel (axis 0) —
//! the same grids that [`crate::quantize_tensor`] will pick when the trained weights are converted.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use joulecut_quant::{Int8Config, fake_quant};
//! let w = Var::new(&[[0.5f32, -1.0], [0.25, 2.0]], &Device::Cpu).unwrap();
//! let y = fake_quant(w.as_tensor(), &Int8Config::default()).unwrap();
//! let grads = y.sum_all().unwrap().backward().unwrap();
//! let g: Vec<Vec<f32>> = grads.get(&w).unwrap().to_vec2().unwrap();
//! assert_eq!(g, vec![vec![1.0, 1.0], vec![1.0, 1.0]]); // straight through
//! ```

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use crate::observer::Calibration;
use crate::scheme::{Granularity, Int8Config, Symmetry, quantize_tensor};

/// Fake-quantizes `x` per `cfg` with a straight-through gradient.
pub fn fake_quant(x: &Tensor, cfg: &Int8Config) -> candle_core::Result<Tensor> {
    cfg.validate()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(FakeQuantOp { cfg: *cfg })
    } else {
        fake_quant_ops(x, cfg)
    }
}

/// Fake-quantizes activations `[batch, features]` the way [`crate::Int8Linear`] quantizes them at run
/// time: one asymmetric min-max grid per row.
pub fn fake_quant_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let cfg = Int8Config {
        symmetry: Symmetry::Asymmetric,
        granularity: Granularity::Channel,
        calibration: Calibration::MinMax,
    };
    fake_quant(x, &cfg)
}

struct FakeQuantOp {
    cfg: Int8Config,
}

impl CustomOp1 for FakeQuantOp {
    fn name(&self) -> &'static str {
        "joulecut-fake-quant-int8"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = storage.as_slice::<f32>()?;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("fake_quant: input must be contiguous"))?;
        let q = quantize_tensor(
            "fake_quant input",
            &data[start..end],
            layout.dims(),
            &self.cfg,
        )?;
        Ok((CpuStorage::F32(q.dequantize()), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.clone()))
    }
}

/// Device-generic path: min-max grids from tensor ops, STE through `detach`.
fn fake_quant_ops(x: &Tensor, cfg: &Int8Config) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let per_channel = matches!(cfg.granularity, Granularity::Channel) && dims.len() >= 2;
    let xd = x.detach();
    let flat = if per_channel {
        xd.flatten_from(1)?
    } else {
        xd.flatten_all()?.unsqueeze(0)?
    };
    let zero = flat.zeros_like()?.narrow(1, 0, 1)?;
    let lo = flat.min_keepdim(1)?.minimum(&zero)?;
    let hi = flat.max_keepdim(1)?.maximum(&zero)?;
    let q = match cfg.symmetry {
        Symmetry::Symmetric => {
            let s = (lo.abs()?.maximum(&hi)? / 127.0)?.clamp(f32::MIN_POSITIVE, f32::MAX)?;
            flat.broadcast_div(&s)?
                .round()?
                .clamp(-127f32, 127f32)?
                .broadcast_mul(&s)?
        }
        Symmetry::Asymmetric => {
            let s = ((&hi - &lo)? / 255.0)?.clamp(f32::MIN_POSITIVE, f32::MAX)?;
            let zp = ((lo.broadcast_div(&s)?.neg()? - 128.0)?.round()?).clamp(-128f32, 127f32)?;
            let qv =
                (flat.broadcast_div(&s)?.round()?.broadcast_add(&zp)?).clamp(-128f32, 127f32)?;
            qv.broadcast_sub(&zp)?.broadcast_mul(&s)?
        }
    };
    let q = q.reshape(dims)?;
    x + (q - x)?.detach()
}
