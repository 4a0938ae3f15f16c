//! int8 schemes: symmetric / asymmetric, per tensor / per output channel, and the quantize and
//! dequantize maps.
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

use crate::error::{Error, Result};
use crate::observer::{Calibration, calibrate_range};

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

/// How many scales a weight gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Granularity {
    /// One scale (and zero-point) for the whole tensor.
    Tensor,
    /// One per output channel (axis 0: rows of a `[out, in]` Linear weight, filters of a conv weight).
    /// Tensors of rank < 2 (biases, norms) fall back to per tensor.
    #[default]
    Channel,
}

/// Settings for quantizing a tensor to int8.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Int8Config {
    /// Symmetric or asymmetric grid.
    pub symmetry: Symmetry,
    /// Per tensor or per output channel.
    pub granularity: Granularity,
    /// How the clipping range is chosen.
    pub calibration: Calibration,
}

impl Default for Int8Config {
    fn default() -> Self {
        Int8Config {
            symmetry: Symmetry::Symmetric,
            granularity: Granularity::Channel,
            calibration: Calibration::MinMax,
        }
    }
}

impl Int8Config {
    /// Checks the config's values (e.g. the percentile).
    pub fn validate(&self) -> Result<()> {
        self.calibration.validate()
    }
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
    /// check the data first ([`check_finite`]).
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

/// Fails with [`Error::NonFinite`] at the first NaN or infinity.
pub fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            name: name.to_string(),
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// A quantized tensor: int8 values with their grid(s). Mirrors `joulecut_checkpoint::Int8Tensor`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// int8 values, row-major.
    pub values: Vec<i8>,
    /// One scale per tensor, or one per index along `axis`.
    pub scales: Vec<f32>,
    /// Zero-points (same length as `scales`); `None` for symmetric grids.
    pub zero_points: Option<Vec<i32>>,
    /// `None`: per tensor; `Some(0)`: per output channel.
    pub axis: Option<usize>,
}

impl QuantizedTensor {
    /// Number of channels (1 per tensor).
    pub fn channels(&self) -> usize {
        self.scales.len()
    }

    /// The grid of channel `c`.
    pub fn params(&self, c: usize) -> QuantParams {
        let zp = self.zero_points.as_ref().map_or(0, |z| z[c]);
        let symmetry = if self.zero_points.is_some() {
            Symmetry::Asymmetric
        } else {
            Symmetry::Symmetric
        };
        QuantParams {
            scale: self.scales[c],
            zero_point: zp,
            symmetry,
        }
    }

    /// Checks values/scales/zero-points against the shape; `name` goes into the error.
    pub fn validate(&self, name: &str) -> Result<()> {
        let numel: usize = self.shape.iter().product();
        if self.values.len() != numel {
            return Err(Error::BadShape {
                name: name.to_string(),
                shape: self.shape.clone(),
                reason: format!("{} int8 values for {numel} elements", self.values.len()),
            });
        }
        validate_params(
            name,
            &self.shape,
            &self.scales,
            self.zero_points.as_deref(),
            self.axis,
        )
    }

    /// Dequantises to f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let inner = inner_size(&self.shape, self.axis);
        let channels = self.channels();
        let params: Vec<QuantParams> = (0..channels).map(|c| self.params(c)).collect();
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| params[(i / inner) % channels].dequantize(q))
            .collect()
    }
}

/// Checks that scales (and zero-points) fit `shape` and `axis`: one per channel, finite, ≥ 0,
/// zero-points in `[-128, 127]`.
pub fn validate_params(
    name: &str,
    shape: &[usize],
    scales: &[f32],
    zero_points: Option<&[i32]>,
    axis: Option<usize>,
) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::BadParams {
            name: name.to_string(),
            reason,
        })
    };
    let channels = match axis {
        None => 1,
        Some(a) if a < shape.len() => shape[a],
        Some(a) => return bad(format!("axis {a} out of range for shape {shape:?}")),
    };
    if scales.len() != channels {
        return bad(format!(
            "{} scales for {channels} channel(s) of shape {shape:?}",
            scales.len()
        ));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return bad(format!("scale {s} is not a finite non-negative number"));
    }
    if let Some(zp) = zero_points {
        if zp.len() != channels {
            return bad(format!(
                "{} zero-points for {channels} channel(s)",
                zp.len()
            ));
        }
        if let Some(z) = zp.iter().find(|z| !(-128..=127).contains(*z)) {
            return bad(format!("zero-point {z} is outside [-128, 127]"));
        }
    }
    Ok(())
}

/// Product of the dims after `axis` (1 for per tensor): element `i` belongs to channel
/// `(i / inner) % channels`.
pub(crate) fn inner_size(shape: &[usize], axis: Option<usize>) -> usize {
    match axis {
        None => 1,
        Some(a) => shape[a + 1..].iter().product(),
    }
}

/// The axis a config quantizes along for `shape`: `Some(0)` for per-channel on rank ≥ 2.
pub fn channel_axis(shape: &[usize], granularity: Granularity) -> Option<usize> {
    match granularity {
        Granularity::Channel if shape.len() >= 2 => Some(0),
        _ => None,
    }
}

/// Quantizes a dense f32 tensor (row-major `values` of `shape`) per `cfg`.
///
/// Errors: NaN/Inf values ([`Error::NonFinite`]), a value count that does not match the shape, a bad
/// config.
pub fn quantize_tensor(
    name: &str,
    values: &[f32],
    shape: &[usize],
    cfg: &Int8Config,
) -> Result<QuantizedTensor> {
    quantize_masked(name, values, shape, None, cfg)
}

/// Like [`quantize_tensor`], but only the elements whose flat index is listed in `positions` are
/// given (`values[j]` is element `positions[j]`); the others are exact zeros that are not stored. This
/// is how the non-zeros of a pruned, packed tensor are quantized: the grid always contains 0.0, and
/// the stored zeros stay exact.
pub fn quantize_sparse_values(
    name: &str,
    values: &[f32],
    positions: &[usize],
    shape: &[usize],
    cfg: &Int8Config,
) -> Result<QuantizedTensor> {
    if values.len() != positions.len() {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: shape.to_vec(),
            reason: format!("{} values for {} positions", values.len(), positions.len()),
        });
    }
    quantize_masked(name, values, shape, Some(positions), cfg)
}

fn quantize_masked(
    name: &str,
    values: &[f32],
    shape: &[usize],
    positions: Option<&[usize]>,
    cfg: &Int8Config,
) -> Result<QuantizedTensor> {
    cfg.validate()?;
    check_finite(name, values)?;
    let numel: usize = shape.iter().product();
    let bad_shape = |reason: String| Error::BadShape {
        name: name.to_string(),
        shape: shape.to_vec(),
        reason,
    };
    match positions {
        None if values.len() != numel => {
            return Err(bad_shape(format!(
                "{} values for {numel} elements",
                values.len()
            )));
        }
        Some(p) if p.iter().any(|&i| i >= numel) => {
            return Err(bad_shape("a stored position is past the end".into()));
        }
        _ => {}
    }
    let axis = channel_axis(shape, cfg.granularity);
    let channels = axis.map_or(1, |a| shape[a]);
    let inner = inner_size(shape, axis);
    let channel_of = |j: usize| positions.map_or(j, |p| p[j]) / inner % channels;

    // Gather each channel's values (contiguous runs for dense tensors; scattered for sparse).
    let mut per_channel: Vec<Vec<f32>> = vec![Vec::new(); channels];
    if channels == 1 {
        per_channel[0] = values.to_vec();
    } else {
        for (j, &v) in values.iter().enumerate() {
            per_channel[channel_of(j)].push(v);
        }
    }
    let params: Vec<QuantParams> = per_channel
        .iter()
        .map(|vals| {
            let (lo, hi) = calibrate_range(vals, cfg.calibration, cfg.symmetry);
            QuantParams::from_range(lo, hi, cfg.symmetry)
        })
        .collect();
    let q: Vec<i8> = values
        .iter()
        .enumerate()
        .map(|(j, &v)| params[channel_of(j)].quantize(v))
        .collect();
    Ok(QuantizedTensor {
        shape: shape.to_vec(),
        values: q,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: match cfg.symmetry {
            Symmetry::Symmetric => None,
            Symmetry::Asymmetric => Some(params.iter().map(|p| p.zero_point).collect()),
        },
        axis,
    })
}

/// Dequantises the stored values of a [`QuantizedTensor`] produced by [`quantize_sparse_values`]
/// back into a dense f32 tensor (unlisted positions are 0.0).
pub fn dequantize_sparse_values(q: &QuantizedTensor, positions: &[usize]) -> Vec<f32> {
    let numel: usize = q.shape.iter().product();
    let inner = inner_size(&q.shape, q.axis);
    let channels = q.channels();
    let mut out = vec![0f32; numel];
    for (&i, &v) in positions.iter().zip(&q.values) {
        out[i] = q.params(i / inner % channels).dequantize(v);
    }
    out
}
