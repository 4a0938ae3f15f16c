//! all-MiniLM-L6-v2 through joulecut's own transformer kernels, end to end on WordNet glosses:
//! the f32 engine embeds like candle-transformers' BERT; activation-aware pruning (SparseGPT,
//! Wanda) keeps the quality issue 18 asks for without retraining; int8 with per-layer calibrated
//! activation grids and packed sparse weights run on their own kernels (`real` savings); the
//! portable engine (the GPU's) embeds like joulecut's kernels and keeps int8 and half precision.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn calib() -> PathBuf {
    wordnet_split().join("calib.txt")
}

fn eval_sentences() -> PathBuf {
    wordnet_split().join("eval.txt")
}

/// `eval-embeddings ORIG OUT --json` on the evaluation glosses (no batch-1 timing).
fn eval_embeddings(orig: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let sentences = eval_sentences();
    let mut args = vec![
        "eval-embeddings",
        s(orig),
        s(out),
        "--sentences",
        s(&sentences),
        "--batch1-sentences",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

fn mean_cosine(v: &serde_json::Value) -> f64 {
    v["cosine"]["mean"].as_f64().expect("cosine.mean")
}

/// `prune MINILM -o OUT --method M --calibration calib.txt ARGS...`, returning OUT.
fn prune(name: &str, method: &str, args: &[&str]) -> PathBuf {
    let out = scratch().join(name);
    let _ = std::fs::remove_dir_all(&out);
    let m = minilm();
    let c = calib();
    let mut a = vec![
        "prune",
        s(&m),
        "-o",
        s(&out),
        "--method",
        method,
        "--calibration",
        s(&c),
        "--json",
    ];
    a.extend_from_slice(args);
    let r = json(&a);
    assert_eq!(r["method"], method);
    out
}

#[test]
fn the_joulecut_engine_embeds_like_candle_transformers() {
    let m = minilm();
    let v = eval_embeddings(&m, &m, &["--orig-engine", "candle"]);
    assert_eq!(v["original"]["engine"], "candle");
    assert_eq!(v["compressed"]["engine"], "joulecut");
    assert_eq!(v["compressed"]["kernels"]["dense-f32"], 36);
    assert_eq!(v["saving"], "nominal");
    let min = v["cosine"]["min"].as_f64().unwrap();
    assert!(min >= 0.99999, "min cosine vs candle-transformers {min}");
    assert_eq!(v["neighbour_agreement"]["mean"].as_f64(), Some(1.0));
    let j = v["compressed"]["joules_per_1000_sentences"]
        .as_f64()
        .unwrap();
    assert!(j > 0.0 && j.is_finite());
    assert!(v["compressed"]["energy_provenance"].is_string());
}

#[test]
fn sparsegpt_keeps_the_quality_the_issue_asks_for_and_beats_wanda() {
    let m = minilm();
    let half = prune("minilm-sparsegpt-50", "sparsegpt", &["--sparsity", "0.5"]);
    let c50 = mean_cosine(&eval_embeddings(&m, &half, &[]));
    assert!(c50 >= 0.90, "SparseGPT 50% mean cosine {c50}");
    let nm = prune("minilm-sparsegpt-24", "sparsegpt", &["--nm", "2:4"]);
    let c24 = mean_cosine(&eval_embeddings(&m, &nm, &[]));
    assert!(c24 >= 0.80, "SparseGPT 2:4 mean cosine {c24}");
    let light = prune("minilm-sparsegpt-30", "sparsegpt", &["--sparsity", "0.3"]);
    let c30 = mean_cosine(&eval_embeddings(&m, &light, &[]));
    assert!(c30 >= 0.98, "SparseGPT 30% mean cosine {c30}");
    // Wanda, no weight updates: better than magnitude's 0.75 (the reference), below SparseGPT
    let wanda = prune("minilm-wanda-50", "wanda", &["--sparsity", "0.5"]);
    let w50 = mean_cosine(&eval_embeddings(&m, &wanda, &[]));
    assert!(
        (0.85..c50).contains(&w50),
        "Wanda 50% {w50}, SparseGPT {c50}"
    );
}

/// `quantize MiniLM --dtype int8 --calibration calib.txt [extra] --json` into `tag`: the output
/// directory and the JSON.
fn quantize_calibrated(tag: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let (m, c) = (minilm(), calib());
    let out = scratch().join(tag);
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "quantize",
        s(&m),
        "-o",
        s(&out),
        "--dtype",
        "int8",
        "--calibration",
        s(&c),
        "--json",
    ];
    args.extend_from_slice(extra);
    let q = json(&args);
    (out, q)
}

#[test]
fn calibrated_int8_runs_on_the_int8_kernels_within_the_cosine_budget() {
    let m = minilm();
    let (out, q) = quantize_calibrated("minilm-int8-calibrated", &[]);
    let chosen = q["activation_grids"]["chosen"].as_object().unwrap();
    assert_eq!(chosen.len(), 36, "one grid per linear layer");
    // smoothing is what lets most layers run on the narrower, faster rows at this budget
    let narrow = chosen.values().filter(|g| *g != "s8").count();
    assert!(narrow >= 30, "{narrow} of 36 layers on u7/u6: {chosen:?}");
    let smoothed = q["activation_grids"]["smoothed"].as_array().unwrap();
    assert!(smoothed.len() >= 30, "{} layers smoothed", smoothed.len());
    let header = safetensors_header(&out.join("model.safetensors"));
    let in_scales = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".weight:in_scale"))
        .count();
    assert_eq!(
        in_scales,
        smoothed.len(),
        "one stored `:in_scale` per smoothed layer"
    );
    let v = eval_embeddings(&m, &out, &[]);
    assert_eq!(v["saving"], "real");
    assert_eq!(v["compressed"]["kernels"]["int8"], 36);
    let c = mean_cosine(&v);
    assert!(c >= 0.998, "int8 mean cosine {c}");
    assert!(v["neighbour_agreement"]["mean"].as_f64().unwrap() > 0.9);
    // the GPU's engine (here on the CPU) runs the same integers as Q8_0, smoothing included
    let p = portable(&out, 64, &[]);
    assert_eq!(p["compressed"]["engine"], "portable");
    assert_eq!(p["compressed"]["kernels"]["int8-q8_0"], 36);
    assert_eq!(p["saving"], "real");
    let c = mean_cosine(&p);
    assert!(c >= 0.998, "int8 as Q8_0: mean cosine {c}");
    // the smoothed file decodes to the original weights within the int8 grid's error
    let plain = scratch().join("minilm-int8-calibrated-decoded");
    let _ = std::fs::remove_dir_all(&plain);
    json(&["decompress", s(&out), "-o", s(&plain), "--json"]);
    let d = eval_embeddings(&m, &plain, &[]);
    assert!(
        mean_cosine(&d) > 0.9995,
        "decoded weights: {}",
        mean_cosine(&d)
    );
}

/// `--no-smoothing` chooses grids without input scales, and writes none.
#[test]
fn calibrated_int8_without_smoothing_stores_no_input_scales() {
    let (out, q) = quantize_calibrated("minilm-int8-unsmoothed", &["--no-smoothing"]);
    assert_eq!(
        q["activation_grids"]["smoothed"].as_array().unwrap().len(),
        0
    );
    let header = safetensors_header(&out.join("model.safetensors"));
    assert!(
        !header
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.ends_with(":in_scale")),
        "no input scales without smoothing"
    );
}

/// The JSON header of a safetensors file.
fn safetensors_header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn packed_sparsegpt_runs_on_the_sparse_kernel() {
    let m = minilm();
    let out = prune(
        "minilm-sparsegpt-50-packed",
        "sparsegpt",
        &["--sparsity", "0.5", "--pack"],
    );
    let v = eval_embeddings(&m, &out, &[]);
    assert_eq!(v["saving"], "real");
    assert_eq!(v["compressed"]["kernels"]["sparse"], 36);
    assert!(mean_cosine(&v) >= 0.90);
    let (before, after) = (
        v["original"]["weight_bytes"].as_u64().unwrap(),
        v["compressed"]["weight_bytes"].as_u64().unwrap(),
    );
    assert!(after < before, "{after} >= {before}");
}

#[test]
fn calibrated_methods_refuse_bad_requests_and_write_nothing() {
    let m = minilm();
    let out = scratch().join("minilm-never-written");
    // no calibration file
    let r = joulecut()
        .args(["prune", s(&m), "-o", s(&out), "--method", "sparsegpt"])
        .args(["--sparsity", "0.5"])
        .output()
        .unwrap();
    assert_bad_input(&r, "--calibration");
    // an empty calibration file
    let empty = scratch().join("empty-calibration.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let r = joulecut()
        .args(["prune", s(&m), "-o", s(&out), "--method", "wanda"])
        .args(["--sparsity", "0.5", "--calibration", s(&empty)])
        .output()
        .unwrap();
    assert_bad_input(&r, "empty-calibration.txt");
    // structured granularity with a per-weight method
    let c = calib();
    let r = joulecut()
        .args(["prune", s(&m), "-o", s(&out), "--method", "wanda"])
        .args([
            "--granularity",
            "rows",
            "--sparsity",
            "0.5",
            "--calibration",
            s(&c),
        ])
        .output()
        .unwrap();
    assert_bad_input(&r, "--method wanda");
    // a ranking flag the calibrated methods do not use is refused, not ignored
    let r = joulecut()
        .args(["prune", s(&m), "-o", s(&out), "--method", "sparsegpt"])
        .args([
            "--sparsity",
            "0.5",
            "--calibration",
            s(&c),
            "--criterion",
            "l2",
        ])
        .output()
        .unwrap();
    assert_bad_input(&r, "--method sparsegpt");
    // calibration with magnitude pruning is unused, so refused
    let r = joulecut()
        .args(["prune", s(&m), "-o", s(&out), "--sparsity", "0.5"])
        .args(["--calibration", s(&c)])
        .output()
        .unwrap();
    assert_bad_input(&r, "unused");
    assert!(!out.exists());
}

/// Issue 19, small: three of MiniLM's six layers, trained back for one short epoch on WordNet
/// glosses (disjoint from the held-out ones), come a long way back toward the full model (measured:
/// 0.409 -> 0.638 with 640 sentences).
#[test]
fn distillation_brings_a_layer_dropped_minilm_back() {
    let out = scratch().join("minilm-layers024");
    let (m, corpus, ev) = (
        minilm(),
        wordnet_split().join("corpus.txt"),
        eval_sentences(),
    );
    let v = json(&[
        "distill",
        "--teacher",
        s(&m),
        "--keep-layers",
        "0,2,4",
        "--corpus",
        s(&corpus),
        "--max-sentences",
        "640",
        "--held-out",
        s(&ev),
        "-o",
        s(&out),
        "--json",
    ]);
    assert_eq!(v["layers"], 3);
    let (before, after) = (
        v["eval_cosine_before"].as_f64().unwrap(),
        v["eval_cosine"].as_f64().unwrap(),
    );
    assert!(after > before + 0.1, "held-out cosine {before} -> {after}");
    // the written directory is what eval-embeddings sees
    let e = eval_embeddings(&m, &out, &[]);
    assert!((mean_cosine(&e) - after).abs() < 1e-4);
    assert!(v["compression_joules"].as_f64().unwrap() > 0.0);
}

// The portable engine — joulecut's BERT in candle tensor ops, the engine `--device cuda` runs —
// checked on the CPU against joulecut's own kernels: f32 equal, half precisions within the GPU
// issue's budget and counted as real, the batch-size sweep, and the refusals.

/// `eval-embeddings MINILM COMPRESSED` on the first `n` glosses, the compressed side on the
/// portable engine, the original on joulecut's.
fn portable(compressed: &Path, n: usize, extra: &[&str]) -> serde_json::Value {
    let (m, short) = (minilm(), short_eval(n));
    let mut args = vec![
        "eval-embeddings",
        s(&m),
        s(compressed),
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
    let v = portable(&minilm(), 48, &["--sweep", "1,8"]);
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
        let v = portable(&minilm(), 48, &["--precision", p]);
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
    let base = ["eval-embeddings", s(&m), s(&m), "--sentences", s(&short)];
    // a precision is the portable engine's setting
    let r = joulecut()
        .args(base)
        .args(["--engine", "joulecut", "--precision", "bf16"])
        .output()
        .unwrap();
    assert_bad_input(&r, "portable engine");
    // batch sizes of zero, in the sweep too
    let r = joulecut()
        .args(base)
        .args(["--sweep", "1,0"])
        .output()
        .unwrap();
    assert_bad_input(&r, "at least 1");
    let r = joulecut()
        .args(base)
        .args(["--precision", "int4"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
}
