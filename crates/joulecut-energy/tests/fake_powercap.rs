//! RAPL powercap on fake sysfs trees: domain choice, wraps, the wrap guard, resets, permissions,
//! missing and garbage files. Nothing here may panic.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use joulecut_energy::counter::wrap_delta;
use joulecut_energy::powercap::RaplPowercapProbe;
use joulecut_energy::{
    FsReader, Meter, MeterConfig, Probe, QualityFlag, SysfsReader, TotalProvenance, Unavailable,
};

/// `max_energy_range_uj` of a real 61 µJ-unit package (262 kJ).
const RANGE: u64 = 262_143_328_850;

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    /// Adds zone `id` (flat, as in /sys/class/powercap).
    fn zone(&self, id: &str, name: &str, energy: u64, range: Option<u64>) -> &Self {
        let z = self.root().join(id);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(z.join("energy_uj"), format!("{energy}\n")).unwrap();
        if let Some(r) = range {
            std::fs::write(z.join("max_energy_range_uj"), format!("{r}\n")).unwrap();
        }
        self
    }
    fn set(&self, id: &str, energy: u64) {
        std::fs::write(
            self.root().join(id).join("energy_uj"),
            format!("{energy}\n"),
        )
        .unwrap();
    }
    fn write(&self, id: &str, file: &str, content: &str) {
        std::fs::write(self.root().join(id).join(file), content).unwrap();
    }
    /// The fake counters only move when a test writes them, so the start-up liveness check is off
    /// here; the `liveness_*` tests below turn it on.
    fn config(&self) -> MeterConfig {
        MeterConfig {
            powercap_root: self.root().to_path_buf(),
            use_perf: false,
            use_nvml: false,
            rapl_liveness_timeout: Duration::ZERO,
            ..MeterConfig::default()
        }
    }
    fn meter(&self) -> Meter {
        Meter::auto(self.config()).unwrap()
    }
}

fn names(meter: &Meter) -> Vec<String> {
    meter.probes()[0]
        .domains
        .iter()
        .map(|d| d.name.clone())
        .collect()
}

fn uj(m: &joulecut_energy::Measurement, domain: &str) -> u64 {
    m.domain(domain)
        .unwrap_or_else(|| panic!("no domain {domain}"))
        .joules
        .0
}

#[test]
fn one_package() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let meter = t.meter();
    assert_eq!(meter.probes()[0].name, "rapl-powercap");
    assert_eq!(names(&meter), ["cpu-package-0"]);
    assert!(
        meter
            .skipped()
            .iter()
            .any(|s| s.probe == "rapl-perf" && s.reason == Unavailable::Disabled)
    );
    let w = meter.window("one");
    t.set("intel-rapl:0", 2_501_000);
    let m = w.finish();
    assert_eq!(m.joules.0, 2_500_000);
    assert_eq!(m.provenance, TotalProvenance::Measured);
    assert_eq!(m.estimated_joules.0, 0);
    // No DRAM counter: memory is unmetered, and the measurement says so.
    assert!(m.flags.contains(&QualityFlag::PartialDomains));
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["provenance"], "measured");
    assert_eq!(json["domains"][0]["source"], "rapl-powercap");
    assert_eq!(json["joules"], 2.5);
}

#[test]
fn two_packages_and_dram() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 0, Some(RANGE))
        .zone("intel-rapl:0:0", "dram", 0, Some(RANGE))
        .zone("intel-rapl:1", "package-1", 0, Some(RANGE))
        .zone("intel-rapl:1:0", "dram", 0, Some(RANGE));
    let meter = t.meter();
    assert_eq!(
        names(&meter),
        ["cpu-package-0", "dram-0", "cpu-package-1", "dram-1"]
    );
    let w = meter.window("w");
    t.set("intel-rapl:0", 1_000_000);
    t.set("intel-rapl:0:0", 200_000);
    t.set("intel-rapl:1", 3_000_000);
    t.set("intel-rapl:1:0", 400_000);
    let m = w.finish();
    assert_eq!(uj(&m, "cpu-package-0"), 1_000_000);
    assert_eq!(uj(&m, "dram-0"), 200_000);
    assert_eq!(uj(&m, "cpu-package-1"), 3_000_000);
    assert_eq!(uj(&m, "dram-1"), 400_000);
    assert_eq!(m.joules.0, 4_600_000);
    assert!(!m.flags.contains(&QualityFlag::PartialDomains));
}

#[test]
fn psys_and_package_never_double_count() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 0, Some(RANGE))
        .zone("intel-rapl:0:0", "core", 0, Some(RANGE))
        .zone("intel-rapl:0:1", "uncore", 0, Some(RANGE))
        .zone("intel-rapl:0:2", "dram", 0, Some(RANGE))
        .zone("intel-rapl:1", "psys", 0, Some(RANGE))
        .zone("intel-rapl-mmio:0", "package-0", 0, Some(RANGE));
    let meter = t.meter();
    assert_eq!(names(&meter), ["cpu-package-0", "dram-0"]);
    let w = meter.window("w");
    for (id, e) in [
        ("intel-rapl:0", 5_000_000),
        ("intel-rapl:0:0", 3_000_000),
        ("intel-rapl:0:1", 1_000_000),
        ("intel-rapl:0:2", 500_000),
        ("intel-rapl:1", 9_000_000),
        ("intel-rapl-mmio:0", 5_000_000),
    ] {
        t.set(id, e);
    }
    let m = w.finish();
    assert_eq!(m.joules.0, 5_500_000, "package + dram only");
}

#[test]
fn psys_alone_when_no_package() {
    let t = Tree::new();
    t.zone("intel-rapl:1", "psys", 10, Some(RANGE))
        .zone("intel-rapl:1:0", "dram", 10, Some(RANGE));
    let meter = t.meter();
    assert_eq!(names(&meter), ["psys"]);
    let w = meter.window("w");
    t.set("intel-rapl:1", 1_010);
    t.set("intel-rapl:1:0", 510);
    assert_eq!(w.finish().joules.0, 1_000);
}

#[test]
fn nested_sysfs_layout() {
    // /sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0
    let t = Tree::new();
    let pkg = t.root().join("intel-rapl").join("intel-rapl:0");
    let dram = pkg.join("intel-rapl:0:0");
    std::fs::create_dir_all(&dram).unwrap();
    for (dir, name) in [(&pkg, "package-0"), (&dram, "dram")] {
        std::fs::write(dir.join("name"), name).unwrap();
        std::fs::write(dir.join("energy_uj"), "5").unwrap();
        std::fs::write(dir.join("max_energy_range_uj"), RANGE.to_string()).unwrap();
    }
    let probe = RaplPowercapProbe::discover(t.root(), Arc::new(FsReader), 1000.0).unwrap();
    let n: Vec<_> = probe
        .info()
        .domains
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(n, ["cpu-package-0", "dram-0"]);
}

#[test]
fn single_wrap() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", RANGE - 1_000, Some(RANGE));
    let meter = t.meter();
    let w = meter.window("w");
    std::thread::sleep(Duration::from_millis(2));
    t.set("intel-rapl:0", 2_000);
    let m = w.finish();
    assert_eq!(m.joules.0, 1_000 + 1 + 2_000);
    assert!(m.flags.contains(&QualityFlag::WrapCorrected));
    assert!(!m.flags.contains(&QualityFlag::CounterReset));
    assert!(!m.flags.contains(&QualityFlag::WrapAmbiguous));
}

/// Raw values a counter passes through in a long window: two full wraps.
fn two_wrap_sequence(range: u64) -> Vec<u64> {
    vec![range - 5_000_000, 5_000_000, range - 5_000_000, 5_000_000]
}

fn expected(start: u64, seq: &[u64], modulus: u64) -> u64 {
    let mut prev = start;
    let mut sum = 0;
    for &raw in seq {
        sum += wrap_delta(prev, raw, modulus);
        prev = raw;
    }
    sum
}

#[test]
fn two_wraps_in_a_long_window_caught_by_guard_polls() {
    // Deterministic: the guard's routine (`Meter::poll`) runs between counter changes.
    let range = 999_999_999; // 1 kJ range
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 100, Some(range));
    let meter = Meter::auto(MeterConfig {
        wrap_guard: false,
        ..t.config()
    })
    .unwrap();
    let w = meter.window("long");
    for raw in two_wrap_sequence(range) {
        std::thread::sleep(Duration::from_millis(15)); // 10 J steps need ≥ 10 ms at 1 kW
        t.set("intel-rapl:0", raw);
        meter.poll();
    }
    let m = w.finish();
    assert_eq!(
        m.joules.0,
        expected(100, &two_wrap_sequence(range), range + 1)
    );
    assert!(m.joules.0 > range, "two wraps: more than one full range");
    assert!(m.flags.contains(&QualityFlag::WrapCorrected));
    assert!(!m.flags.contains(&QualityFlag::CounterReset));
}

#[test]
fn two_wraps_in_a_long_window_caught_by_guard_thread() {
    let range = 999_999_999;
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 100, Some(range));
    let meter = Meter::auto(MeterConfig {
        wrap_guard_period: Some(Duration::from_millis(20)),
        ..t.config()
    })
    .unwrap();
    assert_eq!(meter.wrap_guard_period(), Some(Duration::from_millis(20)));
    let w = meter.window("long");
    for raw in two_wrap_sequence(range) {
        t.set("intel-rapl:0", raw);
        std::thread::sleep(Duration::from_millis(250)); // many guard periods
    }
    let m = w.finish();
    assert_eq!(
        m.joules.0,
        expected(100, &two_wrap_sequence(range), range + 1)
    );
    assert!(m.flags.contains(&QualityFlag::WrapCorrected));
}

#[test]
fn default_guard_period_is_a_quarter_wrap_at_max_power() {
    let t = Tree::new();
    // 65.5 kJ range at 1 kW wraps in 65.5 s: guard every ~16 s.
    t.zone("intel-rapl:0", "package-0", 0, Some(65_532_610_987));
    let p = t.meter().wrap_guard_period().unwrap();
    assert!(
        p > Duration::from_secs(15) && p < Duration::from_secs(17),
        "{p:?}"
    );
}

#[test]
fn counter_reset() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 50_000_000, Some(RANGE));
    let meter = t.meter();
    let w = meter.window("w");
    t.set("intel-rapl:0", 1_000);
    let m = w.finish();
    // 262 kJ in a few ms is no wrap: the counter restarted, and we count only what it shows.
    assert_eq!(m.joules.0, 1_000);
    assert!(m.flags.contains(&QualityFlag::CounterReset));
    assert!(!m.flags.contains(&QualityFlag::WrapCorrected));
}

#[derive(Debug)]
struct DenyEnergy;

impl SysfsReader for DenyEnergy {
    fn read(&self, path: &Path) -> io::Result<String> {
        if path.ends_with("energy_uj") {
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        } else {
            std::fs::read_to_string(path)
        }
    }
}

#[test]
fn unreadable_energy_is_permission_denied_with_remedy_not_zero() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let meter = Meter::auto(MeterConfig {
        reader: Arc::new(DenyEnergy),
        ..t.config()
    })
    .unwrap();
    let skip = meter
        .skipped()
        .iter()
        .find(|s| s.probe == "rapl-powercap")
        .unwrap();
    match &skip.reason {
        Unavailable::PermissionDenied { path, remedy } => {
            assert_eq!(path, &t.root().join("intel-rapl:0").join("energy_uj"));
            assert!(remedy.contains("root"), "{remedy}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    // The meter falls back to the labelled estimate instead of reporting 0 J measured.
    assert!(meter.is_estimate_only());
    let m = meter.window("w").finish();
    assert_eq!(m.provenance, TotalProvenance::Estimated);
    assert!(
        m.domains
            .iter()
            .all(|d| d.name == "cpu" || d.name == "memory")
    );
    let json = serde_json::to_value(meter.report()).unwrap();
    let s = &json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["probe"] == "rapl-powercap")
        .unwrap();
    assert_eq!(s["reason"], "permission_denied");
    assert!(s["remedy"].as_str().unwrap().contains("chmod"));
}

/// Fails every read of one file after `armed` is set, like a counter that turns unreadable.
#[derive(Debug)]
struct FlakyReader {
    target: PathBuf,
    armed: std::sync::atomic::AtomicBool,
}

impl SysfsReader for FlakyReader {
    fn read(&self, path: &Path) -> io::Result<String> {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) && path == self.target {
            Err(io::Error::other("EIO"))
        } else {
            std::fs::read_to_string(path)
        }
    }
}

#[test]
fn read_error_mid_window_is_flagged() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 0, Some(RANGE));
    let reader = Arc::new(FlakyReader {
        target: t.root().join("intel-rapl:0").join("energy_uj"),
        armed: false.into(),
    });
    let meter = Meter::auto(MeterConfig {
        reader: reader.clone(),
        ..t.config()
    })
    .unwrap();
    let w = meter.window("w");
    t.set("intel-rapl:0", 7_000);
    meter.poll();
    reader
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let m = w.finish();
    assert_eq!(m.joules.0, 7_000, "energy up to the last good reading");
    assert!(m.flags.contains(&QualityFlag::ReadError));
}

#[test]
fn missing_max_energy_range() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 5_000, None);
    let meter = t.meter();
    assert_eq!(meter.probes()[0].domains[0].wrap_range_uj, None);
    let w = meter.window("forward");
    t.set("intel-rapl:0", 8_000);
    let m = w.finish();
    assert_eq!(m.joules.0, 3_000);
    assert!(m.flags.iter().all(|f| *f != QualityFlag::WrapAmbiguous));
    // A decrease cannot be corrected without the range: count from 0 and flag it.
    let w = meter.window("backward");
    t.set("intel-rapl:0", 100);
    let m = w.finish();
    assert_eq!(m.joules.0, 100);
    assert!(m.flags.contains(&QualityFlag::WrapAmbiguous));
    assert!(meter.wrap_guard_period().is_none());
}

#[test]
fn garbage_energy_at_discovery_is_malformed() {
    for garbage in [
        "abc\n",
        "",
        "-5",
        "1.5e3",
        "18446744073709551616",
        "\u{0}\u{1}",
    ] {
        let t = Tree::new();
        t.zone("intel-rapl:0", "package-0", 0, Some(RANGE));
        t.write("intel-rapl:0", "energy_uj", garbage);
        let meter = t.meter();
        let skip = meter
            .skipped()
            .iter()
            .find(|s| s.probe == "rapl-powercap")
            .unwrap();
        assert!(
            matches!(skip.reason, Unavailable::Malformed { .. }),
            "{garbage:?}: {:?}",
            skip.reason
        );
        assert!(meter.is_estimate_only());
    }
}

#[test]
fn garbage_mid_window_and_garbage_range_never_panic() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 10, Some(RANGE));
    t.write("intel-rapl:0", "max_energy_range_uj", "lots");
    let meter = t.meter();
    assert_eq!(meter.probes()[0].domains[0].wrap_range_uj, None);
    let w = meter.window("w");
    t.write("intel-rapl:0", "energy_uj", "not a number");
    meter.poll();
    t.set("intel-rapl:0", 20);
    let m = w.finish();
    assert_eq!(m.joules.0, 10);
    assert!(m.flags.contains(&QualityFlag::ReadError));
}

#[test]
fn garbage_or_unknown_names_and_empty_trees() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "\u{fffd}garbage", 0, Some(RANGE))
        .zone("intel-rapl:0:0", "core", 0, Some(RANGE));
    let meter = t.meter();
    let skip = meter
        .skipped()
        .iter()
        .find(|s| s.probe == "rapl-powercap")
        .unwrap();
    assert!(matches!(
        skip.reason,
        Unavailable::NotPresent { .. } | Unavailable::Virtualised { .. }
    ));

    let missing = t.root().join("nope");
    let meter = Meter::auto(MeterConfig {
        powercap_root: missing,
        ..t.config()
    })
    .unwrap();
    let skip = meter
        .skipped()
        .iter()
        .find(|s| s.probe == "rapl-powercap")
        .unwrap();
    assert!(matches!(
        skip.reason,
        Unavailable::NotPresent { .. } | Unavailable::Virtualised { .. }
    ));
}

#[test]
fn idle_baseline_gives_net_next_to_gross() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 0, Some(RANGE));
    let meter = t.meter();
    let b = meter.measure_idle(Duration::from_millis(20));
    assert_eq!(b.domains, ["cpu-package-0"]);
    assert_eq!(b.watts.0, 0.0); // the fake counter did not move
    meter.set_baseline(Some(joulecut_energy::Baseline {
        watts: joulecut_energy::Watts(1.0),
        ..b
    }));
    let w = meter.window("w");
    std::thread::sleep(Duration::from_millis(100));
    t.set("intel-rapl:0", 1_000_000);
    let m = w.finish();
    let net = m.net_joules.unwrap().0;
    assert_eq!(m.joules.0, 1_000_000);
    // 1 J gross − 1 W × ~0.1 s.
    assert!(net < 910_000 && net > 500_000, "{net}");
}

/// Adds `step` µJ to the listed `energy_uj` files on every read, like a live RAPL counter; other
/// files read as they are on disk.
#[derive(Debug)]
struct Advancing {
    live: Vec<PathBuf>,
    step: u64,
    reads: std::sync::atomic::AtomicU64,
}

impl SysfsReader for Advancing {
    fn read(&self, path: &Path) -> io::Result<String> {
        let s = std::fs::read_to_string(path)?;
        if self.live.iter().any(|p| p == path) {
            let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let v: u64 = s.trim().parse().unwrap_or(0);
            return Ok(format!("{}\n", v + n * self.step));
        }
        Ok(s)
    }
}

#[test]
fn liveness_dead_counter_falls_back_to_the_estimate_with_a_reason() {
    let t = Tree::new();
    t.zone("intel-rapl:1", "psys", 10, Some(RANGE));
    let started = std::time::Instant::now();
    let meter = Meter::auto(MeterConfig {
        rapl_liveness_timeout: Duration::from_millis(20),
        ..t.config()
    })
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert!(
        meter.is_estimate_only(),
        "a dead counter is not a measurement"
    );
    let skip = meter
        .skipped()
        .iter()
        .find(|s| s.probe == "rapl-powercap")
        .unwrap();
    match &skip.reason {
        Unavailable::Stalled { detail } => {
            assert!(detail.contains("psys"), "{detail}");
            assert!(detail.contains("did not advance"), "{detail}");
        }
        other => panic!("expected Stalled, got {other:?}"),
    }
    let m = meter.window("w").finish();
    assert_eq!(m.provenance, TotalProvenance::Estimated);
    let json = serde_json::to_value(meter.report()).unwrap();
    assert!(
        json["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["probe"] == "rapl-powercap" && s["reason"] == "stalled")
    );
}

#[test]
fn liveness_keeps_live_domains_and_names_the_dead_one() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE))
        .zone("intel-rapl:0:0", "dram", 0, Some(RANGE));
    let reader = Arc::new(Advancing {
        live: vec![t.root().join("intel-rapl:0").join("energy_uj")],
        step: 100,
        reads: 0.into(),
    });
    let started = std::time::Instant::now();
    let meter = Meter::auto(MeterConfig {
        reader,
        rapl_liveness_timeout: Duration::from_millis(30),
        ..t.config()
    })
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(names(&meter), ["cpu-package-0"]);
    let skip = meter
        .skipped()
        .iter()
        .find(|s| matches!(s.reason, Unavailable::Stalled { .. }))
        .unwrap();
    assert_eq!(skip.probe, "rapl-powercap");
    assert!(skip.message.contains("dram-0"), "{}", skip.message);
    // Without a DRAM counter the measurement says memory is unmetered.
    let m = meter.window("w").finish();
    assert!(m.flags.contains(&QualityFlag::PartialDomains));
}

#[test]
fn liveness_check_is_cheap_when_counters_move() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let reader = Arc::new(Advancing {
        live: vec![t.root().join("intel-rapl:0").join("energy_uj")],
        step: 61,
        reads: 0.into(),
    });
    let started = std::time::Instant::now();
    let meter = Meter::auto(MeterConfig {
        reader,
        rapl_liveness_timeout: Duration::from_secs(5),
        ..t.config()
    })
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stops at the first movement"
    );
    assert_eq!(names(&meter), ["cpu-package-0"]);
    assert!(
        !meter
            .skipped()
            .iter()
            .any(|s| matches!(s.reason, Unavailable::Stalled { .. }))
    );
}

#[test]
fn a_counter_that_dies_later_is_flagged_not_silently_zero() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let meter = t.meter();
    // Update period 1 ms: 0 J over 30 ms is a stalled counter.
    let w = meter.window("w");
    std::thread::sleep(Duration::from_millis(30));
    let m = w.finish();
    assert_eq!(m.joules.0, 0);
    assert!(
        m.domain("cpu-package-0")
            .unwrap()
            .flags
            .contains(&QualityFlag::CounterStalled)
    );
    assert!(m.flags.contains(&QualityFlag::CounterStalled));
    let json = serde_json::to_value(&m).unwrap();
    assert!(
        json["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "counter_stalled")
    );
    // A counter that moved is not flagged, however long the window.
    let w = meter.window("w");
    std::thread::sleep(Duration::from_millis(30));
    t.set("intel-rapl:0", 2_000);
    let m = w.finish();
    assert!(!m.flags.contains(&QualityFlag::CounterStalled));
}

#[test]
fn min_window_follows_the_slowest_measured_counter() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let meter = t.meter();
    // RAPL updates every ~1 ms: ten periods.
    assert_eq!(meter.min_window(), Duration::from_millis(10));
    // Nothing measured: no minimum, so CPU-only runs are not lengthened.
    let empty = tempfile::tempdir().unwrap();
    let est = Meter::auto(MeterConfig {
        powercap_root: empty.path().join("none"),
        ..t.config()
    })
    .unwrap();
    assert!(est.is_estimate_only());
    assert_eq!(est.min_window(), Duration::ZERO);
}

#[test]
fn short_window_is_below_resolution() {
    let t = Tree::new();
    t.zone("intel-rapl:0", "package-0", 1_000, Some(RANGE));
    let meter = t.meter();
    let m = meter.window("w").finish();
    if m.wall < Duration::from_millis(1) {
        assert!(m.below_resolution());
    }
    let w = meter.window("w");
    std::thread::sleep(Duration::from_millis(5));
    t.set("intel-rapl:0", 9_000);
    assert!(!w.finish().below_resolution());
}
