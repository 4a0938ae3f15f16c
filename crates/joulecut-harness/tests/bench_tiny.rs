//! The bench runner end to end on a tiny configuration (generated data): structure and invariants
//! of the report.

use candle_core::Device;
use joulecut_energy::{Meter, MeterConfig, TotalProvenance};
use joulecut_harness::bench::{
    Report, RunOptions, Saving, SuiteConfig, Summary, pareto_front, run_suite,
};
use joulecut_harness::data::synthetic;

const TINY: &str = r#"{
  "name": "tiny",
  "models": ["mlp:16-48-24-3"],
  "seeds": [3],
  "baseline": { "epochs": 3, "batch_size": 32, "lr": 0.003 },
  "eval": { "batch_size": 64, "repeats": 2, "latency_iters": 20 },
  "max_accuracy_drop": 5.0,
  "variants": [
    { "name": "fp16", "steps": [ { "op": "quantize", "dtype": "f16" } ] },
    { "name": "int8", "steps": [ { "op": "quantize", "dtype": "int8" } ] },
    { "name": "qat", "steps": [ { "op": "qat", "epochs": 1 }, { "op": "quantize", "dtype": "int8", "granularity": "tensor" } ] },
    { "name": "p80-packed", "steps": [ { "op": "prune", "sparsity": 0.8, "granularity": "unstructured" }, { "op": "finetune", "epochs": 1 }, { "op": "pack" } ] },
    { "name": "rows50", "steps": [ { "op": "prune", "sparsity": 0.5, "granularity": "rows", "scope": "layer" }, { "op": "compact" }, { "op": "finetune", "epochs": 1 } ] },
    { "name": "2:4-int8", "steps": [ { "op": "prune", "sparsity": 0.5, "granularity": "2:4", "scope": "layer" }, { "op": "quantize", "dtype": "int8" } ] },
    { "name": "gradual80-xout", "steps": [ { "op": "gradual", "sparsity": 0.8, "epochs": 2, "exclude_output": true, "frequency": 3, "lr_schedule": "cosine" } ] },
    { "name": "p50-kd", "steps": [ { "op": "prune", "sparsity": 0.5, "granularity": "unstructured" }, { "op": "finetune", "epochs": 1, "kd": true, "batch_size": 16 } ] },
    { "name": "p50-masked", "steps": [ { "op": "prune", "sparsity": 0.5, "granularity": "unstructured" }, { "op": "finetune", "epochs": 1 } ] },
    { "name": "kd", "steps": [ { "op": "distill", "student": "mlp:16-12-3", "epochs": 3 } ] },
    { "name": "kd-int8", "steps": [ { "op": "distill", "student": "mlp:16-12-3", "epochs": 3 }, { "op": "quantize", "dtype": "int8" } ] }
  ]
}"#;

/// Relative tolerance of the break-even arithmetic.
const BREAK_EVEN_TOL: f64 = 1e-9;

#[test]
fn tiny_suite_writes_a_consistent_report() {
    let suite = SuiteConfig::parse(TINY, "tiny").unwrap();
    let data = synthetic(400, 200, 16, 3, 11);
    let meter = Meter::auto(MeterConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        out_dir: dir.path().to_path_buf(),
        cache_dir: dir.path().join("cache"),
        shard: None,
        device: Device::Cpu,
    };
    let results = run_suite(&suite, &data, &meter, &opts, &mut |_| {}).unwrap();
    assert_eq!(results.len(), 1 + suite.variants.len());
    let host = joulecut_harness::bench::Host {
        hostname: "test".into(),
        cpu: "test".into(),
        cores: 1,
        kernel: "test".into(),
        device: "cpu".into(),
        hypervisor: None,
        probes: serde_json::json!([]),
        skipped_probes: serde_json::json!([]),
        joulecut: "test".into(),
    };
    let report = Report::build(suite.clone(), host, suite.max_accuracy_drop, 1.0, results).unwrap();
    report.write(dir.path()).unwrap();
    for f in ["report.json", "report.csv", "report.md", "pareto.svg"] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }

    let base = report
        .rows
        .iter()
        .find(|r| r.run.variant == "baseline")
        .unwrap();
    assert!(
        base.run.accuracy > 0.8,
        "the baseline learns the generated task: {}",
        base.run.accuracy
    );
    assert!(base.run.baseline_training_joules > 0.0);
    for r in &report.rows {
        let x = &r.run;
        assert!(
            x.bytes <= base.run.bytes,
            "{}: {} bytes > baseline {}",
            x.variant,
            x.bytes,
            base.run.bytes
        );
        assert!((0.0..=1.0).contains(&x.accuracy));
        assert!(
            x.inference_joules_per_10k > 0.0,
            "{}: joules must never be 0",
            x.variant
        );
        assert!(
            ["measured", "estimated", "mixed"].contains(&x.provenance.as_str()),
            "{}: {}",
            x.variant,
            x.provenance
        );
        assert_eq!(x.inference_energy["provenance"], x.provenance.as_str());
        assert!(["baseline", "real", "nominal"].contains(&x.saving.to_string().as_str()));
        assert!(r.energy_reduction > 0.0 && r.size_ratio <= 1.0);
        assert!(std::path::Path::new(&x.file).is_file());
    }
    let get = |v: &str| report.rows.iter().find(|r| r.run.variant == v).unwrap();
    assert_eq!(get("int8").run.saving, Saving::Real);
    assert_eq!(get("fp16").run.saving, Saving::Nominal);
    // Tiny tensors: the header is a large share of the file, so only half, not a quarter.
    assert!(get("int8").size_ratio < 0.6, "{}", get("int8").size_ratio);
    assert_eq!(get("rows50").run.saving, Saving::Real);
    assert_eq!(
        get("rows50").run.config.to_json()["widths"],
        serde_json::json!([16, 24, 12, 3])
    );
    assert!(get("p80-packed").run.nonzero_params * 4 < base.run.params);
    // Sparsity over all weights (16x48, 48x24, 24x3 = 1992): global 80% of everything...
    let weights = (16 * 48 + 48 * 24 + 24 * 3) as f64;
    assert_eq!(base.run.weight_sparsity, 0.0);
    assert!((get("p80-packed").run.weight_sparsity - 0.8).abs() < 3.0 / weights);
    // ...and gradual 80% of the two hidden layers, the output layer left dense: it ends at
    // exactly the target (to an element per tensor), measured over all weights.
    let g = get("gradual80-xout");
    let expected = (0.8 * (16 * 48 + 48 * 24) as f64).round() / weights;
    assert!(
        (g.run.weight_sparsity - expected).abs() < 3.0 / weights,
        "{} vs {expected}",
        g.run.weight_sparsity
    );
    assert_eq!(g.run.compression_energy[0].step, "gradual");
    assert!(g.run.accuracy > 0.6, "{}", g.run.accuracy);
    assert!(report.rows.iter().all(|r| r.latency_ratio > 0.0));
    // Fine-tuning with KD from the baseline: the teacher's logits are metered with the step, and
    // the mask holds.
    let kd_ft = get("p50-kd");
    let steps: Vec<&str> = kd_ft
        .run
        .compression_energy
        .iter()
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(steps, ["teacher-logits", "finetune"]);
    assert!((kd_ft.run.weight_sparsity - 0.5).abs() < 3.0 / weights);
    assert!(get("qat").run.compression_joules > 0.0);
    // Masked pruning leaves the file as large as the baseline's: same tensors, same metadata.
    assert_eq!(get("p50-masked").run.bytes, base.run.bytes);
    assert_eq!(get("p50-masked").run.saving, Saving::Nominal);
    // Distilled students: a smaller architecture (a real saving), the teacher's logits and the
    // student's training metered; with int8 on top, the same student (distilled once) quantised.
    let (kd, kd8) = (get("kd"), get("kd-int8"));
    assert_eq!(
        kd.run.config.to_json()["widths"],
        serde_json::json!([16, 12, 3])
    );
    assert_eq!(kd.run.params, 16 * 12 + 12 + 12 * 3 + 3);
    assert_eq!(kd.run.saving, Saving::Real);
    assert!(
        kd.run.accuracy > 0.8,
        "the student learns: {}",
        kd.run.accuracy
    );
    let steps: Vec<&str> = kd
        .run
        .compression_energy
        .iter()
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(steps, ["teacher-logits", "distill"]);
    assert!(kd.run.compression_joules > 0.0);
    assert_eq!(kd8.run.compression_joules, kd.run.compression_joules);
    assert_eq!(
        kd8.run.compression_energy[1].shared_with.as_deref(),
        Some("kd")
    );
    assert!(kd8.run.bytes < kd.run.bytes && kd8.run.saving == Saving::Real);
    assert!(
        (kd8.run.accuracy - kd.run.accuracy).abs() < 0.05,
        "int8 keeps the student: {} vs {}",
        kd8.run.accuracy,
        kd.run.accuracy
    );
    // The teacher is the baseline: its training joules are the baseline's, not counted again.
    assert_eq!(
        kd.run.baseline_training_joules,
        base.run.baseline_training_joules
    );
    // The break-even point on a real run: each variant's compression joules against the inference
    // joules it saves per 1,000 samples, with the provenance of all the figures.
    assert_eq!(base.break_even, None);
    for r in report.rows.iter().filter(|r| r.run.variant != "baseline") {
        let x = &r.run;
        let b = r
            .break_even
            .unwrap_or_else(|| panic!("{}: no break-even", x.variant));
        let saved = (base.run.inference_joules_per_10k - x.inference_joules_per_10k) / 10.0;
        assert!(
            (b.saved_joules_per_1000 - saved).abs()
                <= BREAK_EVEN_TOL * base.run.inference_joules_per_10k,
            "{}: saved {} vs {saved}",
            x.variant,
            b.saved_joules_per_1000
        );
        assert_eq!(b.compression_joules, x.compression_joules, "{}", x.variant);
        match b.break_even_items {
            // the baseline's kernels at its size: a measured difference is noise
            n if x.saving == Saving::Nominal => assert_eq!(n, None, "{}: nominal", x.variant),
            Some(n) => {
                assert!(saved > 0.0, "{}: {saved}", x.variant);
                let paid = n * saved / 1000.0;
                assert!(
                    (paid - x.compression_joules).abs()
                        <= BREAK_EVEN_TOL * x.compression_joules.max(1e-12),
                    "{}: {n} samples pay back {paid} J of {} J",
                    x.variant,
                    x.compression_joules
                );
            }
            None => assert!(
                saved <= 0.0,
                "{}: saves {saved} but never pays back",
                x.variant
            ),
        }
        let p = x
            .compression_energy
            .iter()
            .map(|e| {
                e.energy["provenance"]
                    .as_str()
                    .unwrap()
                    .parse::<TotalProvenance>()
                    .unwrap()
            })
            .fold(
                base.run.provenance.combine(x.provenance),
                TotalProvenance::combine,
            );
        assert_eq!(b.provenance, p, "{}", x.variant);
    }
    // variants that share their training share its cost, so their break-evens differ only by
    // what each saves
    assert_eq!(
        get("kd-int8").break_even.unwrap().compression_joules,
        get("kd").break_even.unwrap().compression_joules
    );
    // The recommendation names the real saving within the budget with the lowest energy (nominal
    // savings run the baseline's kernels: their differences are noise), or none if none saves.
    let rec = &report.recommendations[0];
    let qualifies = |o: &&Summary| {
        o.variant != "baseline"
            && o.accuracy_delta_pt >= -5.0
            && o.saving == Saving::Real
            && o.energy_reduction > 1.0
    };
    match rec.variant.as_ref() {
        Some(chosen) => {
            let s = report
                .summary
                .iter()
                .find(|s| s.variant == *chosen)
                .unwrap();
            assert!(qualifies(&s), "recommended {chosen}: {s:?}");
            for o in report.summary.iter().filter(qualifies) {
                assert!(s.inference_joules_per_10k[0] <= o.inference_joules_per_10k[0]);
            }
        }
        None => assert!(
            !report.summary.iter().any(|o| qualifies(&o)),
            "a variant qualified but none was recommended"
        ),
    }
    // CSV: header + one line per run; JSON round-trips; the SVG has a point per variant.
    let csv = std::fs::read_to_string(dir.path().join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + report.rows.len());
    assert!(
        Report::read(&dir.path().join("report.json")).unwrap() == report,
        "report.json must round-trip"
    );
    let svg = std::fs::read_to_string(dir.path().join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for r in &report.rows {
        assert!(
            svg.contains(&format!(">{}</text>", r.run.variant.replace('&', "&amp;"))),
            "{} unlabeled",
            r.run.variant
        );
    }
    let front = pareto_front(
        &report
            .summary
            .iter()
            .map(|s| (s.inference_joules_per_10k[0], s.accuracy[0]))
            .collect::<Vec<_>>(),
    );
    assert!(!front.is_empty());

    // A second run reuses the cached baseline (same weights, so the same accuracy).
    let again = run_suite(
        &SuiteConfig {
            variants: vec![],
            ..suite
        },
        &data,
        &meter,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(again[0].accuracy, base.run.accuracy);
}
