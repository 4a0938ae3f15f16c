//! End-to-end tests of `joulecut quantize --qat`: quantization-aware fine-tuning on the real
//! dataset, then a real int8 checkpoint that `eval` runs through the int8 kernels.

mod common;

use common::*;

#[test]
fn qat_fine_tunes_then_writes_a_real_int8_checkpoint() {
    let (base, _) = train("mlp:784-32-10", 1, "small.safetensors");
    let before = std::fs::read(&base).unwrap();
    let out = scratch().join("small-qat.safetensors");
    let q = json(&[
        "quantize",
        base.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        "int8",
        "--qat",
        "--epochs",
        "1",
        "--json",
    ]);
    assert_eq!(std::fs::read(&base).unwrap(), before, "input modified");
    let acc = q["qat"]["accuracy"].as_f64().expect("qat.accuracy");
    assert!(acc > 0.80, "QAT int8-grid accuracy {acc}");
    assert!(q["qat"]["energy"]["joules"].as_f64().unwrap() > 0.0);
    assert!(q["qat"]["energy"]["provenance"].is_string());
    // No temporary file left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(scratch())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".qat-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The file is int8, and eval runs it through the int8 kernels at the accuracy QAT reported
    // (within the difference dynamic activation quantization makes).
    let e = json(&[
        "eval",
        out.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    assert!(
        e["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == "int8"),
        "{e}"
    );
    let eacc = e["accuracy"].as_f64().unwrap();
    assert!((eacc - acc).abs() <= 0.01, "eval {eacc} vs qat {acc}");
    let hist = json(&["inspect", out.to_str().unwrap(), "--json"]);
    let cmds: Vec<_> = hist["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["command"].clone())
        .collect();
    assert!(cmds.contains(&serde_json::json!("qat")), "{cmds:?}");
}

#[test]
fn qat_refuses_what_it_cannot_do() {
    let (base, _) = train("mlp:784-16-10", 1, "refuse.safetensors");
    let out = scratch().join("refused.safetensors");
    let run = |args: &[&str]| {
        joulecut()
            .arg("quantize")
            .arg(&base)
            .arg("-o")
            .arg(&out)
            .args(args)
            .output()
            .unwrap()
    };
    assert_bad_input(&run(&["--dtype", "f16", "--qat"]), "--qat");
    assert_bad_input(&run(&["--dtype", "int8", "--qat", "--lr=-1"]), "--lr");
    assert_bad_input(
        &run(&["--dtype", "int8", "--qat", "--epochs", "0"]),
        "--epochs",
    );
    assert_bad_input(
        &run(&["--dtype", "int8", "--qat", "--data", "/nonexistent/fmnist"]),
        "/nonexistent/fmnist",
    );
    assert!(!out.exists());
}
