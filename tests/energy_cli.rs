//! End-to-end tests of `joulecut energy` on this kind of machine: no RAPL, no GPU (a VM), so every
//! joule is a labelled estimate and every probe that could not be used is listed with its reason.

use assert_cmd::Command;
use serde_json::Value;

/// A fixed amount of shell work (~0.5–1 s of CPU on a 2-core CI VM), not a fixed wall time, so
/// its CPU time does not depend on how loaded the machine is.
const BUSY: &str = "i=0; while [ $i -lt 500000 ]; do i=$((i+1)); done";

/// `joulecut energy` with the estimate's environment overrides removed.
fn energy() -> Command {
    let mut c = Command::cargo_bin("joulecut").unwrap();
    c.arg("energy");
    for v in [
        "JOULECUT_CPU_WATTS_PER_CORE",
        "JOULECUT_MEMORY_WATTS_PER_GIB",
        "JOULECUT_POWERCAP_ROOT",
        "JOULECUT_PERF_PMU_DIR",
        "JOULECUT_RAPL_LIVENESS_MS",
    ] {
        c.env_remove(v);
    }
    c
}

fn run_json(args: &[&str]) -> Value {
    let out = energy()
        .arg("--json")
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn joules(v: &Value) -> f64 {
    v["energy"]["joules"].as_f64().unwrap()
}

#[test]
fn sleep_is_estimated_and_lists_skipped_probes_with_reasons() {
    let v = run_json(&["sleep", "1"]);
    let e = &v["energy"];
    assert_eq!(e["provenance"], "estimated");
    assert!(e["wall_seconds"].as_f64().unwrap() >= 1.0);
    assert!(e["cpu_seconds"].as_f64().unwrap() < 0.5);
    assert_eq!(e["measured_joules"], 0.0);
    let domains = e["domains"].as_array().unwrap();
    let cpu = domains.iter().find(|d| d["name"] == "cpu").unwrap();
    assert_eq!(cpu["provenance"], "estimated");
    assert_eq!(cpu["source"], "cpu-time x 10 W/core");
    assert!(
        domains
            .iter()
            .all(|d| d["provenance"] == "estimated" && d["joules"].is_number())
    );
    assert!(
        e["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "estimated")
    );
    assert_eq!(v["exit_code"], 0);

    // No RAPL and no GPU here: each probe is skipped with a typed reason, never a silent 0.
    let skipped = v["skipped"].as_array().unwrap();
    for probe in ["rapl-powercap", "nvml"] {
        let s = skipped
            .iter()
            .find(|s| s["probe"] == probe)
            .unwrap_or_else(|| panic!("{probe}: {v}"));
        assert!(
            s["reason"].is_string() && !s["message"].as_str().unwrap().is_empty(),
            "{s}"
        );
    }
    assert!(skipped.iter().any(|s| s["probe"] == "rapl-perf"));
}

#[test]
fn busy_command_costs_at_least_ten_times_sleep() {
    let sleep = run_json(&["sleep", "1"]);
    let busy = run_json(&["sh", "-c", BUSY]);
    assert_eq!(busy["energy"]["provenance"], "estimated");
    let (s, b) = (joules(&sleep), joules(&busy));
    assert!(b >= 10.0 * s, "busy {b} J vs sleep {s} J");
    // Joules follow CPU time: 10 W per busy core.
    let cpu_s = busy["energy"]["cpu_seconds"].as_f64().unwrap();
    let cpu_j = busy["energy"]["domains"][0]["joules"].as_f64().unwrap();
    assert!(cpu_s > 0.05, "{cpu_s}");
    assert!((cpu_j - 10.0 * cpu_s).abs() < 1e-3, "{cpu_j} vs {cpu_s}");
}

#[test]
fn watts_per_core_flag_scales_the_estimate() {
    let out = energy()
        .args([
            "--json",
            "--cpu-watts-per-core",
            "20",
            "--",
            "sh",
            "-c",
            BUSY,
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu = &v["energy"]["domains"][0];
    assert_eq!(cpu["source"], "cpu-time x 20 W/core");
    let cpu_s = v["energy"]["cpu_seconds"].as_f64().unwrap();
    assert!((cpu["joules"].as_f64().unwrap() - 20.0 * cpu_s).abs() < 1e-3);
}

#[test]
fn exits_with_the_child_code_and_keeps_stdout_for_json() {
    let out = energy()
        .args(["--json", "--", "sh", "-c", "echo child-output; exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let v: Value = serde_json::from_slice(&out.stdout).expect("only JSON on stdout");
    assert_eq!(v["exit_code"], 7);
    assert!(String::from_utf8_lossy(&out.stderr).contains("child-output"));
}

#[test]
fn human_report_goes_to_stderr_and_child_stdout_passes_through() {
    let out = energy().args(["--", "echo", "hello"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "wall time",
        "energy",
        "(estimated)",
        "cpu-time x 10 W/core",
        "average power",
        "skipped",
        "nvml",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn signal_death_is_128_plus_signal() {
    let out = energy()
        .args(["--json", "--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(143));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signal"], 15);
}

#[test]
fn missing_command_is_bad_usage_with_hint() {
    let out = energy().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no command") && err.contains("hint:"), "{err}");

    let out = energy()
        .args(["--", "/nonexistent/joulecut-no-such-program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));

    let out = energy()
        .args(["--cpu-watts-per-core", "lots", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn fake_powercap_root_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("intel-rapl:0");
    std::fs::create_dir(&zone).unwrap();
    std::fs::write(zone.join("name"), "package-0\n").unwrap();
    std::fs::write(zone.join("energy_uj"), "1000\n").unwrap();
    std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let out = energy()
        .env("JOULECUT_POWERCAP_ROOT", dir.path())
        // The fake counter never moves; skip the start-up liveness check.
        .env("JOULECUT_RAPL_LIVENESS_MS", "0")
        .env("JOULECUT_NO_PERF", "1")
        .env("JOULECUT_NO_NVML", "1")
        .args(["--json", "--", "true"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["energy"]["provenance"], "measured", "{v}");
    assert_eq!(v["energy"]["domains"][0]["name"], "cpu-package-0");
    assert_eq!(v["energy"]["domains"][0]["source"], "rapl-powercap");
    assert_eq!(v["probes"][0]["name"], "rapl-powercap");
}

fn csv_records(path: &std::path::Path) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut rd = csv::Reader::from_path(path).unwrap();
    let header = rd.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "{r:?}");
    }
    (header, rows)
}

#[test]
fn csv_append_writes_the_header_once_and_a_record_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("energy.csv");
    for code in ["0", "3"] {
        let out = energy()
            .arg("--csv")
            .arg(&f)
            .args(["--append", "--", "sh", "-c", &format!("exit {code}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code.parse().unwrap()));
    }
    let text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(text.matches("timestamp,run_id").count(), 1, "{text}");
    let (header, rows) = csv_records(&f);
    assert_eq!(rows.len(), 2, "{text}");
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(&rows[0][col("exit_code")], "0");
    assert_eq!(&rows[1][col("exit_code")], "3");
    assert_eq!(&rows[1][col("command")], "sh -c exit 3");
    assert_ne!(rows[0][col("run_id")], rows[1][col("run_id")]);
    for r in &rows {
        assert_eq!(&r[col("row")], "total");
        assert!(r[col("timestamp")].ends_with('Z'));
        assert_eq!(&r[col("provenance")], "estimated");
        assert_eq!(&r[col("cpu_provenance")], "estimated");
        // no GPU here: absent, not 0 J
        assert_eq!(&r[col("gpu_joules")], "");
        assert!(r[col("sources")].contains("cpu: estimated by cpu-time x 10 W/core"));
    }

    // a file that is not ours is refused before the command runs
    let foreign = dir.path().join("other.csv");
    std::fs::write(&foreign, "a,b\n1,2\n").unwrap();
    let marker = dir.path().join("ran");
    let out = energy()
        .arg("--csv")
        .arg(&foreign)
        .arg("--append")
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    assert!(!marker.exists());
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "a,b\n1,2\n");
}

#[test]
fn interval_mode_prints_a_line_per_interval_and_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("intervals.csv");
    let out = energy()
        .args(["--interval", "300ms", "--csv"])
        .arg(&f)
        .args(["--", "sleep", "0.8"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // `   0.300 s      0.000 J  estimated  cpu 0.000 J (estimated), memory ...`
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" s ") && l.contains(" J  estimated  cpu "))
        .collect();
    assert!(!lines.is_empty(), "{err}");
    // the totals follow, and say what the estimate leaves out
    assert!(
        err.contains("joulecut energy: `sleep 0.8` exited with 0"),
        "{err}"
    );
    assert!(err.contains("excludes idle power"), "{err}");
    assert!(!err.contains("cpu cpu-time"), "{err}");
    let (header, rows) = csv_records(&f);
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let intervals: Vec<_> = rows
        .iter()
        .filter(|r| &r[col("row")] == "interval")
        .collect();
    assert!(!intervals.is_empty());
    assert_eq!(intervals.len(), lines.len());
    for (i, r) in intervals.iter().enumerate() {
        assert_eq!(r[col("interval")], i.to_string());
    }
    assert_eq!(&rows.last().unwrap()[col("row")], "total");

    let bad = energy()
        .args(["--interval", "0s", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
