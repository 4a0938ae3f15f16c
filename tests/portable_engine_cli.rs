//! The portable engine — joulecut's BERT in candle tensor ops, the engine `--device cuda` runs —
//! checked on the CPU against joulecut's own kernels with all-MiniLM-L6-v2: f32 equal, half
//! precisions within the GPU issue's budget and counted as real, the batch-size sweep, and the
//! refusals.

mod common;

use std::path::Path;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `eval-embeddings MINILM MINILM` on 48 glosses, the compressed side on the portable engine.
fn portable(extra: &[&str]) -> serde_json::Value {
    let (m, short) = (minilm(), short_eval(48));
    let mut args = vec![
        "eval-embeddings",
        s(&m),
        s(&m),
        "--sentences",
        s(&short),
        "--batch1-sentences",
        "0",
        "--engine",
        "portable",
        "--orig-engine",
        "joulecut",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

#[test]
fn f32_on_the_portable_engine_equals_joulecuts_kernels() {
    let v = portable(&["--sweep", "1,8"]);
    assert_eq!(v["compressed"]["engine"], "portable");
    assert_eq!(v["compressed"]["precision"], "f32");
    assert_eq!(v["original"]["engine"], "joulecut");
    assert_eq!(v["compressed"]["kernels"]["dense-f32"], 36);
    assert_eq!(v["saving"], "nominal");
    let min = v["cosine"]["min"].as_f64().unwrap();
    assert!(min >= 0.99999, "portable f32 vs joulecut: min cosine {min}");
    // the sweep: both models, each batch size in its own window, with provenance
    for side in ["original", "compressed"] {
        let points = v[side]["sweep"].as_array().unwrap();
        let sizes: Vec<u64> = points
            .iter()
            .map(|p| p["batch_size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [1, 8], "{side}");
        for p in points {
            assert!(p["sentences_per_second"].as_f64().unwrap() > 0.0);
            assert!(p["joules_per_1000_sentences"].as_f64().unwrap() > 0.0);
            assert_eq!(p["energy_provenance"], "estimated");
        }
    }
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["compressed"]["device"], "cpu");
}

#[test]
fn half_precisions_run_as_such_within_the_budget() {
    for (p, bound) in [("bf16", 0.9995), ("f16", 0.9999)] {
        let v = portable(&["--precision", p]);
        assert_eq!(v["compressed"]["precision"], p);
        assert_eq!(v["compressed"]["kernels"][format!("dense-{p}")], 36, "{p}");
        // a different kernel runs the products: a real saving where half precision is fast
        assert_eq!(v["saving"], "real", "{p}");
        let mean = v["cosine"]["mean"].as_f64().unwrap();
        assert!(mean >= bound, "{p}: mean cosine {mean}");
    }
}

#[test]
fn engine_and_precision_mismatches_are_bad_input() {
    let (m, short) = (minilm(), short_eval(48));
    let base = [
        "eval-embeddings",
        s(&m),
        s(&m),
        "--sentences",
        s(&short),
    ];
    // a precision is the portable engine's setting
    let r = joulecut()
        .args(base)
        .args(["--engine", "joulecut", "--precision", "bf16"])
        .output()
        .unwrap();
    assert_bad_input(&r, "portable engine");
    // batch sizes of zero, in the sweep too
    let r = joulecut().args(base).args(["--sweep", "1,0"]).output().unwrap();
    assert_bad_input(&r, "at least 1");
    let r = joulecut()
        .args(base)
        .args(["--precision", "int4"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
}
