//! When masks are (re)computed during training, and at which sparsity.
//!
//! * [`Schedule::OneShot`]: the final sparsity at one step.
//! * [`Schedule::Iterative`]: `rounds` prune-then-fine-tune rounds, `every` steps apart; after round `r`
//!   (1-based) the sparsity is `1 - (1 - s_f)^(r / rounds)`, so each round removes the same fraction of
//!   the weights that are still alive (Han et al. 2015; the lottery-ticket schedule).
//! * [`Schedule::Agp`]: automated gradual pruning (Zhu & Gupta 2017),
//!   `s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3`, with masks updated every `frequency`
//!   (`dt`) steps from `start` (`t0`) to `end` (`t0 + n * dt`).
//!
//! Steps are the caller's optimizer-step counter. The target is piecewise constant: between two update
//! steps it stays at the value of the last update, and before the first update it is 0.
//!
//! ```
//! use joulecut_prune::Schedule;
//! let agp = Schedule::agp(0.0, 0, 100, 10)?;
//! assert_eq!(agp.sparsity_at(0.9, 0), 0.0);
//! assert!((agp.sparsity_at(0.9, 50) - 0.9 * (1.0 - 0.5f64.powi(3))).abs() < 1e-12);
//! assert_eq!(agp.sparsity_at(0.9, 1000), 0.9);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A pruning schedule (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Schedule {
    /// Prune to the final sparsity at `at_step`.
    OneShot {
        /// The step of the single update.
        at_step: usize,
    },
    /// `rounds` updates at `start`, `start + every`, ...; geometric sparsity steps.
    Iterative {
        /// Number of prune rounds (>= 1).
        rounds: usize,
        /// Step of the first round.
        start: usize,
        /// Steps of fine-tuning between rounds (>= 1 when `rounds > 1`).
        every: usize,
    },
    /// Zhu & Gupta's cubic gradual schedule.
    Agp {
        /// Sparsity at `start` (`s_i`), in `[0, s_f]`.
        initial_sparsity: f64,
        /// First update step (`t0`).
        start: usize,
        /// Last update step (`t0 + n * dt`); the final sparsity holds from here on.
        end: usize,
        /// Steps between updates (`dt`, >= 1).
        frequency: usize,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::OneShot { at_step: 0 }
    }
}

impl Schedule {
    /// One-shot pruning at step 0.
    pub fn one_shot() -> Self {
        Schedule::default()
    }

    /// An iterative schedule; fails on `rounds == 0`, or `every == 0` with several rounds.
    pub fn iterative(rounds: usize, start: usize, every: usize) -> Result<Self> {
        let s = Schedule::Iterative {
            rounds,
            start,
            every,
        };
        s.validate()?;
        Ok(s)
    }

    /// An AGP schedule; fails unless `0 <= initial < 1`, `start <= end` and `frequency >= 1`.
    pub fn agp(initial_sparsity: f64, start: usize, end: usize, frequency: usize) -> Result<Self> {
        let s = Schedule::Agp {
            initial_sparsity,
            start,
            end,
            frequency,
        };
        s.validate()?;
        Ok(s)
    }

    /// An AGP schedule over a part of a training run given in epochs: pruning starts at epoch
    /// `from` and reaches the target at epoch `to` (fractional epochs are fine, `0.0` is the first
    /// step), with `updates` mask updates in between. The step arithmetic is done here, from the
    /// run's `steps_per_epoch`, so a library user never counts steps by hand.
    ///
    /// ```
    /// use joulecut_prune::Schedule;
    /// // 469 steps an epoch (60k samples, batch 128): prune over epochs 1 to 3, 20 updates
    /// let s = Schedule::agp_epochs(0.0, 1.0..=3.0, 469, 20)?;
    /// assert_eq!(s, Schedule::Agp { initial_sparsity: 0.0, start: 469, end: 1407, frequency: 47 });
    /// # Ok::<(), joulecut_prune::Error>(())
    /// ```
    pub fn agp_epochs(
        initial_sparsity: f64,
        epochs: std::ops::RangeInclusive<f64>,
        steps_per_epoch: usize,
        updates: usize,
    ) -> Result<Self> {
        let (from, to) = (*epochs.start(), *epochs.end());
        if !(from.is_finite() && to.is_finite() && 0.0 <= from && from <= to) {
            return Err(Error::InvalidSchedule {
                reason: format!("AGP epochs {from}..={to}: need 0 <= from <= to"),
            });
        }
        if steps_per_epoch == 0 || updates == 0 {
            return Err(Error::InvalidSchedule {
                reason: "AGP over epochs needs at least one step per epoch and one update".into(),
            });
        }
        let at = |e: f64| (e * steps_per_epoch as f64).round() as usize;
        let (start, end) = (at(from), at(to));
        Self::agp(
            initial_sparsity,
            start,
            end,
            (end - start).div_ceil(updates).max(1),
        )
    }

    /// An AGP schedule over the fraction `from..=to` of a run of `total_steps` (e.g. `0.0..=0.5`:
    /// the first half), with `updates` mask updates.
    ///
    /// ```
    /// use joulecut_prune::Schedule;
    /// let s = Schedule::agp_fraction(0.0, 0.0..=0.5, 1000, 10)?;
    /// assert_eq!(s, Schedule::Agp { initial_sparsity: 0.0, start: 0, end: 500, frequency: 50 });
    /// # Ok::<(), joulecut_prune::Error>(())
    /// ```
    pub fn agp_fraction(
        initial_sparsity: f64,
        part: std::ops::RangeInclusive<f64>,
        total_steps: usize,
        updates: usize,
    ) -> Result<Self> {
        let (from, to) = (*part.start(), *part.end());
        if !(0.0 <= from && from <= to && to <= 1.0) {
            return Err(Error::InvalidSchedule {
                reason: format!("AGP fraction {from}..={to} of the run: need 0 <= from <= to <= 1"),
            });
        }
        Self::agp_epochs(initial_sparsity, part, total_steps, updates)
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidSchedule { reason });
        match *self {
            Schedule::OneShot { .. } => Ok(()),
            Schedule::Iterative { rounds, every, .. } => {
                if rounds == 0 {
                    bad("iterative pruning needs at least one round".into())
                } else if rounds > 1 && every == 0 {
                    bad("iterative rounds must be at least one step apart".into())
                } else {
                    Ok(())
                }
            }
            Schedule::Agp {
                initial_sparsity,
                start,
                end,
                frequency,
            } => {
                if !(0.0..1.0).contains(&initial_sparsity) {
                    bad(format!(
                        "AGP initial sparsity {initial_sparsity} is outside [0, 1)"
                    ))
                } else if start > end {
                    bad(format!(
                        "AGP start step {start} is after its end step {end}"
                    ))
                } else if frequency == 0 {
                    bad("AGP frequency must be at least 1 step".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// How many updates have happened by `step` (inclusive); masks change exactly when this changes.
    pub fn updates_by(&self, step: usize) -> usize {
        match *self {
            Schedule::OneShot { at_step } => usize::from(step >= at_step),
            Schedule::Iterative {
                rounds,
                start,
                every,
            } => {
                if step < start {
                    0
                } else {
                    (step - start)
                        .checked_div(every)
                        .map_or(rounds, |r| (r + 1).min(rounds))
                }
            }
            Schedule::Agp {
                start,
                end,
                frequency,
                ..
            } => {
                if step < start {
                    0
                } else {
                    let regular = (step.min(end) - start) / frequency + 1;
                    // `end` is always an update, even when `end - start` is not a multiple of `frequency`.
                    regular + usize::from(step >= end && (end - start) % frequency != 0)
                }
            }
        }
    }

    /// The step of the last update at or before `step` (`None` before the first).
    fn last_update(&self, step: usize) -> Option<usize> {
        match *self {
            Schedule::OneShot { at_step } => (step >= at_step).then_some(at_step),
            Schedule::Iterative { start, every, .. } => {
                let u = self.updates_by(step);
                (u > 0).then(|| start + (u - 1) * every)
            }
            Schedule::Agp {
                start,
                end,
                frequency,
                ..
            } => {
                if step < start {
                    None
                } else if step >= end {
                    Some(end)
                } else {
                    Some(start + (step - start) / frequency * frequency)
                }
            }
        }
    }

    /// The step from which the final sparsity holds.
    pub fn end_step(&self) -> usize {
        match *self {
            Schedule::OneShot { at_step } => at_step,
            Schedule::Iterative {
                rounds,
                start,
                every,
            } => start + (rounds - 1) * every,
            Schedule::Agp { end, .. } => end,
        }
    }

    /// The target sparsity at `step` for a tensor whose final sparsity is `final_sparsity`.
    pub fn sparsity_at(&self, final_sparsity: f64, step: usize) -> f64 {
        let Some(t) = self.last_update(step) else {
            return 0.0;
        };
        match *self {
            Schedule::OneShot { .. } => final_sparsity,
            Schedule::Iterative { rounds, .. } => {
                let r = self.updates_by(step) as f64;
                1.0 - (1.0 - final_sparsity).powf(r / rounds as f64)
            }
            Schedule::Agp {
                initial_sparsity,
                start,
                end,
                ..
            } => {
                if end == start {
                    return final_sparsity;
                }
                let initial = initial_sparsity.min(final_sparsity);
                let progress = (t - start) as f64 / (end - start) as f64;
                final_sparsity + (initial - final_sparsity) * (1.0 - progress).powi(3)
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn agp_in_epochs_and_fractions_refuse_what_makes_no_sense() {
        let s = Schedule::agp_epochs(0.0, 0.5..=2.0, 100, 3).unwrap();
        assert_eq!(s.sparsity_at(0.8, 0), 0.0);
        assert_eq!(s.sparsity_at(0.8, 200), 0.8);
        assert!(s.sparsity_at(0.8, 100) > 0.0 && s.sparsity_at(0.8, 100) < 0.8);
        for (from, to) in [
            (2.0, 1.0),
            (f64::NAN, 1.0),
            (-1.0, 1.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(Schedule::agp_epochs(0.0, from..=to, 100, 3).is_err());
        }
        assert!(Schedule::agp_epochs(0.0, 0.0..=1.0, 0, 3).is_err());
        assert!(Schedule::agp_epochs(0.0, 0.0..=1.0, 100, 0).is_err());
        assert!(Schedule::agp_fraction(0.0, 0.5..=1.5, 100, 3).is_err());
        // an empty span prunes at once
        let s = Schedule::agp_fraction(0.0, 0.5..=0.5, 100, 3).unwrap();
        assert_eq!(s.sparsity_at(0.8, 50), 0.8);
    }

    use super::*;

    #[test]
    fn agp_is_monotone_piecewise_constant_and_reaches_the_target() {
        let s = Schedule::agp(0.1, 10, 95, 10).unwrap();
        assert_eq!(s.sparsity_at(0.9, 9), 0.0);
        assert!((s.sparsity_at(0.9, 10) - 0.1).abs() < 1e-12);
        assert_eq!(s.sparsity_at(0.9, 11), s.sparsity_at(0.9, 10));
        let mut last = 0.0;
        for t in 0..200 {
            let v = s.sparsity_at(0.9, t);
            assert!(v >= last);
            last = v;
        }
        assert_eq!(s.sparsity_at(0.9, 95), 0.9);
        // 10, 20, ..., 90, then 95.
        assert_eq!(s.updates_by(94), 9);
        assert_eq!(s.updates_by(95), 10);
        assert_eq!(s.updates_by(1000), 10);
    }

    #[test]
    fn iterative_is_geometric() {
        let s = Schedule::iterative(3, 0, 100).unwrap();
        assert!((s.sparsity_at(0.875, 0) - 0.5).abs() < 1e-12);
        assert!((s.sparsity_at(0.875, 150) - 0.75).abs() < 1e-12);
        assert!((s.sparsity_at(0.875, 200) - 0.875).abs() < 1e-12);
        assert_eq!(s.updates_by(10_000), 3);
    }

    #[test]
    fn bad_schedules_are_rejected() {
        assert!(Schedule::agp(0.0, 10, 5, 1).is_err());
        assert!(Schedule::agp(0.0, 0, 5, 0).is_err());
        assert!(Schedule::agp(1.0, 0, 5, 1).is_err());
        assert!(Schedule::iterative(0, 0, 1).is_err());
    }
}
