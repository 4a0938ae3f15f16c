//! The break-even figures of hand-made transformer results in report.json, report.csv and
//! report.md: a variant that pays back (measured compression, estimated inference: mixed), one
//! that never does, one that cost nothing.

use std::collections::BTreeMap;

use joulecut_energy::TotalProvenance;
use serde_json::json;

use super::*;
use crate::bench::transformer::result::StepCost;

/// Relative tolerance of the arithmetic checks.
const TOL: f64 = 1e-9;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL * b.abs().max(1.0)
}

/// A result with estimated inference joules and the given compression steps.
fn result(variant: &str, joules_per_1000: f64, compression: Vec<StepCost>) -> TransformerResult {
    TransformerResult {
        variant: variant.into(),
        steps: Vec::new(),
        commands: Vec::new(),
        dir: format!("models/{variant}"),
        cosine_mean: 0.99,
        cosine_min: 0.98,
        cosine_min_index: 0,
        neighbour_agreement: None,
        sentences_per_second: 100.0,
        batch_size: 32,
        joules_per_1000,
        provenance: TotalProvenance::Estimated,
        inference_energy: json!({"joules": joules_per_1000, "provenance": "estimated"}),
        inference_below_resolution: false,
        compression_seconds: compression.iter().fold(0.0, |a, c| a + c.seconds),
        compression_joules: compression.iter().fold(0.0, |a, c| a + c.joules),
        compression,
        bytes: 1000,
        weight_sparsity: 0.0,
        linear_params: 100,
        kernels: BTreeMap::new(),
        layers: Vec::new(),
        saving: if variant == "baseline" {
            Saving::Baseline
        } else {
            Saving::Real
        },
        seconds: 1.0,
    }
}

fn cost(step: &str, joules: f64, provenance: TotalProvenance) -> StepCost {
    StepCost {
        step: step.into(),
        seconds: 1.0,
        joules,
        provenance,
        energy: serde_json::Value::Null,
        shared_with: None,
    }
}

/// Baseline 40 J/1000 sentences; `int8` 25 J/1000 after 20 J estimated + 10 J measured of
/// compression (2,000 sentences); `fp16` 45 J/1000 (never); `free` 20 J/1000 for nothing.
fn report() -> TransformerReport {
    let run = TransformerRun {
        model: "models/minilm".into(),
        text: TextSummary {
            source: "test".into(),
            calibration: 1,
            evaluation: 2,
            evaluation_tokens: 10,
            calibration_file: "calib.txt".into(),
            evaluation_file: "eval.txt".into(),
            corpus: 0,
            corpus_file: None,
        },
        results: vec![
            result("baseline", 40.0, Vec::new()),
            result(
                "int8",
                25.0,
                vec![
                    cost("grid choice", 20.0, TotalProvenance::Estimated),
                    cost("quantize int8", 10.0, TotalProvenance::Measured),
                ],
            ),
            result(
                "fp16",
                45.0,
                vec![cost("quantize f16", 1.0, TotalProvenance::Estimated)],
            ),
            result("free", 20.0, Vec::new()),
        ],
        warmup: Some(DeviceWarmup {
            seconds: 2.5,
            energy: json!({"joules": 310.0, "provenance": "measured"}),
        }),
    };
    let host = Host {
        hostname: "test".into(),
        cpu: "test".into(),
        cores: 1,
        kernel: "test".into(),
        device: "cpu".into(),
        hypervisor: None,
        probes: json!([]),
        skipped_probes: json!([]),
        joulecut: "test".into(),
    };
    TransformerReport::build(TransformerSuite::builtin(), host, 0.9, 1.0, run)
}

#[test]
fn json_rows_carry_the_break_even() {
    let r = report();
    let v = serde_json::to_value(&r).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[0]["break_even"], serde_json::Value::Null);
    let int8 = &rows[1]["break_even"];
    assert_eq!(int8["compression_joules"], 30.0);
    assert!(close(int8["saved_joules_per_1000"].as_f64().unwrap(), 15.0));
    assert!(close(int8["break_even_items"].as_f64().unwrap(), 2_000.0));
    assert_eq!(int8["provenance"], "mixed");
    let fp16 = &rows[2]["break_even"];
    assert!(close(fp16["saved_joules_per_1000"].as_f64().unwrap(), -5.0));
    assert_eq!(fp16["break_even_items"], serde_json::Value::Null);
    assert_eq!(fp16["provenance"], "estimated");
    let free = &rows[3]["break_even"];
    assert_eq!(free["break_even_items"], 0.0);
    assert_eq!(free["provenance"], "estimated");
    let back: TransformerReport = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

#[test]
fn csv_and_markdown_show_the_break_even() {
    let r = report();
    let csv = r.csv();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(header[15], "compression_joules");
    assert_eq!(
        header[16..19],
        [
            "saved_joules_per_1000",
            "break_even_sentences",
            "break_even_provenance"
        ]
    );
    let tail = |i: usize| -> Vec<String> {
        let l = csv.lines().nth(i + 1).unwrap();
        let c: Vec<String> = l.split(',').map(String::from).collect();
        assert_eq!(c.len(), header.len(), "{l}");
        c[16..19].to_vec()
    };
    assert_eq!(tail(0), ["", "", ""]);
    assert_eq!(tail(1), ["15.000000", "2000", "mixed"]);
    assert_eq!(tail(2), ["-5.000000", "", "estimated"]);
    assert_eq!(tail(3), ["20.000000", "0", "estimated"]);

    let md = r.markdown();
    let line = |variant: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {variant} |")))
            .unwrap()
            .to_string()
    };
    assert!(
        line("baseline").ends_with("| 0.0 | - | - |"),
        "{}",
        line("baseline")
    );
    assert!(
        line("int8").ends_with("| 30.0 | 15.0000 | 2.0 k sentences (mixed) |"),
        "{}",
        line("int8")
    );
    assert!(
        line("fp16").ends_with("| -5.0000 | never |"),
        "{}",
        line("fp16")
    );
    assert!(
        line("free").ends_with("| 0.0 | 20.0000 | 0 sentences |"),
        "{}",
        line("free")
    );
    assert!(md.contains("| compression J | saved J/1000 | break-even |"));
}

#[test]
fn a_device_warm_up_is_reported_apart_from_every_row() {
    let r = report();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["warmup"]["seconds"], 2.5);
    assert_eq!(v["warmup"]["energy"]["joules"], 310.0);
    // in no row: the baseline's joules are its own
    assert_eq!(v["rows"][0]["joules_per_1000"], 40.0);
    let md = r.markdown();
    assert!(md.contains("Device warm-up"), "{md}");
    assert!(md.contains("310.0 J"), "{md}");
}
