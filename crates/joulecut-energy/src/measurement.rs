//! Results of a window: [`Measurement`], serialised as the `energy` object of every joulecut JSON.
//!
//! Provenance rules:
//! * each domain is `measured` (counter deltas), `integrated` (power samples integrated; counted as
//!   measured in totals, flagged `integrated_power`) or `estimated` (a model, named in `source`);
//! * the total's `provenance` is `measured` or `estimated` when all domains agree, else `mixed`; the
//!   two parts are always given separately in `measured_joules` and `estimated_joules`;
//! * net energy subtracts an idle baseline from *measured* domains only (an estimate from CPU time
//!   already excludes idle power).
//!
//! ```
//! use joulecut_energy::{Meter, MeterConfig};
//!
//! let meter = Meter::auto(MeterConfig::default()).unwrap();
//! let (_, m) = meter.measure("work", || std::hint::black_box((0..100_000u64).sum::<u64>()));
//! let json = serde_json::to_value(&m).unwrap();
//! for key in ["joules", "provenance", "wall_seconds", "cpu_seconds", "domains", "flags"] {
//!     assert!(json.get(key).is_some(), "{key}");
//! }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::provenance::{Provenance, TotalProvenance};
use crate::units::{Joules, MicroJoules, Watts};

/// A quality flag on a measurement or domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QualityFlag {
    /// Some or all joules are estimates.
    Estimated,
    /// Measured and estimated joules are both in the total.
    Mixed,
    /// Running in a virtual machine.
    Virtualised,
    /// A counter wrapped inside the window and was corrected.
    WrapCorrected,
    /// A counter may have wrapped unseen, or went backwards with no known range.
    WrapAmbiguous,
    /// A counter restarted from zero inside the window.
    CounterReset,
    /// A counter could not be read at some point; its energy may be low.
    ReadError,
    /// The window is shorter than a counter's update period: its energy is unreliable.
    ShorterThanUpdatePeriod,
    /// A measured counter read exactly 0 J over a window of many update periods: it has most likely
    /// stopped (e.g. a virtualised counter), so the domain's 0 J is not a measurement of no work.
    CounterStalled,
    /// Energy integrated from power samples rather than read from a counter.
    IntegratedPower,
    /// Some hardware is not metered (e.g. DRAM with no counter).
    PartialDomains,
    /// Net energy would have been negative and was clamped to the estimated part.
    NetClamped,
}

/// Energy of one domain in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainEnergy {
    /// Domain name (`cpu-package-0`, `dram-0`, `gpu-0`, `cpu`, `memory`, ...).
    pub name: String,
    /// Energy in the window.
    #[serde(serialize_with = "ser_joules")]
    pub joules: MicroJoules,
    /// How it was obtained.
    pub provenance: Provenance,
    /// Probe or model, e.g. `rapl-powercap`, `cpu-time x 10 W/core`.
    pub source: String,
    /// Quality flags of this domain.
    pub flags: BTreeSet<QualityFlag>,
}

/// An idle baseline: the measured power of the machine doing nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// Idle power over the measured domains.
    pub watts: Watts,
    /// How long the baseline was measured.
    #[serde(serialize_with = "ser_secs", rename = "seconds")]
    pub duration: Duration,
    /// The measured domains it covers (empty when nothing is measured: net = gross).
    pub domains: Vec<String>,
}

/// Grid carbon intensity, given explicitly: no implicit world average.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridIntensity {
    /// Grams of CO2-equivalent per kWh.
    pub grams_per_kwh: f64,
    /// Where the number comes from (e.g. "Electricity Maps 2024 annual", "IEA 2024").
    pub source: String,
    /// Grid region (e.g. "DE", "US-CAL-CISO").
    pub region: String,
}

/// Carbon attached to a measurement on request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Carbon {
    /// Grams of CO2-equivalent for the energy (net when a baseline is set, else gross).
    pub grams_co2e: f64,
    /// `net` or `gross`.
    pub basis: &'static str,
    /// The intensity used.
    pub intensity: GridIntensity,
}

/// The energy of one window: wall and CPU time, per-domain joules with provenance, totals that keep
/// measured and estimated apart, and quality flags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// Window name; nested windows are `outer/inner`.
    pub label: String,
    /// Total (gross) energy.
    #[serde(serialize_with = "ser_joules")]
    pub joules: MicroJoules,
    /// `measured`, `estimated` or `mixed`.
    pub provenance: TotalProvenance,
    /// The measured (and integrated) part of `joules`.
    #[serde(serialize_with = "ser_joules")]
    pub measured_joules: MicroJoules,
    /// The estimated part of `joules`.
    #[serde(serialize_with = "ser_joules")]
    pub estimated_joules: MicroJoules,
    /// Wall time.
    #[serde(serialize_with = "ser_secs", rename = "wall_seconds")]
    pub wall: Duration,
    /// CPU time (user + system) of the process, or of the metered command.
    #[serde(serialize_with = "ser_secs", rename = "cpu_seconds")]
    pub cpu: Duration,
    /// `joules / wall_seconds`; `null` for an empty window.
    pub average_watts: Option<Watts>,
    /// Per-domain energy.
    pub domains: Vec<DomainEnergy>,
    /// Union of the domains' flags and the meter's.
    pub flags: BTreeSet<QualityFlag>,
    /// Idle baseline, when one was measured.
    pub baseline: Option<Baseline>,
    /// `joules` minus baseline power × wall over the measured domains; `null` without baseline.
    #[serde(serialize_with = "ser_opt_joules")]
    pub net_joules: Option<MicroJoules>,
    /// Carbon, only when asked for ([`Measurement::with_carbon`]).
    pub carbon: Option<Carbon>,
}

impl Measurement {
    /// Assembles a measurement from its domains; computes totals, provenance and flags.
    pub(crate) fn from_domains(
        label: String,
        wall: Duration,
        cpu: Duration,
        domains: Vec<DomainEnergy>,
        mut flags: BTreeSet<QualityFlag>,
        baseline: Option<Baseline>,
    ) -> Measurement {
        let mut measured = MicroJoules::ZERO;
        let mut estimated = MicroJoules::ZERO;
        for d in &domains {
            flags.extend(d.flags.iter().copied());
            match d.provenance {
                Provenance::Measured | Provenance::Integrated => {
                    measured = measured.saturating_add(d.joules)
                }
                Provenance::Estimated => estimated = estimated.saturating_add(d.joules),
            }
        }
        let any_measured = domains
            .iter()
            .any(|d| d.provenance != Provenance::Estimated);
        let any_estimated = domains
            .iter()
            .any(|d| d.provenance == Provenance::Estimated);
        let provenance = match (any_measured, any_estimated) {
            (true, true) => TotalProvenance::Mixed,
            (true, false) => TotalProvenance::Measured,
            _ => TotalProvenance::Estimated,
        };
        if any_estimated {
            flags.insert(QualityFlag::Estimated);
        }
        if provenance == TotalProvenance::Mixed {
            flags.insert(QualityFlag::Mixed);
        }
        let joules = measured.saturating_add(estimated);
        let net_joules = baseline.as_ref().map(|b| {
            let idle = b.watts.over(wall);
            if idle > measured {
                flags.insert(QualityFlag::NetClamped);
            }
            measured.since(idle).saturating_add(estimated)
        });
        Measurement {
            label,
            joules,
            provenance,
            measured_joules: measured,
            estimated_joules: estimated,
            wall,
            cpu,
            average_watts: joules.to_joules().per(wall),
            domains,
            flags,
            baseline,
            net_joules,
            carbon: None,
        }
    }

    /// `measured`, `estimated` or `mixed`, typed: compare it or print it (`Display`) instead of
    /// reading `"provenance"` out of the JSON.
    pub fn provenance(&self) -> TotalProvenance {
        self.provenance
    }

    /// Total energy in joules.
    pub fn total(&self) -> Joules {
        self.joules.to_joules()
    }

    /// True when a measured domain's window was shorter than its counter's update period: its
    /// joules (possibly 0) are below the counter's resolution and must not be printed as a
    /// plain measurement.
    pub fn below_resolution(&self) -> bool {
        self.domains.iter().any(|d| {
            d.provenance != Provenance::Estimated
                && d.flags.contains(&QualityFlag::ShorterThanUpdatePeriod)
        })
    }

    /// The domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&DomainEnergy> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Adds carbon at `intensity` (net energy when a baseline is set, else gross).
    pub fn with_carbon(mut self, intensity: GridIntensity) -> Measurement {
        let (energy, basis) = match self.net_joules {
            Some(n) => (n, "net"),
            None => (self.joules, "gross"),
        };
        let kwh = energy.to_joules().0 / 3.6e6;
        self.carbon = Some(Carbon {
            grams_co2e: kwh * intensity.grams_per_kwh,
            basis,
            intensity,
        });
        self
    }
}

fn ser_joules<S: Serializer>(e: &MicroJoules, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(e.to_joules().0)
}

fn ser_opt_joules<S: Serializer>(e: &Option<MicroJoules>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(&e.to_joules().0),
        None => s.serialize_none(),
    }
}

fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(name: &str, uj: u64, p: Provenance) -> DomainEnergy {
        DomainEnergy {
            name: name.into(),
            joules: MicroJoules(uj),
            provenance: p,
            source: "test".into(),
            flags: BTreeSet::new(),
        }
    }

    #[test]
    fn mixed_is_never_silent() {
        let m = Measurement::from_domains(
            "w".into(),
            Duration::from_secs(2),
            Duration::from_secs(1),
            vec![
                dom("cpu-package-0", 3_000_000, Provenance::Measured),
                dom("memory", 1_000_000, Provenance::Estimated),
            ],
            BTreeSet::new(),
            None,
        );
        assert_eq!(m.provenance, TotalProvenance::Mixed);
        assert_eq!(m.measured_joules, MicroJoules(3_000_000));
        assert_eq!(m.estimated_joules, MicroJoules(1_000_000));
        assert!(m.flags.contains(&QualityFlag::Mixed));
        assert_eq!(m.average_watts, Some(Watts(2.0)));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["provenance"], "mixed");
        assert_eq!(v["joules"], 4.0);
        assert_eq!(v["domains"][1]["provenance"], "estimated");
    }

    #[test]
    fn net_and_carbon() {
        let b = Baseline {
            watts: Watts(1.0),
            duration: Duration::from_secs(1),
            domains: vec!["psys".into()],
        };
        let m = Measurement::from_domains(
            "w".into(),
            Duration::from_secs(2),
            Duration::ZERO,
            vec![dom("psys", 5_000_000, Provenance::Measured)],
            BTreeSet::new(),
            Some(b),
        );
        assert_eq!(m.provenance, TotalProvenance::Measured);
        assert_eq!(m.net_joules, Some(MicroJoules(3_000_000)));
        let m = m.with_carbon(GridIntensity {
            grams_per_kwh: 360.0,
            source: "test".into(),
            region: "X".into(),
        });
        let c = m.carbon.unwrap();
        assert_eq!(c.basis, "net");
        assert!((c.grams_co2e - 3.0 / 3.6e6 * 360.0).abs() < 1e-12);
    }
}
