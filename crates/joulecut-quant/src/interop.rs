//! Bridges to `joulecut-checkpoint`'s tensor types: quantizing and casting [`TensorData`], and
//! building int8 layers from stored [`Int8Tensor`]s (dense or sparse). The streaming pass over whole
//! checkpoints is [`crate::QuantizePass`].
//!
//! ```
//! use joulecut_checkpoint::{DenseTensor, TensorData};
//! use joulecut_quant::{Int8Config, quantize_data};
//! let w = DenseTensor::from_f32(vec![2, 3], &[0.0, 1.0, -2.0, 0.5, 0.0, 0.25]);
//! let q = quantize_data("fc.weight", &TensorData::Dense(w), &Int8Config::default()).unwrap();
//! assert_eq!(q.encoding_name(), "int8");
//! ```

use std::borrow::Cow;

use joulecut_checkpoint::{
    DenseTensor, FloatType, Int8Tensor, SparseTensor, SparseValues, TensorData, numel,
};

use crate::error::{Error, Result};
use crate::linear::{Int8Conv2d, Int8Linear};
use crate::scheme::Int8Config;
use crate::tensor::{
    check_finite, inner_size, quantize_sparse_values, quantize_tensor, validate_int8,
};

/// Quantizes a dense float tensor (F32/F16/BF16) to int8.
pub fn quantize_dense(name: &str, t: &DenseTensor, cfg: &Int8Config) -> Result<Int8Tensor> {
    let values = t.to_f32();
    Ok(Int8Tensor {
        orig_dtype: t.dtype,
        in_scales: None,
        ..quantize_tensor(name, &values, &t.shape, cfg)?
    })
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
        values: SparseValues::Int8(Int8Tensor {
            orig_dtype: dtype,
            in_scales: None,
            ..q
        }),
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
            crate::tensor::check_castable(name, &values, dtype)?;
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
            crate::tensor::check_castable(name, &v, dtype)?;
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

/// A dense, validated [`Int8Tensor`] from a dense or sparse int8 tensor: a dense one as it is
/// (borrowed), a sparse one expanded, its unstored elements set to their channel's zero-point (so
/// they dequantize to exactly 0).
pub fn int8_from_data<'a>(name: &str, t: &'a TensorData) -> Result<Cow<'a, Int8Tensor>> {
    match t {
        TensorData::Int8(q) => {
            validate_int8(name, q, numel(&q.shape))?;
            Ok(Cow::Borrowed(q))
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
            Ok(Cow::Owned(Int8Tensor { values, ..logical }))
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
        Int8Linear::new(name, weight, bias)
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
