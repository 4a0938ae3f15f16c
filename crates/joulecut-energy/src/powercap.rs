//! RAPL through the Linux powercap sysfs tree (`/sys/class/powercap/intel-rapl:N[:M]`), Intel and
//! AMD (both appear as `intel-rapl` zones).
//!
//! * **Domains without overlap.** Zones are hierarchical (psys ⊃ package ⊃ core/uncore). The probe
//!   uses every `package-N` zone (multi-die parts: `package-N-die-M`) plus the `dram` sub-zones
//!   (outside the package on servers); only when no package zone exists does it use `psys`. It
//!   never uses `core`/`uncore` (inside package) or the `intel-rapl-mmio` duplicate of package.
//! * **Wraps.** `energy_uj` wraps at `max_energy_range_uj`; each zone keeps a
//!   [`WrappingCounter`] (u64 total, [`wrap_delta`](crate::counter::wrap_delta)) and asks the
//!   meter's wrap guard to read it at least 4× per shortest possible wrap period
//!   (`range / max_plausible_watts`), so a long window cannot wrap twice unseen.
//! * **Permissions.** Since Linux 5.10 `energy_uj` is root-only; an `EACCES` becomes
//!   [`Unavailable::PermissionDenied`] with the remedy, never a silent 0.
//! * **Liveness.** [`RaplPowercapProbe::require_live`] drops zones whose counter does not move at
//!   start-up (some VMs expose files that never change), so they never read as a measured 0 J.
//! * **Test seam.** The root is a parameter (`JOULECUT_POWERCAP_ROOT` in
//!   [`MeterConfig::from_env`](crate::MeterConfig::from_env)) and reads go through a
//!   [`SysfsReader`].
//!
//! ```
//! use joulecut_energy::powercap::RaplPowercapProbe;
//! use joulecut_energy::{FsReader, Probe};
//! use std::sync::Arc;
//!
//! let root = tempfile::tempdir().unwrap();
//! let zone = root.path().join("intel-rapl:0");
//! std::fs::create_dir(&zone).unwrap();
//! std::fs::write(zone.join("name"), "package-0\n").unwrap();
//! std::fs::write(zone.join("energy_uj"), "1000\n").unwrap();
//! std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
//!
//! let probe = RaplPowercapProbe::discover(root.path(), Arc::new(FsReader), 1000.0).unwrap();
//! assert_eq!(probe.info().domains[0].name, "cpu-package-0");
//! std::fs::write(zone.join("energy_uj"), "3000\n").unwrap();
//! let mut r = Vec::new();
//! probe.read(&mut r);
//! assert_eq!(r[0].energy.0, 2000);
//! ```

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::counter::WrappingCounter;
use crate::probe::{DomainInfo, ProbeInfo, Reading, SysfsReader, Unavailable, excerpt, parse_u64};
use crate::provenance::Provenance;

/// Probe name in reports.
pub const NAME: &str = "rapl-powercap";

/// The remedy printed when `energy_uj` is root-only.
pub const PERMISSION_REMEDY: &str = "energy_uj is root-only since Linux 5.10: run as root, or \
     `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot), or add a udev rule";

/// Fastest and slowest wrap-guard periods.
const GUARD_MIN: Duration = Duration::from_millis(10);
const GUARD_MAX: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Zone {
    energy_path: PathBuf,
    state: Mutex<ZoneState>,
}

#[derive(Debug)]
struct ZoneState {
    counter: WrappingCounter,
    last_at: Instant,
}

/// RAPL energy counters read from powercap sysfs.
#[derive(Debug)]
pub struct RaplPowercapProbe {
    info: ProbeInfo,
    zones: Vec<Zone>,
    reader: Arc<dyn SysfsReader>,
    guard_period: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Package(String),
    Dram(String),
    Psys,
    Other,
}

#[derive(Debug)]
struct Candidate {
    dir: PathBuf,
    id: String,
    kind: Kind,
}

/// Top-level zone number of `intel-rapl:N[:M]`.
fn top_index(id: &str) -> &str {
    id.split(':').nth(1).unwrap_or("?")
}

fn classify(id: &str, name: &str) -> Kind {
    let name = name.trim();
    if let Some(rest) = name.strip_prefix("package-") {
        Kind::Package(format!("cpu-package-{rest}"))
    } else if name == "psys" {
        Kind::Psys
    } else if name == "dram" {
        Kind::Dram(format!("dram-{}", top_index(id)))
    } else {
        Kind::Other
    }
}

fn is_zone_name(name: &str) -> bool {
    // `intel-rapl:N` or `intel-rapl:N:M`; not the `intel-rapl-mmio` duplicate, not the control type.
    name.strip_prefix("intel-rapl:").is_some_and(|rest| {
        rest.split(':')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Zone directories under `root`, flat (as in /sys/class/powercap) or nested (as under
/// /sys/devices/virtual/powercap/intel-rapl), deduplicated by id and sorted.
fn zone_dirs(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if depth == 0 => return Err(e),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if depth == 0 && name == "intel-rapl" && path.is_dir() {
                stack.push((path, depth + 1));
            } else if is_zone_name(&name) && path.is_dir() {
                if !out.iter().any(|(id, _)| *id == name) {
                    out.push((name, path.clone()));
                }
                if depth < 3 {
                    stack.push((path, depth + 1));
                }
            }
        }
    }
    out.sort_by_key(|a| natural_key(&a.0));
    Ok(out)
}

fn natural_key(id: &str) -> Vec<u64> {
    id.split(':')
        .skip(1)
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

fn read_counter(reader: &dyn SysfsReader, path: &Path) -> Result<u64, Unavailable> {
    match reader.read(path) {
        Ok(s) => parse_u64(&s).ok_or_else(|| Unavailable::Malformed {
            path: path.to_path_buf(),
            content: excerpt(&s),
        }),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(Unavailable::PermissionDenied {
            path: path.to_path_buf(),
            remedy: PERMISSION_REMEDY.to_string(),
        }),
        Err(e) => Err(Unavailable::Failed {
            detail: format!("reading {}: {e}", path.display()),
        }),
    }
}

impl RaplPowercapProbe {
    /// Finds the RAPL zones under `root` and chooses non-overlapping domains.
    ///
    /// `max_plausible_watts` is the most power one domain can draw; it sets the wrap-guard period
    /// and separates a wrap from a counter reset.
    pub fn discover(
        root: &Path,
        reader: Arc<dyn SysfsReader>,
        max_plausible_watts: f64,
    ) -> Result<RaplPowercapProbe, Unavailable> {
        let dirs = zone_dirs(root).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Unavailable::NotPresent {
                detail: format!("no powercap tree at {}", root.display()),
            },
            ErrorKind::PermissionDenied => Unavailable::PermissionDenied {
                path: root.to_path_buf(),
                remedy: PERMISSION_REMEDY.to_string(),
            },
            _ => Unavailable::Failed {
                detail: format!("listing {}: {e}", root.display()),
            },
        })?;
        let mut candidates = Vec::new();
        for (id, dir) in dirs {
            // An unreadable or odd `name` means we cannot tell what the zone covers: leave it out.
            let Ok(name) = reader.read(&dir.join("name")) else {
                continue;
            };
            let kind = classify(&id, &name);
            candidates.push(Candidate { dir, id, kind });
        }
        let has_package = candidates
            .iter()
            .any(|c| matches!(c.kind, Kind::Package(_)));
        let chosen: Vec<&Candidate> = if has_package {
            candidates
                .iter()
                .filter(|c| matches!(c.kind, Kind::Package(_) | Kind::Dram(_)))
                .collect()
        } else {
            candidates.iter().filter(|c| c.kind == Kind::Psys).collect()
        };
        if chosen.is_empty() {
            return Err(Unavailable::NotPresent {
                detail: format!("no RAPL package or psys zone under {}", root.display()),
            });
        }

        let now = Instant::now();
        let mut zones = Vec::with_capacity(chosen.len());
        let mut domains = Vec::with_capacity(chosen.len());
        let mut shortest_wrap: Option<f64> = None;
        for c in chosen {
            let energy_path = c.dir.join("energy_uj");
            let first = read_counter(reader.as_ref(), &energy_path)?;
            // A missing or garbled range leaves the zone usable; decreases are then flagged.
            let modulus = reader
                .read(&c.dir.join("max_energy_range_uj"))
                .ok()
                .and_then(|s| parse_u64(&s))
                .filter(|&m| m > 0)
                .map(|m| m.saturating_add(1));
            if let Some(m) = modulus {
                let secs = m as f64 / 1e6 / max_plausible_watts.max(1e-3);
                shortest_wrap = Some(shortest_wrap.map_or(secs, |s| s.min(secs)));
            }
            let name = match &c.kind {
                Kind::Package(n) | Kind::Dram(n) => n.clone(),
                Kind::Psys => "psys".to_string(),
                Kind::Other => c.id.clone(),
            };
            domains.push(DomainInfo {
                name,
                source: NAME.to_string(),
                provenance: Provenance::Measured,
                resolution_uj: None,
                // RAPL updates about every millisecond.
                update_period: Some(Duration::from_millis(1)),
                wrap_range_uj: modulus,
            });
            zones.push(Zone {
                energy_path,
                state: Mutex::new(ZoneState {
                    counter: WrappingCounter::new(first, modulus, max_plausible_watts),
                    last_at: now,
                }),
            });
        }
        let guard_period = shortest_wrap.map(|s| {
            let quarter = if s.is_finite() {
                s / 4.0
            } else {
                GUARD_MAX.as_secs_f64()
            };
            Duration::from_secs_f64(quarter.clamp(GUARD_MIN.as_secs_f64(), GUARD_MAX.as_secs_f64()))
        });
        Ok(RaplPowercapProbe {
            info: ProbeInfo {
                name: NAME.to_string(),
                kind: Provenance::Measured,
                domains,
            },
            zones,
            reader,
            guard_period,
        })
    }
}

impl RaplPowercapProbe {
    /// Drops zones whose `energy_uj` does not advance within `timeout` (see
    /// [`crate::liveness`]); returns the probe with the live ones and a [`Unavailable::Stalled`]
    /// per dropped domain, or `Stalled` when none is live. A zero `timeout` skips the check.
    pub fn require_live(
        mut self,
        timeout: Duration,
    ) -> Result<(Self, Vec<Unavailable>), Unavailable> {
        let reader = self.reader.clone();
        let live = crate::liveness::wait_for_advance(
            || {
                self.zones
                    .iter()
                    .map(|z| reader.read(&z.energy_path).ok().and_then(|s| parse_u64(&s)))
                    .collect()
            },
            timeout,
            crate::liveness::POLL_INTERVAL,
        );
        let stalled =
            crate::liveness::retain_live(&mut self.zones, &mut self.info.domains, &live, |z| {
                z.energy_path.display().to_string()
            })?;
        Ok((self, stalled))
    }
}

impl crate::probe::Probe for RaplPowercapProbe {
    fn info(&self) -> &ProbeInfo {
        &self.info
    }

    fn read(&self, out: &mut Vec<Reading>) {
        for zone in &self.zones {
            // A poisoned lock only means another reader panicked mid-update; the state is still a
            // valid counter, so keep going rather than propagate the panic.
            let mut st = zone.state.lock().unwrap_or_else(|p| p.into_inner());
            let raw = self
                .reader
                .read(&zone.energy_path)
                .ok()
                .and_then(|s| parse_u64(&s));
            let now = Instant::now();
            match raw {
                Some(raw) => {
                    let elapsed = now.saturating_duration_since(st.last_at);
                    st.counter.observe(raw, elapsed);
                    st.last_at = now;
                }
                None => st.counter.observe_error(),
            }
            out.push(Reading {
                energy: st.counter.total(),
                events: st.counter.events(),
            });
        }
    }

    fn guard_period(&self) -> Option<Duration> {
        self.guard_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names() {
        assert!(is_zone_name("intel-rapl:0"));
        assert!(is_zone_name("intel-rapl:0:1"));
        assert!(!is_zone_name("intel-rapl-mmio:0"));
        assert!(!is_zone_name("intel-rapl"));
        assert!(!is_zone_name("intel-rapl:"));
        assert!(!is_zone_name("intel-rapl:x"));
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify("intel-rapl:1", "package-1\n"),
            Kind::Package("cpu-package-1".into())
        );
        assert_eq!(
            classify("intel-rapl:0", "package-0-die-1"),
            Kind::Package("cpu-package-0-die-1".into())
        );
        assert_eq!(
            classify("intel-rapl:1:2", "dram"),
            Kind::Dram("dram-1".into())
        );
        assert_eq!(classify("intel-rapl:2", "psys"), Kind::Psys);
        assert_eq!(classify("intel-rapl:0:0", "core"), Kind::Other);
    }
}
