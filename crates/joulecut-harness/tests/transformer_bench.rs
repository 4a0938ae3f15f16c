//! The transformer bench end to end on a generated BERT directory (Hugging Face layout): every
//! variant is made, evaluated through joulecut's kernels and reported; the cosines order as the
//! compression does; shared work is shared; the recommendation follows its rule; files are written
//! whole.

use std::path::{Path, PathBuf};

use joulecut_embed::generate::{SyntheticBert, vocabulary};
use joulecut_energy::{Meter, MeterConfig, TotalProvenance};
use joulecut_harness::bench::{
    Host, Saving, TransformerOptions, TransformerReport, TransformerRow, TransformerSuite,
    run_transformer_suite,
};

/// The budget of the test suite's recommendation.
const MIN_COSINE: f64 = 0.95;
/// f16 storage of the weights barely moves the embeddings.
const F16_MIN_COSINE: f64 = 0.9999;
/// int8 weights and calibrated activation grids on the generated model.
const INT8_MIN_COSINE: f64 = 0.99;
/// Dense and packed copies of one pruning run differ only by kernel rounding.
const SAME_WEIGHTS_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of the break-even arithmetic.
const BREAK_EVEN_TOL: f64 = 1e-9;

/// Sentences from the generated model's vocabulary (so few words are unknown to it).
fn sentences(n: usize, seed: u64) -> String {
    let words: Vec<String> = vocabulary()
        .into_iter()
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    let mut rng = joulecut_ops::Rng::new(seed);
    let mut out = String::new();
    for _ in 0..n {
        let len = 5 + rng.below(12);
        let s: Vec<&str> = (0..len)
            .map(|_| words[rng.below(words.len())].as_str())
            .collect();
        out += &s.join(" ");
        out.push('\n');
    }
    out
}

fn host() -> Host {
    Host {
        hostname: "test".into(),
        cpu: "test".into(),
        cores: 1,
        kernel: String::new(),
        device: "cpu".into(),
        hypervisor: None,
        probes: serde_json::Value::Null,
        skipped_probes: serde_json::Value::Null,
        joulecut: "test".into(),
    }
}

fn suite(calib: &Path, eval: &Path, variants: &str) -> TransformerSuite {
    let text = format!(
        r#"{{"kind": "transformer", "name": "test",
            "text": {{"source": "files", "calibration": {calib:?}, "evaluation": {eval:?}}},
            "eval": {{"batch_size": 16, "neighbours": 5}}, "min_cosine": {MIN_COSINE},
            "variants": [{variants}]}}"#
    );
    TransformerSuite::parse(&text, "test suite").unwrap()
}

const VARIANTS: &str = r#"
    {"name": "fp16", "steps": [{"op": "quantize", "dtype": "f16"}]},
    {"name": "int8", "steps": [{"op": "quantize", "dtype": "int8"}]},
    {"name": "int8-u6", "steps": [{"op": "quantize", "dtype": "int8", "activations": "u6"}]},
    {"name": "wanda50", "steps": [{"op": "prune", "method": "wanda", "sparsity": 0.5}]},
    {"name": "sparsegpt30", "steps": [{"op": "prune", "method": "sparsegpt", "sparsity": 0.3}]},
    {"name": "sparsegpt50", "steps": [{"op": "prune", "method": "sparsegpt", "sparsity": 0.5}]},
    {"name": "sparsegpt50-packed", "steps": [{"op": "prune", "method": "sparsegpt", "sparsity": 0.5, "pack": true}]},
    {"name": "sparsegpt30-int8", "steps": [{"op": "prune", "method": "sparsegpt", "sparsity": 0.3},
                                           {"op": "quantize", "dtype": "int8"}]}"#;

struct Setup {
    _tmp: tempfile::TempDir,
    model: PathBuf,
    calib: PathBuf,
    eval: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("bert");
    SyntheticBert {
        position_ids: true,
        ..SyntheticBert::default()
    }
    .write_dir(&model)
    .unwrap();
    let (calib, eval) = (tmp.path().join("calib.txt"), tmp.path().join("eval.txt"));
    std::fs::write(&calib, sentences(48, 1)).unwrap();
    std::fs::write(&eval, sentences(40, 2)).unwrap();
    let out = tmp.path().join("out");
    Setup {
        _tmp: tmp,
        model,
        calib,
        eval,
        out,
    }
}

fn row<'a>(r: &'a TransformerReport, name: &str) -> &'a TransformerRow {
    r.rows
        .iter()
        .find(|x| x.run.variant == name)
        .unwrap_or_else(|| panic!("no row `{name}`"))
}

/// Files a crashed atomic write would leave behind.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(leftovers(&p));
        }
    }
    out
}

#[test]
fn transformer_suite_reports_every_variant_through_its_kernels() {
    let s = setup();
    let suite = suite(&s.calib, &s.eval, VARIANTS);
    let meter = Meter::auto(MeterConfig::default()).unwrap();
    let opts = TransformerOptions {
        model: s.model.clone(),
        out_dir: s.out.clone(),
        device: candle_core::Device::Cpu,
    };
    let run = run_transformer_suite(&suite, &opts, &meter, &mut |_| {}).unwrap();
    let report = TransformerReport::build(suite.clone(), host(), MIN_COSINE, 1.0, run);
    report.write(&s.out).unwrap();
    eprintln!("{}", report.markdown());

    let names: Vec<&str> = report.rows.iter().map(|r| r.run.variant.as_str()).collect();
    let mut expected = vec!["baseline"];
    expected.extend(suite.variants.iter().map(|v| v.name.as_str()));
    assert_eq!(names, expected);
    let layers = 6 * SyntheticBert::default().num_hidden_layers;

    let base = row(&report, "baseline");
    assert!(
        base.run.cosine_mean > 1.0 - 1e-9,
        "{}",
        base.run.cosine_mean
    );
    assert_eq!(base.run.saving, Saving::Baseline);
    assert_eq!(base.run.kernels.get("dense-f32"), Some(&layers));
    assert_eq!(base.run.dir, s.model.display().to_string());
    assert_eq!(base.run.compression_seconds.to_string(), "0");

    let f16 = row(&report, "fp16");
    assert!(
        f16.run.cosine_mean > F16_MIN_COSINE,
        "{}",
        f16.run.cosine_mean
    );
    assert_eq!(f16.run.saving, Saving::Nominal, "f16 is decoded to f32");
    assert!(f16.size_ratio < 0.75, "{}", f16.size_ratio);

    let int8 = row(&report, "int8");
    assert!(
        (INT8_MIN_COSINE..1.0).contains(&int8.run.cosine_mean),
        "{}",
        int8.run.cosine_mean
    );
    assert_eq!(int8.run.saving, Saving::Real);
    assert_eq!(int8.run.kernels.get("int8"), Some(&layers));
    // calibrated per-layer grids lose less than 6 bits everywhere
    let u6 = row(&report, "int8-u6");
    assert!(int8.run.cosine_mean > u6.run.cosine_mean);
    assert!(int8.run.commands[0].contains("--calibration"));
    assert!(u6.run.commands[0].contains("--int8-activations u6"));

    // pruning: more zeros lose more; SparseGPT's weight updates beat Wanda's masks at 50%
    let (sg30, sg50, wanda50) = (
        row(&report, "sparsegpt30"),
        row(&report, "sparsegpt50"),
        row(&report, "wanda50"),
    );
    assert!((sg50.run.weight_sparsity - 0.5).abs() < 0.01);
    assert!((sg30.run.weight_sparsity - 0.3).abs() < 0.01);
    assert!(sg30.run.cosine_mean > sg50.run.cosine_mean);
    assert!(sg50.run.cosine_mean > wanda50.run.cosine_mean);
    assert!(int8.run.cosine_mean > sg30.run.cosine_mean);
    assert_eq!(sg50.run.saving, Saving::Nominal, "zeros stored densely");
    assert_eq!(sg50.run.linear_params, base.run.linear_params);

    // packed: the same pruning pass, run by the sparse kernel from a smaller file
    let packed = row(&report, "sparsegpt50-packed");
    assert!(
        (packed.run.cosine_mean - sg50.run.cosine_mean).abs() < SAME_WEIGHTS_TOLERANCE,
        "{} vs {}",
        packed.run.cosine_mean,
        sg50.run.cosine_mean
    );
    assert_eq!(packed.run.saving, Saving::Real);
    assert_eq!(
        packed.run.kernels.get("sparse"),
        Some(&layers),
        "the fused query/key/value are packed together"
    );
    assert!(packed.run.bytes < sg50.run.bytes);
    assert_eq!(
        packed.run.compression[0].shared_with.as_deref(),
        Some("sparsegpt50"),
        "one calibration pass per pruning spec: {:?}",
        packed.run.compression
    );
    assert!(
        packed.run.compression[1].shared_with.is_none(),
        "its own write"
    );

    // a chain reuses the directory of its prefix and reports its cost as shared
    let chain = row(&report, "sparsegpt30-int8");
    assert!(chain.run.commands[1].starts_with(&format!(
        "joulecut quantize {}",
        s.out.join("models").join("sparsegpt30").display()
    )));
    assert!(
        chain.run.compression[..2]
            .iter()
            .all(|c| c.shared_with.as_deref() == Some("sparsegpt30"))
    );
    assert!(chain.run.compression[2].shared_with.is_none());
    assert!(chain.run.compression_seconds >= sg30.run.compression_seconds);
    assert_eq!(chain.run.saving, Saving::Real);

    // the break-even point: each variant's compression joules (shared steps in full) against
    // the inference joules it saves per 1,000 sentences, with the provenance of all of them
    assert_eq!(base.break_even, None);
    for r in report.rows.iter().skip(1) {
        let x = &r.run;
        let b = r
            .break_even
            .unwrap_or_else(|| panic!("{}: no break-even", x.variant));
        let saved = base.run.joules_per_1000 - x.joules_per_1000;
        assert!(
            (b.saved_joules_per_1000 - saved).abs() <= BREAK_EVEN_TOL * base.run.joules_per_1000,
            "{}: saved {} vs {saved}",
            x.variant,
            b.saved_joules_per_1000
        );
        let steps: f64 = x.compression.iter().map(|c| c.joules).sum();
        assert!((b.compression_joules - steps).abs() <= BREAK_EVEN_TOL * steps);
        match b.break_even_items {
            // the baseline's kernels at its size: a measured difference is noise
            n if x.saving == Saving::Nominal => assert_eq!(n, None, "{}: nominal", x.variant),
            Some(n) => {
                assert!(saved > 0.0, "{}: {saved}", x.variant);
                let paid = n * saved / 1000.0;
                assert!(
                    (paid - steps).abs() <= BREAK_EVEN_TOL * steps,
                    "{}: {n} sentences pay back {paid} J of {steps} J",
                    x.variant
                );
            }
            None => assert!(
                saved <= 0.0,
                "{}: saves {saved} but never pays back",
                x.variant
            ),
        }
        let p = x.compression.iter().map(|c| c.provenance).fold(
            base.run.provenance.combine(x.provenance),
            TotalProvenance::combine,
        );
        assert_eq!(b.provenance, p, "{}", x.variant);
    }

    // the recommendation: the lowest-joule real saving within the budget that saves energy
    let qualifying: Vec<&TransformerRow> = report
        .rows
        .iter()
        .filter(|r| {
            r.run.saving == Saving::Real
                && r.run.cosine_mean >= MIN_COSINE
                && r.energy_reduction > 1.0
        })
        .collect();
    match &report.recommendation.variant {
        Some(v) => {
            let r = row(&report, v);
            assert_eq!(r.run.saving, Saving::Real);
            assert!(r.run.cosine_mean >= MIN_COSINE);
            assert!(
                qualifying
                    .iter()
                    .all(|q| q.run.joules_per_1000 >= r.run.joules_per_1000)
            );
        }
        None => assert!(qualifying.is_empty(), "{:?}", report.recommendation),
    }

    // the files: whole, parseable, nothing half-written left behind
    for f in ["report.json", "report.csv", "report.md", "pareto.svg"] {
        assert!(s.out.join(f).is_file(), "{f}");
    }
    let back: TransformerReport =
        serde_json::from_str(&std::fs::read_to_string(s.out.join("report.json")).unwrap()).unwrap();
    assert_eq!(back.rows.len(), report.rows.len());
    let csv = std::fs::read_to_string(s.out.join("report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + report.rows.len());
    let md = std::fs::read_to_string(s.out.join("report.md")).unwrap();
    assert!(md.contains("**Recommendation** (mean cosine ≥ 0.95)"));
    assert!(md.contains("joulecut prune"));
    let svg = std::fs::read_to_string(s.out.join("pareto.svg")).unwrap();
    assert!(svg.contains("sparsegpt50-packed") && svg.contains("mean cosine"));
    assert_eq!(leftovers(&s.out), Vec::<PathBuf>::new());
    assert!(s.out.join("text/calib.txt").is_file() && s.out.join("text/eval.txt").is_file());

    // a second run into the same directory replaces the variant directories it writes
    let again = suite_with_one(&s);
    let run = run_transformer_suite(&again, &opts, &meter, &mut |_| {}).unwrap();
    assert_eq!(run.results.len(), 2);
    assert!(run.results[1].cosine_mean < 1.0);
}

fn suite_with_one(s: &Setup) -> TransformerSuite {
    suite(
        &s.calib,
        &s.eval,
        r#"{"name": "int8", "steps": [{"op": "quantize", "dtype": "int8", "activations": "s8"}]}"#,
    )
}

#[test]
fn bad_input_writes_nothing() {
    let s = setup();
    let meter = Meter::auto(MeterConfig::default()).unwrap();
    let suite = suite_with_one(&s);
    let bad_model = TransformerOptions {
        model: s.model.join("missing"),
        out_dir: s.out.clone(),
        device: candle_core::Device::Cpu,
    };
    let e = run_transformer_suite(&suite, &bad_model, &meter, &mut |_| {}).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(e.hint().is_some());
    assert!(!s.out.exists(), "nothing is written for bad input");

    std::fs::write(&s.calib, "\n\n").unwrap();
    let opts = TransformerOptions {
        model: s.model.clone(),
        out_dir: s.out.clone(),
        device: candle_core::Device::Cpu,
    };
    let e = run_transformer_suite(&suite, &opts, &meter, &mut |_| {}).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("calib.txt"), "{e}");
    assert!(!s.out.exists());
}

/// Learning rate of the test's recover steps. The generated model's weights are small (std
/// 0.02) and AdamW's first steps move every weight by about the learning rate, so a larger one
/// undoes more than 16 steps on a tiny corpus win back.
const RECOVER_LR: f64 = 1e-4;
/// Relative tolerance of sums of step costs.
const SUM_TOL: f64 = 1e-9;

const RECOVER_VARIANTS: &str = r#"
    {"name": "wanda50", "steps": [{"op": "prune", "method": "wanda", "sparsity": 0.5}]},
    {"name": "neurons50", "steps": [{"op": "structured", "granularity": "neurons", "sparsity": 0.5, "method": "wanda"}]},
    {"name": "heads33", "steps": [{"op": "structured", "granularity": "heads", "sparsity": 0.34}]},
    {"name": "wanda50-recovered", "steps": [{"op": "prune", "method": "wanda", "sparsity": 0.5},
                                            {"op": "recover", "epochs": 2, "lr": LR}]},
    {"name": "heads33-recovered", "steps": [{"op": "structured", "granularity": "heads", "sparsity": 0.34},
                                            {"op": "recover", "epochs": 2, "lr": LR}]},
    {"name": "layers2-recovered", "steps": [{"op": "recover", "keep_layers": [0, 2], "epochs": 2, "lr": LR}]},
    {"name": "layers2-recovered-int8", "steps": [{"op": "recover", "keep_layers": [0, 2], "epochs": 2, "lr": LR},
                                                 {"op": "quantize", "dtype": "int8"}]}"#;

fn recover_suite(s: &Setup, corpus: &Path, variants: &str) -> TransformerSuite {
    let text = format!(
        r#"{{"kind": "transformer", "name": "recover-test",
            "text": {{"source": "files", "calibration": {:?}, "evaluation": {:?}, "corpus": {corpus:?}}},
            "eval": {{"batch_size": 16, "neighbours": 5}}, "min_cosine": {MIN_COSINE},
            "variants": [{}]}}"#,
        s.calib,
        s.eval,
        variants.replace("LR", &RECOVER_LR.to_string())
    );
    TransformerSuite::parse(&text, "recover test suite").unwrap()
}

#[test]
fn structured_and_recovered_variants_are_real_and_pay_the_teacher_once() {
    let s = setup();
    let corpus = s.calib.with_file_name("corpus.txt");
    std::fs::write(&corpus, sentences(256, 3)).unwrap();
    let meter = Meter::auto(MeterConfig::default()).unwrap();
    let opts = TransformerOptions {
        model: s.model.clone(),
        out_dir: s.out.clone(),
        device: candle_core::Device::Cpu,
    };

    // a layer the model does not have: refused before anything is written
    let bad = recover_suite(
        &s,
        &corpus,
        r#"{"name": "deep", "steps": [{"op": "recover", "keep_layers": [0, 3]}]}"#,
    );
    let e = run_transformer_suite(&bad, &opts, &meter, &mut |_| {}).unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("layer 3"), "{e}");
    assert!(!s.out.exists(), "nothing is written for bad input");

    let suite = recover_suite(&s, &corpus, RECOVER_VARIANTS);
    let run = run_transformer_suite(&suite, &opts, &meter, &mut |l| eprintln!("{l}")).unwrap();
    assert_eq!(run.text.corpus, 256);
    let corpus_file = run.text.corpus_file.clone().unwrap();
    assert_eq!(corpus_file, s.out.join("text/corpus.txt"));
    assert_eq!(
        std::fs::read_to_string(&corpus_file).unwrap(),
        std::fs::read_to_string(&corpus).unwrap()
    );
    let report = TransformerReport::build(suite.clone(), host(), MIN_COSINE, 1.0, run);
    report.write(&s.out).unwrap();
    eprintln!("{}", report.markdown());
    let names: Vec<&str> = report.rows.iter().map(|r| r.run.variant.as_str()).collect();
    let mut expected = vec!["baseline"];
    expected.extend(suite.variants.iter().map(|v| v.name.as_str()));
    assert_eq!(names, expected);

    let depth = SyntheticBert::default().num_hidden_layers;
    let base = row(&report, "baseline");
    let full = base.run.linear_params;

    // structured: physically smaller dense layers, a real saving, the CLI's command
    for name in ["neurons50", "heads33"] {
        let r = &row(&report, name).run;
        assert_eq!(r.saving, Saving::Real, "{name}");
        assert!(r.linear_params < full, "{name}: {}", r.linear_params);
        assert_eq!(r.kernels.get("dense-f32"), Some(&(6 * depth)), "{name}");
        assert_eq!(r.weight_sparsity, 0.0, "{name}: compacted, not zeroed");
        assert!(r.cosine_mean < 1.0 && r.cosine_mean > 0.0, "{name}");
    }
    let n50 = row(&report, "neurons50");
    assert!(
        n50.run.commands[0]
            .contains("--granularity neurons --sparsity 0.5 --method wanda --calibration")
    );
    assert!(row(&report, "heads33").run.commands[0].ends_with("--method magnitude"));

    // recovery brings the pruned students back toward the baseline, keeping what was compressed
    let w50 = row(&report, "wanda50");
    let w50r = row(&report, "wanda50-recovered");
    assert!(
        w50r.run.cosine_mean > w50.run.cosine_mean,
        "wanda50 {} -> recovered {}",
        w50.run.cosine_mean,
        w50r.run.cosine_mean
    );
    assert!(
        (w50r.run.weight_sparsity - 0.5).abs() < 0.01,
        "zeros are kept"
    );
    let (h33, h33r) = (row(&report, "heads33"), row(&report, "heads33-recovered"));
    assert!(
        h33r.run.cosine_mean > h33.run.cosine_mean,
        "heads33 {} -> recovered {}",
        h33.run.cosine_mean,
        h33r.run.cosine_mean
    );
    assert_eq!(h33r.run.linear_params, h33.run.linear_params);
    assert_eq!(h33r.run.saving, Saving::Real);

    // dropped layers: a real saving with 2/3 of the linear weights; int8 after recovery runs the
    // int8 kernels
    let l2 = row(&report, "layers2-recovered");
    assert_eq!(l2.run.saving, Saving::Real);
    assert_eq!(l2.run.linear_params * depth, full * 2);
    assert_eq!(l2.run.layers.len(), 6 * 2);
    assert!(l2.run.cosine_mean > 0.0);
    assert!(l2.run.commands[0].starts_with(&format!(
        "joulecut distill --teacher {} --student {} --corpus {}",
        s.model.display(),
        s.model.display(),
        corpus_file.display()
    )));
    assert!(
        l2.run.commands[0].ends_with("--epochs 2 --lr 0.0001 --batch-size 32 --keep-layers 0,2")
    );
    let l2q = row(&report, "layers2-recovered-int8");
    assert_eq!(l2q.run.kernels.get("int8"), Some(&(6 * 2)));
    assert_eq!(l2q.run.saving, Saving::Real);
    assert!(l2q.run.commands[1].starts_with(&format!(
        "joulecut quantize {}",
        s.out.join("models/layers2-recovered").display()
    )));

    // the teacher outputs: computed once, by the first variant that recovers; every other
    // recovered row reports the same cost as shared
    let teacher_costs: Vec<(&str, &joulecut_harness::bench::StepCost)> = report
        .rows
        .iter()
        .flat_map(|r| {
            r.run
                .compression
                .iter()
                .filter(|c| c.step.starts_with("teacher outputs"))
                .map(move |c| (r.run.variant.as_str(), c))
        })
        .collect();
    let recovered = [
        "wanda50-recovered",
        "heads33-recovered",
        "layers2-recovered",
        "layers2-recovered-int8",
    ];
    assert_eq!(
        teacher_costs.iter().map(|t| t.0).collect::<Vec<_>>(),
        recovered,
        "one teacher-outputs cost per recovered row"
    );
    let paid: Vec<_> = teacher_costs
        .iter()
        .filter(|t| t.1.shared_with.is_none())
        .collect();
    assert_eq!(paid.len(), 1, "{teacher_costs:?}");
    assert_eq!(paid[0].0, "wanda50-recovered");
    assert!(paid[0].1.joules > 0.0 && paid[0].1.seconds > 0.0);
    for (v, c) in &teacher_costs[1..] {
        assert_eq!(c.shared_with.as_deref(), Some("wanda50-recovered"), "{v}");
        assert_eq!(c.joules, paid[0].1.joules, "{v}");
    }

    // each recover step's training is its own cost, after the teacher outputs
    for (name, own) in [
        ("wanda50-recovered", None),
        ("heads33-recovered", None),
        ("layers2-recovered", None),
        ("layers2-recovered-int8", Some("layers2-recovered")),
    ] {
        let c = &row(&report, name).run.compression;
        let k = c
            .iter()
            .position(|c| c.step.starts_with("recover "))
            .unwrap_or_else(|| panic!("{name}: no training cost in {c:?}"));
        assert!(c[k - 1].step.starts_with("teacher outputs"), "{name}");
        assert_eq!(c[k].shared_with.as_deref(), own, "{name}");
        assert!(c[k].joules > 0.0, "{name}");
        assert!(c[k].step.contains("2 epochs, lr 0.0001"), "{}", c[k].step);
    }
    // the pruned student's chain reuses wanda50's directory and calibration pass
    assert_eq!(
        w50r.run.compression[0].shared_with.as_deref(),
        Some("wanda50")
    );

    // compression joules are every step's, and the break-even point counts them all
    for r in report.rows.iter().skip(1) {
        let x = &r.run;
        let sum: f64 = x.compression.iter().map(|c| c.joules).sum();
        assert!(
            (x.compression_joules - sum).abs() <= SUM_TOL * sum,
            "{}: {} vs {sum}",
            x.variant,
            x.compression_joules
        );
        let seconds: f64 = x.compression.iter().map(|c| c.seconds).sum();
        assert!((x.compression_seconds - seconds).abs() <= SUM_TOL * seconds);
        let b = r.break_even.unwrap();
        assert!((b.compression_joules - sum).abs() <= SUM_TOL * sum);
    }
    assert!(
        w50r.run.compression_joules > w50.run.compression_joules,
        "training costs energy"
    );
    assert_eq!(leftovers(&s.out), Vec::<PathBuf>::new());
}
