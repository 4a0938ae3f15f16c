//! Calibration: choosing the clipping range `[lo, hi]` that an int8 grid covers.
//!
//! * [`Calibration::MinMax`] — the data's range: no clipping, error ≤ scale/2 everywhere;
//! * [`Calibration::Percentile`] — clip outliers at a percentile of the data (of `|x|` for symmetric);
//! * [`Calibration::Mse`] — the clip that minimises the mean squared quantization error, searched over
//!   shrink factors of the min-max range.
//!
//! For weights, the range comes straight from the tensor ([`calibrate_range`]). For static activation
//! scales, a [`crate::RangeObserver`] accumulates statistics over calibration batches.
//!
//! ```
//! use joulecut_quant::{Calibration, Symmetry, calibrate_range};
//! let (lo, hi) = calibrate_range(&[-0.5, 1.0, 3.0], Calibration::MinMax, Symmetry::Asymmetric);
//! assert_eq!((lo, hi), (-0.5, 3.0));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grid::{QuantParams, Symmetry};

/// How a clipping range is chosen from data.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
#[non_exhaustive]
pub enum Calibration {
    /// The data's min and max.
    #[default]
    MinMax,
    /// Clip at the given percentile, in (0, 100] (e.g. 99.99).
    Percentile {
        /// The percentile.
        percentile: f32,
    },
    /// Minimise the mean squared quantization error over clip factors of the min-max range.
    Mse,
}

/// The percentile used by `--calibrate percentile` when none is given.
pub const DEFAULT_PERCENTILE: f32 = 99.99;

/// Elements a range search looks at per tensor or channel; larger inputs are strided down to this.
pub(crate) const SEARCH_SAMPLE: usize = 1 << 16;

/// Clip factors tried by the MSE search: 1.0, 0.99, ..., 0.20.
const MSE_STEPS: usize = 81;

impl Calibration {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Calibration::Percentile { percentile }
                if !(percentile > 0.0 && percentile <= 100.0) =>
            {
                Err(Error::BadConfig(format!(
                    "percentile {percentile} is outside (0, 100]"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The clipping range `[lo, hi]` (with `lo ≤ 0 ≤ hi`) for `values`. Values must be finite.
pub fn calibrate_range(values: &[f32], calibration: Calibration, symmetry: Symmetry) -> (f32, f32) {
    let (min, max) = min_max(values);
    range_from(values, min, max, calibration, symmetry)
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// [`calibrate_range`] for a channel whose exact `min`/`max` are known and whose strided sample (every
/// `len.div_ceil(SEARCH_SAMPLE)`-th value) is `sample`: the same result, without the whole channel.
pub(crate) fn range_from_sample(
    sample: &[f32],
    min: f32,
    max: f32,
    calibration: Calibration,
    symmetry: Symmetry,
) -> (f32, f32) {
    range_from(sample, min, max, calibration, symmetry)
}

/// Every `len / SEARCH_SAMPLE`-th value (all of them when small).
fn sample(values: &[f32]) -> Vec<f32> {
    let step = values.len().div_ceil(SEARCH_SAMPLE).max(1);
    values.iter().step_by(step).copied().collect()
}

/// The range search shared by [`calibrate_range`], [`range_from_sample`] and the observer: `values`
/// is the data (or a sample of it), `min`/`max` its exact bounds.
pub(crate) fn range_from(
    values: &[f32],
    min: f32,
    max: f32,
    calibration: Calibration,
    symmetry: Symmetry,
) -> (f32, f32) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    match calibration {
        Calibration::MinMax => (min, max),
        Calibration::Percentile { percentile } => {
            let p = f64::from(percentile) / 100.0;
            match symmetry {
                Symmetry::Symmetric => {
                    let mut abs: Vec<f32> = sample(values).iter().map(|v| v.abs()).collect();
                    let a = quantile(&mut abs, p);
                    (-a, a)
                }
                Symmetry::Asymmetric => {
                    let mut s = sample(values);
                    let hi = quantile(&mut s, p);
                    let lo = quantile(&mut s, 1.0 - p);
                    (lo.min(0.0), hi.max(0.0))
                }
            }
        }
        Calibration::Mse => {
            let s = sample(values);
            let mut best = (f64::INFINITY, min, max);
            for i in 0..MSE_STEPS {
                let f = 1.0 - i as f32 * 0.01;
                let (lo, hi) = (min * f, max * f);
                let p = QuantParams::from_range(lo, hi, symmetry);
                let err: f64 = s
                    .iter()
                    .map(|&v| {
                        let d = f64::from(v - p.dequantize(p.quantize(v)));
                        d * d
                    })
                    .sum();
                if err < best.0 {
                    best = (err, lo, hi);
                }
            }
            (best.1, best.2)
        }
    }
}

/// The `p`-quantile (0..=1) of `v` (reorders `v`); 0 for an empty slice.
fn quantile(v: &mut [f32], p: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let idx = ((v.len() - 1) as f64 * p).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(idx.min(v.len() - 1), f32::total_cmp);
    *x
}
