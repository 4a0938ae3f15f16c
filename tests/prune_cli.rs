//! End-to-end tests of `joulecut prune`: bad input exits 2 with a hint and leaves the input alone;
//! packing shrinks files; compaction shrinks layers; the results load and evaluate.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A foreign (non-joulecut) safetensors file: an MLP 784-300-100-10 with PyTorch names.
fn foreign_mlp(path: &Path) {
    ForeignMlp::new(
        &ForeignMlp::LENET_300_100,
        Values::Random(XorShift64::new(1)),
    )
    .pytorch_format()
    .write(path);
}

fn input() -> &'static PathBuf {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("foreign.safetensors");
        foreign_mlp(&p);
        p
    })
}

/// Runs `prune` on the foreign MLP with `args`; asserts exit 2 naming `needle`, and that the input is
/// unchanged and no output was written.
fn bad(args: &[&str], needle: &str) {
    let inp = input();
    let before = std::fs::read(inp).unwrap();
    let out = scratch().join(format!(
        "bad-{}.safetensors",
        needle.replace([' ', '/', '*'], "_")
    ));
    let o = joulecut()
        .arg("prune")
        .arg(inp)
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    assert_bad_input(&o, needle);
    assert_eq!(std::fs::read(inp).unwrap(), before, "input modified");
    assert!(!out.exists(), "output written despite the error");
}

#[test]
fn sparsity_outside_unit_interval() {
    bad(&["--sparsity", "1.0"], "invalid sparsity 1");
    bad(&["--sparsity", "-0.1"], "invalid sparsity -0.1");
    bad(
        &["--sparsity", "1.5", "--scope", "global"],
        "invalid sparsity 1.5",
    );
}

#[test]
fn bad_nm_patterns() {
    bad(&["--granularity", "nm", "--nm", "4:4"], "4:4");
    bad(&["--nm", "5:4"], "5:4");
    bad(&["--nm", "two:four"], "bad --nm");
    // fc1.weight is [300, 784] and 784 % 3 != 0.
    bad(&["--nm", "2:3"], "not divisible by 3");
    bad(&["--nm", "2:4", "--sparsity", "0.9"], "contradicts");
    bad(&["--nm", "2:4", "--scope", "global"], "no global scope");
}

#[test]
fn globs_that_match_nothing() {
    bad(
        &["--sparsity", "0.5", "--include", "encoder.*"],
        "encoder.*",
    );
    bad(&["--sparsity", "0.5", "--exclude", "fc9.*"], "fc9.*");
    bad(
        &["--sparsity", "0.5", "--exclude", "*"],
        "no tensor selected",
    );
}

#[test]
fn structured_pruning_of_a_1d_tensor() {
    bad(
        &[
            "--sparsity",
            "0.5",
            "--granularity",
            "rows",
            "--include",
            "fc1.*",
        ],
        "fc1.bias",
    );
    bad(
        &[
            "--sparsity",
            "0.5",
            "--granularity",
            "channels",
            "--include",
            "fc2.bias",
        ],
        "fc2.bias",
    );
}

#[test]
fn missing_sparsity_and_compact_without_model() {
    bad(&[], "--sparsity is required");
    bad(
        &["--sparsity", "0.5", "--granularity", "rows", "--compact"],
        "--compact needs a joulecut model",
    );
}

#[test]
fn output_equal_to_input_is_refused() {
    let inp = input();
    let before = std::fs::read(inp).unwrap();
    let o = joulecut()
        .arg("prune")
        .arg(inp)
        .arg("-o")
        .arg(inp)
        .args(["--sparsity", "0.5"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(inp).unwrap(), before);
}

#[test]
fn packed_90_percent_foreign_file_is_at_most_a_fifth() {
    let out = scratch().join("packed90.safetensors");
    let v = json(&[
        "prune",
        input().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--sparsity",
        "0.9",
        "--scope",
        "global",
        "--pack",
        "--json",
    ]);
    assert_eq!(v["saving"], "real");
    let g = &v["global"];
    let (params, zeros) = (g["params"].as_u64().unwrap(), g["zeros"].as_u64().unwrap());
    assert_eq!(params, 300 * 784 + 100 * 300 + 10 * 100);
    assert!((zeros as f64 - 0.9 * params as f64).abs() <= 1.0, "{g}");
    let ratio = v["bytes"]["ratio"].as_f64().unwrap();
    assert!(ratio <= 0.2, "packed/dense bytes {ratio}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["encoding"], "sparse", "{l}");
        assert!(l["bytes_after"].as_u64() < l["bytes_before"].as_u64());
    }
    // The packed file decodes to the same zeros.
    let ins = json(&["inspect", out.to_str().unwrap(), "--json"]);
    let nz = ins["totals"]["nonzero_params"].as_u64().unwrap();
    assert_eq!(nz, 266_610 - zeros, "{}", ins["totals"]);
}

#[test]
fn nm_2_4_holds_in_the_file() {
    let out = scratch().join("nm24.safetensors");
    let v = json(&[
        "prune",
        input().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--nm",
        "2:4",
        "--exclude",
        "fc3.*",
        "--json",
    ]);
    assert_eq!(v["saving"], "nominal");
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["sparsity"].as_f64().unwrap(), 0.5, "{l}");
    }
}

/// A real model: LeNet-300-100 trained 1 epoch on Fashion-MNIST.
fn trained() -> &'static PathBuf {
    &trained_mlp(1).0
}

#[test]
fn rows_compact_shrinks_layers_and_records_widths() {
    let out = scratch().join("rows50.safetensors");
    let v = json(&[
        "prune",
        trained().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--sparsity",
        "0.5",
        "--granularity",
        "rows",
        "--compact",
        "--json",
    ]);
    assert_eq!(
        v["compact"]["widths_after"],
        serde_json::json!([150, 50, 10]),
        "{v}"
    );
    assert_eq!(v["protected"], "fc3.weight");
    assert_eq!(v["saving"], "real");
    let ins = json(&["inspect", out.to_str().unwrap(), "--json"]);
    assert_eq!(
        ins["model"]["widths"],
        serde_json::json!([784, 150, 50, 10]),
        "{}",
        ins["model"]
    );
    let before = json(&[
        "eval",
        trained().to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    let after = json(&[
        "eval",
        out.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    assert_eq!(
        after["params"],
        784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10
    );
    // Halving the neurons without fine-tuning costs accuracy, but the model still works.
    let (a0, a1) = (
        before["accuracy"].as_f64().unwrap(),
        after["accuracy"].as_f64().unwrap(),
    );
    assert!(a1 > 0.5 && a1 <= a0 + 0.02, "{a0} -> {a1}");
}

#[test]
fn packed_checkpoint_evaluates_like_the_masked_one() {
    let masked = scratch().join("global90.safetensors");
    let packed = scratch().join("global90-packed.safetensors");
    for (p, pack) in [(&masked, false), (&packed, true)] {
        let mut args = vec![
            "prune",
            trained().to_str().unwrap(),
            "-o",
            p.to_str().unwrap(),
            "--sparsity",
            "0.9",
            "--scope",
            "global",
            "--json",
        ];
        if pack {
            args.push("--pack");
        }
        json(&args);
    }
    let m = json(&[
        "eval",
        masked.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    let p = json(&[
        "eval",
        packed.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    let (am, ap) = (
        m["accuracy"].as_f64().unwrap(),
        p["accuracy"].as_f64().unwrap(),
    );
    assert!((am - ap).abs() <= 0.001, "masked {am} vs packed {ap}");
    assert!(
        p["model_bytes"].as_u64().unwrap() * 5 <= m["model_bytes"].as_u64().unwrap(),
        "{p}"
    );
}
