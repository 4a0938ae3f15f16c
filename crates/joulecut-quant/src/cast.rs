//! fp16 / bf16 storage of f32 data: round to nearest, ties to even (the `half` crate; F16C when the
//! CPU has it), NaN and infinities preserved. Models still compute in f32 on the CPU (faster there
//! than f16/bf16 arithmetic): decode with [`half_to_f32`] when loading.
//!
//! ```
//! use joulecut_quant::{HalfType, f32_to_half, half_to_f32};
//! let bytes = f32_to_half(&[1.0, 0.1, -2.5], HalfType::F16);
//! let back = half_to_f32(&bytes, HalfType::F16);
//! assert_eq!(back[0], 1.0);
//! assert!((back[1] - 0.1).abs() < 1e-4);
//! ```

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};
use joulecut_checkpoint::{BLOCK, FloatType, Values, decode_into};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::stats::ErrorStats;

/// Elements per rayon task.
const CHUNK: usize = 1 << 16;

/// A 16-bit float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HalfType {
    /// IEEE binary16: 10-bit mantissa, range ±65504.
    F16,
    /// bfloat16: 7-bit mantissa, f32's range.
    BF16,
}

/// Encodes f32 values as little-endian 16-bit floats.
pub fn f32_to_half(values: &[f32], ty: HalfType) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 2];
    out.par_chunks_mut(2 * CHUNK)
        .zip(values.par_chunks(CHUNK))
        .for_each(|(dst, src)| {
            let mut bits = vec![0u16; src.len()];
            match ty {
                HalfType::F16 => {
                    let mut h = vec![f16::ZERO; src.len()];
                    h.convert_from_f32_slice(src);
                    bits.iter_mut().zip(&h).for_each(|(b, v)| *b = v.to_bits());
                }
                HalfType::BF16 => {
                    let mut h = vec![bf16::ZERO; src.len()];
                    h.convert_from_f32_slice(src);
                    bits.iter_mut().zip(&h).for_each(|(b, v)| *b = v.to_bits());
                }
            }
            dst.chunks_exact_mut(2)
                .zip(&bits)
                .for_each(|(d, b)| d.copy_from_slice(&b.to_le_bytes()));
        });
    out
}

/// Decodes little-endian 16-bit floats to f32. A trailing odd byte is ignored.
pub fn half_to_f32(bytes: &[u8], ty: HalfType) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / 2];
    out.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(2 * CHUNK))
        .for_each(|(dst, src)| {
            let bits: Vec<u16> = src
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            match ty {
                HalfType::F16 => bits.reinterpret_cast::<f16>().convert_to_f32_slice(dst),
                HalfType::BF16 => bits.reinterpret_cast::<bf16>().convert_to_f32_slice(dst),
            }
        });
    out
}

/// The values a model sees after a round trip through `ty` (cast, then back to f32).
pub fn round_trip_half(values: &[f32], ty: HalfType) -> Vec<f32> {
    half_to_f32(&f32_to_half(values, ty), ty)
}

/// Count of finite f32 values that overflow to ±infinity in `ty` (only possible for f16).
pub fn overflow_count(values: &[f32], ty: HalfType) -> usize {
    match ty {
        HalfType::F16 => values
            .iter()
            .filter(|v| v.is_finite() && f16::from_f32(**v).is_infinite())
            .count(),
        HalfType::BF16 => values
            .iter()
            .filter(|v| v.is_finite() && bf16::from_f32(**v).is_infinite())
            .count(),
    }
}

/// Casts a tensor read through a checkpoint [`Values`] view to `to`'s little-endian bytes, in
/// parallel blocks straight from the mmap, measuring the rounding error on the way (non-finite
/// values are carried over and left out of the error).
pub fn cast_values(v: &Values<'_>, to: FloatType) -> (Vec<u8>, ErrorStats) {
    let size = to.size();
    let mut out = vec![0u8; v.len() * size];
    let stats = out
        .par_chunks_mut(CHUNK * size)
        .enumerate()
        .map(|(k, dst)| {
            let mut st = ErrorStats::default();
            let mut buf = [0f32; BLOCK];
            let mut back = [0f32; BLOCK];
            for (j, d) in dst.chunks_mut(BLOCK * size).enumerate() {
                let n = d.len() / size;
                v.read(k * CHUNK + j * BLOCK, &mut buf[..n]);
                to.encode_into(&buf[..n], d);
                decode_into(to, d, &mut back[..n]);
                let (mut e2, mut x2, mut m) = (0f32, 0f32, 0f32);
                for (x, y) in buf[..n].iter().zip(&back[..n]) {
                    if x.is_finite() {
                        let e = x - y;
                        e2 += e * e;
                        x2 += x * x;
                        m = m.max(e.abs());
                    }
                }
                st = st.merge(ErrorStats {
                    sum_sq_err: f64::from(e2),
                    sum_sq: f64::from(x2),
                    max_abs: f64::from(m),
                });
            }
            st
        })
        .reduce(ErrorStats::default, ErrorStats::merge);
    (out, stats)
}
