//! Quantization for joulecut: fp16/bf16 casts, int8 schemes with calibration, real int8 inference
//! kernels, and fake quantization for quantization-aware training.
//!
//! * [`grid`]: one int8 grid ([`QuantParams`]: scale, zero-point, [`Symmetry`]), the shared vocabulary;
//! * [`calibrate`]: min-max, percentile and MSE-optimal clipping ranges ([`Calibration`]);
//! * [`scheme`]: [`Int8Config`], per tensor / per output channel ([`ScaleGranularity`]);
//! * tensors: [`quantize_tensor`] into the checkpoint's `Int8Tensor` (the one int8 tensor type),
//!   [`quantize_values`] straight from a checkpoint view into stored bytes, [`ErrorStats`];
//! * [`observer`]: [`RangeObserver`], static activation grids from calibration batches;
//! * [`gemm`]: the int8 GEMM ([`Int8Kernel`]: AVX-512 VNNI, AVX2, portable, reference) with a fused
//!   requantisation; [`ActivationGrid`], the run-time activation grid a checkpoint records;
//! * [`Int8Linear`], [`Int8Conv2d`]: candle `Module`s running on that GEMM;
//! * [`cast`]: fp16 / bf16 storage;
//! * [`qat`]: [`fake_quant`] with a straight-through estimator;
//! * checkpoint interop: [`quantize_data`], [`cast_data`], [`Int8Linear::from_int8`], and
//!   [`QuantizePass`], the streaming quantize/cast of whole checkpoints.
//!
//! ```
//! use joulecut_quant::{Int8Config, quantize_tensor};
//! let w = [0.5f32, -1.0, 0.25, 2.0];
//! let q = quantize_tensor("w", &w, &[2, 2], &Int8Config::default()).unwrap();
//! assert_eq!(q.scales.len(), 2); // per output channel
//! let back = q.dequantize();
//! for (a, b) in w.iter().zip(&back) { assert!((a - b).abs() <= 2.0 / 127.0 / 2.0 + 1e-6); }
//! ```

mod activation_grid;
mod block;
pub mod calibrate;
pub mod cast;
mod conv_direct;
mod error;
mod fake_linear;
pub mod gemm;
pub mod grid;
mod interop;
mod linear;
pub mod observer;
mod pass;
pub mod qat;
pub mod scheme;
mod stats;
mod stream;
mod tensor;

pub use activation_grid::ActivationGrid;
pub use calibrate::{Calibration, DEFAULT_PERCENTILE, calibrate_range};
pub use cast::cast_values;
pub use cast::{HalfType, f32_to_half, half_to_f32, round_trip_half};
pub use error::{Error, Result};
pub use fake_linear::FakeQuantLinear;
pub use gemm::{ActivationQuant, Int8Kernel};
pub use grid::{ERROR_BOUND_SLACK, QuantParams, Symmetry};
pub use interop::{cast_data, int8_from_data, quantize_data, quantize_dense, quantize_sparse};
pub use linear::{Int8Conv2d, Int8Linear};
pub use observer::RangeObserver;
pub use pass::{PassError, QuantReport, QuantizePass, Target};
pub use qat::{fake_quant, fake_quant_rows};
pub use scheme::{Int8Config, ScaleGranularity};
pub use stats::ErrorStats;
pub use stream::{Int8Bytes, quantize_values};
pub use tensor::{
    channel_params, check_finite, dequantize_sparse_values, quantize_smoothed,
    quantize_sparse_values, quantize_tensor, validate_int8, validate_params,
};
