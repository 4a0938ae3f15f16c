//! NVIDIA GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so.1` at run time, so builds
//! and CI without a GPU are unaffected; there the probe is skipped as
//! [`Unavailable::LibraryMissing`]).
//!
//! * Volta and newer: the total-energy counter (mJ since the driver loaded), read at window edges,
//!   provenance `measured`, source `nvml-total-energy`.
//! * Older GPUs: power (mW) polled by a background thread every [`POLL_PERIOD`] and integrated with
//!   the trapezoid rule, provenance `integrated`, source `nvml-power-integrated`.
//! * Only the GPUs the process may use: `CUDA_VISIBLE_DEVICES` (indices or `GPU-`/`MIG-` UUIDs,
//!   parsed like CUDA: up to the first invalid entry; empty means none). Indices are NVML's (PCI
//!   bus order); set `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA agrees.
//! * The counter steps every ~20–100 ms; each domain declares [`COUNTER_UPDATE_PERIOD`] and
//!   windows shorter than it are flagged `shorter_than_update_period`.
//!
//! ```
//! use joulecut_energy::nvml::{parse_visible_devices, DeviceRef, VisibleDevices};
//!
//! assert_eq!(parse_visible_devices(None), VisibleDevices::All);
//! assert_eq!(
//!     parse_visible_devices(Some("1,GPU-abc,x,2")),
//!     VisibleDevices::Only(vec![DeviceRef::Index(1), DeviceRef::Uuid("GPU-abc".into())])
//! );
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use crate::counter::CounterEvents;
use crate::probe::{DomainInfo, ProbeInfo, Reading, Unavailable};
use crate::provenance::Provenance;
use crate::units::MicroJoules;

/// Probe name in reports.
pub const NAME: &str = "nvml";
/// Assumed update period of the total-energy counter (ML.ENERGY: about 100 ms).
pub const COUNTER_UPDATE_PERIOD: Duration = Duration::from_millis(100);
/// Power polling period on GPUs without the energy counter.
pub const POLL_PERIOD: Duration = Duration::from_millis(50);

/// A device named in `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// An index.
    Index(u32),
    /// A `GPU-…` or `MIG-…` UUID.
    Uuid(String),
}

/// Which GPUs the process may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisibleDevices {
    /// No restriction.
    All,
    /// Only these (possibly none).
    Only(Vec<DeviceRef>),
}

/// Parses `CUDA_VISIBLE_DEVICES` the way CUDA does: entries up to the first invalid one.
pub fn parse_visible_devices(value: Option<&str>) -> VisibleDevices {
    let Some(v) = value else {
        return VisibleDevices::All;
    };
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim) {
        if let Ok(i) = entry.parse::<u32>() {
            out.push(DeviceRef::Index(i));
        } else if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
            out.push(DeviceRef::Uuid(entry.to_string()));
        } else {
            break;
        }
    }
    VisibleDevices::Only(out)
}

fn unavailable(e: NvmlError) -> Unavailable {
    match e {
        NvmlError::LibloadingError(err) => Unavailable::LibraryMissing {
            library: "libnvidia-ml.so.1".into(),
            detail: err.to_string(),
        },
        NvmlError::LibraryNotFound => Unavailable::LibraryMissing {
            library: "libnvidia-ml.so.1".into(),
            detail: "NVML library not found".into(),
        },
        NvmlError::DriverNotLoaded => Unavailable::NotPresent {
            detail: "the NVIDIA driver is not loaded".into(),
        },
        NvmlError::NoPermission => Unavailable::PermissionDenied {
            path: "/dev/nvidiactl".into(),
            remedy: "NVML may not talk to the driver: check /dev/nvidia* permissions (video group)"
                .into(),
        },
        other => Unavailable::Failed {
            detail: other.to_string(),
        },
    }
}

#[derive(Debug)]
enum Gpu {
    Counter {
        index: u32,
        state: Mutex<CounterGpu>,
    },
    Integrated {
        acc: Arc<AtomicU64>,
    },
}

#[derive(Debug)]
struct CounterGpu {
    last_mj: u64,
    total: MicroJoules,
    events: CounterEvents,
}

#[derive(Debug)]
struct Poller {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// GPU energy via NVML.
pub struct NvmlProbe {
    info: ProbeInfo,
    nvml: Arc<Nvml>,
    gpus: Vec<Gpu>,
    _poller: Option<Poller>,
}

impl std::fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("info", &self.info)
            .field("gpus", &self.gpus)
            .finish()
    }
}

impl NvmlProbe {
    /// Initialises NVML and opens the GPUs selected by `visible`.
    pub fn open(visible: &VisibleDevices) -> Result<NvmlProbe, Unavailable> {
        let nvml = Arc::new(Nvml::init().map_err(unavailable)?);
        let count = nvml.device_count().map_err(unavailable)?;
        let indices: Vec<u32> = match visible {
            VisibleDevices::All => (0..count).collect(),
            VisibleDevices::Only(refs) => refs
                .iter()
                .filter_map(|r| match r {
                    DeviceRef::Index(i) => (*i < count).then_some(*i),
                    DeviceRef::Uuid(u) => nvml.device_by_uuid(u.as_str()).ok()?.index().ok(),
                })
                .collect(),
        };
        if indices.is_empty() {
            return Err(Unavailable::NotPresent {
                detail: format!("no usable GPU ({count} found; CUDA_VISIBLE_DEVICES={visible:?})"),
            });
        }
        let mut gpus = Vec::new();
        let mut domains = Vec::new();
        let mut polled: Vec<(u32, Arc<AtomicU64>)> = Vec::new();
        for index in indices {
            let dev = nvml.device_by_index(index).map_err(unavailable)?;
            let name = format!("gpu-{index}");
            match dev.total_energy_consumption() {
                Ok(mj) => {
                    domains.push(DomainInfo {
                        name,
                        source: "nvml-total-energy".into(),
                        provenance: Provenance::Measured,
                        resolution_uj: Some(1000.0),
                        update_period: Some(COUNTER_UPDATE_PERIOD),
                        wrap_range_uj: None,
                    });
                    gpus.push(Gpu::Counter {
                        index,
                        state: Mutex::new(CounterGpu {
                            last_mj: mj,
                            total: MicroJoules::ZERO,
                            events: CounterEvents::default(),
                        }),
                    });
                }
                Err(NvmlError::NotSupported) => {
                    dev.power_usage().map_err(|e| match e {
                        NvmlError::NotSupported => Unavailable::Unsupported {
                            detail: format!("GPU {index} reports neither energy nor power"),
                        },
                        e => unavailable(e),
                    })?;
                    domains.push(DomainInfo {
                        name,
                        source: "nvml-power-integrated".into(),
                        provenance: Provenance::Integrated,
                        resolution_uj: None,
                        update_period: Some(POLL_PERIOD),
                        wrap_range_uj: None,
                    });
                    let acc = Arc::new(AtomicU64::new(0));
                    polled.push((index, acc.clone()));
                    gpus.push(Gpu::Integrated { acc });
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        let poller = if polled.is_empty() {
            None
        } else {
            Some(start_poller(nvml.clone(), polled)?)
        };
        let kind = if poller.is_some() {
            Provenance::Integrated
        } else {
            Provenance::Measured
        };
        Ok(NvmlProbe {
            info: ProbeInfo {
                name: NAME.into(),
                kind,
                domains,
            },
            nvml,
            gpus,
            _poller: poller,
        })
    }
}

/// Trapezoid integration of polled power into µJ (mW × µs = nJ).
fn start_poller(nvml: Arc<Nvml>, gpus: Vec<(u32, Arc<AtomicU64>)>) -> Result<Poller, Unavailable> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("joulecut-nvml-poll".into())
        .spawn(move || {
            let mut last: Vec<Option<(Instant, u32)>> = vec![None; gpus.len()];
            let mut nano: Vec<u128> = vec![0; gpus.len()];
            loop {
                for (k, (index, acc)) in gpus.iter().enumerate() {
                    let Ok(dev) = nvml.device_by_index(*index) else {
                        continue;
                    };
                    let Ok(mw) = dev.power_usage() else { continue };
                    let now = Instant::now();
                    if let Some((t0, mw0)) = last[k] {
                        let us = now.saturating_duration_since(t0).as_micros();
                        nano[k] += (u128::from(mw0) + u128::from(mw)) * us / 2;
                        acc.store(
                            u64::try_from(nano[k] / 1000).unwrap_or(u64::MAX),
                            Ordering::Relaxed,
                        );
                    }
                    last[k] = Some((now, mw));
                }
                if !matches!(rx.recv_timeout(POLL_PERIOD), Err(RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        })
        .map_err(|e| Unavailable::Failed {
            detail: format!("starting the NVML poller: {e}"),
        })?;
    Ok(Poller {
        stop: Some(tx),
        handle: Some(handle),
    })
}

impl crate::probe::Probe for NvmlProbe {
    fn info(&self) -> &ProbeInfo {
        &self.info
    }

    fn read(&self, out: &mut Vec<Reading>) {
        for gpu in &self.gpus {
            match gpu {
                Gpu::Counter { index, state } => {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    match self
                        .nvml
                        .device_by_index(*index)
                        .and_then(|d| d.total_energy_consumption())
                    {
                        Ok(mj) => {
                            if mj >= st.last_mj {
                                let d = (mj - st.last_mj).saturating_mul(1000);
                                st.total = st.total.saturating_add(MicroJoules(d));
                            } else {
                                // Driver reloaded: the counter restarted from 0.
                                st.events.resets += 1;
                                st.total = st
                                    .total
                                    .saturating_add(MicroJoules(mj.saturating_mul(1000)));
                            }
                            st.last_mj = mj;
                        }
                        Err(_) => st.events.read_errors += 1,
                    }
                    out.push(Reading {
                        energy: st.total,
                        events: st.events,
                    });
                }
                Gpu::Integrated { acc } => out.push(Reading {
                    energy: MicroJoules(acc.load(Ordering::Relaxed)),
                    events: CounterEvents::default(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices() {
        assert_eq!(
            parse_visible_devices(Some("")),
            VisibleDevices::Only(vec![])
        );
        assert_eq!(
            parse_visible_devices(Some("-1")),
            VisibleDevices::Only(vec![])
        );
        assert_eq!(
            parse_visible_devices(Some("0, 2")),
            VisibleDevices::Only(vec![DeviceRef::Index(0), DeviceRef::Index(2)])
        );
        assert_eq!(
            parse_visible_devices(Some("MIG-1/2/3")),
            VisibleDevices::Only(vec![DeviceRef::Uuid("MIG-1/2/3".into())])
        );
    }

    #[test]
    fn open_without_gpu_is_a_reason_not_a_panic() {
        // On GPU hosts this may succeed; elsewhere it must be a typed reason.
        if let Err(reason) = NvmlProbe::open(&VisibleDevices::All) {
            assert!(!reason.to_string().is_empty());
        }
    }
}
