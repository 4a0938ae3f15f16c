//! The int8 grid: [`Symmetry`] and [`QuantParams`] (one scale and zero-point), with the quantize and
//! dequantize maps. This is the vocabulary calibration, tensor quantization, the streaming pass and
//! the GEMM's activation quantization all share; it depends on nothing else in the crate.
//!
//! Conventions (the same as `joulecut-checkpoint`'s `int8` encoding): a value `x` is stored as an `i8`
//! `q`, and dequantises as `x ≈ scale * (q - zero_point)`.
//!
//! * **symmetric**: `zero_point = 0`, `q ∈ [-127, 127]`, `scale = absmax / 127`;
//! * **asymmetric**: `q ∈ [-128, 127]`, `scale = (max - min) / 255`, `zero_point` chosen so that
//!   `0.0` is exactly representable (so zeros of a pruned tensor stay exactly zero).
//!
//! For every `x` inside the calibrated range, `|x - dequantize(quantize(x))| ≤ scale / 2` (up to one
//! f32 rounding, see [`ERROR_BOUND_SLACK`]).
//!
//! ```
//! use joulecut_quant::{QuantParams, Symmetry};
//! let p = QuantParams::from_range(-1.0, 2.0, Symmetry::Asymmetric);
//! let q = p.quantize(0.5);
//! assert!((p.dequantize(q) - 0.5).abs() <= p.scale / 2.0);
//! assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
//! ```

use serde::{Deserialize, Serialize};

/// Relative slack on the `scale / 2` error bound that covers f32 rounding in `x / scale` and
/// `scale * (q - zp)`: the bound checked by the tests is `scale * (0.5 + ERROR_BOUND_SLACK) + ulp(x)`.
pub const ERROR_BOUND_SLACK: f32 = 1e-5;

/// Whether the int8 grid is centred on zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Symmetry {
    /// `zero_point = 0`, `q ∈ [-127, 127]`.
    #[default]
    Symmetric,
    /// Any `zero_point`, `q ∈ [-128, 127]`; better for one-sided data (post-ReLU activations).
    Asymmetric,
}

/// Scale and zero-point of one int8 grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// Step between adjacent int8 values (finite, > 0).
    pub scale: f32,
    /// The int8 value that represents 0.0.
    pub zero_point: i32,
    /// The grid's symmetry (sets the int8 range).
    pub symmetry: Symmetry,
}

impl QuantParams {
    /// The grid that covers `[min, max]` (widened to include 0). Non-finite bounds are a caller bug:
    /// check the data first ([`crate::check_finite`]).
    pub fn from_range(min: f32, max: f32, symmetry: Symmetry) -> QuantParams {
        let (min, max) = (min.min(0.0), max.max(0.0));
        match symmetry {
            Symmetry::Symmetric => {
                let absmax = (-min).max(max);
                QuantParams {
                    scale: grid_scale(absmax, 127.0),
                    zero_point: 0,
                    symmetry,
                }
            }
            Symmetry::Asymmetric => {
                let scale = grid_scale(max - min, 255.0);
                // zero_point = -128 - min / scale, rounded; clamped so 0.0 stays on the grid.
                let zp = (-128.0 - f64::from(min) / f64::from(scale))
                    .round_ties_even()
                    .clamp(-128.0, 127.0) as i32;
                QuantParams {
                    scale,
                    zero_point: zp,
                    symmetry,
                }
            }
        }
    }

    /// Smallest int8 value used by this grid.
    #[inline]
    pub fn qmin(&self) -> i32 {
        match self.symmetry {
            Symmetry::Symmetric => -127,
            Symmetry::Asymmetric => -128,
        }
    }

    /// Largest int8 value used by this grid.
    #[inline]
    pub fn qmax(&self) -> i32 {
        127
    }

    /// `clamp(round_half_even(x / scale) + zero_point)`.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let q = (x / self.scale).round_ties_even() as i32 + self.zero_point;
        q.clamp(self.qmin(), self.qmax()) as i8
    }

    /// `scale * (q - zero_point)`.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }
}

/// `range / levels`, with a zero range mapped to scale 1 and tiny ranges floored at the smallest
/// normal f32 (so `x / scale` never overflows).
fn grid_scale(range: f32, levels: f32) -> f32 {
    if range == 0.0 {
        1.0
    } else {
        (range / levels).max(f32::MIN_POSITIVE)
    }
}
