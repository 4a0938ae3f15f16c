//! Window edges: a [`Snapshot`] of every counter (plus CPU time and RSS for the estimate) taken
//! after the sync hook, and the arithmetic that turns two snapshots into per-domain energy with
//! quality flags and then into a [`Measurement`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Meter, STALL_PERIODS};
use crate::counter::CounterEvents;
use crate::estimate;
use crate::measurement::{DomainEnergy, Measurement, QualityFlag};
use crate::probe::Reading;
use crate::provenance::Provenance;
use crate::units::MicroJoules;

/// Readings at one window edge.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) at: Instant,
    pub(super) cpu: Duration,
    pub(super) rss: u64,
    pub(super) readings: Vec<Reading>,
}

impl Meter {
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

    pub(super) fn edge(&self) -> Snapshot {
        self.sync();
        self.snapshot()
    }

    /// Measured domains between two snapshots.
    pub(super) fn measured_domains(
        &self,
        a: &Snapshot,
        b: &Snapshot,
        wall: Duration,
    ) -> Vec<DomainEnergy> {
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

    pub(super) fn estimated_domains(
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

    pub(super) fn measurement(&self, label: String, a: &Snapshot, b: &Snapshot) -> Measurement {
        let wall = b.at.saturating_duration_since(a.at);
        let cpu = b.cpu.saturating_sub(a.cpu);
        let mut domains = self.measured_domains(a, b, wall);
        let rss = a.rss / 2 + b.rss / 2;
        self.estimated_domains(cpu, rss, false, wall, &mut domains);
        self.assemble(label, wall, cpu, domains)
    }

    /// A measurement from finished domains, with the meter's flags and current baseline.
    pub(super) fn assemble(
        &self,
        label: String,
        wall: Duration,
        cpu: Duration,
        domains: Vec<DomainEnergy>,
    ) -> Measurement {
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
}
