//! Probes: sources of energy readings, each describing what it can measure ([`ProbeInfo`]) or why
//! it cannot be used ([`Unavailable`]). RAPL probes drop counters that do not advance at start-up
//! ([`liveness`](crate::liveness)), so a dead counter is a skip with a reason, never a measured 0 J.
//!
//! A probe exposes one cumulative, monotonic microjoule total per domain; wraps, resets and read
//! errors are folded in by the probe and counted in [`CounterEvents`]. The [`Meter`](crate::Meter)
//! takes readings at window edges and subtracts.
//!
//! ```
//! use joulecut_energy::{Meter, MeterConfig};
//!
//! let meter = Meter::auto(MeterConfig::default()).unwrap();
//! for p in meter.probes() {
//!     println!("using {} ({:?}): {:?}", p.name, p.kind, p.domains.iter().map(|d| &d.name).collect::<Vec<_>>());
//! }
//! for s in meter.skipped() {
//!     println!("skipped {}: {}", s.probe, s.reason);
//! }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::counter::CounterEvents;
use crate::provenance::Provenance;
use crate::units::MicroJoules;

/// One energy domain a probe reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainInfo {
    /// Stable name, e.g. `cpu-package-0`, `dram-0`, `psys`, `gpu-0`, `cpu`, `memory`.
    pub name: String,
    /// Where the number comes from, e.g. `rapl-powercap` or `cpu-time x 10 W/core`.
    pub source: String,
    /// Measured, integrated or estimated.
    pub provenance: Provenance,
    /// The counter's resolution, in microjoules, when known.
    pub resolution_uj: Option<f64>,
    /// How often the hardware updates the value; windows shorter than this are flagged.
    #[serde(rename = "update_period_seconds", serialize_with = "ser_opt_secs")]
    pub update_period: Option<Duration>,
    /// Range after which the raw counter wraps (µJ); `None` when wrap-free or unknown.
    pub wrap_range_uj: Option<u64>,
}

/// What a working probe offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeInfo {
    /// Probe name: `rapl-perf`, `rapl-powercap`, `nvml`, `cpu-time-estimate`.
    pub name: String,
    /// Measured, integrated or estimated (the weakest of its domains).
    pub kind: Provenance,
    /// Its domains, in reading order.
    pub domains: Vec<DomainInfo>,
}

/// A cumulative reading of one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Energy since the probe started, never decreasing.
    pub energy: MicroJoules,
    /// Corrections made so far.
    pub events: CounterEvents,
}

/// A source of cumulative energy readings. Implementations are cheap to read (window edges read
/// every probe) and never panic on bad hardware data.
pub trait Probe: Send + Sync + fmt::Debug {
    /// What the probe measures.
    fn info(&self) -> &ProbeInfo;
    /// Appends one [`Reading`] per domain, in the order of `info().domains`.
    fn read(&self, out: &mut Vec<Reading>);
    /// Whether the meter's background guard should call [`Probe::read`] periodically (wrapping
    /// counters), and how often.
    fn guard_period(&self) -> Option<Duration> {
        None
    }
}

/// Why a probe is not used. Skips are reported, never silent, and never turned into 0 J.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unavailable {
    /// A counter exists but this user may not read it.
    PermissionDenied {
        /// The file or interface that refused.
        path: PathBuf,
        /// How to get access.
        remedy: String,
    },
    /// The hardware or interface is not there.
    NotPresent {
        /// What was looked for.
        detail: String,
    },
    /// Running in a virtual machine, which exposes no energy counters.
    Virtualised {
        /// The hypervisor, as far as it could be identified.
        hypervisor: String,
    },
    /// A run-time library is missing (e.g. `libnvidia-ml.so.1`).
    LibraryMissing {
        /// The library.
        library: String,
        /// The loader's message.
        detail: String,
    },
    /// The device does not support what is needed.
    Unsupported {
        /// What is missing.
        detail: String,
    },
    /// A file held something that is not a counter value.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it held (truncated).
        content: String,
    },
    /// A counter opens and reads but never advances (seen in virtual machines): reporting it would
    /// print a measured 0 J.
    Stalled {
        /// The domain and event or file, and how long it was watched.
        detail: String,
    },
    /// A better probe covers the same domains.
    Superseded {
        /// The probe used instead.
        by: String,
    },
    /// Turned off in the configuration.
    Disabled,
    /// Any other failure.
    Failed {
        /// The error.
        detail: String,
    },
}

impl Unavailable {
    /// How to make the probe available, when the user can.
    pub fn remedy(&self) -> Option<&str> {
        match self {
            Unavailable::PermissionDenied { remedy, .. } => Some(remedy),
            Unavailable::LibraryMissing { .. } => {
                Some("install the NVIDIA driver (libnvidia-ml.so.1) to meter GPUs")
            }
            Unavailable::Virtualised { .. } => Some(
                "run on bare metal for measured joules; inside a VM only estimates are possible",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::PermissionDenied { path, remedy } => {
                write!(f, "permission denied reading {} ({remedy})", path.display())
            }
            Unavailable::NotPresent { detail } => write!(f, "not present: {detail}"),
            Unavailable::Virtualised { hypervisor } => {
                write!(
                    f,
                    "virtualised ({hypervisor}): no energy counters in the guest"
                )
            }
            Unavailable::LibraryMissing { library, detail } => {
                write!(f, "library {library} missing: {detail}")
            }
            Unavailable::Unsupported { detail } => write!(f, "unsupported: {detail}"),
            Unavailable::Malformed { path, content } => {
                write!(
                    f,
                    "{} holds {content:?}, not a counter value",
                    path.display()
                )
            }
            Unavailable::Stalled { detail } => write!(f, "stalled: {detail}"),
            Unavailable::Superseded { by } => write!(f, "superseded by {by}"),
            Unavailable::Disabled => f.write_str("disabled by configuration"),
            Unavailable::Failed { detail } => write!(f, "failed: {detail}"),
        }
    }
}

/// A probe that was not used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeSkip {
    /// Probe name (`rapl-perf`, `rapl-powercap`, `nvml`, ...).
    pub probe: String,
    /// Why.
    #[serde(flatten)]
    pub reason: Unavailable,
    /// One-line human summary, the reason's `Display`.
    pub message: String,
    /// How to make the probe available, when the user can.
    pub hint: Option<String>,
}

impl ProbeSkip {
    /// Builds a skip record.
    pub fn new(probe: impl Into<String>, reason: Unavailable) -> Self {
        let message = reason.to_string();
        let hint = reason.remedy().map(str::to_string);
        ProbeSkip {
            probe: probe.into(),
            reason,
            message,
            hint,
        }
    }
}

/// Reads small sysfs files. Injectable so tests can simulate `EACCES` (CI runs as root, where file
/// modes alone deny nothing) and other I/O errors.
pub trait SysfsReader: Send + Sync + fmt::Debug {
    /// The file's contents.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsReader;

impl SysfsReader for FsReader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Parses a sysfs integer (`"123\n"`). `None` for anything else.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// Truncates file contents for error messages.
pub(crate) fn excerpt(s: &str) -> String {
    let t = s.trim();
    let mut out: String = t.chars().take(40).collect();
    if t.chars().count() > 40 {
        out.push('…');
    }
    out
}

pub(crate) fn ser_opt_secs<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}
