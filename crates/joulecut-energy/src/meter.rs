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

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::counter::CounterEvents;
use crate::error::{Error, Result};
use crate::estimate::{self, EstimateModel};
use crate::measurement::{Baseline, DomainEnergy, Measurement, QualityFlag};
use crate::nvml::{self, NvmlProbe};
use crate::perf::{self, RaplPerfProbe};
use crate::powercap::{self, RaplPowercapProbe};
use crate::probe::{
    DomainInfo, FsReader, Probe, ProbeInfo, ProbeSkip, Provenance, Reading, SysfsReader,
    Unavailable,
};
use crate::units::{MicroJoules, Watts};

/// Called before both edges of every window (e.g. a CUDA device synchronize).
pub type SyncHook = Box<dyn Fn() + Send + Sync>;

/// Default powercap root.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";
/// A window of at least this many update periods is long enough to trust ([`Meter::min_window`]).
pub const MIN_WINDOW_PERIODS: u32 = 10;
/// A measured domain that reads exactly 0 J over at least this many update periods is flagged
/// [`QualityFlag::CounterStalled`].
pub const STALL_PERIODS: u32 = 10;

/// Default most power one domain may draw (sets the wrap-guard period and reset detection).
pub const DEFAULT_MAX_DOMAIN_WATTS: Watts = Watts(1000.0);

/// How the meter is built. `Default` uses the documented constants and the real sysfs paths;
/// [`MeterConfig::from_env`] applies the `JOULECUT_*` overrides on top.
pub struct MeterConfig {
    /// Estimate constants (watts per busy core, memory term).
    pub estimate: EstimateModel,
    /// Powercap sysfs root (`JOULECUT_POWERCAP_ROOT`).
    pub powercap_root: PathBuf,
    /// The perf `power` PMU description (`JOULECUT_PERF_PMU_DIR`).
    pub perf_pmu_dir: PathBuf,
    /// How sysfs files are read (injectable for tests).
    pub reader: Arc<dyn SysfsReader>,
    /// Try RAPL through perf events.
    pub use_perf: bool,
    /// Try RAPL through powercap.
    pub use_powercap: bool,
    /// Try NVML.
    pub use_nvml: bool,
    /// Most power one domain may draw (`JOULECUT_MAX_DOMAIN_WATTS`).
    pub max_domain_watts: Watts,
    /// Run the background wrap guard for wrapping counters.
    pub wrap_guard: bool,
    /// Override the guard's period (default: a quarter of the shortest possible wrap period).
    pub wrap_guard_period: Option<Duration>,
    /// How long a RAPL probe may take to show that its counters advance before they are called
    /// stalled (`JOULECUT_RAPL_LIVENESS_MS`); zero skips the check (for fake, static trees).
    pub rapl_liveness_timeout: Duration,
    /// Called before both window edges.
    pub sync_hook: Option<SyncHook>,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            estimate: EstimateModel::default(),
            powercap_root: PathBuf::from(DEFAULT_POWERCAP_ROOT),
            perf_pmu_dir: PathBuf::from(perf::DEFAULT_PMU_DIR),
            reader: Arc::new(FsReader),
            use_perf: true,
            use_powercap: true,
            use_nvml: true,
            max_domain_watts: DEFAULT_MAX_DOMAIN_WATTS,
            wrap_guard: true,
            wrap_guard_period: None,
            rapl_liveness_timeout: crate::liveness::DEFAULT_TIMEOUT,
            sync_hook: None,
        }
    }
}

impl std::fmt::Debug for MeterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterConfig")
            .field("estimate", &self.estimate)
            .field("powercap_root", &self.powercap_root)
            .field("perf_pmu_dir", &self.perf_pmu_dir)
            .field("use_perf", &self.use_perf)
            .field("use_powercap", &self.use_powercap)
            .field("use_nvml", &self.use_nvml)
            .field("max_domain_watts", &self.max_domain_watts)
            .field("wrap_guard", &self.wrap_guard)
            .field("wrap_guard_period", &self.wrap_guard_period)
            .field("rapl_liveness_timeout", &self.rapl_liveness_timeout)
            .field("sync_hook", &self.sync_hook.is_some())
            .finish()
    }
}

fn env_watts(name: &str) -> Result<Option<Watts>> {
    match std::env::var(name) {
        Ok(v) => parse_watts(name, &v).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidConfig {
            name: name.into(),
            value: v.to_string_lossy().into_owned(),
            reason: "not UTF-8".into(),
        }),
    }
}

/// Parses a power setting: finite and non-negative.
pub fn parse_watts(name: &str, value: &str) -> Result<Watts> {
    match value.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(Watts(w)),
        _ => Err(Error::InvalidConfig {
            name: name.into(),
            value: value.into(),
            reason: "expected a finite, non-negative number of watts".into(),
        }),
    }
}

/// Parses a duration in whole milliseconds (at most ten seconds).
fn parse_millis(name: &str, value: &str) -> Result<Duration> {
    match value.trim().parse::<u64>() {
        Ok(ms) if ms <= 10_000 => Ok(Duration::from_millis(ms)),
        _ => Err(Error::InvalidConfig {
            name: name.into(),
            value: value.into(),
            reason: "expected whole milliseconds from 0 to 10000".into(),
        }),
    }
}

impl MeterConfig {
    /// Defaults with environment overrides: `JOULECUT_CPU_WATTS_PER_CORE`,
    /// `JOULECUT_MEMORY_WATTS_PER_GIB`, `JOULECUT_MAX_DOMAIN_WATTS`, `JOULECUT_POWERCAP_ROOT`,
    /// `JOULECUT_PERF_PMU_DIR`, `JOULECUT_RAPL_LIVENESS_MS`, and `JOULECUT_NO_NVML=1` /
    /// `JOULECUT_NO_PERF=1`.
    pub fn from_env() -> Result<MeterConfig> {
        let mut c = MeterConfig::default();
        if let Some(w) = env_watts("JOULECUT_CPU_WATTS_PER_CORE")? {
            c.estimate.watts_per_core = w;
        }
        if let Some(w) = env_watts("JOULECUT_MEMORY_WATTS_PER_GIB")? {
            c.estimate.memory_watts_per_gib = w;
        }
        if let Some(w) = env_watts("JOULECUT_MAX_DOMAIN_WATTS")? {
            c.max_domain_watts = w;
        }
        if let Some(p) = std::env::var_os("JOULECUT_POWERCAP_ROOT") {
            c.powercap_root = p.into();
        }
        if let Some(p) = std::env::var_os("JOULECUT_PERF_PMU_DIR") {
            c.perf_pmu_dir = p.into();
        }
        if let Ok(v) = std::env::var("JOULECUT_RAPL_LIVENESS_MS") {
            c.rapl_liveness_timeout = parse_millis("JOULECUT_RAPL_LIVENESS_MS", &v)?;
        }
        let off = |n: &str| std::env::var_os(n).is_some_and(|v| !v.is_empty() && v != "0");
        if off("JOULECUT_NO_NVML") {
            c.use_nvml = false;
        }
        if off("JOULECUT_NO_PERF") {
            c.use_perf = false;
        }
        Ok(c)
    }

    /// Sets the sync hook called before both window edges.
    pub fn with_sync_hook(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.sync_hook = Some(Box::new(hook));
        self
    }
}

/// Background thread that reads wrapping counters often enough that no wrap goes unseen.
#[derive(Debug)]
struct WrapGuard {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    period: Duration,
}

impl Drop for WrapGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn start_guard(probes: Vec<Arc<dyn Probe>>, period: Duration) -> Result<WrapGuard> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("joulecut-wrap-guard".into())
        .spawn(move || {
            let mut scratch = Vec::new();
            // Any message or a disconnect (the meter dropped) stops the guard.
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                for p in &probes {
                    scratch.clear();
                    p.read(&mut scratch);
                }
            }
        })
        .map_err(Error::GuardThread)?;
    Ok(WrapGuard {
        stop: Some(tx),
        handle: Some(handle),
        period,
    })
}

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

/// Readings at one window edge.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    cpu: Duration,
    rss: u64,
    readings: Vec<Reading>,
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

/// Detects a hypervisor: the `hypervisor` CPU flag, named by DMI when possible.
pub fn detect_hypervisor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flagged = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    if !flagged {
        return None;
    }
    let dmi = [
        "/sys/class/dmi/id/sys_vendor",
        "/sys/class/dmi/id/product_name",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_string())
    .find(|s| !s.is_empty());
    Some(
        dmi.or_else(cpuid_hypervisor)
            .unwrap_or_else(|| "unknown hypervisor".to_string()),
    )
}

/// The hypervisor's CPUID vendor signature (leaf 0x4000_0000), e.g. `KVMKVMKVM` → `KVM`.
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> Option<String> {
    // Only called when /proc/cpuinfo shows the `hypervisor` flag, so the leaf is defined.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86_64 CPU and has no side effects.
    let r = unsafe { std::arch::x86_64::__cpuid(0x4000_0000) };
    let mut sig = Vec::with_capacity(12);
    for reg in [r.ebx, r.ecx, r.edx] {
        sig.extend_from_slice(&reg.to_le_bytes());
    }
    let sig = String::from_utf8_lossy(&sig)
        .trim_matches(char::from(0))
        .to_string();
    let name = match sig.as_str() {
        "KVMKVMKVM" => "KVM",
        "Microsoft Hv" => "Hyper-V",
        "VMwareVMware" => "VMware",
        "XenVMMXenVMM" => "Xen",
        "TCGTCGTCGTCG" => "QEMU (TCG)",
        " lrpepyh  vr" | "ACRNACRNACRN" | "VBoxVBoxVBox" => sig.as_str(),
        other
            if other.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                && !other.trim().is_empty() =>
        {
            other
        }
        _ => return None,
    };
    Some(name.trim().to_string())
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> Option<String> {
    None
}

impl Meter {
    /// Picks the best available probes; never fails for lack of hardware (it falls back to the
    /// labelled estimate). Fails only when a background thread cannot be started.
    pub fn auto(config: MeterConfig) -> Result<Meter> {
        let hypervisor = detect_hypervisor();
        let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
        let mut skipped = Vec::new();
        let virt = |reason: Unavailable| match (&reason, &hypervisor) {
            (Unavailable::NotPresent { .. }, Some(h)) => Unavailable::Virtualised {
                hypervisor: h.clone(),
            },
            _ => reason,
        };

        // CPU: perf first (wrap-free), then powercap.
        let mut cpu_probe: Option<String> = None;
        if config.use_perf {
            match RaplPerfProbe::open(&config.perf_pmu_dir, config.reader.clone())
                .and_then(|p| p.require_live(config.rapl_liveness_timeout))
            {
                Ok((p, stalled)) => {
                    cpu_probe = Some(perf::NAME.to_string());
                    probes.push(Arc::new(p));
                    skipped.extend(stalled.into_iter().map(|r| ProbeSkip::new(perf::NAME, r)));
                }
                Err(r) => skipped.push(ProbeSkip::new(perf::NAME, virt(r))),
            }
        } else {
            skipped.push(ProbeSkip::new(perf::NAME, Unavailable::Disabled));
        }
        if let Some(by) = &cpu_probe {
            skipped.push(ProbeSkip::new(
                powercap::NAME,
                Unavailable::Superseded { by: by.clone() },
            ));
        } else if config.use_powercap {
            match RaplPowercapProbe::discover(
                &config.powercap_root,
                config.reader.clone(),
                config.max_domain_watts.0,
            )
            .and_then(|p| p.require_live(config.rapl_liveness_timeout))
            {
                Ok((p, stalled)) => {
                    cpu_probe = Some(powercap::NAME.to_string());
                    probes.push(Arc::new(p));
                    skipped.extend(
                        stalled
                            .into_iter()
                            .map(|r| ProbeSkip::new(powercap::NAME, r)),
                    );
                }
                Err(r) => skipped.push(ProbeSkip::new(powercap::NAME, virt(r))),
            }
        } else {
            skipped.push(ProbeSkip::new(powercap::NAME, Unavailable::Disabled));
        }

        // GPU.
        if config.use_nvml {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            match NvmlProbe::open(&nvml::parse_visible_devices(visible.as_deref())) {
                Ok(p) => probes.push(Arc::new(p)),
                Err(r) => skipped.push(ProbeSkip::new(nvml::NAME, r)),
            }
        } else {
            skipped.push(ProbeSkip::new(nvml::NAME, Unavailable::Disabled));
        }

        let domains: Vec<DomainInfo> = probes
            .iter()
            .flat_map(|p| p.info().domains.iter().cloned())
            .collect();
        let estimate_cpu = cpu_probe.is_none();
        // Memory is estimated only alongside an estimated CPU; with measured CPU and no DRAM
        // counter it is left out and flagged, rather than silently mixing.
        let has_memory_counter = domains
            .iter()
            .any(|d| d.name.starts_with("dram") || d.name == "psys");
        let estimate_memory = estimate_cpu;
        let mut meter_flags = BTreeSet::new();
        if hypervisor.is_some() {
            meter_flags.insert(QualityFlag::Virtualised);
        }
        if !estimate_cpu && !has_memory_counter {
            meter_flags.insert(QualityFlag::PartialDomains);
        }

        let mut infos: Vec<ProbeInfo> = probes.iter().map(|p| p.info().clone()).collect();
        if estimate_cpu {
            let mut est = vec![DomainInfo {
                name: "cpu".into(),
                source: config.estimate.cpu_source(),
                provenance: Provenance::Estimated,
                resolution_uj: None,
                update_period: None,
                wrap_range_uj: None,
            }];
            if estimate_memory {
                est.push(DomainInfo {
                    name: "memory".into(),
                    source: config.estimate.memory_source(false),
                    provenance: Provenance::Estimated,
                    resolution_uj: None,
                    update_period: None,
                    wrap_range_uj: None,
                });
            }
            infos.push(ProbeInfo {
                name: estimate::NAME.into(),
                kind: Provenance::Estimated,
                domains: est,
            });
        }

        let guarded: Vec<Arc<dyn Probe>> = probes
            .iter()
            .filter(|p| p.guard_period().is_some())
            .cloned()
            .collect();
        let guard = if config.wrap_guard && !guarded.is_empty() {
            let period = config
                .wrap_guard_period
                .or_else(|| guarded.iter().filter_map(|p| p.guard_period()).min())
                .unwrap_or(Duration::from_secs(1));
            Some(start_guard(guarded, period)?)
        } else {
            None
        };

        Ok(Meter {
            probes,
            domains,
            estimate: config.estimate,
            estimate_cpu,
            estimate_memory,
            report: ProbeReport {
                probes: infos,
                skipped,
                hypervisor,
            },
            meter_flags,
            sync_hook: config.sync_hook,
            baseline: Mutex::new(None),
            dropped: Mutex::new(Vec::new()),
            guard,
        })
    }

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

    fn sync(&self) {
        if let Some(h) = &self.sync_hook {
            h();
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut readings = Vec::with_capacity(self.domains.len());
        for p in &self.probes {
            p.read(&mut readings);
        }
        let cpu = estimate::process_cpu_time();
        let rss = if self.estimate_memory {
            estimate::process_rss_bytes()
        } else {
            0
        };
        Snapshot {
            at: Instant::now(),
            cpu,
            rss,
            readings,
        }
    }

    fn edge(&self) -> Snapshot {
        self.sync();
        self.snapshot()
    }

    /// Measured domains between two snapshots.
    fn measured_domains(&self, a: &Snapshot, b: &Snapshot, wall: Duration) -> Vec<DomainEnergy> {
        let mut out = Vec::with_capacity(self.domains.len() + 2);
        for ((info, ra), rb) in self.domains.iter().zip(&a.readings).zip(&b.readings) {
            let mut flags = BTreeSet::new();
            let ev: CounterEvents = rb.events.since(&ra.events);
            if ev.wraps > 0 {
                flags.insert(QualityFlag::WrapCorrected);
            }
            if ev.ambiguous > 0 {
                flags.insert(QualityFlag::WrapAmbiguous);
            }
            if ev.resets > 0 {
                flags.insert(QualityFlag::CounterReset);
            }
            if ev.read_errors > 0 {
                flags.insert(QualityFlag::ReadError);
            }
            if info.update_period.is_some_and(|p| wall < p) {
                flags.insert(QualityFlag::ShorterThanUpdatePeriod);
            }
            let joules = rb.energy.since(ra.energy);
            // A live counter moves many times over a window this long; exactly 0 means it died.
            if joules == MicroJoules::ZERO
                && info
                    .update_period
                    .is_some_and(|p| wall >= p * STALL_PERIODS)
            {
                flags.insert(QualityFlag::CounterStalled);
            }
            if info.provenance == Provenance::Integrated {
                flags.insert(QualityFlag::IntegratedPower);
            }
            out.push(DomainEnergy {
                name: info.name.clone(),
                joules,
                provenance: info.provenance,
                source: info.source.clone(),
                flags,
            });
        }
        out
    }

    fn estimated_domains(
        &self,
        cpu: Duration,
        rss: u64,
        peak: bool,
        wall: Duration,
        out: &mut Vec<DomainEnergy>,
    ) {
        if self.estimate_cpu {
            out.push(DomainEnergy {
                name: "cpu".into(),
                joules: self.estimate.cpu_energy(cpu),
                provenance: Provenance::Estimated,
                source: self.estimate.cpu_source(),
                flags: BTreeSet::new(),
            });
        }
        if self.estimate_memory {
            out.push(DomainEnergy {
                name: "memory".into(),
                joules: self.estimate.memory_energy(rss, wall),
                provenance: Provenance::Estimated,
                source: self.estimate.memory_source(peak),
                flags: BTreeSet::new(),
            });
        }
    }

    fn measurement(&self, label: String, a: &Snapshot, b: &Snapshot) -> Measurement {
        let wall = b.at.saturating_duration_since(a.at);
        let cpu = b.cpu.saturating_sub(a.cpu);
        let mut domains = self.measured_domains(a, b, wall);
        let rss = a.rss / 2 + b.rss / 2;
        self.estimated_domains(cpu, rss, false, wall, &mut domains);
        let baseline = self
            .baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Measurement::from_domains(
            label,
            wall,
            cpu,
            domains,
            self.meter_flags.clone(),
            baseline,
        )
    }

    /// Opens a named window; [`Window::finish`] (or dropping it) closes it.
    pub fn window(&self, label: &str) -> Window<'_> {
        Window {
            meter: self,
            label: label.to_string(),
            start: Some(self.edge()),
        }
    }

    /// Runs `f` inside a window named `label`.
    pub fn measure<T>(&self, label: &str, f: impl FnOnce() -> T) -> (T, Measurement) {
        let w = self.window(label);
        let out = f();
        (out, w.finish())
    }

    /// Measurements of windows that were dropped without [`Window::finish`], oldest first; clears
    /// the list.
    pub fn take_measurements(&self) -> Vec<Measurement> {
        std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|p| p.into_inner()))
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

    /// Runs a command to completion and meters it: measured domains over its wall time, the
    /// estimate from the child's own CPU time and peak RSS (`wait4` rusage). SIGINT and SIGQUIT
    /// are ignored by this process while the child runs (like `time`), so Ctrl-C stops the child and
    /// the measurement is still reported.
    pub fn run_command(&self, label: &str, cmd: &mut Command) -> Result<CommandOutcome> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let a = self.edge();
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = libc::pid_t::try_from(child.id()).map_err(|_| Error::Wait {
            program: program.clone(),
            source: std::io::Error::other("pid out of range"),
        })?;
        let _ignore = IgnoreInterrupts::new();
        // SAFETY: all-zero is a valid rusage / status.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: valid pointers to locals; pid is our own un-reaped child.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Wait {
                    program,
                    source: err,
                });
            }
        }
        // The child is reaped; std's handle only closes its pipes now.
        drop(child);
        let b = self.edge();
        let wall = b.at.saturating_duration_since(a.at);
        let cpu = estimate::rusage_cpu(&ru);
        let mut domains = self.measured_domains(&a, &b, wall);
        self.estimated_domains(
            cpu,
            estimate::rusage_peak_rss(&ru),
            true,
            wall,
            &mut domains,
        );
        let baseline = self
            .baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let measurement = Measurement::from_domains(
            label.to_string(),
            wall,
            cpu,
            domains,
            self.meter_flags.clone(),
            baseline,
        );
        let status = if libc::WIFEXITED(status) {
            ChildStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            ChildStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ChildStatus {
                code: None,
                signal: None,
            }
        };
        Ok(CommandOutcome {
            status,
            measurement,
        })
    }

    /// Convenience: [`Meter::run_command`] for a program and its arguments.
    pub fn run_argv<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<CommandOutcome> {
        let (program, args) = argv.split_first().ok_or(Error::NoCommand)?;
        let label = program.as_ref().to_string_lossy().into_owned();
        self.run_command(&label, Command::new(program).args(args))
    }
}

/// Ignores SIGINT/SIGQUIT for its lifetime (restores the previous handlers on drop).
struct IgnoreInterrupts {
    prev: [(libc::c_int, libc::sighandler_t); 2],
}

impl IgnoreInterrupts {
    fn new() -> Self {
        let mut prev = [
            (libc::SIGINT, libc::SIG_DFL),
            (libc::SIGQUIT, libc::SIG_DFL),
        ];
        for (sig, old) in &mut prev {
            // SAFETY: installing SIG_IGN is async-signal-safe and has no preconditions.
            *old = unsafe { libc::signal(*sig, libc::SIG_IGN) };
        }
        IgnoreInterrupts { prev }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (sig, old) in self.prev {
            if old != libc::SIG_ERR {
                // SAFETY: restores the handler that was installed before.
                unsafe { libc::signal(sig, old) };
            }
        }
    }
}

/// How a metered command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ChildStatus {
    /// The code a shell would report: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => (128 + (s & 0x7f)) as u8,
            _ => 1,
        }
    }
}

/// A metered command's exit status and energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    /// How it ended.
    pub status: ChildStatus,
    /// Its energy.
    pub measurement: Measurement,
}

/// An open window. Nest with [`Window::window`]; close with [`Window::finish`]. A window dropped
/// without `finish` is measured anyway and kept for [`Meter::take_measurements`].
#[must_use = "a window measures until it is finished or dropped"]
pub struct Window<'m> {
    meter: &'m Meter,
    label: String,
    start: Option<Snapshot>,
}

impl std::fmt::Debug for Window<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl<'m> Window<'m> {
    /// The window's full label (`outer/inner` when nested).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens a window nested in this one, labelled `self/label`.
    pub fn window(&self, label: &str) -> Window<'m> {
        let mut w = self.meter.window(label);
        w.label = format!("{}/{}", self.label, label);
        w
    }

    /// Runs `f` in a nested window.
    pub fn measure<T>(&self, label: &str, f: impl FnOnce() -> T) -> (T, Measurement) {
        let w = self.window(label);
        let out = f();
        (out, w.finish())
    }

    /// Closes the window and returns its measurement.
    pub fn finish(mut self) -> Measurement {
        self.close()
    }

    fn close(&mut self) -> Measurement {
        let end = self.meter.edge();
        let start = self.start.take().unwrap_or_else(|| end.clone());
        self.meter
            .measurement(std::mem::take(&mut self.label), &start, &end)
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        if self.start.is_some() {
            let m = self.close();
            self.meter
                .dropped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m);
        }
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

    #[test]
    fn millis_parsing() {
        assert_eq!(
            parse_millis("x", " 20 ").unwrap(),
            Duration::from_millis(20)
        );
        assert!(parse_millis("x", "-1").unwrap_err().is_bad_input());
        assert!(parse_millis("x", "99999").is_err());
    }

    #[test]
    fn watts_parsing() {
        assert_eq!(parse_watts("x", " 12.5 ").unwrap(), Watts(12.5));
        assert!(parse_watts("x", "-1").unwrap_err().is_bad_input());
        assert!(parse_watts("x", "NaN").is_err());
        assert!(parse_watts("x", "ten").is_err());
    }

    #[test]
    fn shell_codes() {
        assert_eq!(
            ChildStatus {
                code: Some(3),
                signal: None
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ChildStatus {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
    }
}
