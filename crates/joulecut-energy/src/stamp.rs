//! When a figure was taken: [`UtcTime`] prints RFC 3339 UTC (`2026-12-07T09:52:12.345Z`), and
//! [`new_run_id`] names one run (`20261207T095212Z-3fa2c1d0`), so rows of reports, energy CSVs and
//! energy cards join with other tools' logs. No calendar crate: the Unix time is converted with
//! the civil-from-days algorithm (proleptic Gregorian, UTC has no leap-second table here).
//!
//! ```
//! use joulecut_energy::UtcTime;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let t = UtcTime::from_system(UNIX_EPOCH + Duration::from_millis(951_782_400_123));
//! assert_eq!(t.to_string(), "2000-02-29T00:00:00.123Z");
//! assert_eq!(t.compact(), "20000229T000000Z");
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant with millisecond precision; `Display` is RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime {
    /// Milliseconds since the Unix epoch (negative before 1970).
    unix_millis: i64,
}

impl UtcTime {
    /// Now.
    pub fn now() -> UtcTime {
        UtcTime::from_system(SystemTime::now())
    }

    /// The instant `t`.
    pub fn from_system(t: SystemTime) -> UtcTime {
        let unix_millis = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        UtcTime { unix_millis }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// `(year, month, day, hour, minute, second, millisecond)`.
    fn fields(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let ms = self.unix_millis.rem_euclid(1000) as u32;
        let secs = self.unix_millis.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, ms)
    }

    /// `YYYYMMDDTHHMMSSZ`: sortable and safe in file names.
    pub fn compact(self) -> String {
        let (y, mo, d, h, mi, s, _) = self.fields();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, ms) = self.fields();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fresh run id: the start time (UTC, compact) and 32 random bits, e.g.
/// `20261207T095212Z-3fa2c1d0`. Sorts by time; two runs started in the same second differ.
pub fn new_run_id() -> String {
    // std's RandomState is seeded from the OS; mixing in the pid and the clock keeps ids of
    // processes started together apart even where it is not.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{:08x}", UtcTime::now().compact(), h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: i64) -> String {
        UtcTime { unix_millis: ms }.to_string()
    }

    #[test]
    fn known_dates() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59.999Z");
        // 2024-02-29 (leap day) 12:34:56.789
        assert_eq!(at(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(at(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799_000), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_last() {
        // Walk day by day from 1900 to 2300: the date must advance by exactly one calendar day.
        let dim = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(-25_567); // 1900-01-01
        assert_eq!(prev, (1900, 1, 1));
        for z in -25_566..120_000 {
            let (y, m, d) = civil_from_days(z);
            let (py, pm, pd) = prev;
            let want = if pd < dim(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), want, "day {z}");
            prev = (y, m, d);
        }
    }

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261207T095212Z-3fa2c1d0".len());
        let now = UtcTime::now();
        assert!(now >= UtcTime::from_system(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        assert!(a.starts_with(&now.compact()[..8]), "{a}");
    }
}
