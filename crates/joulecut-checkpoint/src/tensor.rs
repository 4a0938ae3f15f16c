//! Logical tensors and their encodings (see `docs/FORMAT.md`).
//!
//! A *logical* tensor is what a model sees (`fc1.weight`, shape [300, 784]). On disk it is one or more
//! *stored* safetensors entries, described by the `joulecut.encodings` metadata:
//!
//! | encoding | stored entries                                                                 |
//! |----------|--------------------------------------------------------------------------------|
//! | dense    | `NAME` (F32, F16 or BF16)                                                      |
//! | int8     | `NAME` (I8 values), `NAME:scale` (F32), optional `NAME:zero_point` (I32)       |
//! | sparse   | `NAME:bitmap` (U8, one bit per element, LSB first, row-major), `NAME:values`   |
//! |          | (the non-zeros in row-major order; F32/F16/BF16, or I8 + `NAME:scale` [+ zp])  |
//!
//! int8 dequantises as `x = scale[c] * (q - zero_point[c])`, where `c` is the index along `axis`
//! (per-channel, `axis = Some(0)` for a weight `[out, in]`) or 0 (per-tensor, `axis = None`).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Element type of a dense tensor's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum FloatType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

impl FloatType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }

    /// The safetensors dtype.
    pub fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            FloatType::F32 => safetensors::Dtype::F32,
            FloatType::F16 => safetensors::Dtype::F16,
            FloatType::BF16 => safetensors::Dtype::BF16,
        }
    }

    /// From a safetensors dtype; `None` for non-float dtypes.
    pub fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(FloatType::F32),
            safetensors::Dtype::F16 => Some(FloatType::F16),
            safetensors::Dtype::BF16 => Some(FloatType::BF16),
            _ => None,
        }
    }

    /// Decodes little-endian bytes of this type into f32.
    pub fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        out.reserve(bytes.len() / self.size());
        match self {
            FloatType::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            FloatType::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            FloatType::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
        }
    }

    /// Encodes `values` into `out` (`values.len() * size()` bytes), round to nearest even; F16 and
    /// BF16 go through half's slice conversions (F16C when the CPU has it).
    pub fn encode_into(self, values: &[f32], out: &mut [u8]) {
        use half::slice::HalfFloatSliceExt;
        match self {
            FloatType::F32 => {
                for (o, v) in out.chunks_exact_mut(4).zip(values) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            FloatType::F16 | FloatType::BF16 => {
                let mut h = [half::f16::ZERO; 256];
                let mut b = [half::bf16::ZERO; 256];
                for (o, v) in out.chunks_mut(512).zip(values.chunks(256)) {
                    let n = v.len();
                    if self == FloatType::F16 {
                        h[..n].convert_from_f32_slice(v);
                        for (d, x) in o.chunks_exact_mut(2).zip(&h[..n]) {
                            d.copy_from_slice(&x.to_le_bytes());
                        }
                    } else {
                        b[..n].convert_from_f32_slice(v);
                        for (d, x) in o.chunks_exact_mut(2).zip(&b[..n]) {
                            d.copy_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Encodes f32 values as little-endian bytes of this type (round to nearest even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size());
        match self {
            FloatType::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            FloatType::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
            FloatType::BF16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        }
        out
    }
}

impl std::fmt::Display for FloatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloatType::F32 => "F32",
            FloatType::F16 => "F16",
            FloatType::BF16 => "BF16",
        })
    }
}

/// A dense float tensor: raw little-endian bytes of `dtype`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    /// Element type.
    pub dtype: FloatType,
    /// Shape.
    pub shape: Vec<usize>,
    /// `numel * dtype.size()` little-endian bytes.
    pub bytes: Vec<u8>,
}

impl DenseTensor {
    /// An F32 tensor from values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        DenseTensor {
            dtype: FloatType::F32,
            shape,
            bytes: FloatType::F32.encode(values),
        }
    }

    /// The values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::new();
        self.dtype.decode(&self.bytes, &mut out);
        out
    }
}

/// int8 values with their scales (and optional zero-points).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Tensor {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Quantised values, row-major (for a sparse tensor: only the non-zeros).
    pub values: Vec<i8>,
    /// One scale (per tensor) or one per index along `axis`.
    pub scales: Vec<f32>,
    /// Asymmetric schemes only: same length as `scales`.
    pub zero_points: Option<Vec<i32>>,
    /// `None`: per tensor; `Some(a)`: per channel along axis `a` (0 = output channels).
    pub axis: Option<usize>,
    /// The float type the tensor had before quantisation (restored by `decompress`).
    pub orig_dtype: FloatType,
    /// Dense 2-D weights only: one factor per input column multiplying the dequantised value,
    /// `w[o, i] = scale[o] · (q[o, i] − zp) · in_scale[i]`. SmoothQuant-style smoothing stores the
    /// weight as `W · diag(s)` on the int8 grid and `in_scale = 1/s`, so the kernel quantises the
    /// input row `x ⊙ in_scale` (flatter across channels) and multiplies by `q` as usual.
    pub in_scales: Option<Vec<f32>>,
}

/// The values of a packed sparse tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum SparseValues {
    /// Float non-zeros.
    Float {
        /// Element type.
        dtype: FloatType,
        /// `nnz * dtype.size()` bytes.
        bytes: Vec<u8>,
    },
    /// int8 non-zeros; `Int8Tensor::shape` is the logical shape, `values` holds only the non-zeros.
    Int8(Int8Tensor),
}

/// A packed sparse tensor: a bitmap of non-zero positions plus the non-zero values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseTensor {
    /// Logical shape.
    pub shape: Vec<usize>,
    /// `ceil(numel / 8)` bytes; bit `i % 8` of byte `i / 8` is set when element `i` is stored.
    pub bitmap: Vec<u8>,
    /// The stored values, in row-major order.
    pub values: SparseValues,
}

/// A logical tensor in any encoding.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorData {
    /// Plain float tensor.
    Dense(DenseTensor),
    /// int8 with scales.
    Int8(Int8Tensor),
    /// Bitmap + non-zero values.
    Sparse(SparseTensor),
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Int8Tensor {
    /// Length of the channel axis (1 for per-tensor).
    pub fn channels(&self) -> usize {
        match self.axis {
            None => 1,
            Some(a) => self.shape.get(a).copied().unwrap_or(1),
        }
    }

    /// Checks scales/zero-points against the shape (name used in the error).
    pub fn validate(&self, name: &str, expected_values: usize) -> Result<()> {
        let bad = |why: String| {
            Err(Error::BadTensor {
                name: name.to_string(),
                reason: why,
            })
        };
        if let Some(a) = self.axis {
            if a >= self.shape.len() {
                return bad(format!(
                    "int8 axis {a} out of range for shape {:?}",
                    self.shape
                ));
            }
        }
        if self.values.len() != expected_values {
            return bad(format!(
                "{} int8 values, expected {expected_values}",
                self.values.len()
            ));
        }
        if self.scales.len() != self.channels() {
            return bad(format!(
                "scale has {} entries, expected {} ({})",
                self.scales.len(),
                self.channels(),
                if self.axis.is_some() {
                    "one per channel"
                } else {
                    "per tensor"
                }
            ));
        }
        if let Some(s) = self.scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return bad(format!("scale {s} is not a finite non-negative number"));
        }
        if let Some(zp) = &self.zero_points {
            if zp.len() != self.scales.len() {
                return bad(format!(
                    "zero_point has {} entries, scale has {}",
                    zp.len(),
                    self.scales.len()
                ));
            }
        }
        if let Some(f) = &self.in_scales {
            let [_, cols] = self.shape[..] else {
                return bad(format!(
                    "in_scale needs a 2-D weight, shape is {:?}",
                    self.shape
                ));
            };
            if f.len() != cols {
                return bad(format!(
                    "in_scale has {} entries, expected one per input column ({cols})",
                    f.len()
                ));
            }
            if let Some(v) = f.iter().find(|v| !v.is_finite() || **v <= 0.0) {
                return bad(format!("in_scale {v} is not a finite positive number"));
            }
        }
        Ok(())
    }

    /// Stride of the channel axis in row-major order: element `i` belongs to channel
    /// `(i / inner) % channels`.
    fn inner(&self) -> usize {
        match self.axis {
            None => 1,
            Some(a) => self.shape[a + 1..].iter().product(),
        }
    }

    /// Dequantises one value at logical flat index `i`.
    #[inline]
    fn dequant_at(&self, i: usize, q: i8, inner: usize, channels: usize) -> f32 {
        let c = (i / inner) % channels;
        let zp = self.zero_points.as_ref().map_or(0, |z| z[c]);
        let v = self.scales[c] * (q as i32 - zp) as f32;
        match &self.in_scales {
            // validated: one factor per column of a 2-D tensor, so `i % len` is the column
            Some(f) => v * f[i % f.len()],
            None => v,
        }
    }

    /// Dequantises a dense int8 tensor to f32 (the reference decoder).
    pub fn dequantize(&self) -> Vec<f32> {
        let (inner, channels) = (self.inner(), self.channels());
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| self.dequant_at(i, q, inner, channels))
            .collect()
    }
}

impl SparseTensor {
    /// Packs a dense f32 tensor: every non-zero is stored (as `dtype`).
    pub fn pack_f32(shape: Vec<usize>, values: &[f32], dtype: FloatType) -> Self {
        let mut bitmap = vec![0u8; values.len().div_ceil(8)];
        let mut nz = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            if v != 0.0 {
                bitmap[i / 8] |= 1 << (i % 8);
                nz.push(v);
            }
        }
        SparseTensor {
            shape,
            bitmap,
            values: SparseValues::Float {
                dtype,
                bytes: dtype.encode(&nz),
            },
        }
    }

    /// Number of stored elements (bits set).
    pub fn nnz(&self) -> usize {
        self.bitmap.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether element `i` is stored.
    #[inline]
    pub fn is_set(&self, i: usize) -> bool {
        self.bitmap[i / 8] & (1 << (i % 8)) != 0
    }

    /// Unpacks to dense f32 (the reference decoder).
    pub fn to_f32(&self) -> Vec<f32> {
        let n = numel(&self.shape);
        let mut out = vec![0f32; n];
        match &self.values {
            SparseValues::Float { dtype, bytes } => {
                let mut vals = Vec::new();
                dtype.decode(bytes, &mut vals);
                let mut k = 0;
                for (i, o) in out.iter_mut().enumerate() {
                    if self.is_set(i) {
                        *o = vals[k];
                        k += 1;
                    }
                }
            }
            SparseValues::Int8(q) => {
                let (inner, channels) = (q.inner(), q.channels());
                let mut k = 0;
                for (i, o) in out.iter_mut().enumerate() {
                    if self.is_set(i) {
                        *o = q.dequant_at(i, q.values[k], inner, channels);
                        k += 1;
                    }
                }
            }
        }
        out
    }

    /// Checks bitmap length, non-zero count and value count (name used in the error).
    pub fn validate(&self, name: &str) -> Result<()> {
        let n = numel(&self.shape);
        if self.bitmap.len() != n.div_ceil(8) {
            return Err(Error::BadTensor {
                name: name.to_string(),
                reason: format!(
                    "bitmap has {} bytes, expected {} for shape {:?}",
                    self.bitmap.len(),
                    n.div_ceil(8),
                    self.shape
                ),
            });
        }
        let nnz = self.nnz();
        if n % 8 != 0 && self.bitmap.last().is_some_and(|b| b >> (n % 8) != 0) {
            return Err(Error::BadTensor {
                name: name.to_string(),
                reason: "bitmap has bits set past the end".into(),
            });
        }
        let stored = match &self.values {
            SparseValues::Float { dtype, bytes } => {
                if bytes.len() % dtype.size() != 0 {
                    return Err(Error::BadTensor {
                        name: name.to_string(),
                        reason: "ragged value bytes".into(),
                    });
                }
                bytes.len() / dtype.size()
            }
            SparseValues::Int8(q) => {
                q.validate(name, nnz)?;
                if q.in_scales.is_some() {
                    return Err(Error::BadTensor {
                        name: name.to_string(),
                        reason: "packed sparse int8 values cannot carry input-column scales".into(),
                    });
                }
                q.values.len()
            }
        };
        if stored != nnz {
            return Err(Error::BadTensor {
                name: name.to_string(),
                reason: format!("bitmap marks {nnz} non-zeros but {stored} values are stored"),
            });
        }
        Ok(())
    }
}

impl TensorData {
    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::Dense(d) => &d.shape,
            TensorData::Int8(q) => &q.shape,
            TensorData::Sparse(s) => &s.shape,
        }
    }

    /// Encoding name as written in `joulecut.encodings` (`dense`, `int8`, `sparse`, `sparse-int8`).
    pub fn encoding_name(&self) -> &'static str {
        match self {
            TensorData::Dense(_) => "dense",
            TensorData::Int8(_) => "int8",
            TensorData::Sparse(SparseTensor {
                values: SparseValues::Float { .. },
                ..
            }) => "sparse",
            TensorData::Sparse(SparseTensor {
                values: SparseValues::Int8(_),
                ..
            }) => "sparse-int8",
        }
    }

    /// The float type the tensor decompresses to.
    pub fn float_type(&self) -> FloatType {
        match self {
            TensorData::Dense(d) => d.dtype,
            TensorData::Int8(q) => q.orig_dtype,
            TensorData::Sparse(SparseTensor {
                values: SparseValues::Float { dtype, .. },
                ..
            }) => *dtype,
            TensorData::Sparse(SparseTensor {
                values: SparseValues::Int8(q),
                ..
            }) => q.orig_dtype,
        }
    }

    /// Dense f32 values in row-major order, whatever the encoding (the reference decoder).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            TensorData::Dense(d) => d.to_f32(),
            TensorData::Int8(q) => q.dequantize(),
            TensorData::Sparse(s) => s.to_f32(),
        }
    }

    /// Number of non-zero elements of the decoded tensor.
    pub fn nonzeros(&self) -> usize {
        match self {
            TensorData::Sparse(s) => {
                // Stored values can themselves be zero after quantisation.
                s.to_f32().iter().filter(|v| **v != 0.0).count()
            }
            _ => self.to_f32().iter().filter(|v| **v != 0.0).count(),
        }
    }

    /// A candle f32 tensor of the decoded values.
    pub fn to_candle(&self, device: &candle_core::Device) -> Result<candle_core::Tensor> {
        let v = self.to_f32();
        candle_core::Tensor::from_vec(v, self.shape().to_vec(), device).map_err(|e| Error::Candle {
            action: "build tensor".into(),
            source: e,
        })
    }
}
