//! Quantization for joulecut: fp16/bf16 casts, int8 schemes with calibration, real int8 inference
//! kernels, and fake quantization for quantization-aware training.
//!
//! * [`scheme`]: symmetric / asymmetric grids, per tensor / per output channel ([`quantize_tensor`]);
//! * [`observer`]: min-max, percentile and MSE-optimal clipping ([`Observer`] for activations);
//! * [`gemm`]: the int8 GEMM (AVX-512 VNNI, AVX2, portable, reference) with a fused requantisation;
//! * [`Int8Linear`], [`Int8Conv2d`]: candle `Module`s running on that GEMM;
//! * [`cast`]: fp16 / bf16 storage;
//! * [`qat`]: [`fake_quant`] with a straight-through estimator;
//! * checkpoint interop: [`quantize_data`], [`cast_data`], [`Int8Linear::from_int8`].
//!
//! ```
//! use joulecut_quant::{Int8Config, quantize_tensor};
//! let w = [0.5f32, -1.0, 0.25, 2.0];
//! let q = quantize_tensor("w", &w, &[2, 2], &Int8Config::default()).unwrap();
//! assert_eq!(q.scales.len(), 2); // per output channel
//! let back = q.dequantize();
//! for (a, b) in w.iter().zip(&back) { assert!((a - b).abs() <= 2.0 / 127.0 / 2.0 + 1e-6); }
//! ```

pub mod cast;
mod error;
pub mod gemm;
mod interop;
mod linear;
pub mod observer;
pub mod qat;
pub mod scheme;

pub use cast::cast_values;
pub use cast::{HalfType, f32_to_half, half_to_f32, round_trip_half};
pub use error::{Error, Result};
pub use gemm::{ActivationQuant, Kernel};
pub use interop::{
    PassError, QuantReport, QuantizePass, Target, cast_data, from_int8_tensor, int8_from_data,
    quantize_data, quantize_dense, quantize_sparse, to_int8_tensor,
};
pub use linear::{Int8Conv2d, Int8Linear};
pub use observer::{Calibration, DEFAULT_PERCENTILE, Observer, calibrate_range};
pub use qat::{fake_quant, fake_quant_rows};
pub use scheme::{
    ErrorStats, Granularity, Int8Bytes, Int8Config, QuantParams, QuantizedTensor, Symmetry,
    check_finite, dequantize_sparse_values, quantize_sparse_values, quantize_tensor,
    quantize_values,
};
