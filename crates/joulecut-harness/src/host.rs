//! Where and when numbers were taken: the [`Host`] fingerprint that reports and energy cards
//! record, and the [`RunStamp`] (run id, RFC 3339 UTC start, host name, CPU model) that every
//! report row carries, so rows from the shards of a sweep keep their origin after a merge.
//!
//! ```
//! use joulecut_energy::{Meter, MeterConfig};
//! use joulecut_harness::{Host, RunStamp};
//!
//! let meter = Meter::auto(MeterConfig::default()).unwrap();
//! let host = Host::detect("cpu", &meter);
//! let stamp = RunStamp::new(&host, None);
//! assert_eq!(stamp.hostname, host.hostname);
//! assert!(stamp.timestamp.ends_with('Z'));
//! ```

use joulecut_energy::{Meter, UtcTime, new_run_id};
use serde::{Deserialize, Serialize};

/// Where the numbers were taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// Host name (empty in reports written before schema 2).
    #[serde(default)]
    pub hostname: String,
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Device the suite ran on.
    pub device: String,
    /// Hypervisor, if virtualised.
    pub hypervisor: Option<String>,
    /// Energy probes in use (measured sources).
    pub probes: serde_json::Value,
    /// Probes skipped, with reasons.
    pub skipped_probes: serde_json::Value,
    /// joulecut version.
    pub joulecut: String,
}

impl Host {
    /// This machine, running on `device` (`cpu`, `cuda:0`) and metered by `meter`.
    pub fn detect(device: &str, meter: &Meter) -> Host {
        Host {
            hostname: joulecut_energy::hostname(),
            cpu: joulecut_energy::cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            device: device.to_string(),
            hypervisor: joulecut_energy::detect_hypervisor(),
            probes: serde_json::to_value(meter.probes()).unwrap_or_default(),
            skipped_probes: serde_json::to_value(meter.skipped()).unwrap_or_default(),
            joulecut: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One run's identity: which run, when it started, on which machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunStamp {
    /// The run id: given (`--run-id`, `$JOULECUT_RUN_ID`) or generated
    /// (`20261207T095212Z-3fa2c1d0`, [`joulecut_energy::new_run_id`]).
    pub run_id: String,
    /// When the run started, RFC 3339 UTC (`2026-12-07T09:52:12.345Z`).
    pub timestamp: String,
    /// The host name.
    pub hostname: String,
    /// The CPU model.
    pub cpu: String,
}

impl RunStamp {
    /// A run starting now on `host`, with the id given or a fresh one.
    pub fn new(host: &Host, run_id: Option<&str>) -> RunStamp {
        RunStamp {
            run_id: run_id.map_or_else(new_run_id, str::to_string),
            timestamp: UtcTime::now().to_string(),
            hostname: host.hostname.clone(),
            cpu: host.cpu.clone(),
        }
    }

    /// The stamp of a report built from runs stamped `stamps` (the shards of a sweep): their
    /// common run id when they share one, else a fresh id (the shards' own stay on their rows and
    /// in the report's `shards`); the earliest start; the host names and CPU models, each listed
    /// once, joined by ` + `. `None` without stamps.
    pub fn merged(stamps: &[RunStamp]) -> Option<RunStamp> {
        let first = stamps.first()?;
        let distinct = |f: &dyn Fn(&RunStamp) -> &str| {
            let mut v: Vec<&str> = Vec::new();
            for s in stamps {
                if !v.contains(&f(s)) {
                    v.push(f(s));
                }
            }
            v
        };
        let ids = distinct(&|s| s.run_id.as_str());
        Some(RunStamp {
            run_id: if ids.len() == 1 {
                first.run_id.clone()
            } else {
                new_run_id()
            },
            // RFC 3339 UTC with a fixed width sorts as text
            timestamp: stamps
                .iter()
                .map(|s| s.timestamp.as_str())
                .min()
                .unwrap_or_default()
                .to_string(),
            hostname: distinct(&|s| s.hostname.as_str()).join(" + "),
            cpu: distinct(&|s| s.cpu.as_str()).join(" + "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(id: &str, t: &str, host: &str) -> RunStamp {
        RunStamp {
            run_id: id.into(),
            timestamp: t.into(),
            hostname: host.into(),
            cpu: "EPYC".into(),
        }
    }

    #[test]
    fn shards_of_one_sweep_keep_its_id() {
        let m = RunStamp::merged(&[
            stamp("sweep-7", "2026-12-07T10:00:01.000Z", "node2"),
            stamp("sweep-7", "2026-12-07T09:59:58.000Z", "node1"),
            stamp("sweep-7", "2026-12-07T10:00:00.000Z", "node2"),
        ])
        .unwrap();
        assert_eq!(m.run_id, "sweep-7");
        assert_eq!(m.timestamp, "2026-12-07T09:59:58.000Z");
        assert_eq!(m.hostname, "node2 + node1");
        assert_eq!(m.cpu, "EPYC");
    }

    #[test]
    fn differing_ids_get_a_fresh_one() {
        let m = RunStamp::merged(&[
            stamp("a", "2026-12-07T10:00:00.000Z", "n"),
            stamp("b", "2026-12-07T10:00:00.000Z", "n"),
        ])
        .unwrap();
        assert!(m.run_id != "a" && m.run_id != "b" && !m.run_id.is_empty());
        assert_eq!(RunStamp::merged(&[]), None);
    }
}
