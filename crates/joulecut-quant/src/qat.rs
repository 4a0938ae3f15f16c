//! Quantization-aware training: fake quantization with a straight-through estimator (STE).
//!
//! [`fake_quant`] returns `dequantize(quantize(x))` in the forward pass and passes the gradient
//! through unchanged (identity) in the backward pass. On the CPU it is one fused [`CustomOp1`]; on
//! other devices, min-max grids are built from tensor ops as `x + (q(x) − x).detach()`, and the
//! other calibrations (percentile, MSE search) run the CPU op on a host copy ([`fake_quant_path`]).
//! Grids come from the tensor itself, per tensor or per output channel (axis 0) — the same grids
//! that [`crate::quantize_tensor`] will pick when the trained weights are converted.
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

use crate::calibrate::Calibration;
use crate::grid::Symmetry;
use crate::scheme::{Int8Config, ScaleGranularity};
use crate::tensor::quantize_tensor;

/// Which implementation [`fake_quant`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeQuantPath {
    /// The fused CPU op (f32 CPU tensors).
    Fused,
    /// Tensor ops on the tensor's device (min-max calibration only).
    TensorOps,
    /// The fused op on an f32 host copy, then back to the tensor's device and dtype (a calibration
    /// the tensor-op path does not implement; the gradient flows back through the copies).
    ViaHost,
}

/// The path for a tensor on the CPU or not (`on_cpu`), of `dtype`, with `calibration`.
pub fn fake_quant_path(on_cpu: bool, dtype: DType, calibration: &Calibration) -> FakeQuantPath {
    match (on_cpu && dtype == DType::F32, calibration) {
        (true, _) => FakeQuantPath::Fused,
        (false, Calibration::MinMax) => FakeQuantPath::TensorOps,
        (false, _) => FakeQuantPath::ViaHost,
    }
}

/// Fake-quantizes `x` per `cfg` with a straight-through gradient.
pub fn fake_quant(x: &Tensor, cfg: &Int8Config) -> candle_core::Result<Tensor> {
    cfg.validate()?;
    match fake_quant_path(x.device().is_cpu(), x.dtype(), &cfg.calibration) {
        FakeQuantPath::Fused => x.contiguous()?.apply_op1(FakeQuantOp { cfg: *cfg }),
        FakeQuantPath::TensorOps => fake_quant_ops(x, cfg),
        FakeQuantPath::ViaHost => {
            let host = x
                .to_device(&candle_core::Device::Cpu)?
                .to_dtype(DType::F32)?;
            let q = host.contiguous()?.apply_op1(FakeQuantOp { cfg: *cfg })?;
            q.to_dtype(x.dtype())?.to_device(x.device())
        }
    }
}

/// Fake-quantizes activations `[batch, features]` the way [`crate::Int8Linear`] quantizes them at run
/// time: one asymmetric min-max grid per row.
pub fn fake_quant_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let cfg = Int8Config {
        symmetry: Symmetry::Asymmetric,
        granularity: ScaleGranularity::Channel,
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
    let per_channel = matches!(cfg.granularity, ScaleGranularity::Channel) && dims.len() >= 2;
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn path_follows_device_dtype_and_calibration() {
        let pct = Calibration::Percentile { percentile: 99.0 };
        assert_eq!(
            fake_quant_path(true, DType::F32, &pct),
            FakeQuantPath::Fused
        );
        assert_eq!(
            fake_quant_path(true, DType::F32, &Calibration::MinMax),
            FakeQuantPath::Fused
        );
        assert_eq!(
            fake_quant_path(false, DType::F32, &Calibration::MinMax),
            FakeQuantPath::TensorOps
        );
        assert_eq!(
            fake_quant_path(false, DType::F32, &pct),
            FakeQuantPath::ViaHost
        );
        assert_eq!(
            fake_quant_path(false, DType::F32, &Calibration::Mse),
            FakeQuantPath::ViaHost
        );
        assert_eq!(
            fake_quant_path(true, DType::F16, &pct),
            FakeQuantPath::ViaHost
        );
        assert_eq!(
            fake_quant_path(true, DType::F16, &Calibration::MinMax),
            FakeQuantPath::TensorOps
        );
    }

    /// The host round trip (taken here by an f16 tensor) gives the fused op's grid, not min-max's,
    /// and still passes the gradient straight through.
    #[test]
    fn via_host_keeps_the_calibration_and_the_gradient() {
        // One outlier: percentile clipping shrinks the grid a lot, min-max does not.
        let mut v: Vec<f32> = (0..256).map(|i| (i as f32 / 255.0) - 0.5).collect();
        v[7] = 40.0;
        let cfg = Int8Config {
            calibration: Calibration::Percentile { percentile: 99.0 },
            granularity: ScaleGranularity::Tensor,
            ..Default::default()
        };
        let x32 = Tensor::from_vec(v, (16, 16), &Device::Cpu).unwrap();
        let want: Vec<f32> = fake_quant(&x32, &cfg)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let minmax: Vec<f32> = fake_quant_ops(&x32, &cfg)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let x16 = Var::from_tensor(&x32.to_dtype(DType::F16).unwrap()).unwrap();
        let y = fake_quant(x16.as_tensor(), &cfg).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        let got: Vec<f32> = y
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        // f16 input rounding moves values by < 1e-3 here; the grids differ by far more.
        assert!(err(&got, &want) < 2e-2, "{}", err(&got, &want));
        assert!(
            err(&minmax, &want) > 5e-2,
            "the calibrations should differ on this data"
        );
        let g = y
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<f32> = g
            .get(&x16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(g.iter().all(|&g| g == 1.0));
    }
}
