//! Quantizing whole f32 tensors into the checkpoint's [`Int8Tensor`] (dense, or the stored values of
//! a sparse tensor), and the checks every int8 tensor passes before a kernel uses it.
//!
//! There is one int8 tensor type in joulecut, `joulecut_checkpoint::Int8Tensor`: what
//! [`quantize_tensor`] returns is what the checkpoint writes and what the int8 layers read.
//!
//! ```
//! use joulecut_quant::{Int8Config, quantize_tensor};
//! let q = quantize_tensor("w", &[0.5, -1.0, 0.25, 2.0], &[2, 2], &Int8Config::default()).unwrap();
//! assert_eq!((q.scales.len(), q.axis), (2, Some(0))); // per output channel
//! assert_eq!((q.values[1], q.values[3]), (-127, 127)); // each row's absmax is ±127
//! ```

use joulecut_checkpoint::{FloatType, Int8Tensor, numel};

use crate::calibrate::calibrate_range;
use crate::error::{Error, Result};
use crate::grid::{QuantParams, Symmetry};
use crate::scheme::{Int8Config, channel_axis};

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

/// Checks that every value survives a cast to `to`: finite (NaN and infinities are refused as
/// for int8) and, for f16, within its range (a larger value would silently become infinite).
pub fn check_castable(
    name: &str,
    values: &[f32],
    to: joulecut_checkpoint::FloatType,
) -> Result<()> {
    check_finite(name, values)?;
    if to == joulecut_checkpoint::FloatType::F16 {
        let max = f32::from(half::f16::MAX);
        if let Some(index) = values.iter().position(|v| v.abs() > max) {
            return Err(Error::OutOfRange {
                name: name.to_string(),
                index,
                value: values[index],
                dtype: to.to_string(),
            });
        }
    }
    Ok(())
}

/// [`check_castable`] over stored values, read a block at a time (no full f32 copy).
pub fn check_castable_values(
    name: &str,
    v: &joulecut_checkpoint::Values<'_>,
    to: joulecut_checkpoint::FloatType,
) -> Result<()> {
    const BLOCK: usize = 1 << 14;
    let mut buf = vec![0f32; BLOCK.min(v.len())];
    let mut start = 0;
    while start < v.len() {
        let n = BLOCK.min(v.len() - start);
        v.read(start, &mut buf[..n]);
        check_castable(name, &buf[..n], to).map_err(|e| match e {
            Error::NonFinite { name, index, value } => Error::NonFinite {
                name,
                index: index + start,
                value,
            },
            Error::OutOfRange {
                name,
                index,
                value,
                dtype,
            } => Error::OutOfRange {
                name,
                index: index + start,
                value,
                dtype,
            },
            other => other,
        })?;
        start += n;
    }
    Ok(())
}

/// The grid of channel `c` of `t` (asymmetric exactly when `t` stores zero-points).
pub fn channel_params(t: &Int8Tensor, c: usize) -> QuantParams {
    let zp = t.zero_points.as_ref().map_or(0, |z| z[c]);
    let symmetry = if t.zero_points.is_some() {
        Symmetry::Asymmetric
    } else {
        Symmetry::Symmetric
    };
    QuantParams {
        scale: t.scales[c],
        zero_point: zp,
        symmetry,
    }
}

/// Checks an [`Int8Tensor`] holding `expected` values (for a sparse tensor: its non-zeros) against
/// its shape: scales and zero-points per [`validate_params`].
pub fn validate_int8(name: &str, t: &Int8Tensor, expected: usize) -> Result<()> {
    if t.values.len() != expected {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: t.shape.clone(),
            reason: format!("{} int8 values, expected {expected}", t.values.len()),
        });
    }
    validate_params(name, &t.shape, &t.scales, t.zero_points.as_deref(), t.axis)
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

/// Quantizes a dense f32 tensor (row-major `values` of `shape`) per `cfg`. The result records F32 as
/// its original float type.
///
/// Errors: NaN/Inf values ([`Error::NonFinite`]), a value count that does not match the shape, a bad
/// config.
pub fn quantize_tensor(
    name: &str,
    values: &[f32],
    shape: &[usize],
    cfg: &Int8Config,
) -> Result<Int8Tensor> {
    quantize_masked(name, values, shape, None, cfg)
}

/// Quantizes a dense 2-D weight `[out, in]` smoothed: the stored values are `W · diag(1/in_scales)`
/// on the int8 grid per `cfg`, and `in_scales` is recorded, so the tensor decodes back to `W`
/// (within the grid's error) and its layer multiplies each input column by `in_scales` before
/// quantizing it (`Int8Tensor::in_scales`).
///
/// Errors: those of [`quantize_tensor`], a weight that is not 2-D, or input scales that are not one
/// finite positive number per column.
pub fn quantize_smoothed(
    name: &str,
    values: &[f32],
    shape: &[usize],
    in_scales: &[f32],
    cfg: &Int8Config,
) -> Result<Int8Tensor> {
    let [_, cols] = shape[..] else {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: shape.to_vec(),
            reason: "only a 2-D weight [out, in] can be smoothed".into(),
        });
    };
    if in_scales.len() != cols || in_scales.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err(Error::BadParams {
            name: name.to_string(),
            reason: format!(
                "smoothing needs {cols} finite positive input scales, got {}",
                in_scales.len()
            ),
        });
    }
    let scaled: Vec<f32> = values
        .chunks_exact(cols.max(1))
        .flat_map(|row| row.iter().zip(in_scales).map(|(w, f)| w / f))
        .collect();
    let mut q = quantize_tensor(name, &scaled, shape, cfg)?;
    q.in_scales = Some(in_scales.to_vec());
    Ok(q)
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
) -> Result<Int8Tensor> {
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
) -> Result<Int8Tensor> {
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
    Ok(Int8Tensor {
        shape: shape.to_vec(),
        values: q,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: match cfg.symmetry {
            Symmetry::Symmetric => None,
            Symmetry::Asymmetric => Some(params.iter().map(|p| p.zero_point).collect()),
        },
        axis,
        // The input is f32; callers that quantized another float type record it instead.
        orig_dtype: FloatType::F32,
        in_scales: None,
    })
}

/// Dequantises the stored values of an [`Int8Tensor`] produced by [`quantize_sparse_values`]
/// back into a dense f32 tensor (unlisted positions are 0.0).
pub fn dequantize_sparse_values(q: &Int8Tensor, positions: &[usize]) -> Vec<f32> {
    let inner = inner_size(&q.shape, q.axis);
    let channels = q.scales.len();
    let mut out = vec![0f32; numel(&q.shape)];
    for (&i, &v) in positions.iter().zip(&q.values) {
        out[i] = channel_params(q, i / inner % channels).dequantize(v);
    }
    out
}
