//! Cumulative counters: the one place where raw hardware readings become a monotonic `u64` total.
//!
//! [`wrap_delta`] is the crate's only wraparound routine. [`WrappingCounter`] applies it to a stream
//! of raw readings and keeps a `u64` total plus counts of the events it had to correct (wraps,
//! resets, ambiguous gaps). A window is the difference of two totals, so nested and overlapping
//! windows are consistent with each other, and deltas are never negative.
//!
//! ```
//! use joulecut_energy::counter::{wrap_delta, WrappingCounter};
//! use std::time::Duration;
//!
//! // A counter with range 0..1000 µJ that went from 900 to 100 wrapped once: 200 µJ.
//! assert_eq!(wrap_delta(900, 100, 1000), 200);
//!
//! let mut c = WrappingCounter::new(900, Some(1000), 1e9);
//! c.observe(100, Duration::from_millis(10));
//! assert_eq!(c.total().0, 200);
//! assert_eq!(c.events().wraps, 1);
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::units::MicroJoules;

/// Energy between two raw readings of a counter that counts `0..modulus` and then starts again at 0.
///
/// Never negative and never panics: `now >= prev` is a plain difference; `now < prev` is one wrap,
/// `modulus - prev + now` (saturating, so a `prev` beyond the modulus, i.e. garbage, yields `now`).
pub fn wrap_delta(prev: u64, now: u64, modulus: u64) -> u64 {
    if now >= prev {
        now - prev
    } else {
        modulus.saturating_sub(prev).saturating_add(now)
    }
}

/// Corrections a counter has made so far; windows report the difference between their edges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterEvents {
    /// Wraps corrected with the known range.
    pub wraps: u64,
    /// Decreases taken to be resets (the counter restarted from zero).
    pub resets: u64,
    /// Readings after which the energy may be wrong: a gap long enough to hide a second wrap, or a
    /// decrease with no known range.
    pub ambiguous: u64,
    /// Readings that failed (I/O error, garbage); the total stays at its last good value.
    pub read_errors: u64,
}

impl CounterEvents {
    /// Field-wise `self - earlier` (saturating).
    pub fn since(&self, earlier: &CounterEvents) -> CounterEvents {
        CounterEvents {
            wraps: self.wraps.saturating_sub(earlier.wraps),
            resets: self.resets.saturating_sub(earlier.resets),
            ambiguous: self.ambiguous.saturating_sub(earlier.ambiguous),
            read_errors: self.read_errors.saturating_sub(earlier.read_errors),
        }
    }
}

/// A wrapping hardware counter folded into a monotonic `u64` microjoule total.
#[derive(Debug, Clone)]
pub struct WrappingCounter {
    last_raw: u64,
    modulus: Option<u64>,
    max_plausible_watts: f64,
    total: u64,
    events: CounterEvents,
}

impl WrappingCounter {
    /// Starts at raw reading `first`. `modulus` is the counter's range (`max_energy_range_uj + 1`),
    /// `None` when unknown. `max_plausible_watts` bounds the power a wrap may imply: a decrease
    /// implying more is taken as a reset, and a gap in which that power could wrap the counter
    /// once more is flagged ambiguous.
    pub fn new(first: u64, modulus: Option<u64>, max_plausible_watts: f64) -> Self {
        WrappingCounter {
            last_raw: first,
            modulus,
            max_plausible_watts,
            total: 0,
            events: CounterEvents::default(),
        }
    }

    /// Folds in a raw reading taken `elapsed` after the previous one.
    pub fn observe(&mut self, raw: u64, elapsed: Duration) {
        let prev = self.last_raw;
        self.last_raw = raw;
        // Most energy the domain can plausibly have used in the gap (W × µs = µJ).
        let budget = self.max_plausible_watts * elapsed.as_micros() as f64;
        let delta = match self.modulus {
            Some(m) => {
                if budget >= m as f64 {
                    // Enough time for a full extra wrap to pass unseen.
                    self.events.ambiguous += 1;
                }
                if raw >= prev {
                    raw - prev
                } else {
                    let wrapped = wrap_delta(prev, raw, m);
                    if prev >= m || wrapped as f64 > budget {
                        // Implausible as a wrap: the counter restarted from 0.
                        self.events.resets += 1;
                        raw
                    } else {
                        self.events.wraps += 1;
                        wrapped
                    }
                }
            }
            None => {
                if raw >= prev {
                    raw - prev
                } else {
                    // No range to correct with: count what we can see since 0, and say so.
                    self.events.resets += 1;
                    self.events.ambiguous += 1;
                    raw
                }
            }
        };
        self.total = self.total.saturating_add(delta);
    }

    /// Records a failed reading: the total is unchanged.
    pub fn observe_error(&mut self) {
        self.events.read_errors += 1;
    }

    /// Energy accumulated since construction.
    pub fn total(&self) -> MicroJoules {
        MicroJoules(self.total)
    }

    /// Corrections so far.
    pub fn events(&self) -> CounterEvents {
        self.events
    }

    /// The counter's range, when known.
    pub fn modulus(&self) -> Option<u64> {
        self.modulus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn plain_forward() {
        let mut c = WrappingCounter::new(10, Some(1_000_000), 500.0);
        c.observe(110, MS);
        c.observe(110, MS);
        assert_eq!(c.total(), MicroJoules(100));
        assert_eq!(c.events(), CounterEvents::default());
    }

    #[test]
    fn single_wrap() {
        // 262 kJ range (61 µJ units), 400 W for 1 s near the top.
        let m = 262_143_328_851;
        let mut c = WrappingCounter::new(m - 100_000, Some(m), 1000.0);
        c.observe(300_000, Duration::from_secs(1));
        assert_eq!(c.total(), MicroJoules(400_000));
        assert_eq!(c.events().wraps, 1);
        assert_eq!(c.events().resets, 0);
    }

    #[test]
    fn reset_is_not_a_wrap() {
        let m = 262_143_328_851;
        let mut c = WrappingCounter::new(50_000_000, Some(m), 1000.0);
        c.observe(1_000, Duration::from_secs(1));
        assert_eq!(c.total(), MicroJoules(1_000));
        assert_eq!(c.events().resets, 1);
        assert_eq!(c.events().wraps, 0);
    }

    #[test]
    fn unknown_range_decrease_is_flagged() {
        let mut c = WrappingCounter::new(500, None, 1000.0);
        c.observe(20, MS);
        assert_eq!(c.total(), MicroJoules(20));
        assert_eq!(c.events().ambiguous, 1);
    }

    #[test]
    fn long_gap_is_ambiguous() {
        let mut c = WrappingCounter::new(0, Some(1_000_000), 1000.0);
        c.observe(10, Duration::from_secs(2)); // 1000 W × 2 s = 2 J > 1 J range
        assert_eq!(c.events().ambiguous, 1);
    }

    #[test]
    fn garbage_prev_beyond_modulus_never_panics() {
        assert_eq!(wrap_delta(u64::MAX, 0, 10), 0);
        assert_eq!(wrap_delta(5, 3, 0), 3);
        let mut c = WrappingCounter::new(u64::MAX, Some(10), f64::NAN);
        c.observe(3, Duration::ZERO);
        c.observe(u64::MAX, Duration::MAX);
        assert!(c.total().0 >= 3);
    }
}
