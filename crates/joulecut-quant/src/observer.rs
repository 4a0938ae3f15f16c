//! [`RangeObserver`]: activation statistics accumulated over calibration batches, turned into one
//! static int8 grid (see [`crate::calibrate`] for the range methods).
//!
//! ```
//! use joulecut_quant::{Calibration, RangeObserver, Symmetry};
//! let mut obs = RangeObserver::new(Calibration::MinMax, Symmetry::Asymmetric);
//! obs.observe(&[0.0, 1.0, 3.5]);
//! obs.observe(&[2.0, 0.5]);
//! let p = obs.params().unwrap();
//! assert!((p.dequantize(p.quantize(3.5)) - 3.5).abs() <= p.scale / 2.0);
//! ```

use crate::calibrate::{Calibration, range_from};
use crate::grid::{QuantParams, Symmetry};

/// Capacity of a [`RangeObserver`]'s reservoir sample.
pub const OBSERVER_RESERVOIR: usize = 1 << 18;

/// Accumulates activation statistics over calibration batches and turns them into a static grid.
///
/// Min and max are exact over everything observed; percentile and MSE work on a uniform reservoir
/// sample of at most [`OBSERVER_RESERVOIR`] values (deterministic: a fixed-seed generator).
#[derive(Debug, Clone)]
pub struct RangeObserver {
    calibration: Calibration,
    symmetry: Symmetry,
    min: f32,
    max: f32,
    seen: u64,
    reservoir: Vec<f32>,
    rng: u64,
}

impl RangeObserver {
    /// An empty observer.
    pub fn new(calibration: Calibration, symmetry: Symmetry) -> RangeObserver {
        RangeObserver {
            calibration,
            symmetry,
            min: 0.0,
            max: 0.0,
            seen: 0,
            reservoir: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Adds a batch of values. Non-finite values are ignored.
    pub fn observe(&mut self, values: &[f32]) {
        let keep_sample = !matches!(self.calibration, Calibration::MinMax);
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.seen += 1;
            if !keep_sample {
                continue;
            }
            if self.reservoir.len() < OBSERVER_RESERVOIR {
                self.reservoir.push(v);
            } else {
                // xorshift64*: uniform slot in [0, seen).
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % self.seen;
                if (r as usize) < OBSERVER_RESERVOIR {
                    self.reservoir[r as usize] = v;
                }
            }
        }
    }

    /// Number of finite values observed.
    pub fn count(&self) -> u64 {
        self.seen
    }

    /// The calibrated range `[lo, hi]`; `None` before any value was observed.
    pub fn range(&self) -> Option<(f32, f32)> {
        if self.seen == 0 {
            return None;
        }
        Some(range_from(
            &self.reservoir,
            self.min,
            self.max,
            self.calibration,
            self.symmetry,
        ))
    }

    /// The calibrated grid; `None` before any value was observed.
    pub fn params(&self) -> Option<QuantParams> {
        self.range()
            .map(|(lo, hi)| QuantParams::from_range(lo, hi, self.symmetry))
    }
}
