//! The break-even figures of a small set of hand-made results, as report.json, report.csv and
//! report.md show them: a variant that pays back, one that never does, one that cost nothing,
//! and the provenance of figures that mix a measured compression with estimated inference.

use joulecut_energy::TotalProvenance;
use joulecut_models::ModelConfig;
use serde_json::json;

use super::*;
use crate::bench::result::StepRecord;

const SUITE: &str = r#"{
  "name": "break-even",
  "models": ["mlp:4-3-2"],
  "seeds": [1, 2],
  "baseline": { "epochs": 1, "batch_size": 8, "lr": 0.001 },
  "eval": { "batch_size": 8, "repeats": 1, "latency_iters": 1 },
  "variants": [
    { "name": "int8", "steps": [ { "op": "quantize", "dtype": "int8" } ] },
    { "name": "ft", "steps": [ { "op": "finetune", "epochs": 1 } ] },
    { "name": "fp16", "steps": [ { "op": "quantize", "dtype": "f16" } ] }
  ]
}"#;

/// Relative tolerance of the arithmetic checks.
const TOL: f64 = 1e-9;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL * b.abs().max(1.0)
}

fn step(name: &str, joules: f64, provenance: &str) -> StepRecord {
    StepRecord {
        step: name.into(),
        energy: json!({"joules": joules, "provenance": provenance}),
        shared_with: None,
        warmup: None,
    }
}

/// A result with estimated inference joules (`j10k` per 10,000 samples) and compression steps.
fn run(seed: u64, variant: &str, j10k: f64, steps: Vec<StepRecord>) -> RunResult {
    let joules = steps
        .iter()
        .fold(0.0, |a, s| a + s.energy["joules"].as_f64().unwrap());
    RunResult {
        model: "mlp:4-3-2".into(),
        seed,
        variant: variant.into(),
        steps: Default::default(),
        accuracy: 0.9,
        bytes: 1000,
        params: 23,
        nonzero_params: 23,
        weight_sparsity: 0.0,
        samples_per_second: 1e4,
        batch_size: 8,
        latency_b1_us: 10.0,
        inference_joules_per_10k: j10k,
        inference_energy: json!({"joules": j10k, "provenance": "estimated"}),
        inference_below_resolution: false,
        compression_joules: joules,
        compression_energy: steps,
        baseline_training_joules: 100.0,
        provenance: TotalProvenance::Estimated,
        saving: if variant == "baseline" {
            Saving::Baseline
        } else {
            Saving::Real
        },
        layers: Vec::new(),
        config: ModelConfig::parse("mlp:4-3-2").unwrap(),
        file: format!("{variant}-s{seed}.safetensors"),
        seconds: 1.0,
        stamp: None,
    }
}

fn host() -> Host {
    Host {
        hostname: "test".into(),
        cpu: "test".into(),
        cores: 1,
        kernel: "test".into(),
        device: "cpu".into(),
        hypervisor: None,
        probes: json!([]),
        skipped_probes: json!([]),
        joulecut: "test".into(),
    }
}

/// Seed 1: baseline 2 J/1k samples; `ft` 1 J/1k after 30 J of measured fine-tuning (30,000
/// samples to pay back); `int8` 0.5 J/1k for nothing; `fp16` 2.5 J/1k (never).
/// Seed 2: baseline 4 J/1k; `ft` 2 J/1k after 50 J (25,000 samples).
fn runs() -> Vec<RunResult> {
    vec![
        run(
            1,
            "baseline",
            20.0,
            vec![step("baseline-training", 100.0, "estimated")],
        ),
        run(1, "int8", 5.0, Vec::new()),
        run(1, "ft", 10.0, vec![step("finetune", 30.0, "measured")]),
        run(1, "fp16", 25.0, Vec::new()),
        run(
            2,
            "baseline",
            40.0,
            vec![step("baseline-training", 100.0, "estimated")],
        ),
        run(2, "int8", 10.0, Vec::new()),
        run(2, "ft", 20.0, vec![step("finetune", 50.0, "measured")]),
        run(2, "fp16", 45.0, Vec::new()),
    ]
}

fn report() -> Report {
    let suite = SuiteConfig::parse(SUITE, "test").unwrap();
    Report::build(suite, host(), 0.5, 1.0, runs()).unwrap()
}

#[test]
fn json_rows_and_summary_carry_the_break_even() {
    let r = report();
    let v = serde_json::to_value(&r).unwrap();
    let row = |variant: &str, seed: u64| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["variant"] == variant && x["seed"] == seed)
            .unwrap()
            .clone()
    };
    // the baseline has no break-even of its own (its training is not a compression)
    assert_eq!(row("baseline", 1)["break_even"], serde_json::Value::Null);
    let ft = &row("ft", 1)["break_even"];
    assert_eq!(ft["compression_joules"], 30.0);
    assert!(close(ft["saved_joules_per_1000"].as_f64().unwrap(), 1.0));
    assert!(close(ft["break_even_items"].as_f64().unwrap(), 30_000.0));
    // measured fine-tuning against estimated inference: mixed
    assert_eq!(ft["provenance"], "mixed");
    let ft2 = &row("ft", 2)["break_even"];
    assert!(close(ft2["break_even_items"].as_f64().unwrap(), 25_000.0));
    let int8 = &row("int8", 1)["break_even"];
    assert!(close(int8["saved_joules_per_1000"].as_f64().unwrap(), 1.5));
    assert_eq!(int8["break_even_items"], 0.0);
    assert_eq!(int8["provenance"], "estimated");
    let fp16 = &row("fp16", 1)["break_even"];
    assert!(close(fp16["saved_joules_per_1000"].as_f64().unwrap(), -0.5));
    assert_eq!(fp16["break_even_items"], serde_json::Value::Null);
    assert_eq!(fp16["provenance"], "estimated");

    // the summary: median compression (40 J) over the median saving (1.5 J/1k)
    let s = r.summary.iter().find(|s| s.variant == "ft").unwrap();
    let b = s.break_even.unwrap();
    assert!(close(b.compression_joules, 40.0));
    assert!(close(b.saved_joules_per_1000, 1.5));
    assert!(close(b.break_even_items.unwrap(), 40.0 / 1.5 * 1000.0));
    assert_eq!(b.provenance, TotalProvenance::Mixed);
    let base = r.summary.iter().find(|s| s.variant == "baseline").unwrap();
    assert_eq!(base.break_even, None);

    // report.json reads back as it was written
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn csv_has_plain_numbers_and_an_empty_count_for_never() {
    let csv = report().csv();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    // the existing columns keep their place; the new ones come last
    assert_eq!(header[..3], ["model", "seed", "variant"]);
    assert_eq!(header[19], "saving");
    assert_eq!(
        header[20..23],
        [
            "saved_joules_per_1000",
            "break_even_samples",
            "break_even_provenance"
        ]
    );
    let cells = |variant: &str, seed: &str| -> Vec<String> {
        csv.lines()
            .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
            .find(|c| c[2] == variant && c[1] == seed)
            .unwrap()[20..23]
            .to_vec()
    };
    assert_eq!(cells("baseline", "1"), ["", "", ""]);
    assert_eq!(cells("ft", "1"), ["1.000000", "30000", "mixed"]);
    assert_eq!(cells("ft", "2"), ["2.000000", "25000", "mixed"]);
    assert_eq!(cells("int8", "1"), ["1.500000", "0", "estimated"]);
    assert_eq!(cells("fp16", "1"), ["-0.500000", "", "estimated"]);
    for l in lines {
        assert_eq!(l.split(',').count(), header.len(), "{l}");
    }
}

#[test]
fn markdown_reads_counts_for_people() {
    let md = report().markdown();
    let line = |variant: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {variant} |")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("baseline").ends_with("| - | - |"),
        "{}",
        line("baseline")
    );
    // 40 J / 1.5 J per 1,000 = 26,666.7 samples; the provenance differs from the row's
    assert!(
        line("ft").ends_with("| 40.0 | 1.5000 | 26.7 k samples (mixed) |"),
        "{}",
        line("ft")
    );
    assert!(
        line("int8").ends_with("| 0.0 | 2.2500 | 0 samples |"),
        "{}",
        line("int8")
    );
    assert!(line("fp16").ends_with("| never |"), "{}", line("fp16"));
    assert!(md.contains("| compression J | saved J/1k samples | break-even |"));
    assert!(md.contains("*break-even*"));
}

#[test]
fn a_compression_step_without_provenance_is_refused() {
    let suite = SuiteConfig::parse(SUITE, "test").unwrap();
    let mut rs = runs();
    rs[2].compression_energy[0].energy = json!({"joules": 30.0});
    let e = Report::build(suite, host(), 0.5, 1.0, rs).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mlp:4-3-2 seed 1 `ft`") && msg.contains("finetune"),
        "{msg}"
    );
}

#[test]
fn csv_quotes_a_variant_name_with_a_comma_and_a_quote() {
    // The acceptance case of report.csv: a name that a hand-written CSV would split.
    let name = r#"fp16, "half""#;
    let suite_text = SUITE.replace(
        r#""name": "fp16""#,
        &format!(r#""name": {}"#, serde_json::to_string(name).unwrap()),
    );
    let suite = SuiteConfig::parse(&suite_text, "test").unwrap();
    let mut rs = runs();
    for r in &mut rs {
        if r.variant == "fp16" {
            r.variant = name.to_string();
        }
    }
    let report = Report::build(suite, host(), 0.5, 1.0, rs).unwrap();
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let mut rd = csv::Reader::from_path(dir.path().join("report.csv")).unwrap();
    let header = rd.headers().unwrap().clone();
    assert_eq!(header.len(), 23 + 5 + 14);
    let records: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), report.rows.len());
    for r in &records {
        assert_eq!(r.len(), header.len(), "{r:?}");
    }
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let half: Vec<&csv::StringRecord> = records
        .iter()
        .filter(|r| &r[col("variant")] == name && &r[col("seed")] == "1")
        .collect();
    assert_eq!(half.len(), 1, "the name reads back intact");
    let r = half[0];
    assert_eq!(&r[col("model")], "mlp:4-3-2");
    assert_eq!(&r[col("saving")], "real");
    // the stamp and energy columns of schema 2
    assert_eq!(&r[col("run_id")], report.run.run_id);
    assert_eq!(&r[col("hostname")], "test");
    assert!(r[col("timestamp")].ends_with('Z'), "{r:?}");
    assert_eq!(&r[col("duration_seconds")], "1.000");
    assert_eq!(&r[col("inference_window_joules")], "25.000000");
    assert_eq!(&r[col("compression_provenance")], "");
    let ft = records
        .iter()
        .find(|r| &r[col("variant")] == "ft" && &r[col("seed")] == "1")
        .unwrap();
    assert_eq!(&ft[col("compression_provenance")], "measured");
    let kwh: f64 = ft[col("compression_kwh")].parse().unwrap();
    assert!(close(kwh, 30.0 / 3.6e6), "{kwh}");
}

#[test]
fn energy_columns_split_the_inference_window_by_hardware() {
    let mut rs = runs();
    rs[1].inference_energy = json!({"joules": 5.0, "wall_seconds": 2.0, "provenance": "mixed",
    "domains": [
        {"name": "cpu-package-0", "joules": 4.0, "provenance": "measured", "source": "rapl-powercap"},
        {"name": "memory", "joules": 1.0, "provenance": "estimated", "source": "rss x 0.375 W/GiB x wall-time"}
    ]});
    let suite = SuiteConfig::parse(SUITE, "test").unwrap();
    let report = Report::build(suite, host(), 0.5, 1.0, rs).unwrap();
    let row = report
        .rows
        .iter()
        .find(|r| r.run.variant == "int8" && r.run.seed == 1)
        .unwrap();
    let e = &row.energy_totals;
    assert_eq!(e.inference_domains.cpu.unwrap().joules, 4.0);
    assert_eq!(
        e.inference_domains.memory.unwrap().provenance,
        TotalProvenance::Estimated
    );
    assert_eq!(
        e.inference_domains.gpu, None,
        "an unmetered kind is absent, not 0 J"
    );
    assert!(close(e.inference_kwh.unwrap(), 5.0 / 3.6e6));
    assert_eq!(
        e.inference_sources,
        "cpu-package-0: measured by rapl-powercap; memory: estimated by rss x 0.375 W/GiB x wall-time"
    );
    let csv = report.csv();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let header = rd.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rec = rd
        .records()
        .map(|r| r.unwrap())
        .find(|r| &r[col("variant")] == "int8" && &r[col("seed")] == "1")
        .unwrap();
    assert_eq!(&rec[col("inference_cpu_joules")], "4.000000");
    assert_eq!(&rec[col("inference_cpu_provenance")], "measured");
    assert_eq!(&rec[col("inference_gpu_joules")], "");
    // the report's own stamp (no row stamps here) is fresh and single
    assert!(report.shards.is_empty());
    assert!(!report.run.run_id.is_empty());
}

#[test]
fn merged_shards_keep_each_rows_stamp() {
    let stamp = |id: &str, host: &str, t: &str| crate::host::RunStamp {
        run_id: id.into(),
        timestamp: t.into(),
        hostname: host.into(),
        cpu: "EPYC".into(),
    };
    let mut rs = runs();
    for (i, r) in rs.iter_mut().enumerate() {
        r.stamp = Some(if i % 2 == 0 {
            stamp("shard-a", "node1", "2026-12-07T10:00:00.000Z")
        } else {
            stamp("shard-b", "node2", "2026-12-07T09:00:00.000Z")
        });
    }
    let suite = SuiteConfig::parse(SUITE, "test").unwrap();
    let report = Report::build(suite.clone(), host(), 0.5, 1.0, rs.clone()).unwrap();
    assert_eq!(report.shards.len(), 2);
    assert!(!["shard-a", "shard-b"].contains(&report.run.run_id.as_str()));
    assert_eq!(report.run.timestamp, "2026-12-07T09:00:00.000Z");
    assert_eq!(report.run.hostname, "node1 + node2");
    let csv = report.csv();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let header = rd.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let ids: std::collections::BTreeSet<String> = rd
        .records()
        .map(|r| r.unwrap()[col("run_id")].to_string())
        .collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["shard-a", "shard-b"]);
    // one shared id (`--run-id` on every shard) is the merged report's
    for r in &mut rs {
        r.stamp.as_mut().unwrap().run_id = "sweep".into();
    }
    let report = Report::build(suite, host(), 0.5, 1.0, rs).unwrap();
    assert_eq!(report.run.run_id, "sweep");
    let back: Report = serde_json::from_value(serde_json::to_value(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

/// A nominal variant that measured fewer joules (noise: it runs the baseline's kernels) never
/// pays back, in each seed's row and in the summary made from their medians.
#[test]
fn a_nominal_variant_never_breaks_even_in_rows_or_summary() {
    let runs: Vec<RunResult> = runs()
        .into_iter()
        .map(|mut r| {
            if r.variant == "fp16" {
                r.saving = Saving::Nominal;
                r.inference_joules_per_10k /= 2.0;
                r.compression_joules = 1.0;
            }
            r
        })
        .collect();
    let suite = SuiteConfig::parse(SUITE, "test").unwrap();
    let r = Report::build(suite, host(), 0.5, 1.0, runs).unwrap();
    for row in r.rows.iter().filter(|x| x.run.variant == "fp16") {
        let b = row.break_even.unwrap();
        assert!(b.saved_joules_per_1000 < 0.0 || b.break_even_items.is_none());
    }
    let s = r.summary.iter().find(|s| s.variant == "fp16").unwrap();
    let b = s.break_even.unwrap();
    assert!(b.saved_joules_per_1000 > 0.0, "{b:?}");
    assert_eq!(b.break_even_items, None, "{b:?}");
    assert!(r.markdown().contains("| never |"), "{}", r.markdown());
}
