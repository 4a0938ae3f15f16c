//! Windows, nesting, the sync hook, the estimate, child processes: on the machine as it is (no
//! counters on CI, so the estimate path is what runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use joulecut_energy::{Error, Meter, MeterConfig, Provenance, TotalProvenance};

fn estimate_meter() -> Meter {
    let dir = std::env::temp_dir().join("joulecut-energy-no-powercap");
    Meter::auto(MeterConfig {
        powercap_root: dir.clone(),
        perf_pmu_dir: dir,
        use_nvml: false,
        ..MeterConfig::default()
    })
    .unwrap()
}

/// Burns `ms` of process CPU time (not wall time: the machine may be shared).
fn burn(ms: u64) -> u64 {
    let t = joulecut_energy::estimate::process_cpu_time();
    let mut x = 0u64;
    while joulecut_energy::estimate::process_cpu_time() - t < Duration::from_millis(ms) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[test]
fn estimate_only_meter_lists_skips_and_labels_everything() {
    let meter = estimate_meter();
    assert!(meter.is_estimate_only());
    let names: Vec<_> = meter.skipped().iter().map(|s| s.probe.as_str()).collect();
    assert_eq!(names, ["rapl-perf", "rapl-powercap", "nvml"]);
    assert_eq!(meter.probes().len(), 1);
    assert_eq!(meter.probes()[0].name, "cpu-time-estimate");
    let (_, m) = meter.measure("busy", || burn(150));
    assert_eq!(m.provenance, TotalProvenance::Estimated);
    assert!(
        m.domains
            .iter()
            .all(|d| d.provenance == Provenance::Estimated)
    );
    assert_eq!(m.domain("cpu").unwrap().source, "cpu-time x 10 W/core");
    // ~0.15 s CPU × 10 W ≈ 1.5 J (allow for a loaded CI machine).
    let cpu_j = m.domain("cpu").unwrap().joules.to_joules().0;
    assert!((1.5..20.0).contains(&cpu_j), "{cpu_j}");
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["provenance"], "estimated");
    assert!(
        json["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "estimated")
    );
}

#[test]
fn nested_windows_labels_and_containment() {
    let meter = estimate_meter();
    let outer = meter.window("train");
    let mut inner_sum = 0;
    for e in 0..3 {
        let w = outer.window(&format!("epoch-{e}"));
        burn(20);
        let m = w.finish();
        assert_eq!(m.label, format!("train/epoch-{e}"));
        inner_sum += m.domain("cpu").unwrap().joules.0;
    }
    let (_, nested) = outer.measure("eval", || burn(5));
    assert_eq!(nested.label, "train/eval");
    let total = outer.finish();
    assert_eq!(total.label, "train");
    assert!(total.domain("cpu").unwrap().joules.0 >= inner_sum);
}

#[test]
fn sync_hook_runs_at_both_edges() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let dir = std::env::temp_dir().join("joulecut-energy-no-powercap");
    let meter = Meter::auto(
        MeterConfig {
            powercap_root: dir,
            use_nvml: false,
            ..MeterConfig::default()
        }
        .with_sync_hook(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let _ = meter.measure("a", || ());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let w = meter.window("b");
    let inner = w.window("c");
    drop(inner);
    drop(w);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[test]
fn dropped_windows_are_recorded() {
    let meter = estimate_meter();
    {
        let _w = meter.window("dropped");
    }
    let taken = meter.take_measurements();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].label, "dropped");
    assert!(meter.take_measurements().is_empty());
}

#[test]
fn meter_is_shared_across_threads() {
    let meter = estimate_meter();
    std::thread::scope(|s| {
        for t in 0..2 {
            let meter = &meter;
            s.spawn(move || {
                let (_, m) = meter.measure(&format!("thread-{t}"), || burn(10));
                assert_eq!(m.label, format!("thread-{t}"));
                assert!(m.cpu >= Duration::from_millis(10));
            });
        }
    });
}

#[test]
fn child_process_exit_code_and_cpu_time() {
    let meter = estimate_meter();
    let out = meter.run_argv(&["sh", "-c", "exit 3"]).unwrap();
    assert_eq!(out.status.code, Some(3));
    assert_eq!(out.status.shell_code(), 3);
    assert_eq!(out.measurement.provenance, TotalProvenance::Estimated);
    assert!(
        out.measurement
            .domain("memory")
            .unwrap()
            .source
            .starts_with("rss (peak) x")
    );

    let killed = meter.run_argv(&["sh", "-c", "kill -9 $$"]).unwrap();
    assert_eq!(killed.status.signal, Some(9));
    assert_eq!(killed.status.shell_code(), 137);
}

#[test]
fn child_errors_are_typed() {
    let meter = estimate_meter();
    let empty: [&str; 0] = [];
    let e = meter.run_argv(&empty).unwrap_err();
    assert!(matches!(e, Error::NoCommand) && e.is_bad_input());
    let e = meter
        .run_argv(&["/nonexistent/joulecut-test-cmd"])
        .unwrap_err();
    assert!(e.is_bad_input());
    assert!(e.hint().unwrap().contains("PATH"));
}

#[test]
fn carbon_only_on_request() {
    let meter = estimate_meter();
    let (_, m) = meter.measure("w", || burn(5));
    assert!(m.carbon.is_none());
    assert!(serde_json::to_value(&m).unwrap()["carbon"].is_null());
    let m = m.with_carbon(joulecut_energy::GridIntensity {
        grams_per_kwh: 445.0,
        source: "IEA 2024 (carbontracker fallback)".into(),
        region: "world".into(),
    });
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["carbon"]["intensity"]["grams_per_kwh"], 445.0);
    assert_eq!(v["carbon"]["basis"], "gross");
}

#[test]
fn env_overrides_are_validated() {
    // Only this test touches these variables.
    // SAFETY (edition 2024 requires `unsafe`): set_var races with other threads reading the
    // environment; no other test in this binary reads JOULECUT_CPU_WATTS_PER_CORE.
    unsafe { std::env::set_var("JOULECUT_CPU_WATTS_PER_CORE", "abc") };
    let e = MeterConfig::from_env().unwrap_err();
    assert!(e.is_bad_input() && e.hint().is_some());
    unsafe { std::env::set_var("JOULECUT_CPU_WATTS_PER_CORE", "4.5") };
    let c = MeterConfig::from_env().unwrap();
    assert_eq!(c.estimate.watts_per_core.0, 4.5);
    unsafe { std::env::remove_var("JOULECUT_CPU_WATTS_PER_CORE") };
}

#[test]
fn a_command_metered_by_interval_adds_up_to_its_total() {
    let meter = estimate_meter();
    let mut intervals = Vec::new();
    let out = meter
        .run_command_every(
            "busy",
            std::process::Command::new("sh").args([
                "-c",
                "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 0.2",
            ]),
            std::time::Duration::from_millis(50),
            &mut |i| intervals.push(i.clone()),
        )
        .unwrap();
    assert_eq!(out.status.code, Some(0));
    // at least the tail; numbered in order, each labelled and estimated like the total
    assert!(!intervals.is_empty());
    for (n, i) in intervals.iter().enumerate() {
        assert_eq!(i.index, n);
        assert_eq!(i.measurement.label, format!("busy/interval-{n}"));
        assert_eq!(i.measurement.provenance, TotalProvenance::Estimated);
        assert!(
            i.measurement
                .domain("memory")
                .unwrap()
                .source
                .starts_with("rss x")
        );
    }
    // the tail takes what wait4 saw beyond /proc, so the CPU times add up (to /proc's clock
    // ticks: it rounds each reading down to 1/CLK_TCK, never up)
    const TICK_SLACK: std::time::Duration = std::time::Duration::from_millis(20);
    let cpu: std::time::Duration = intervals.iter().map(|i| i.measurement.cpu).sum();
    assert!(
        cpu >= out.measurement.cpu,
        "{cpu:?} vs {:?}",
        out.measurement.cpu
    );
    assert!(
        cpu <= out.measurement.cpu + TICK_SLACK,
        "{cpu:?} vs {:?}",
        out.measurement.cpu
    );
    assert!(out.measurement.cpu > std::time::Duration::ZERO);
}
