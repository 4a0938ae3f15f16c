//! A measurement's joules by kind of hardware — CPU, memory, GPU — as reports and CSV columns show
//! them (CodeCarbon's `cpu_energy`, `ram_energy`, `gpu_energy`), each with the provenance of the
//! domains it sums, and kilowatt-hours.
//!
//! ```
//! use joulecut_energy::{DomainKind, kwh};
//!
//! assert_eq!(DomainKind::of("cpu-package-0"), DomainKind::Cpu);
//! assert_eq!(DomainKind::of("dram-1"), DomainKind::Memory);
//! assert_eq!(DomainKind::of("memory"), DomainKind::Memory);
//! assert_eq!(DomainKind::of("gpu-0"), DomainKind::Gpu);
//! assert_eq!(DomainKind::of("psys"), DomainKind::Other);
//! assert_eq!(kwh(3.6e6), 1.0);
//! ```

use serde::{Deserialize, Serialize};

use crate::measurement::Measurement;
use crate::provenance::{Provenance, TotalProvenance};

/// Joules in a kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// `joules` in kilowatt-hours.
pub fn kwh(joules: f64) -> f64 {
    joules / JOULES_PER_KWH
}

/// Which hardware a domain's joules are spent in, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DomainKind {
    /// CPU packages and cores (`cpu-package-N`, `core`, the estimate's `cpu`).
    Cpu,
    /// DRAM (`dram-N`, the estimate's `memory`).
    Memory,
    /// GPUs (`gpu-N`).
    Gpu,
    /// Anything else, e.g. `psys` (the whole platform: CPU and memory together, so it is not
    /// split into either).
    Other,
}

impl DomainKind {
    /// The kind of the domain called `name`.
    pub fn of(name: &str) -> DomainKind {
        let n = name.to_ascii_lowercase();
        if n.starts_with("gpu") {
            DomainKind::Gpu
        } else if n.starts_with("dram") || n.starts_with("memory") || n.starts_with("ram") {
            DomainKind::Memory
        } else if n.starts_with("cpu") || n.starts_with("package") || n.starts_with("core") {
            DomainKind::Cpu
        } else {
            DomainKind::Other
        }
    }
}

/// The joules of one kind of hardware and how they were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KindEnergy {
    /// Joules over the domains of this kind.
    pub joules: f64,
    /// `measured` when every such domain was measured (or integrated), `estimated` when every one
    /// was estimated, else `mixed`.
    pub provenance: TotalProvenance,
}

/// A measurement's joules split by [`DomainKind`]; a kind with no domain is `None` (not metered,
/// never a 0 J figure).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DomainSplit {
    /// CPU domains.
    pub cpu: Option<KindEnergy>,
    /// Memory domains.
    pub memory: Option<KindEnergy>,
    /// GPU domains.
    pub gpu: Option<KindEnergy>,
    /// Other domains (`psys`).
    pub other: Option<KindEnergy>,
}

impl DomainSplit {
    fn slot(&mut self, kind: DomainKind) -> &mut Option<KindEnergy> {
        match kind {
            DomainKind::Cpu => &mut self.cpu,
            DomainKind::Memory => &mut self.memory,
            DomainKind::Gpu => &mut self.gpu,
            DomainKind::Other => &mut self.other,
        }
    }

    fn add_kind(&mut self, kind: DomainKind, e: KindEnergy) {
        let slot = self.slot(kind);
        *slot = Some(match *slot {
            None => e,
            Some(k) => KindEnergy {
                joules: k.joules + e.joules,
                provenance: k.provenance.combine(e.provenance),
            },
        });
    }

    /// Adds `joules` of a domain called `name` obtained as `provenance`.
    pub fn add(&mut self, name: &str, joules: f64, provenance: Provenance) {
        let provenance = match provenance {
            Provenance::Estimated => TotalProvenance::Estimated,
            Provenance::Measured | Provenance::Integrated => TotalProvenance::Measured,
        };
        self.add_kind(DomainKind::of(name), KindEnergy { joules, provenance });
    }

    /// The split of a measurement.
    pub fn of(m: &Measurement) -> DomainSplit {
        let mut s = DomainSplit::default();
        for d in &m.domains {
            s.add(&d.name, d.joules.to_joules().0, d.provenance);
        }
        s
    }

    /// The split of a serialised measurement (the `energy` object of joulecut's JSON, as reports
    /// store it); `None` when it has no readable `domains` list. A domain whose joules or
    /// provenance cannot be read makes the whole split unreadable rather than silently low.
    pub fn from_json(energy: &serde_json::Value) -> Option<DomainSplit> {
        let mut s = DomainSplit::default();
        for d in energy.get("domains")?.as_array()? {
            let name = d.get("name")?.as_str()?;
            let joules = d.get("joules")?.as_f64()?;
            let p: Provenance = d.get("provenance")?.as_str()?.parse().ok()?;
            s.add(name, joules, p);
        }
        Some(s)
    }

    /// Adds every kind of `other` to this split (the energy of two windows together).
    pub fn merge(&mut self, other: &DomainSplit) {
        let kinds = [
            (DomainKind::Cpu, other.cpu),
            (DomainKind::Memory, other.memory),
            (DomainKind::Gpu, other.gpu),
            (DomainKind::Other, other.other),
        ];
        for (kind, e) in kinds {
            if let Some(e) = e {
                self.add_kind(kind, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_split_sums_by_kind_and_keeps_provenance() {
        let e = json!({"domains": [
            {"name": "cpu-package-0", "joules": 2.0, "provenance": "measured"},
            {"name": "cpu-package-1", "joules": 1.0, "provenance": "measured"},
            {"name": "memory", "joules": 0.5, "provenance": "estimated"},
            {"name": "dram-0", "joules": 0.25, "provenance": "measured"},
            {"name": "gpu-0", "joules": 4.0, "provenance": "integrated"},
        ]});
        let s = DomainSplit::from_json(&e).unwrap();
        assert_eq!(s.cpu.unwrap().joules, 3.0);
        assert_eq!(s.cpu.unwrap().provenance, TotalProvenance::Measured);
        assert_eq!(s.memory.unwrap().joules, 0.75);
        assert_eq!(s.memory.unwrap().provenance, TotalProvenance::Mixed);
        assert_eq!(s.gpu.unwrap().provenance, TotalProvenance::Measured);
        assert_eq!(s.other, None);
        let mut t = s;
        t.merge(&s);
        assert_eq!(t.cpu.unwrap().joules, 6.0);
        assert_eq!(t.other, None);
    }

    #[test]
    fn unreadable_domains_are_not_zero() {
        assert_eq!(DomainSplit::from_json(&json!({"joules": 1.0})), None);
        let bad = json!({"domains": [{"name": "cpu", "joules": 1.0, "provenance": "guessed"}]});
        assert_eq!(DomainSplit::from_json(&bad), None);
        // no domains at all: every kind absent, not 0 J
        let none = DomainSplit::from_json(&json!({"domains": []})).unwrap();
        assert_eq!(none, DomainSplit::default());
    }
}
