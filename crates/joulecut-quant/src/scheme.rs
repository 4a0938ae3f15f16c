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

use joulecut_checkpoint::{BLOCK, Values};

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

/// Error of a quantize (or cast) pass against its input, accumulated while quantizing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    /// Σ (x − x̂)².
    pub sum_sq_err: f64,
    /// Σ x².
    pub sum_sq: f64,
    /// max |x − x̂|.
    pub max_abs: f64,
}

impl ErrorStats {
    /// Relative L2 error ‖x − x̂‖ / ‖x‖ (the absolute error when x is all zeros).
    pub fn rel_l2(&self) -> f64 {
        if self.sum_sq > 0.0 {
            (self.sum_sq_err / self.sum_sq).sqrt()
        } else {
            self.sum_sq_err.sqrt()
        }
    }

    /// Both accumulations together.
    pub fn merge(self, o: ErrorStats) -> ErrorStats {
        ErrorStats {
            sum_sq_err: self.sum_sq_err + o.sum_sq_err,
            sum_sq: self.sum_sq + o.sum_sq,
            max_abs: self.max_abs.max(o.max_abs),
        }
    }
}

/// An int8 tensor produced straight into its stored byte layout by [`quantize_values`].
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Bytes {
    /// The int8 values as bytes, row-major.
    pub values: Vec<u8>,
    /// One scale per tensor, or one per index along `axis`.
    pub scales: Vec<f32>,
    /// Zero-points (asymmetric grids).
    pub zero_points: Option<Vec<i32>>,
    /// `None`: per tensor; `Some(0)`: per output channel.
    pub axis: Option<usize>,
    /// The quantization error.
    pub stats: ErrorStats,
}

/// Elements per parallel task of [`quantize_values`].
const TASK: usize = 1 << 16;

/// Lanes of the block loops: independent accumulators let them vectorise (a single f32
/// accumulator is a serial dependency the compiler may not reorder).
const LANES: usize = 8;

/// Min and max (both including 0) of a block, and whether it holds NaN/Inf.
#[inline(always)]
fn scan_block_generic(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    let (mut l, mut h, mut bad) = ([lo; LANES], [hi; LANES], [false; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for j in 0..LANES {
            l[j] = if x[j] < l[j] { x[j] } else { l[j] };
            h[j] = if x[j] > h[j] { x[j] } else { h[j] };
            bad[j] |= !x[j].is_finite();
        }
    }
    for &x in rest {
        l[0] = if x < l[0] { x } else { l[0] };
        h[0] = if x > h[0] { x } else { h[0] };
        bad[0] |= !x.is_finite();
    }
    (
        l.iter().fold(lo, |a, &b| a.min(b)),
        h.iter().fold(hi, |a, &b| a.max(b)),
        bad.iter().any(|&b| b),
    )
}

/// [`scan_block_generic`] with explicit AVX2: 32 elements per step, min/max trees and a sticky
/// non-finite flag (`x * 0` is NaN exactly for NaN/Inf; OR-ing the bits keeps the exponent set).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_block_avx2(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    use std::arch::x86_64::*;
    let n = xs.len() - xs.len() % 32;
    let (mut l, mut h, mut nan) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_setzero_ps());
    let zero = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n <= xs.len(); unaligned loads.
        let (a, b, c, d) = unsafe {
            let p = xs.as_ptr().add(i);
            (
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            )
        };
        l = _mm256_min_ps(_mm256_min_ps(_mm256_min_ps(a, b), _mm256_min_ps(c, d)), l);
        h = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d)), h);
        let z = _mm256_or_ps(
            _mm256_or_ps(_mm256_mul_ps(a, zero), _mm256_mul_ps(b, zero)),
            _mm256_or_ps(_mm256_mul_ps(c, zero), _mm256_mul_ps(d, zero)),
        );
        nan = _mm256_or_ps(nan, z);
        i += 32;
    }
    let (mut la, mut ha, mut za) = ([0f32; 8], [0f32; 8], [0u32; 8]);
    // SAFETY: 8-float stores into 8-element arrays.
    unsafe {
        _mm256_storeu_ps(la.as_mut_ptr(), l);
        _mm256_storeu_ps(ha.as_mut_ptr(), h);
        _mm256_storeu_ps(za.as_mut_ptr().cast(), nan);
    }
    let bad = za.iter().any(|&z| z & 0x7f80_0000 == 0x7f80_0000);
    let (tl, th, tbad) = scan_block_generic(&xs[n..], lo, hi);
    (
        la.iter().fold(tl, |a, &b| a.min(b)),
        ha.iter().fold(th, |a, &b| a.max(b)),
        bad || tbad,
    )
}

fn scan_block(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { scan_block_avx2(xs, lo, hi) };
    }
    scan_block_generic(xs, lo, hi)
}

/// Min, max (both including 0) and the first non-finite element of `v[range]`.
fn range_scan(v: &Values<'_>, range: std::ops::Range<usize>) -> (f32, f32, Option<usize>) {
    let mut buf = [0f32; BLOCK];
    let (mut lo, mut hi) = (0f32, 0f32);
    let mut i = range.start;
    while i < range.end {
        let n = (range.end - i).min(BLOCK);
        let b: &[f32] = match v.f32_slice(i, n) {
            Some(direct) => direct,
            None => {
                v.read(i, &mut buf[..n]);
                &buf[..n]
            }
        };
        let (l, h, bad) = scan_block(b, lo, hi);
        if bad {
            let k = b.iter().position(|x| !x.is_finite()).expect("found above");
            return (lo, hi, Some(i + k));
        }
        (lo, hi) = (l, h);
        i += n;
    }
    (lo, hi, None)
}

/// `p.quantize(x)` for one element, and its error `x - dequantize(q)`.
#[inline(always)]
fn quantize_one(x: f32, p: &QuantParams, qmin: f32, qmax: f32, zp: f32) -> (u8, f32) {
    // round(x / s) + zp, clamped: exact in f32 since |round(x / s)| is clamped far below 2^24.
    let r = (x / p.scale).round_ties_even().clamp(-512.0, 512.0);
    let q = (r + zp).clamp(qmin, qmax);
    // q is an integer in [-128, 127]: adding 1.5 * 2^23 puts it in the low mantissa bits, whose
    // low byte is q's two's complement (a vectorisable stand-in for the saturating `as i32`).
    ((q + 12_582_912.0).to_bits() as u8, x - p.scale * (q - zp))
}

/// Per-lane error accumulators of the block loops: Σd², Σx², max|d|.
type Lanes = [[f32; LANES]; 3];

/// `p.quantize(x)` for a block, written into `out`, with the block's error (Σd², Σx², max|d|).
/// Lane-wise so it vectorises; [`QuantParams::quantize`] is the reference it matches bit for bit.
#[inline(always)]
fn quantize_block_generic(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    lane_totals(quantize_lanes(xs, out, p, [[0f32; LANES]; 3]))
}

/// The lane loop of [`quantize_block_generic`], continuing the accumulators `acc` (element `j` of
/// `xs` feeds lane `j % LANES`; a remainder shorter than `LANES` feeds lane 0).
#[inline(always)]
fn quantize_lanes(xs: &[f32], out: &mut [u8], p: QuantParams, acc: Lanes) -> Lanes {
    let (qmin, qmax) = (p.qmin() as f32, p.qmax() as f32);
    let zp = p.zero_point as f32;
    let [mut e2, mut x2, mut m] = acc;
    let n = xs.len() - xs.len() % LANES;
    for (o, x) in out[..n]
        .chunks_exact_mut(LANES)
        .zip(xs[..n].chunks_exact(LANES))
    {
        for j in 0..LANES {
            let (q, d) = quantize_one(x[j], &p, qmin, qmax, zp);
            o[j] = q;
            e2[j] += d * d;
            x2[j] += x[j] * x[j];
            let a = d.abs();
            m[j] = if a > m[j] { a } else { m[j] };
        }
    }
    for (o, &x) in out[n..].iter_mut().zip(&xs[n..]) {
        let (q, d) = quantize_one(x, &p, qmin, qmax, zp);
        *o = q;
        e2[0] += d * d;
        x2[0] += x * x;
        m[0] = m[0].max(d.abs());
    }
    [e2, x2, m]
}

/// The block's (Σd², Σx², max|d|) from its lane accumulators.
#[inline(always)]
fn lane_totals([e2, x2, m]: Lanes) -> (f32, f32, f32) {
    (
        e2.iter().sum(),
        x2.iter().sum(),
        m.iter().fold(0f32, |a, &b| a.max(b)),
    )
}

/// [`quantize_block_generic`] with explicit AVX2, 32 elements per step. The bytes match the
/// generic loop exactly (same divide, round, clamps and magic-number conversion), and so do the
/// statistics: one 8-lane accumulator per statistic, fed in element order like `LANES = 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_block_avx2(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    use std::arch::x86_64::*;
    debug_assert_eq!(LANES, 8);
    let n = xs.len() - xs.len() % 32;
    let (scale, zp) = (_mm256_set1_ps(p.scale), _mm256_set1_ps(p.zero_point as f32));
    let (qmin, qmax) = (
        _mm256_set1_ps(p.qmin() as f32),
        _mm256_set1_ps(p.qmax() as f32),
    );
    let (rmin, rmax) = (_mm256_set1_ps(-512.0), _mm256_set1_ps(512.0));
    let magic = _mm256_set1_ps(12_582_912.0);
    let magic_i = _mm256_set1_epi32(12_582_912f32.to_bits() as i32);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let (mut e2, mut x2, mut m) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    // One vector: (q as i32, d = x - scale * (q - zp)); min/max operand order mirrors `clamp`.
    let one = |x: __m256| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_div_ps(x, scale),
        );
        let r = _mm256_min_ps(_mm256_max_ps(r, rmin), rmax);
        let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), qmin), qmax);
        let qi = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(q, magic)), magic_i);
        let d = _mm256_sub_ps(x, _mm256_mul_ps(scale, _mm256_sub_ps(q, zp)));
        (qi, d)
    };
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n <= xs.len() == out.len() (checked by the caller's slicing).
        let xv = unsafe {
            let p = xs.as_ptr().add(i);
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let mut qs = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            let (q, d) = one(xv[k]);
            qs[k] = q;
            e2 = _mm256_add_ps(e2, _mm256_mul_ps(d, d));
            x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv[k], xv[k]));
            let a = _mm256_and_ps(d, abs_mask);
            m = _mm256_max_ps(a, m);
        }
        // i32 -> i8 (all in [-128, 127], so the saturating packs are exact), then undo the
        // per-128-bit-lane interleave of the packs.
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(qs[0], qs[1]),
            _mm256_packs_epi32(qs[2], qs[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, order);
        // SAFETY: out has at least i + 32 bytes (out.len() == xs.len()).
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), w) };
        i += 32;
    }
    let (mut ea, mut xa, mut ma) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    // SAFETY: 8-float stores into 8-element arrays.
    unsafe {
        _mm256_storeu_ps(ea.as_mut_ptr(), e2);
        _mm256_storeu_ps(xa.as_mut_ptr(), x2);
        _mm256_storeu_ps(ma.as_mut_ptr(), m);
    }
    // The tail continues the same lanes, as the generic loop would (n is a multiple of LANES).
    lane_totals(quantize_lanes(&xs[n..], &mut out[n..], p, [ea, xa, ma]))
}

fn quantize_block(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    // The AVX2 loop writes through raw pointers sized by `xs`.
    assert_eq!(
        xs.len(),
        out.len(),
        "quantize_block: input and output lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { quantize_block_avx2(xs, out, p) };
    }
    quantize_block_generic(xs, out, p)
}

/// Per-channel min-max quantization with both passes over a task's channels back to back, while
/// they are in cache (the tensor is read from memory once).
fn quantize_channels_fused(
    name: &str,
    v: &Values<'_>,
    tasks: &[std::ops::Range<usize>],
    channels: usize,
    run: usize,
    symmetry: Symmetry,
    axis: Option<usize>,
) -> Result<Int8Bytes> {
    use rayon::prelude::*;
    let numel = channels * run;
    let mut out = vec![0u8; numel];
    let mut slices: Vec<(&std::ops::Range<usize>, &mut [u8])> = Vec::with_capacity(tasks.len());
    let mut rest = &mut out[..];
    for r in tasks {
        let (a, b) = rest.split_at_mut(r.len());
        slices.push((r, a));
        rest = b;
    }
    type TaskOut = (Vec<QuantParams>, ErrorStats, Option<usize>);
    let done: Vec<TaskOut> = slices
        .into_par_iter()
        .map(|(r, dst)| {
            let mut params = Vec::new();
            let mut st = ErrorStats::default();
            let mut buf = [0f32; BLOCK];
            for c in r.start / run..r.end / run {
                let (lo, hi, bad) = range_scan(v, c * run..(c + 1) * run);
                if let Some(b) = bad {
                    return (params, st, Some(b));
                }
                let p = QuantParams::from_range(lo, hi, symmetry);
                params.push(p);
                let mut i = c * run;
                while i < (c + 1) * run {
                    let n = ((c + 1) * run - i).min(BLOCK);
                    let xs: &[f32] = match v.f32_slice(i, n) {
                        Some(direct) => direct,
                        None => {
                            v.read(i, &mut buf[..n]);
                            &buf[..n]
                        }
                    };
                    let (e2, x2, m) = quantize_block(xs, &mut dst[i - r.start..i - r.start + n], p);
                    st = st.merge(ErrorStats {
                        sum_sq_err: f64::from(e2),
                        sum_sq: f64::from(x2),
                        max_abs: f64::from(m),
                    });
                    i += n;
                }
            }
            (params, st, None)
        })
        .collect();
    if let Some(index) = done.iter().filter_map(|d| d.2).min() {
        let mut x = [0f32];
        v.read(index, &mut x);
        return Err(Error::NonFinite {
            name: name.to_string(),
            index,
            value: x[0],
        });
    }
    let mut params = Vec::with_capacity(channels);
    let mut stats = ErrorStats::default();
    for (p, st, _) in done {
        params.extend(p);
        stats = stats.merge(st);
    }
    Ok(Int8Bytes {
        values: out,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: match symmetry {
            Symmetry::Symmetric => None,
            Symmetry::Asymmetric => Some(params.iter().map(|p| p.zero_point).collect()),
        },
        axis,
        stats,
    })
}

/// Quantizes a tensor read through a checkpoint [`Values`] view (F32/F16/BF16 in the mmap, or
/// int8) straight into stored bytes, in parallel, without materialising it as f32. Bit-identical to
/// [`quantize_tensor`] on the same values, and the error is measured on the way.
pub fn quantize_values(
    name: &str,
    v: &Values<'_>,
    shape: &[usize],
    cfg: &Int8Config,
) -> Result<Int8Bytes> {
    use rayon::prelude::*;
    cfg.validate()?;
    let numel: usize = shape.iter().product();
    if v.len() != numel {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: shape.to_vec(),
            reason: format!("{} values for {numel} elements", v.len()),
        });
    }
    let axis = channel_axis(shape, cfg.granularity);
    let channels = axis.map_or(1, |a| shape[a]).max(1);
    let run = if numel == 0 { 1 } else { numel / channels };
    // Tasks: whole channels (several per task when small), or slices of one big channel.
    let tasks: Vec<std::ops::Range<usize>> = if channels == 1 {
        (0..numel.div_ceil(TASK))
            .map(|k| k * TASK..((k + 1) * TASK).min(numel))
            .collect()
    } else {
        let per = (TASK / run.max(1)).max(1);
        (0..channels.div_ceil(per))
            .map(|k| k * per * run..((k + 1) * per * run).min(numel))
            .collect()
    };
    if channels > 1 && cfg.calibration == Calibration::MinMax {
        return quantize_channels_fused(name, v, &tasks, channels, run, cfg.symmetry, axis);
    }
    // Pass 1: per-channel min/max, and NaN/Inf.
    let scans: Vec<Vec<(f32, f32, Option<usize>)>> = tasks
        .par_iter()
        .map(|r| {
            if channels == 1 {
                vec![range_scan(v, r.clone())]
            } else {
                (r.start / run..r.end / run)
                    .map(|c| range_scan(v, c * run..(c + 1) * run))
                    .collect()
            }
        })
        .collect();
    let mut mins = vec![0f32; channels];
    let mut maxs = vec![0f32; channels];
    let mut first_bad: Option<usize> = None;
    for (c, (lo, hi, bad)) in scans.into_iter().flatten().enumerate() {
        let ch = if channels == 1 { 0 } else { c };
        mins[ch] = mins[ch].min(lo);
        maxs[ch] = maxs[ch].max(hi);
        if let Some(b) = bad {
            first_bad = Some(first_bad.map_or(b, |f| f.min(b)));
        }
    }
    if let Some(index) = first_bad {
        let mut x = [0f32];
        v.read(index, &mut x);
        return Err(Error::NonFinite {
            name: name.to_string(),
            index,
            value: x[0],
        });
    }
    // Ranges: min-max directly; percentile and MSE on the same strided sample as `calibrate_range`.
    let params: Vec<QuantParams> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = match cfg.calibration {
                Calibration::MinMax => (mins[c], maxs[c]),
                cal => {
                    let len = run;
                    let step = len.div_ceil(crate::observer::SEARCH_SAMPLE).max(1);
                    let base = c * run;
                    let sample: Vec<f32> = if step == 1 {
                        let mut s = vec![0f32; len];
                        v.read(base, &mut s);
                        s
                    } else {
                        (0..len)
                            .step_by(step)
                            .map(|j| {
                                let mut x = [0f32];
                                v.read(base + j, &mut x);
                                x[0]
                            })
                            .collect()
                    };
                    crate::observer::range_from_sample(&sample, mins[c], maxs[c], cal, cfg.symmetry)
                }
            };
            QuantParams::from_range(lo, hi, cfg.symmetry)
        })
        .collect();
    // Pass 2: quantize into the output, measuring the error.
    let mut out = vec![0u8; numel];
    let mut slices: Vec<(&std::ops::Range<usize>, &mut [u8])> = Vec::with_capacity(tasks.len());
    let mut rest = &mut out[..];
    for r in &tasks {
        let (a, b) = rest.split_at_mut(r.len());
        slices.push((r, a));
        rest = b;
    }
    let stats = slices
        .into_par_iter()
        .map(|(r, dst)| {
            let mut buf = [0f32; BLOCK];
            let mut st = ErrorStats::default();
            let mut i = r.start;
            while i < r.end {
                let c = if channels == 1 { 0 } else { i / run };
                let end = if channels == 1 {
                    r.end
                } else {
                    ((c + 1) * run).min(r.end)
                };
                let n = (end - i).min(BLOCK);
                let xs: &[f32] = match v.f32_slice(i, n) {
                    Some(direct) => direct,
                    None => {
                        v.read(i, &mut buf[..n]);
                        &buf[..n]
                    }
                };
                let (e2, x2, m) =
                    quantize_block(xs, &mut dst[i - r.start..i - r.start + n], params[c]);
                st = st.merge(ErrorStats {
                    sum_sq_err: f64::from(e2),
                    sum_sq: f64::from(x2),
                    max_abs: f64::from(m),
                });
                i += n;
            }
            st
        })
        .reduce(ErrorStats::default, ErrorStats::merge);
    Ok(Int8Bytes {
        values: out,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: match cfg.symmetry {
            Symmetry::Symmetric => None,
            Symmetry::Asymmetric => Some(params.iter().map(|p| p.zero_point).collect()),
        },
        axis,
        stats,
    })
}

#[cfg(test)]
mod stream_tests {
    use super::*;
    use joulecut_checkpoint::FloatType;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s as f32 / u32::MAX as f32 - 0.3) * 2.0;
                if i % 7 == 0 { 0.0 } else { v }
            })
            .collect()
    }

    #[test]
    fn quantize_values_is_bit_identical_to_quantize_tensor() {
        let shapes: [&[usize]; 4] = [&[37, 129], &[3, 70_000], &[5, 2, 3, 3], &[200_000]];
        for shape in shapes {
            let n: usize = shape.iter().product();
            let x = data(n, n as u32);
            for dtype in [FloatType::F32, FloatType::F16, FloatType::BF16] {
                let bytes = dtype.encode(&x);
                let mut decoded = Vec::new();
                dtype.decode(&bytes, &mut decoded);
                let v = Values::Dense {
                    dtype,
                    bytes: &bytes,
                };
                for granularity in [Granularity::Tensor, Granularity::Channel] {
                    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
                        for calibration in [
                            Calibration::MinMax,
                            Calibration::Percentile { percentile: 99.0 },
                            Calibration::Mse,
                        ] {
                            let cfg = Int8Config {
                                symmetry,
                                granularity,
                                calibration,
                            };
                            let want = quantize_tensor("t", &decoded, shape, &cfg).unwrap();
                            let got = quantize_values("t", &v, shape, &cfg).unwrap();
                            let got_q: Vec<i8> = got.values.iter().map(|&b| b as i8).collect();
                            assert_eq!(got_q, want.values, "{shape:?} {dtype} {cfg:?}");
                            assert_eq!(got.scales, want.scales);
                            assert_eq!(got.zero_points, want.zero_points);
                            assert_eq!(got.axis, want.axis);
                            // The error measured on the way matches the reference.
                            let back = want.dequantize();
                            let e2: f64 = decoded
                                .iter()
                                .zip(&back)
                                .map(|(a, b)| f64::from(a - b).powi(2))
                                .sum();
                            let rel = (got.stats.sum_sq_err - e2).abs() / e2.max(1e-30);
                            assert!(rel < 1e-3, "{rel}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quantize_values_reports_the_first_non_finite_element() {
        let mut x = data(1000, 3);
        x[613] = f32::NAN;
        x[900] = f32::INFINITY;
        let bytes = FloatType::F32.encode(&x);
        let v = Values::Dense {
            dtype: FloatType::F32,
            bytes: &bytes,
        };
        let e = quantize_values("w", &v, &[10, 100], &Int8Config::default()).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 613, .. }), "{e}");
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_tests {
    use super::*;

    fn data(n: usize, seed: u32, spread: f32) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.4) * spread
            })
            .collect()
    }

    /// The explicit AVX2 loops agree with the generic ones exactly (bytes, statistics, ranges),
    /// on odd lengths, both grids and values beyond the grid (clamping).
    #[test]
    fn avx2_block_loops_match_generic_exactly() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        for (k, &n) in [0usize, 1, 7, 8, 31, 32, 33, 100, 784, 1023, 4096]
            .iter()
            .enumerate()
        {
            let xs = data(n, 17 + k as u32, 3.0);
            // SAFETY: AVX2 checked above.
            let fast = unsafe { scan_block_avx2(&xs, 0.0, 0.0) };
            assert_eq!(fast, scan_block_generic(&xs, 0.0, 0.0), "scan, n = {n}");
            for p in [
                QuantParams::from_range(-1.0, 1.5, Symmetry::Symmetric),
                QuantParams::from_range(-0.3, 2.0, Symmetry::Asymmetric),
            ] {
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                // SAFETY: AVX2 checked above.
                let fast = unsafe { quantize_block_avx2(&xs, &mut a, p) };
                let slow = quantize_block_generic(&xs, &mut b, p);
                assert_eq!(a, b, "bytes, n = {n}, {p:?}");
                assert_eq!(fast, slow, "stats, n = {n}, {p:?}");
            }
        }
    }

    #[test]
    fn avx2_scan_flags_every_non_finite_position() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0usize, 5, 31, 32, 63, 64, 99] {
                let mut xs = data(100, 3, 1.0);
                xs[at] = bad;
                // SAFETY: AVX2 checked above.
                let (_, _, flagged) = unsafe { scan_block_avx2(&xs, 0.0, 0.0) };
                assert!(flagged, "{bad} at {at} not flagged");
            }
        }
    }
}
