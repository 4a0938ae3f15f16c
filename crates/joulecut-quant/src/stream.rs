//! The streaming int8 pass: [`quantize_values`] quantizes a tensor read through a checkpoint
//! [`Values`] view straight into its stored bytes ([`Int8Bytes`]), in parallel and without
//! materialising it as f32, measuring the error on the way. Bit-identical to
//! [`crate::quantize_tensor`] on the same values.

use joulecut_checkpoint::{BLOCK, Values};

use crate::block::{quantize_block, scan_block};
use crate::calibrate::{Calibration, SEARCH_SAMPLE, range_from_sample};
use crate::error::{Error, Result};
use crate::grid::{QuantParams, Symmetry};
use crate::scheme::{Int8Config, channel_axis};
use crate::stats::ErrorStats;

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

/// The error for the first non-finite element, `index`, with its value read back.
fn non_finite(name: &str, v: &Values<'_>, index: usize) -> Error {
    let mut x = [0f32];
    v.read(index, &mut x);
    Error::NonFinite {
        name: name.to_string(),
        index,
        value: x[0],
    }
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
        return Err(non_finite(name, v, index));
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
/// [`crate::quantize_tensor`] on the same values, and the error is measured on the way.
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
        return Err(non_finite(name, v, index));
    }
    // Ranges: min-max directly; percentile and MSE on the same strided sample as `calibrate_range`.
    let params: Vec<QuantParams> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = match cfg.calibration {
                Calibration::MinMax => (mins[c], maxs[c]),
                cal => {
                    let len = run;
                    let step = len.div_ceil(SEARCH_SAMPLE).max(1);
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
                    range_from_sample(&sample, mins[c], maxs[c], cal, cfg.symmetry)
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
mod tests {
    use super::*;
    use crate::scheme::ScaleGranularity;
    use crate::tensor::quantize_tensor;
    use joulecut_checkpoint::FloatType;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut r = joulecut_testkit::XorShift32::new(seed);
        (0..n)
            .map(|i| {
                let v = (r.next_f32() - 0.3) * 2.0;
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
                for granularity in [ScaleGranularity::Tensor, ScaleGranularity::Channel] {
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
