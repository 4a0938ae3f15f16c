//! # joulecut-energy
//!
//! Every joule figure joulecut prints comes from here. The crate reads energy counters at window
//! edges (RAPL through perf events or powercap, NVIDIA GPUs through NVML), falls back to a
//! **labelled** estimate where nothing can be read (virtual machines), and reports each number with
//! its provenance and quality flags.
//!
//! * [`Meter::auto`] picks probes and lists the skipped ones with typed reasons ([`Unavailable`]).
//! * Windows: [`Meter::window`] (RAII, nestable) and [`Meter::measure`] (closure); an optional
//!   sync hook runs at both edges.
//! * [`Measurement`] serialises to the `energy` object of joulecut's JSON: `joules`, `provenance`
//!   (`measured` | `estimated` | `mixed`), `wall_seconds`, `cpu_seconds`, `domains` (`name`,
//!   `joules`, `provenance`, `source`, `flags`), `flags`, `baseline`, `net_joules`, `carbon`.
//! * [`Meter::run_command`] meters a child process (estimate from its `wait4` rusage);
//!   [`Meter::run_command_every`] also reports each interval, like `perf stat -I`.
//! * [`Provenance`] (per domain) and [`TotalProvenance`] are the provenance words, typed: their
//!   `Display` and `FromStr` spell exactly what the JSON says; [`Measurement::provenance`] reads it.
//! * [`break_even()`] ([`BreakEven`]): after how many inferences a compressed model has paid back
//!   the joules its compression cost.
//! * [`DomainSplit`]: joules by kind of hardware (CPU, memory, GPU) with their provenance;
//!   [`UtcTime`] and [`new_run_id`] stamp a run; [`hostname`] and [`cpu_model`] name the host.
//!
//! See `README.md` for the estimate model, its constants and the provenance rules.
//!
//! ```
//! use joulecut_energy::{Meter, MeterConfig};
//!
//! let meter = Meter::auto(MeterConfig::from_env().unwrap()).unwrap();
//! let (sum, m) = meter.measure("sum", || (0..1_000_000u64).sum::<u64>());
//! assert_eq!(sum, 499_999_500_000);
//! assert_eq!(m.provenance().to_string(), serde_json::to_value(&m).unwrap()["provenance"]);
//! println!("{:.3} J, {}, {}", m.total().0, m.provenance(), serde_json::to_string(&m).unwrap());
//! for s in meter.skipped() {
//!     println!("skipped {}: {}", s.probe, s.reason);
//! }
//! ```

mod break_even;
pub mod counter;
mod error;
pub mod estimate;
pub mod liveness;
mod measurement;
mod meter;
pub mod nvml;
pub mod perf;
pub mod powercap;
mod probe;
mod provenance;
mod split;
mod stamp;
mod units;

pub use break_even::{BreakEven, break_even};
pub use error::{Error, Result};
pub use measurement::{Baseline, Carbon, DomainEnergy, GridIntensity, Measurement, QualityFlag};
pub use meter::{
    ChildStatus, CommandOutcome, DEFAULT_MAX_DOMAIN_WATTS, DEFAULT_POWERCAP_ROOT, Interval,
    MIN_WINDOW_PERIODS, Meter, MeterConfig, ProbeReport, STALL_PERIODS, SyncHook, Window,
    cpu_model, detect_hypervisor, hostname, parse_watts,
};
pub use probe::{
    DomainInfo, FsReader, Probe, ProbeInfo, ProbeSkip, Reading, SysfsReader, Unavailable,
};
pub use provenance::{ParseProvenanceError, Provenance, TotalProvenance};
pub use split::{DomainKind, DomainSplit, JOULES_PER_KWH, KindEnergy, kwh};
pub use stamp::{UtcTime, new_run_id};
pub use units::{Joules, MicroJoules, Watts};
