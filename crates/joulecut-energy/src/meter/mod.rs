//! The [`Meter`]: picks probes, takes readings at window edges, and turns them into
//! [`Measurement`]s.
//!
//! Probe order: `rapl-perf` (wrap-free) → `rapl-powercap` → labelled CPU-time estimate for the CPU;
//! `nvml` for GPUs. Every probe not used is listed in [`Meter::skipped`] with its reason. Windows are
//! RAII guards ([`Meter::window`], [`Window::window`] to nest) or a closure ([`Meter::measure`]);
//! an optional sync hook (e.g. a CUDA synchronize) runs before both edges.
//!
//! Metering a training loop's epochs:
//!
//! ```
//! use joulecut_energy::{Meter, MeterConfig};
//!
//! let meter = Meter::auto(MeterConfig::default().with_sync_hook(|| {
//!     // e.g. device.synchronize() for CUDA, so queued work lands in the right window
//! }))
//! .unwrap();
//! let train = meter.window("train");
//! for epoch in 0..3 {
//!     let w = train.window(&format!("epoch-{epoch}"));
//!     let loss: f64 = (0..200_000).map(|i| (i as f64).sin().abs()).sum(); // the "training"
//!     std::hint::black_box(loss);
//!     let m = w.finish();
//!     eprintln!("{}: {:.3} J ({:?}) in {:.3} s", m.label, m.total().0, m.provenance, m.wall.as_secs_f64());
//!     assert_eq!(m.label, format!("train/epoch-{epoch}"));
//! }
//! let total = train.finish();
//! println!("{}", serde_json::to_string(&total).unwrap());
//! ```
//!
//! Submodules, one concern each: `config` (settings and `JOULECUT_*` overrides), `host`
//! (hypervisor detection), `auto` (probe selection), `guard` (wrap guard thread), `edges`
//! (snapshots and their differences), `window` (RAII windows), `child` (metering a command),
//! `interval` (a command interval by interval).

mod auto;
mod child;
mod config;
mod edges;
mod guard;
mod host;
mod interval;
mod window;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::estimate::EstimateModel;
use crate::measurement::{Baseline, Measurement, QualityFlag};
use crate::probe::{DomainInfo, Probe, ProbeInfo, ProbeSkip};
use crate::provenance::Provenance;
use crate::units::MicroJoules;
use guard::WrapGuard;

pub use child::{ChildStatus, CommandOutcome};
pub use config::{
    DEFAULT_MAX_DOMAIN_WATTS, DEFAULT_POWERCAP_ROOT, MeterConfig, SyncHook, parse_watts,
};
pub use host::{cpu_model, detect_hypervisor, hostname};
pub use interval::Interval;
pub use window::Window;

/// A window of at least this many update periods is long enough to trust ([`Meter::min_window`]).
pub const MIN_WINDOW_PERIODS: u32 = 10;
/// A measured domain that reads exactly 0 J over at least this many update periods is flagged
/// [`QualityFlag::CounterStalled`].
pub const STALL_PERIODS: u32 = 10;

/// Which probes a meter uses and which it skipped; serialisable for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Probes in use.
    pub probes: Vec<ProbeInfo>,
    /// Probes not used, with reasons.
    pub skipped: Vec<ProbeSkip>,
    /// The hypervisor, when running virtualised.
    pub hypervisor: Option<String>,
}

/// Energy meter. `Send + Sync`: share it (`&Meter` or `Arc<Meter>`) across threads; windows may
/// nest and overlap.
pub struct Meter {
    probes: Vec<Arc<dyn Probe>>,
    /// Flattened domain infos of `probes`, in reading order.
    domains: Vec<DomainInfo>,
    estimate: EstimateModel,
    estimate_cpu: bool,
    estimate_memory: bool,
    report: ProbeReport,
    meter_flags: BTreeSet<QualityFlag>,
    sync_hook: Option<SyncHook>,
    baseline: Mutex<Option<Baseline>>,
    dropped: Mutex<Vec<Measurement>>,
    guard: Option<WrapGuard>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("report", &self.report)
            .field("estimate", &self.estimate)
            .field("guard_period", &self.guard.as_ref().map(|g| g.period))
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// Probes in use (the estimate appears as `cpu-time-estimate`).
    pub fn probes(&self) -> &[ProbeInfo] {
        &self.report.probes
    }

    /// Probes not used, with reasons.
    pub fn skipped(&self) -> &[ProbeSkip] {
        &self.report.skipped
    }

    /// Probes used and skipped, serialisable.
    pub fn report(&self) -> &ProbeReport {
        &self.report
    }

    /// True when nothing is measured: every joule is an estimate.
    pub fn is_estimate_only(&self) -> bool {
        self.probes.is_empty()
    }

    /// The shortest window whose measured joules can be trusted: [`MIN_WINDOW_PERIODS`] update
    /// periods of the slowest measured domain (1 s with NVML's ~100 ms counter, 10 ms with RAPL).
    /// Zero when nothing is measured (an estimate from CPU time has no update period), so
    /// CPU-only runs are not lengthened. Callers repeat their work until a window is this long.
    pub fn min_window(&self) -> Duration {
        self.domains
            .iter()
            .filter(|d| d.provenance != Provenance::Estimated)
            .filter_map(|d| d.update_period)
            .max()
            .map_or(Duration::ZERO, |p| p * MIN_WINDOW_PERIODS)
    }

    /// The wrap guard's period, when it runs.
    pub fn wrap_guard_period(&self) -> Option<Duration> {
        self.guard.as_ref().map(|g| g.period)
    }

    /// Reads every counter once (what the wrap guard does periodically).
    pub fn poll(&self) {
        let mut scratch = Vec::new();
        for p in &self.probes {
            p.read(&mut scratch);
        }
    }

    /// Measures idle power for `duration` (sleeping) over the measured domains and returns it; it is
    /// not applied until [`Meter::set_baseline`]. With nothing measured the baseline is 0 W over no
    /// domains (estimates exclude idle power already).
    pub fn measure_idle(&self, duration: Duration) -> Baseline {
        let a = self.edge();
        std::thread::sleep(duration);
        let b = self.edge();
        let wall = b.at.saturating_duration_since(a.at);
        let measured = self.measured_domains(&a, &b, wall);
        let total = measured
            .iter()
            .fold(MicroJoules::ZERO, |s, d| s.saturating_add(d.joules));
        Baseline {
            watts: total.to_joules().per(wall).unwrap_or_default(),
            duration: wall,
            domains: measured.into_iter().map(|d| d.name).collect(),
        }
    }

    /// Sets (or clears) the idle baseline used for `net_joules` in later measurements.
    pub fn set_baseline(&self, baseline: Option<Baseline>) {
        *self.baseline.lock().unwrap_or_else(|p| p.into_inner()) = baseline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn meter_is_send_sync() {
        assert_send_sync::<Meter>();
    }
}
