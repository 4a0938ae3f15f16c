//! [`Meter::auto`]: probe selection. CPU: `rapl-perf` (wrap-free) → `rapl-powercap` → the labelled
//! CPU-time estimate; GPU: `nvml`. Every probe not used is kept with its typed reason, and the
//! meter-wide quality flags (virtualised, partial domains) are decided here once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::guard::start_guard;
use super::host::detect_hypervisor;
use super::{Meter, MeterConfig, ProbeReport};
use crate::error::Result;
use crate::estimate;
use crate::measurement::QualityFlag;
use crate::nvml::{self, NvmlProbe};
use crate::perf::{self, RaplPerfProbe};
use crate::powercap::{self, RaplPowercapProbe};
use crate::probe::{DomainInfo, Probe, ProbeInfo, ProbeSkip, Unavailable};
use crate::provenance::Provenance;

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
}
