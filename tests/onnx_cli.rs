//! `joulecut export --format onnx`: the exported graph, run in-process by tract, gives joulecut's
//! logits (LeNet-300-100 and LeNet-5; F32, int8 per channel and per tensor as QDQ); what ONNX
//! export cannot write exits 2 with a hint and writes nothing.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Module};
use common::*;
use joulecut::checkpoint::{Checkpoint, CheckpointWriter, DenseTensor, TensorData};
use joulecut::models::{DenseFactory, Model, ModelConfig};
use tract_onnx::prelude::*;

/// Largest |tract − joulecut| of a logit of an F32 model: both compute in F32, in different
/// summation orders.
const LOGIT_TOLERANCE: f32 = 1e-4;
/// The same for an int8 (QDQ) model. Per-tensor int8 runs within 3e-7 in tract; per-channel int8
/// differs by up to ~9e-3 in tract 0.22 (its per-axis `DequantizeLinear`), while ONNX Runtime
/// runs the same graph within 1e-6 of joulecut's decoded model, so the bound is looser.
const INT8_LOGIT_TOLERANCE: f32 = 1e-2;
const ROWS: usize = 16;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A joulecut model of `arch` with uniform ±1/√fan_in weights.
fn write_model(path: &Path, arch: &str, seed: u64) -> ModelConfig {
    let cfg = ModelConfig::parse(arch).unwrap();
    let mut w = CheckpointWriter::new();
    w.set_model_config(serde_json::to_value(&cfg).unwrap());
    let mut rng = XorShift64::new(seed);
    for (name, shape) in cfg.param_shapes() {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
            .collect();
        w.insert(name, TensorData::Dense(DenseTensor::from_f32(shape, &v)));
    }
    w.write(path, &[]).unwrap();
    cfg
}

fn inputs(features: usize) -> Vec<f32> {
    let mut rng = XorShift64::new(99);
    (0..ROWS * features)
        .map(|_| rng.next_f32() * 4.0 - 2.0)
        .collect()
}

/// joulecut's logits with every weight decoded to F32 (int8: `scale · (q − zero_point)`, what
/// `DequantizeLinear` computes).
fn joulecut_logits(path: &Path, x: &[f32], features: usize) -> Vec<f32> {
    let ck = Checkpoint::open(path).unwrap();
    let cfg = Model::config_of(&ck, None).unwrap();
    let m = Model::load(&ck, &cfg, &Device::Cpu, &DenseFactory).unwrap();
    let t = candle_core::Tensor::from_vec(x.to_vec(), (ROWS, features), &Device::Cpu).unwrap();
    m.forward(&t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn tract_logits(onnx: &Path, x: &[f32], features: usize) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap()
        .with_input_fact(0, f32::fact([ROWS, features]).into())
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(&[ROWS, features], x).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    out[0]
        .to_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Exports with F32 activations: the graph is joulecut's decoded model (the default,
/// `--activations grid`, also quantizes int8 layers' inputs; tests/interop_onnx_fashion.rs).
fn export(src: &Path, out: &Path) -> serde_json::Value {
    json(&[
        "export",
        s(src),
        "-o",
        s(out),
        "--format",
        "onnx",
        "--activations",
        "f32",
        "--json",
    ])
}

#[test]
fn tract_runs_the_exports_with_joulecut_logits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (arch, seed) in [("lenet-300-100", 1), ("lenet5", 2)] {
        let f32_path = d.join(format!("{arch}.safetensors"));
        write_model(&f32_path, arch, seed);
        let ch = d.join(format!("{arch}-ch.safetensors"));
        let pt = d.join(format!("{arch}-pt.safetensors"));
        let q = |out: &PathBuf, g: &str| {
            let o = joulecut()
                .args([
                    "quantize",
                    s(&f32_path),
                    "-o",
                    s(out),
                    "--dtype",
                    "int8",
                    "--granularity",
                    g,
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        q(&ch, "channel");
        q(&pt, "tensor");
        let x = inputs(784);
        for (variant, src) in [
            ("f32", &f32_path),
            ("int8-channel", &ch),
            ("int8-tensor", &pt),
        ] {
            let onnx = d.join(format!("{arch}-{variant}.onnx"));
            let e = export(src, &onnx);
            assert_eq!(e["output_name"], "logits");
            if variant != "f32" {
                assert!(
                    !e["int8"].as_array().unwrap().is_empty(),
                    "{arch} {variant}: {e}"
                );
            }
            let want = joulecut_logits(src, &x, 784);
            let got = tract_logits(&onnx, &x, 784);
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let tol = if variant == "f32" {
                LOGIT_TOLERANCE
            } else {
                INT8_LOGIT_TOLERANCE
            };
            eprintln!("{arch} {variant}: max |tract - joulecut| = {worst:e}");
            assert!(worst <= tol, "{arch} {variant}: max |Δlogit| {worst}");
            // An int8 export stores int8: much smaller than the F32 one.
            if variant != "f32" {
                let f32_bytes = std::fs::metadata(d.join(format!("{arch}-f32.onnx")))
                    .unwrap()
                    .len();
                assert!(
                    e["bytes"].as_u64().unwrap() * 3 < f32_bytes,
                    "{arch} {variant}: {e}"
                );
            }
        }
    }
}

#[test]
fn what_onnx_export_cannot_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("mlp.safetensors");
    write_model(&src, "mlp:784-32-10", 3);
    let packed = d.join("packed.safetensors");
    let half = d.join("half.safetensors");
    let foreign = d.join("foreign.safetensors");
    for args in [
        vec![
            "prune",
            s(&src),
            "-o",
            s(&packed),
            "--sparsity",
            "0.8",
            "--pack",
        ],
        vec!["quantize", s(&src), "-o", s(&half), "--dtype", "f16"],
    ] {
        assert!(
            joulecut().args(&args).output().unwrap().status.success(),
            "{args:?}"
        );
    }
    ForeignMlp::new(&[4, 3], Values::Cyclic).write(&foreign);
    for (input, needle) in [
        (&packed, "sparse"),
        (&half, "F16"),
        (&foreign, "joulecut.model"),
    ] {
        let out_path = d.join("x.onnx");
        let out = joulecut()
            .args(["export", s(input), "-o", s(&out_path), "--format", "onnx"])
            .output()
            .unwrap();
        assert_bad_input(&out, needle);
        assert!(!out_path.exists(), "nothing is written");
    }
}
