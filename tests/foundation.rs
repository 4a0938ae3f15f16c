//! End-to-end: train on the real Fashion-MNIST, save, inspect, evaluate; bad input exits 2.

mod common;

use common::*;

#[test]
fn mlp_trains_to_accuracy_and_eval_agrees() {
    let (path, train) = trained_mlp(5);
    let acc = train["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.880, "LeNet-300-100 after 5 epochs: {acc}");
    assert_eq!(train["epochs"], 5);
    assert!(train["samples_per_second"].as_f64().unwrap() > 0.0);
    let ev = json(&[
        "eval",
        path.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "20",
    ]);
    assert_eq!(
        ev["accuracy"].as_f64().unwrap(),
        acc,
        "eval must reproduce training's test accuracy"
    );
    for field in [
        "samples",
        "batch_size",
        "seconds",
        "samples_per_second",
        "model_bytes",
        "params",
        "nonzero_params",
    ] {
        assert!(ev.get(field).is_some(), "eval JSON lacks `{field}`: {ev}");
    }
    assert_eq!(ev["samples"], 10_000);
    assert_eq!(ev["params"], 266_610);
    assert!(ev["latency"]["batch_1"]["median_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn lenet5_trains_to_accuracy() {
    let p = scratch().join("lenet5.safetensors");
    let v = json(&[
        "train",
        "--model",
        "lenet5",
        "-o",
        p.to_str().unwrap(),
        "--json",
    ]);
    let acc = v["accuracy"].as_f64().unwrap();
    // Issue 2's bar. With the default wsd schedule: 0.8874 / 0.8942 / 0.8896 for seeds 0-2
    // (cosine gave 0.8763 at seed 0, as PyTorch does with cosine); docs/PERFORMANCE.md.
    assert!(acc >= 0.885, "LeNet-5 after 5 epochs: {acc}");
    let ev = json(&[
        "eval",
        p.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "10",
    ]);
    assert_eq!(ev["accuracy"].as_f64().unwrap(), acc);
}

#[test]
fn inspect_lists_every_tensor_with_totals() {
    let (p, _) = train("mlp:784-32-10", 1, "small.safetensors");
    let v = json(&["inspect", p.to_str().unwrap(), "--json"]);
    let tensors = v["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    for t in tensors {
        for f in ["dtype", "shape", "bytes", "nonzero_fraction", "encoding"] {
            assert!(t.get(f).is_some(), "tensor entry lacks `{f}`: {t}");
        }
    }
    assert_eq!(tensors[0]["shape"], serde_json::json!([32, 784]));
    assert_eq!(tensors[0]["bytes"], 32 * 784 * 4);
    assert_eq!(v["totals"]["params"], 32 * 784 + 32 + 10 * 32 + 10);
    assert_eq!(
        v["totals"]["bytes_on_disk"],
        std::fs::metadata(&p).unwrap().len()
    );
    assert_eq!(v["model"]["arch"], "mlp");
}

#[test]
fn pytorch_state_dict_loads_and_evaluates() {
    // Tensors named and shaped as PyTorch's `state_dict()` of LeNet-300-100, no joulecut metadata.
    let p = scratch().join("torch_state_dict.safetensors");
    ForeignMlp::new(&ForeignMlp::LENET_300_100, Values::Cyclic).write(&p);
    let v = json(&[
        "eval",
        p.to_str().unwrap(),
        "--json",
        "--latency-iters",
        "5",
    ]);
    assert_eq!(v["params"], 266_610);
    assert_eq!(v["model"], "mlp:784-300-100-10");
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
}

#[test]
fn missing_dataset_directory() {
    let out = joulecut()
        .args(["train", "--model", "mlp:784-8-10", "--epochs", "1", "-o"])
        .arg(scratch().join("never.safetensors"))
        .args(["--data", "/nonexistent/fashion"])
        .output()
        .unwrap();
    assert_bad_input(&out, "/nonexistent/fashion");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataset-fashion-mnist"));
    assert!(!scratch().join("never.safetensors").exists());
}

#[test]
fn truncated_idx_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(DATA).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let victim = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let (model, _) = trained_mlp(5);
    let out = joulecut()
        .arg("eval")
        .arg(model)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_bad_input(&out, "t10k-labels-idx1-ubyte.gz");
}

#[test]
fn non_safetensors_file() {
    let p = scratch().join("notes.safetensors");
    std::fs::write(&p, b"this is a text file, not a checkpoint\n").unwrap();
    for cmd in ["eval", "inspect"] {
        let out = joulecut().arg(cmd).arg(&p).output().unwrap();
        assert_bad_input(&out, "not a valid safetensors file");
    }
}

#[test]
fn unknown_model() {
    let out = joulecut()
        .args(["train", "--model", "resnet50", "-o"])
        .arg(scratch().join("x.safetensors"))
        .output()
        .unwrap();
    assert_bad_input(&out, "resnet50");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lenet-300-100"));
}
