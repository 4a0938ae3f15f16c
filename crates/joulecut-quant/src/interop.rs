//! Bridges to `joulecut-checkpoint`'s tensor types: quantizing and casting [`TensorData`], building
//! int8 layers from stored [`Int8Tensor`]s (dense or sparse), and [`QuantizePass`], the streaming
//! quantize/cast of whole (sharded) checkpoints.
//!
//! ```
//! use joulecut_checkpoint::{DenseTensor, TensorData};
//! use joulecut_quant::{Int8Config, quantize_data};
//! let w = DenseTensor::from_f32(vec![2, 3], &[0.0, 1.0, -2.0, 0.5, 0.0, 0.25]);
//! let q = quantize_data("fc.weight", &TensorData::Dense(w), &Int8Config::default()).unwrap();
//! assert_eq!(q.encoding_name(), "int8");
//! ```

use joulecut_checkpoint::{
    DenseTensor, EntrySpec, FloatType, Int8Tensor, Plan, Selection, SparseTensor, SparseValues,
    TensorData, TensorEncoding, TensorRef, Transform, numel,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::linear::{Int8Conv2d, Int8Linear};
use crate::scheme::{
    ErrorStats, Int8Config, QuantizedTensor, check_finite, inner_size, quantize_sparse_values,
    quantize_tensor, quantize_values, validate_params,
};

/// Converts a [`QuantizedTensor`] to the checkpoint's [`Int8Tensor`], recording the original float type.
pub fn to_int8_tensor(q: QuantizedTensor, orig_dtype: FloatType) -> Int8Tensor {
    Int8Tensor {
        shape: q.shape,
        values: q.values,
        scales: q.scales,
        zero_points: q.zero_points,
        axis: q.axis,
        orig_dtype,
    }
}

/// Converts a checkpoint [`Int8Tensor`] to a [`QuantizedTensor`] (dense values only).
pub fn from_int8_tensor(t: &Int8Tensor) -> QuantizedTensor {
    QuantizedTensor {
        shape: t.shape.clone(),
        values: t.values.clone(),
        scales: t.scales.clone(),
        zero_points: t.zero_points.clone(),
        axis: t.axis,
    }
}

/// Quantizes a dense float tensor (F32/F16/BF16) to int8.
pub fn quantize_dense(name: &str, t: &DenseTensor, cfg: &Int8Config) -> Result<Int8Tensor> {
    let values = t.to_f32();
    Ok(to_int8_tensor(
        quantize_tensor(name, &values, &t.shape, cfg)?,
        t.dtype,
    ))
}

/// Quantizes the stored values of a packed sparse tensor, keeping the bitmap: zeros stay exactly
/// zero, and the result is a sparse tensor with `SparseValues::Int8`. Already-int8 values are
/// returned unchanged.
pub fn quantize_sparse(name: &str, t: &SparseTensor, cfg: &Int8Config) -> Result<SparseTensor> {
    let (dtype, bytes) = match &t.values {
        SparseValues::Float { dtype, bytes } => (*dtype, bytes),
        SparseValues::Int8(_) => return Ok(t.clone()),
    };
    let mut values = Vec::new();
    dtype.decode(bytes, &mut values);
    let positions: Vec<usize> = (0..numel(&t.shape)).filter(|&i| t.is_set(i)).collect();
    if positions.len() != values.len() {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: t.shape.clone(),
            reason: format!(
                "bitmap marks {} non-zeros but {} values are stored",
                positions.len(),
                values.len()
            ),
        });
    }
    let q = quantize_sparse_values(name, &values, &positions, &t.shape, cfg)?;
    Ok(SparseTensor {
        shape: t.shape.clone(),
        bitmap: t.bitmap.clone(),
        values: SparseValues::Int8(to_int8_tensor(q, dtype)),
    })
}

/// Quantizes any float tensor: dense → `int8`, sparse → `sparse` with int8 values. Tensors that are
/// already int8 are returned unchanged.
pub fn quantize_data(name: &str, t: &TensorData, cfg: &Int8Config) -> Result<TensorData> {
    Ok(match t {
        TensorData::Dense(d) => TensorData::Int8(quantize_dense(name, d, cfg)?),
        TensorData::Sparse(s) => TensorData::Sparse(quantize_sparse(name, s, cfg)?),
        other => other.clone(),
    })
}

/// Casts a float tensor's storage to `dtype` (round to nearest even). Dense stays dense and sparse
/// stays sparse (bitmap kept). int8 tensors are rejected: decompress them first.
pub fn cast_data(name: &str, t: &TensorData, dtype: FloatType) -> Result<TensorData> {
    match t {
        TensorData::Dense(d) => {
            let values = d.to_f32();
            Ok(TensorData::Dense(DenseTensor {
                dtype,
                shape: d.shape.clone(),
                bytes: dtype.encode(&values),
            }))
        }
        TensorData::Sparse(SparseTensor {
            shape,
            bitmap,
            values: SparseValues::Float { dtype: from, bytes },
        }) => {
            let mut v = Vec::new();
            from.decode(bytes, &mut v);
            Ok(TensorData::Sparse(SparseTensor {
                shape: shape.clone(),
                bitmap: bitmap.clone(),
                values: SparseValues::Float {
                    dtype,
                    bytes: dtype.encode(&v),
                },
            }))
        }
        other => Err(Error::BadParams {
            name: name.to_string(),
            reason: format!(
                "is stored as {} and cannot be cast to {dtype}; run `joulecut decompress` first",
                other.encoding_name()
            ),
        }),
    }
}

/// Validates an [`Int8Tensor`] holding `expected` values (scales/zero-points per channel, finite).
fn validate_int8(name: &str, t: &Int8Tensor, expected: usize) -> Result<()> {
    if t.values.len() != expected {
        return Err(Error::BadShape {
            name: name.to_string(),
            shape: t.shape.clone(),
            reason: format!("{} int8 values, expected {expected}", t.values.len()),
        });
    }
    validate_params(name, &t.shape, &t.scales, t.zero_points.as_deref(), t.axis)
}

/// A dense [`QuantizedTensor`] from a dense or sparse int8 tensor: unstored elements of a sparse tensor
/// get their channel's zero-point (so they dequantize to exactly 0).
pub fn int8_from_data(name: &str, t: &TensorData) -> Result<QuantizedTensor> {
    match t {
        TensorData::Int8(q) => {
            validate_int8(name, q, numel(&q.shape))?;
            Ok(from_int8_tensor(q))
        }
        TensorData::Sparse(
            s @ SparseTensor {
                values: SparseValues::Int8(q),
                ..
            },
        ) => {
            let n = numel(&s.shape);
            if s.bitmap.len() != n.div_ceil(8) {
                return Err(Error::BadShape {
                    name: name.to_string(),
                    shape: s.shape.clone(),
                    reason: "bitmap length".into(),
                });
            }
            let positions: Vec<usize> = (0..n).filter(|&i| s.is_set(i)).collect();
            let logical = Int8Tensor {
                shape: s.shape.clone(),
                ..q.clone()
            };
            validate_int8(name, &logical, positions.len())?;
            let inner = inner_size(&s.shape, q.axis);
            let channels = q.scales.len();
            let zp = |i: usize| {
                q.zero_points
                    .as_ref()
                    .map_or(0, |z| z[i / inner % channels]) as i8
            };
            let mut values: Vec<i8> = (0..n).map(zp).collect();
            for (&i, &v) in positions.iter().zip(&q.values) {
                values[i] = v;
            }
            Ok(QuantizedTensor {
                shape: s.shape.clone(),
                values,
                scales: q.scales.clone(),
                zero_points: q.zero_points.clone(),
                axis: q.axis,
            })
        }
        other => Err(Error::BadParams {
            name: name.to_string(),
            reason: format!("is {}, not int8", other.encoding_name()),
        }),
    }
}

impl Int8Linear {
    /// From a checkpoint's int8 weight `[out, in]` and an optional f32 bias.
    pub fn from_int8(name: &str, weight: &Int8Tensor, bias: Option<&[f32]>) -> Result<Int8Linear> {
        validate_int8(name, weight, numel(&weight.shape))?;
        Int8Linear::from_parts(
            name,
            &weight.shape,
            &weight.values,
            &weight.scales,
            weight.zero_points.as_deref(),
            weight.axis,
            bias,
        )
    }

    /// From any int8 tensor of a checkpoint (dense `int8` or `sparse` with int8 values).
    pub fn from_data(name: &str, weight: &TensorData, bias: Option<&[f32]>) -> Result<Int8Linear> {
        let q = int8_from_data(name, weight)?;
        if let Some(b) = bias {
            check_finite(&format!("{name} bias"), b)?;
        }
        Int8Linear::new(name, &q, bias)
    }
}

impl Int8Conv2d {
    /// From a checkpoint's int8 conv weight `[out, in, kh, kw]` (dense or sparse int8).
    pub fn from_data(
        name: &str,
        weight: &TensorData,
        bias: Option<&[f32]>,
        padding: usize,
        stride: usize,
    ) -> Result<Int8Conv2d> {
        let q = int8_from_data(name, weight)?;
        Int8Conv2d::new(name, &q, bias, padding, stride)
    }
}

/// An error of a streaming pass: a quantization error, or a checkpoint error (reading, writing,
/// bad input files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassError {
    /// Quantization failed (NaN weights, bad config, ...).
    #[error(transparent)]
    Quant(#[from] Error),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] joulecut_checkpoint::Error),
}

/// What the selected tensors become.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// int8 values + scales.
    Int8(Int8Config),
    /// 16-bit float storage (F16 or BF16).
    Half(FloatType),
}

/// The quantize pass over a checkpoint, tensor by tensor (see `joulecut_checkpoint::stream`).
#[derive(Debug, Clone)]
pub struct QuantizePass {
    /// What selected tensors become.
    pub target: Target,
    /// Which tensors are selected.
    pub selection: Selection,
}

/// One quantized tensor, as reported by [`QuantizePass`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantReport {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Encoding before (`dense`, `sparse`).
    pub encoding_before: &'static str,
    /// Encoding after (`int8`, `dense`, `sparse`, `sparse-int8`).
    pub encoding: &'static str,
    /// Stored bytes before.
    pub bytes_before: usize,
    /// Stored bytes after.
    pub bytes_after: usize,
    /// The error of the result against the input.
    pub stats: ErrorStats,
}

fn encoding_name(e: Option<&TensorEncoding>) -> &'static str {
    match e {
        None => "dense",
        Some(TensorEncoding::Int8 { .. }) => "int8",
        Some(TensorEncoding::Sparse { values, .. }) if values == "I8" => "sparse-int8",
        Some(_) => "sparse",
    }
}

fn is_int8(e: Option<&TensorEncoding>) -> bool {
    matches!(encoding_name(e), "int8" | "sparse-int8")
}

impl QuantizePass {
    /// The in-memory conversion (sparse tensors): the result and its stored parts.
    #[allow(clippy::type_complexity)]
    fn convert_in_memory(
        &self,
        t: &TensorRef<'_>,
    ) -> std::result::Result<
        (
            TensorData,
            TensorData,
            Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
            Option<TensorEncoding>,
        ),
        PassError,
    > {
        let data = t.checkpoint.get(t.name)?;
        let out = match self.target {
            Target::Int8(cfg) => quantize_data(t.name, &data, &cfg)?,
            Target::Half(to) => cast_data(t.name, &data, to)?,
        };
        let (parts, enc) = joulecut_checkpoint::encode_tensor(t.name, &out)?;
        Ok((data, out, parts, enc))
    }
}

impl Transform for QuantizePass {
    type Error = PassError;
    type Report = QuantReport;

    fn plan(&self, t: &TensorRef<'_>) -> std::result::Result<Plan, PassError> {
        let shape = t.shape()?;
        if !self.selection.selects(t.name, &shape) || numel(&shape) == 0 {
            return Ok(Plan::Keep);
        }
        let Some(orig) = t.float_type() else {
            if !self.selection.has_includes() {
                return Ok(Plan::Keep); // the default policy never touches integer tensors
            }
            return Err(joulecut_checkpoint::Error::BadTensor {
                name: t.name.to_string(),
                reason: format!(
                    "dtype {} is not a float type joulecut can quantize (F32, F16, BF16)",
                    t.stored_dtype().unwrap_or("?")
                ),
            }
            .into());
        };
        let enc = t.encoding();
        match self.target {
            Target::Int8(_) if is_int8(enc) => return Ok(Plan::Keep),
            Target::Half(to) if is_int8(enc) => {
                return Err(Error::BadParams {
                    name: t.name.to_string(),
                    reason: format!(
                        "is stored as {} and cannot be cast to {to}; run `joulecut decompress` first",
                        encoding_name(enc)
                    ),
                }
                .into());
            }
            _ => {}
        }
        if enc.is_some() {
            let (_, _, parts, encoding) = self.convert_in_memory(t)?;
            return Ok(Plan::Replace {
                entries: parts
                    .into_iter()
                    .map(|(n, d, s, _)| EntrySpec::new(n, d, s))
                    .collect(),
                encoding,
            });
        }
        Ok(match self.target {
            Target::Int8(cfg) => {
                let axis = crate::scheme::channel_axis(&shape, cfg.granularity);
                let c = axis.map_or(1, |a| shape[a]);
                let zero_point = cfg.symmetry == crate::scheme::Symmetry::Asymmetric;
                let mut entries = vec![
                    EntrySpec::new(t.name, "I8", shape.clone()),
                    EntrySpec::new(format!("{}:scale", t.name), "F32", vec![c]),
                ];
                if zero_point {
                    entries.push(EntrySpec::new(
                        format!("{}:zero_point", t.name),
                        "I32",
                        vec![c],
                    ));
                }
                Plan::Replace {
                    entries,
                    encoding: Some(TensorEncoding::Int8 {
                        axis,
                        zero_point,
                        dtype: orig,
                    }),
                }
            }
            Target::Half(to) => Plan::Replace {
                entries: vec![EntrySpec::new(t.name, to.to_string(), shape)],
                encoding: None,
            },
        })
    }

    fn produce(
        &self,
        t: &TensorRef<'_>,
        entries: &[EntrySpec],
    ) -> std::result::Result<(Vec<Vec<u8>>, QuantReport), PassError> {
        let shape = t.shape()?;
        let enc = t.encoding();
        let bytes_before = t.stored_bytes()?;
        let bytes_after = entries.iter().map(EntrySpec::byte_len).sum();
        let report = |stats, encoding| QuantReport {
            shape: shape.clone(),
            encoding_before: encoding_name(enc),
            encoding,
            bytes_before,
            bytes_after,
            stats,
        };
        if enc.is_some() {
            let (before, after, parts, _) = self.convert_in_memory(t)?;
            let (a, b) = (before.to_f32(), after.to_f32());
            let mut st = ErrorStats::default();
            for (x, y) in a.iter().zip(&b) {
                let d = f64::from(*x) - f64::from(*y);
                st.sum_sq_err += d * d;
                st.sum_sq += f64::from(*x) * f64::from(*x);
                st.max_abs = st.max_abs.max(d.abs());
            }
            let name = after.encoding_name();
            return Ok((parts.into_iter().map(|p| p.3).collect(), report(st, name)));
        }
        let v = t.checkpoint.values(t.name)?;
        match self.target {
            Target::Int8(cfg) => {
                let q = quantize_values(t.name, &v, &shape, &cfg)?;
                let mut parts = vec![
                    q.values,
                    q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ];
                if let Some(zp) = &q.zero_points {
                    parts.push(zp.iter().flat_map(|z| z.to_le_bytes()).collect());
                }
                Ok((parts, report(q.stats, "int8")))
            }
            Target::Half(to) => {
                let (bytes, stats) = crate::cast::cast_values(&v, to);
                Ok((vec![bytes], report(stats, "dense")))
            }
        }
    }
}
