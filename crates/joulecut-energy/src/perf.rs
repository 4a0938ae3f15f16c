//! RAPL through the kernel's `power` perf PMU (`perf_event_open`). The kernel folds the 32-bit
//! hardware counter into a 64-bit count, so these readings never wrap; the meter prefers this probe
//! over powercap. Counters that do not advance at start-up are dropped
//! ([`RaplPerfProbe::require_live`]). It needs system-wide events: `kernel.perf_event_paranoid <= 0` or CAP_PERFMON
//! (root has it).
//!
//! The PMU is described under `/sys/bus/event_source/devices/power`: `type`, `cpumask` (one CPU per
//! package) and `events/energy-{pkg,ram,psys}` with `.scale` (joules per count) and `.unit`.
//!
//! ```
//! use joulecut_energy::perf::RaplPerfProbe;
//! use joulecut_energy::{FsReader, Unavailable};
//! use std::sync::Arc;
//!
//! // A directory with no PMU description: the probe says why it is unavailable.
//! let dir = tempfile::tempdir().unwrap();
//! let err = RaplPerfProbe::open(&dir.path().join("power"), Arc::new(FsReader)).unwrap_err();
//! assert!(matches!(err, Unavailable::NotPresent { .. }));
//! ```

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::counter::CounterEvents;
use crate::probe::{DomainInfo, ProbeInfo, Reading, SysfsReader, Unavailable, excerpt};
use crate::provenance::Provenance;
use crate::units::{MicroJoules, saturating_u64};

/// Probe name in reports.
pub const NAME: &str = "rapl-perf";

/// Default location of the PMU description.
pub const DEFAULT_PMU_DIR: &str = "/sys/bus/event_source/devices/power";

/// Remedy for `EACCES`/`EPERM` from `perf_event_open`.
pub const PERMISSION_REMEDY: &str =
    "system-wide perf events need `sudo sysctl kernel.perf_event_paranoid=0` or CAP_PERFMON";

/// One RAPL event as described in sysfs.
#[derive(Debug, Clone, PartialEq)]
pub struct PmuEvent {
    /// `pkg`, `ram`, `psys`, ...
    pub name: String,
    /// The `config` value for `perf_event_open`.
    pub config: u64,
    /// Joules per count.
    pub scale: f64,
}

/// The `power` PMU: type id, one CPU per package, and the chosen events (pkg+ram, or psys).
#[derive(Debug, Clone, PartialEq)]
pub struct PmuDescription {
    /// `perf_event_attr.type`.
    pub pmu_type: u32,
    /// One CPU per package.
    pub cpus: Vec<u32>,
    /// Chosen events without overlap.
    pub events: Vec<PmuEvent>,
}

fn read_trim(reader: &dyn SysfsReader, path: &Path) -> Result<String, Unavailable> {
    reader
        .read(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => Unavailable::NotPresent {
                detail: format!("no `power` PMU ({} missing)", path.display()),
            },
            ErrorKind::PermissionDenied => Unavailable::PermissionDenied {
                path: path.to_path_buf(),
                remedy: PERMISSION_REMEDY.to_string(),
            },
            _ => Unavailable::Failed {
                detail: format!("reading {}: {e}", path.display()),
            },
        })
}

fn malformed(path: &Path, content: &str) -> Unavailable {
    Unavailable::Malformed {
        path: path.to_path_buf(),
        content: excerpt(content),
    }
}

/// Parses `event=0x02` (optionally among other `key=value` terms).
pub fn parse_event_config(s: &str) -> Option<u64> {
    s.trim().split(',').find_map(|term| {
        let v = term.trim().strip_prefix("event=")?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

/// Parses a CPU list such as `0`, `0,24` or `0-1,4`.
pub fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

impl PmuDescription {
    /// Reads the PMU description from `dir` (normally [`DEFAULT_PMU_DIR`]).
    pub fn read(dir: &Path, reader: &dyn SysfsReader) -> Result<PmuDescription, Unavailable> {
        let type_path = dir.join("type");
        let t = read_trim(reader, &type_path)?;
        let pmu_type = t.parse().map_err(|_| malformed(&type_path, &t))?;
        let mask_path = dir.join("cpumask");
        let m = read_trim(reader, &mask_path)?;
        let cpus = parse_cpu_list(&m).ok_or_else(|| malformed(&mask_path, &m))?;
        let mut available = Vec::new();
        for name in ["pkg", "ram", "psys"] {
            let path = dir.join("events").join(format!("energy-{name}"));
            let Ok(spec) = reader.read(&path) else {
                continue;
            };
            let config = parse_event_config(&spec).ok_or_else(|| malformed(&path, &spec))?;
            let scale_path = dir.join("events").join(format!("energy-{name}.scale"));
            let s = read_trim(reader, &scale_path)?;
            let scale: f64 = s.parse().map_err(|_| malformed(&scale_path, &s))?;
            if !(scale.is_finite() && scale > 0.0) {
                return Err(malformed(&scale_path, &s));
            }
            let unit_path = dir.join("events").join(format!("energy-{name}.unit"));
            if let Ok(unit) = reader.read(&unit_path) {
                if unit.trim() != "Joules" {
                    return Err(malformed(&unit_path, &unit));
                }
            }
            available.push(PmuEvent {
                name: name.to_string(),
                config,
                scale,
            });
        }
        // Same non-overlap policy as powercap: pkg (+ram), else psys.
        let has_pkg = available.iter().any(|e| e.name == "pkg");
        let events: Vec<PmuEvent> = available
            .into_iter()
            .filter(|e| {
                if has_pkg {
                    e.name != "psys"
                } else {
                    e.name == "psys"
                }
            })
            .collect();
        if events.is_empty() {
            return Err(Unavailable::NotPresent {
                detail: format!(
                    "the `power` PMU at {} has no energy-pkg or energy-psys event",
                    dir.display()
                ),
            });
        }
        Ok(PmuDescription {
            pmu_type,
            cpus,
            events,
        })
    }
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5 (112 bytes); every field past `config` is
/// zero (counting, enabled, no sampling), so they are kept as one array.
#[repr(C)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    rest: [u64; 12],
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

fn perf_event_open(pmu_type: u32, config: u64, cpu: u32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: pmu_type,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        rest: [0; 12],
    };
    // SAFETY: `attr` is a valid, fully initialised perf_event_attr of the size it declares; the
    // kernel only reads it. pid = -1 with a cpu is a system-wide counter, group_fd = -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn read_count(fd: &OwnedFd) -> Option<u64> {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a valid, exclusively borrowed u64.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut value as *mut u64).cast::<libc::c_void>(),
            8,
        )
    };
    (n == 8).then_some(value)
}

#[derive(Debug)]
struct Counter {
    /// `power/energy-psys/ on cpu 0`, for messages.
    what: String,
    fd: OwnedFd,
    scale: f64,
    state: Mutex<CounterState>,
}

#[derive(Debug)]
struct CounterState {
    first: u64,
    total: MicroJoules,
    events: CounterEvents,
}

/// RAPL energy via perf events: wrap-free 64-bit counts.
#[derive(Debug)]
pub struct RaplPerfProbe {
    info: ProbeInfo,
    counters: Vec<Counter>,
}

impl RaplPerfProbe {
    /// Opens one counter per package and event described in `pmu_dir`.
    pub fn open(
        pmu_dir: &Path,
        reader: std::sync::Arc<dyn SysfsReader>,
    ) -> Result<Self, Unavailable> {
        let desc = PmuDescription::read(pmu_dir, reader.as_ref())?;
        let mut counters = Vec::new();
        let mut domains = Vec::new();
        for (pkg, &cpu) in desc.cpus.iter().enumerate() {
            for ev in &desc.events {
                let fd = perf_event_open(desc.pmu_type, ev.config, cpu).map_err(|e| {
                    match e.raw_os_error() {
                        Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::PermissionDenied {
                            path: PathBuf::from(pmu_dir),
                            remedy: PERMISSION_REMEDY.to_string(),
                        },
                        _ => Unavailable::Unsupported {
                            detail: format!(
                                "perf_event_open(power/energy-{}/, cpu {cpu}): {e}",
                                ev.name
                            ),
                        },
                    }
                })?;
                let first = read_count(&fd).ok_or_else(|| Unavailable::Failed {
                    detail: format!("reading power/energy-{}/ on cpu {cpu}", ev.name),
                })?;
                let name = match ev.name.as_str() {
                    "pkg" => format!("cpu-package-{pkg}"),
                    "ram" => format!("dram-{pkg}"),
                    other => other.to_string(),
                };
                domains.push(DomainInfo {
                    name,
                    source: NAME.to_string(),
                    provenance: Provenance::Measured,
                    resolution_uj: Some(ev.scale * 1e6),
                    update_period: Some(Duration::from_millis(1)),
                    wrap_range_uj: None,
                });
                counters.push(Counter {
                    what: format!("power/energy-{}/ on cpu {cpu}", ev.name),
                    fd,
                    scale: ev.scale,
                    state: Mutex::new(CounterState {
                        first,
                        total: MicroJoules::ZERO,
                        events: CounterEvents::default(),
                    }),
                });
            }
        }
        Ok(RaplPerfProbe {
            info: ProbeInfo {
                name: NAME.to_string(),
                kind: Provenance::Measured,
                domains,
            },
            counters,
        })
    }
}

impl RaplPerfProbe {
    /// Drops counters that do not advance within `timeout` (see [`crate::liveness`]); returns the
    /// probe with the live ones and a [`Unavailable::Stalled`] per dropped domain, or `Stalled`
    /// when none is live. A zero `timeout` skips the check.
    pub fn require_live(
        mut self,
        timeout: Duration,
    ) -> Result<(Self, Vec<Unavailable>), Unavailable> {
        let live = crate::liveness::wait_for_advance(
            || self.counters.iter().map(|c| read_count(&c.fd)).collect(),
            timeout,
            crate::liveness::POLL_INTERVAL,
        );
        let stalled =
            crate::liveness::retain_live(&mut self.counters, &mut self.info.domains, &live, |c| {
                c.what.clone()
            })?;
        Ok((self, stalled))
    }
}

impl crate::probe::Probe for RaplPerfProbe {
    fn info(&self) -> &ProbeInfo {
        &self.info
    }

    fn read(&self, out: &mut Vec<Reading>) {
        for c in &self.counters {
            let mut st = c.state.lock().unwrap_or_else(|p| p.into_inner());
            match read_count(&c.fd) {
                Some(raw) => {
                    // Cumulative conversion (not per delta), so rounding never accumulates.
                    let uj = saturating_u64(raw.wrapping_sub(st.first) as f64 * c.scale * 1e6);
                    // The kernel count is monotonic; guard anyway so a window is never negative.
                    st.total = st.total.max(MicroJoules(uj));
                }
                None => st.events.read_errors += 1,
            }
            out.push(Reading {
                energy: st.total,
                events: st.events,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FsReader;

    #[test]
    fn parses_event_terms() {
        assert_eq!(parse_event_config("event=0x02\n"), Some(2));
        assert_eq!(parse_event_config("event=0x0d,umask=0"), Some(13));
        assert_eq!(parse_event_config("event=3"), Some(3));
        assert_eq!(parse_event_config("garbage"), None);
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0,24"), Some(vec![0, 24]));
        assert_eq!(parse_cpu_list("0-2,8"), Some(vec![0, 1, 2, 8]));
        assert_eq!(parse_cpu_list("2-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    fn fake_pmu(dir: &Path, events: &[(&str, &str)]) {
        std::fs::create_dir_all(dir.join("events")).unwrap();
        std::fs::write(dir.join("type"), "23\n").unwrap();
        std::fs::write(dir.join("cpumask"), "0,24\n").unwrap();
        for (name, cfg) in events {
            std::fs::write(dir.join("events").join(format!("energy-{name}")), cfg).unwrap();
            std::fs::write(
                dir.join("events").join(format!("energy-{name}.scale")),
                "2.3283064365386962890625e-10\n",
            )
            .unwrap();
            std::fs::write(
                dir.join("events").join(format!("energy-{name}.unit")),
                "Joules\n",
            )
            .unwrap();
        }
    }

    #[test]
    fn description_prefers_pkg_over_psys() {
        let t = tempfile::tempdir().unwrap();
        fake_pmu(
            t.path(),
            &[
                ("pkg", "event=0x02"),
                ("ram", "event=0x03"),
                ("psys", "event=0x05"),
            ],
        );
        let d = PmuDescription::read(t.path(), &FsReader).unwrap();
        assert_eq!(d.pmu_type, 23);
        assert_eq!(d.cpus, vec![0, 24]);
        let names: Vec<_> = d.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["pkg", "ram"]);
        assert!((d.events[0].scale - 2f64.powi(-32)).abs() < 1e-20);
    }

    #[test]
    fn description_psys_only_and_garbage() {
        let t = tempfile::tempdir().unwrap();
        fake_pmu(t.path(), &[("psys", "event=0x05")]);
        let d = PmuDescription::read(t.path(), &FsReader).unwrap();
        assert_eq!(d.events[0].name, "psys");
        std::fs::write(t.path().join("type"), "twenty-three").unwrap();
        assert!(matches!(
            PmuDescription::read(t.path(), &FsReader),
            Err(Unavailable::Malformed { .. })
        ));
    }

    #[test]
    fn opening_on_fake_pmu_never_panics() {
        // The fake type id is not a real PMU: expect a typed reason (or success on odd hosts).
        let t = tempfile::tempdir().unwrap();
        fake_pmu(t.path(), &[("pkg", "event=0x02")]);
        std::fs::write(t.path().join("type"), "4000000\n").unwrap();
        let r = RaplPerfProbe::open(t.path(), std::sync::Arc::new(FsReader));
        assert!(r.is_err());
    }
}
