//! Unit newtypes. Energy accumulates in integer [`MicroJoules`]; [`Joules`] and [`Watts`] are for
//! reporting only, so a unit mix-up (W vs kW, µJ vs J) is a type error rather than a 10^3 surprise.
//!
//! ```
//! use joulecut_energy::{Joules, MicroJoules, Watts};
//! use std::time::Duration;
//!
//! let e = MicroJoules(2_500_000);
//! assert_eq!(e.to_joules(), Joules(2.5));
//! let p = e.to_joules().per(Duration::from_secs(2));
//! assert_eq!(p, Some(Watts(1.25)));
//! assert_eq!(Watts(10.0).over(Duration::from_millis(1500)), MicroJoules(15_000_000));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Energy in microjoules, the unit of Linux powercap counters. Integer, so sums are exact.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroJoules(pub u64);

/// Energy in joules, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Joules(pub f64);

/// Power in watts (joules per second), for reporting and for estimate constants.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watts(pub f64);

impl MicroJoules {
    /// Zero energy.
    pub const ZERO: MicroJoules = MicroJoules(0);

    /// Converts to joules (exact up to f64 rounding).
    pub fn to_joules(self) -> Joules {
        Joules(self.0 as f64 / 1e6)
    }

    /// `self - earlier`, never negative: a cumulative total that went backwards yields zero.
    pub fn since(self, earlier: MicroJoules) -> MicroJoules {
        MicroJoules(self.0.saturating_sub(earlier.0))
    }

    /// Saturating sum.
    pub fn saturating_add(self, other: MicroJoules) -> MicroJoules {
        MicroJoules(self.0.saturating_add(other.0))
    }
}

impl Joules {
    /// Average power over `wall`; `None` for a zero-length interval.
    pub fn per(self, wall: Duration) -> Option<Watts> {
        let s = wall.as_secs_f64();
        (s > 0.0).then(|| Watts(self.0 / s))
    }

    /// Rounds to microjoules; negative, NaN and infinite values become 0 and `u64::MAX` respectively
    /// (saturating, never a panic).
    pub fn to_micro(self) -> MicroJoules {
        MicroJoules(saturating_u64(self.0 * 1e6))
    }
}

impl Watts {
    /// Energy drawn at this constant power over `wall`, in whole microjoules (W × µs = µJ).
    pub fn over(self, wall: Duration) -> MicroJoules {
        MicroJoules(saturating_u64(self.0 * wall.as_micros() as f64))
    }
}

/// f64 → u64 rounding that never panics: NaN and negatives give 0, too-large values give `u64::MAX`.
pub(crate) fn saturating_u64(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        // `as` saturates for finite and infinite values alike.
        x.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate() {
        assert_eq!(Joules(-1.0).to_micro(), MicroJoules(0));
        assert_eq!(Joules(f64::NAN).to_micro(), MicroJoules(0));
        assert_eq!(Joules(f64::INFINITY).to_micro(), MicroJoules(u64::MAX));
        assert_eq!(MicroJoules(5).since(MicroJoules(7)), MicroJoules(0));
        assert_eq!(Joules(1.0).per(Duration::ZERO), None);
    }
}
