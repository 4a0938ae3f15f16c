//! Random-access f32 views of a logical tensor straight from the mmap: any element range can be
//! decoded into a caller's buffer, so passes over huge tensors run in parallel blocks without
//! materialising the whole tensor (dense and int8 encodings; sparse tensors and int8 with input
//! scales are decoded once).
//!
//! ```no_run
//! # fn main() -> joulecut_checkpoint::Result<()> {
//! let ck = joulecut_checkpoint::Checkpoint::open("model.safetensors")?;
//! let v = ck.values("fc1.weight")?;
//! let mut first = vec![0f32; 16.min(v.len())];
//! v.read(0, &mut first);
//! # Ok(()) }
//! ```

use half::slice::HalfFloatSliceExt;

use crate::encoding::TensorEncoding;
use crate::read::Checkpoint;
use crate::tensor::FloatType;
use crate::{Error, Result};

/// Elements decoded per block by block-wise passes.
pub const BLOCK: usize = 4096;

/// The values of one logical tensor, readable by element range.
#[derive(Debug)]
#[non_exhaustive]
pub enum Values<'a> {
    /// Dense float bytes in the file.
    Dense {
        /// Element type.
        dtype: FloatType,
        /// Little-endian bytes.
        bytes: &'a [u8],
    },
    /// int8 values in the file with their (small, copied) scales.
    Int8 {
        /// The I8 values as bytes.
        q: &'a [u8],
        /// One scale per channel.
        scales: Vec<f32>,
        /// One zero-point per channel (asymmetric).
        zero_points: Option<Vec<i32>>,
        /// Elements per channel run (all of them per tensor).
        inner: usize,
    },
    /// Decoded once (sparse encodings).
    Decoded(Vec<f32>),
}

/// Decodes little-endian `dtype` bytes into `out` (`out.len()` elements).
pub fn decode_into(dtype: FloatType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        FloatType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        FloatType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
            }
        }
        FloatType::F16 => {
            // Through half's slice conversion (F16C when the CPU has it), 256 at a time.
            let mut bits = [half::f16::ZERO; 256];
            for (o, c) in out.chunks_mut(256).zip(bytes.chunks(512)) {
                let n = o.len();
                for (b, p) in bits[..n].iter_mut().zip(c.chunks_exact(2)) {
                    *b = half::f16::from_le_bytes([p[0], p[1]]);
                }
                bits[..n].convert_to_f32_slice(o);
            }
        }
    }
}

impl Values<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::Dense { dtype, bytes } => bytes.len() / dtype.size(),
            Values::Int8 { q, .. } => q.len(),
            Values::Decoded(v) => v.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `start .. start + len` as f32 without copying, when they are F32 in the file and
    /// suitably aligned (little-endian hosts); `None` otherwise (use [`Values::read`]).
    pub fn f32_slice(&self, start: usize, len: usize) -> Option<&[f32]> {
        if !cfg!(target_endian = "little") {
            return None;
        }
        match self {
            Values::Dense {
                dtype: FloatType::F32,
                bytes,
            } => {
                let b = bytes.get(start * 4..(start + len) * 4)?;
                // SAFETY: every 4-byte pattern is a valid f32; `align_to` only yields the aligned
                // middle, and we accept it only when nothing is left over.
                let (head, mid, tail) = unsafe { b.align_to::<f32>() };
                (head.is_empty() && tail.is_empty()).then_some(mid)
            }
            Values::Decoded(v) => v.get(start..start + len),
            _ => None,
        }
    }

    /// Decodes elements `start .. start + out.len()` into `out`.
    pub fn read(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Values::Dense { dtype, bytes } => {
                let s = dtype.size();
                decode_into(*dtype, &bytes[start * s..end * s], out);
            }
            Values::Int8 {
                q,
                scales,
                zero_points,
                inner,
            } => {
                let channels = scales.len();
                let mut k = 0;
                while k < out.len() {
                    // One run per channel stretch, so each has one scale and zero-point.
                    let i = start + k;
                    let c = (i / inner) % channels;
                    let n = ((i / inner + 1) * inner - i).min(out.len() - k);
                    let (scale, zp) = (scales[c], zero_points.as_ref().map_or(0, |z| z[c]));
                    for (d, &b) in out[k..k + n].iter_mut().zip(&q[i..i + n]) {
                        *d = scale * (i32::from(b as i8) - zp) as f32;
                    }
                    k += n;
                }
            }
            Values::Decoded(v) => out.copy_from_slice(&v[start..end]),
        }
    }
}

impl Checkpoint {
    /// A range-readable view of a logical tensor (validated like [`Checkpoint::get`]; dense and int8
    /// values stay in the mmap).
    pub fn values(&self, name: &str) -> Result<Values<'_>> {
        match self.encodings().get(name) {
            None => {
                let info = self.stored_info(name)?;
                let dtype = crate::read::float_type(&info.dtype).ok_or_else(|| Error::BadTensor {
                    name: name.into(),
                    reason: format!(
                        "dtype {} is not a float type joulecut handles (F32, F16, BF16) and has no joulecut encoding",
                        info.dtype
                    ),
                })?;
                Ok(Values::Dense {
                    dtype,
                    bytes: self.stored_bytes(info),
                })
            }
            Some(TensorEncoding::Int8 {
                axis,
                zero_point,
                dtype,
                in_scale: false,
            }) => {
                let info = self.stored_info(name)?;
                if info.dtype != "I8" {
                    return Err(Error::BadTensor {
                        name: name.into(),
                        reason: format!("int8 encoding but stored as {}", info.dtype),
                    });
                }
                let q = self.int8_parts(
                    name,
                    info.shape.clone(),
                    Vec::new(),
                    *axis,
                    *zero_point,
                    *dtype,
                )?;
                // Scales and zero-points are checked against the shape; the values are not copied.
                q.validate(name, 0)?;
                // Per tensor: one run over everything.
                let inner: usize = match q.axis {
                    None => info.range.len(),
                    Some(a) => q.shape[a + 1..].iter().product(),
                };
                Ok(Values::Int8 {
                    q: self.stored_bytes(info),
                    scales: q.scales,
                    zero_points: q.zero_points,
                    inner: inner.max(1),
                })
            }
            Some(_) => Ok(Values::Decoded(self.get(name)?.to_f32())),
        }
    }
}
