//! How a [`Meter`](super::Meter) is built: [`MeterConfig`] with its documented defaults, and the
//! `JOULECUT_*` environment overrides parsed into typed values (bad values are errors, not
//! silently ignored).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::estimate::EstimateModel;
use crate::perf;
use crate::probe::{FsReader, SysfsReader};
use crate::units::Watts;

/// Called before both edges of every window (e.g. a CUDA device synchronize).
pub type SyncHook = Box<dyn Fn() + Send + Sync>;

/// Default powercap root.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
