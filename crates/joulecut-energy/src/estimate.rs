//! The labelled estimate used where no counter can be read (virtual machines, locked-down hosts).
//!
//! Model, with its constants named in every domain's `source`:
//!
//! * **cpu** = CPU time × watts per busy core. CPU time is user + system time of the process (all
//!   threads, `getrusage(RUSAGE_SELF)`) or of a metered child (`wait4`). Default
//!   [`DEFAULT_WATTS_PER_CORE`] = 10 W: a busy modern x86 core including its share of uncore,
//!   between server parts (TDP/cores ≈ 3–8 W) and desktop cores at turbo (15–20 W).
//! * **memory** = resident set × watts per GiB × wall time. Default
//!   [`DEFAULT_MEMORY_WATTS_PER_GIB`] = 0.375 W/GiB (3 W per 8 GiB, the DRAM figure CodeCarbon
//!   used). In-process windows use the mean of the RSS at the two edges; a child uses its peak RSS
//!   (an upper bound).
//!
//! Idle power is not included: the estimate is the marginal energy of the work, so it is already
//! "net" of the machine's baseline. Override the constants with `JOULECUT_CPU_WATTS_PER_CORE` and
//! `JOULECUT_MEMORY_WATTS_PER_GIB` (see [`MeterConfig::from_env`](crate::MeterConfig::from_env)).
//!
//! ```
//! use joulecut_energy::estimate::EstimateModel;
//! use std::time::Duration;
//!
//! let m = EstimateModel::default();
//! assert_eq!(m.cpu_source(), "cpu-time x 10 W/core");
//! // One CPU-second at 10 W/core is 10 J.
//! assert_eq!(m.cpu_energy(Duration::from_secs(1)).0, 10_000_000);
//! ```

use std::time::Duration;

use serde::Serialize;

use crate::units::{MicroJoules, Watts, saturating_u64};

/// Default watts per busy core.
pub const DEFAULT_WATTS_PER_CORE: Watts = Watts(10.0);
/// Default DRAM watts per GiB resident.
pub const DEFAULT_MEMORY_WATTS_PER_GIB: Watts = Watts(0.375);

/// Probe name in reports.
pub const NAME: &str = "cpu-time-estimate";

const GIB: f64 = (1u64 << 30) as f64;

/// Constants of the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EstimateModel {
    /// Power of one fully busy core.
    pub watts_per_core: Watts,
    /// Power of one GiB of resident memory.
    pub memory_watts_per_gib: Watts,
}

impl Default for EstimateModel {
    fn default() -> Self {
        EstimateModel {
            watts_per_core: DEFAULT_WATTS_PER_CORE,
            memory_watts_per_gib: DEFAULT_MEMORY_WATTS_PER_GIB,
        }
    }
}

impl EstimateModel {
    /// CPU energy for `cpu_time` of busy CPU.
    pub fn cpu_energy(&self, cpu_time: Duration) -> MicroJoules {
        self.watts_per_core.over(cpu_time)
    }

    /// Memory energy for `rss_bytes` resident during `wall`.
    pub fn memory_energy(&self, rss_bytes: u64, wall: Duration) -> MicroJoules {
        let watts = self.memory_watts_per_gib.0 * rss_bytes as f64 / GIB;
        MicroJoules(saturating_u64(watts * wall.as_micros() as f64))
    }

    /// The `source` of the `cpu` domain.
    pub fn cpu_source(&self) -> String {
        format!("cpu-time x {} W/core", self.watts_per_core.0)
    }

    /// The `source` of the `memory` domain: `rss x ...`, `rss (peak) x ...` for a child's peak
    /// resident set (one name, the statistic in parentheses).
    pub fn memory_source(&self, peak: bool) -> String {
        let rss = if peak { "rss (peak)" } else { "rss" };
        format!("{rss} x {} W/GiB x wall-time", self.memory_watts_per_gib.0)
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// User + system CPU time in a `rusage`.
pub(crate) fn rusage_cpu(ru: &libc::rusage) -> Duration {
    timeval(ru.ru_utime) + timeval(ru.ru_stime)
}

/// Peak RSS in bytes from a `rusage` (Linux reports KiB).
pub(crate) fn rusage_peak_rss(ru: &libc::rusage) -> u64 {
    u64::try_from(ru.ru_maxrss)
        .unwrap_or(0)
        .saturating_mul(1024)
}

/// CPU time (user + system, all threads) of this process so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage owned by this frame.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc == 0 {
        rusage_cpu(&ru)
    } else {
        Duration::ZERO
    }
}

/// Resident set size of this process in bytes (`/proc/self/statm`), 0 when unknown.
pub fn process_rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.saturating_mul(u64::try_from(page).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_arithmetic() {
        let m = EstimateModel {
            watts_per_core: Watts(12.5),
            memory_watts_per_gib: Watts(0.5),
        };
        assert_eq!(
            m.cpu_energy(Duration::from_millis(200)),
            MicroJoules(2_500_000)
        );
        assert_eq!(
            m.memory_energy(1 << 30, Duration::from_secs(2)),
            MicroJoules(1_000_000)
        );
        assert_eq!(m.cpu_source(), "cpu-time x 12.5 W/core");
        assert_eq!(m.memory_source(true), "rss (peak) x 0.5 W/GiB x wall-time");
        assert_eq!(m.memory_source(false), "rss x 0.5 W/GiB x wall-time");
    }

    #[test]
    fn process_readings_are_sane() {
        let a = process_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time() >= a);
        assert!(process_rss_bytes() > 0);
    }
}
