//! [`QuantizePass`]: the quantize or cast of a whole (possibly sharded) checkpoint, tensor by tensor
//! through `joulecut_checkpoint::stream`, in bounded memory. Dense float tensors stream from the
//! mmap straight into stored bytes ([`crate::quantize_values`], [`crate::cast_values`]); packed
//! sparse ones are converted in memory.
//!
//! ```
//! use joulecut_checkpoint::{Selection, Transform};
//! use joulecut_quant::{Int8Config, QuantizePass, Target};
//! fn quantize_pass() -> impl Transform {
//!     // Every float tensor the default policy selects (weights of rank >= 2) becomes int8.
//!     let selection = Selection::new(&[], &[]).unwrap();
//!     QuantizePass { target: Target::Int8(Int8Config::default()), selection, in_scales: Default::default() }
//! }
//! let _pass = quantize_pass();
//! ```

use std::collections::BTreeMap;

use joulecut_checkpoint::{
    EntrySpec, FloatType, Plan, Selection, TensorData, TensorEncoding, TensorRef, Transform, numel,
};
use serde::Serialize;

use crate::error::Error;
use crate::grid::Symmetry;
use crate::interop::{cast_data, quantize_data};
use crate::scheme::{Int8Config, channel_axis};
use crate::stats::ErrorStats;
use crate::stream::quantize_values;
use crate::tensor::quantize_smoothed;

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
    /// int8 only: dense 2-D weights to store smoothed (tensor name → input scales, one per input
    /// column; see [`quantize_smoothed`]), e.g. from a transformer's calibration.
    pub in_scales: BTreeMap<String, Vec<f32>>,
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
    /// Packed tensors, and smoothed ones (small 2-D weights), are produced in memory; dense ones
    /// stream.
    fn in_memory(&self, enc: Option<&TensorEncoding>, name: &str) -> bool {
        enc.is_some()
            || (matches!(self.target, Target::Int8(_)) && self.in_scales.contains_key(name))
    }

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
        let smooth = self.in_scales.get(t.name);
        let out = match (self.target, smooth, &data) {
            (Target::Int8(cfg), Some(f), TensorData::Dense(d)) => {
                let mut q = quantize_smoothed(t.name, &d.to_f32(), &d.shape, f, &cfg)?;
                q.orig_dtype = d.dtype;
                TensorData::Int8(q)
            }
            (Target::Int8(_), Some(_), other) => {
                return Err(Error::BadParams {
                    name: t.name.to_string(),
                    reason: format!(
                        "is stored as {} and cannot be smoothed (only dense weights can)",
                        other.encoding_name()
                    ),
                }
                .into());
            }
            (Target::Int8(cfg), None, _) => quantize_data(t.name, &data, &cfg)?,
            (Target::Half(to), _, _) => cast_data(t.name, &data, to)?,
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
            return Err(joulecut_checkpoint::Error::NotFloat {
                name: t.name.to_string(),
                dtype: t.stored_dtype().unwrap_or("?").to_string(),
                action: "quantization",
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
        // packed tensors' parts are known once converted; a dense one's (smoothed too) from its shape
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
                let axis = channel_axis(&shape, cfg.granularity);
                let c = axis.map_or(1, |a| shape[a]);
                let zero_point = cfg.symmetry == Symmetry::Asymmetric;
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
                // in the order `encode_tensor` writes a smoothed tensor's parts
                let in_scale = self.in_scales.contains_key(t.name);
                if in_scale {
                    entries.push(EntrySpec::new(
                        format!("{}:in_scale", t.name),
                        "F32",
                        vec![shape.last().copied().unwrap_or(0)],
                    ));
                }
                Plan::Replace {
                    entries,
                    encoding: Some(TensorEncoding::Int8 {
                        axis,
                        zero_point,
                        dtype: orig,
                        in_scale,
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
        if self.in_memory(enc, t.name) {
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
                crate::tensor::check_castable_values(t.name, &v, to)?;
                let (bytes, stats) = crate::cast::cast_values(&v, to);
                Ok((vec![bytes], report(stats, "dense")))
            }
        }
    }
}
