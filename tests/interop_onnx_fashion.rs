//! int8 ONNX exports on the whole Fashion-MNIST test set (10,000 images): tract, running the graph
//! with joulecut's activation grids (`--activations grid`, the default), predicts the same class
//! as joulecut's own int8 kernels for LeNet-300-100 and LeNet-5, each trained for one epoch here.
//!
//! The models are quantized per tensor: tract 0.22 runs a per-channel `DequantizeLinear` with
//! the first channel's scale for every channel (it ignores `axis`; tract-onnx 0.23 fixed it), so
//! per-channel graphs are checked on this test set by ONNX Runtime in scripts/check-interop.py.

mod common;

use std::path::Path;

use candle_core::{Device, Module};
use common::*;
use joulecut::checkpoint::Checkpoint;
use joulecut::harness::data::load_fashion_mnist;
use joulecut::models::{Model, RealKernels};
use tract_onnx::prelude::*;

/// Images per forward pass.
const BATCH: usize = 1000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn argmax(rows: &[f32], classes: usize) -> Vec<usize> {
    rows.chunks_exact(classes)
        .map(|r| (0..classes).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

#[test]
fn tract_agrees_with_joulecut_int8_kernels_on_every_test_image() {
    let data = load_fashion_mnist(Some(Path::new(DATA))).unwrap();
    let test = &data.test;
    let dim = test.dim;
    for arch in ["lenet-300-100", "lenet5"] {
        let (f32_path, _) = train(arch, 1, &format!("{arch}.safetensors"));
        let q = scratch().join(format!("{arch}-int8.safetensors"));
        let o = joulecut()
            .args([
                "quantize",
                s(&f32_path),
                "-o",
                s(&q),
                "--dtype",
                "int8",
                "--granularity",
                "tensor",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let onnx = scratch().join(format!("{arch}-int8.onnx"));
        let e = json(&[
            "export",
            s(&q),
            "-o",
            s(&onnx),
            "--format",
            "onnx",
            "--json",
        ]);
        let layers = e["int8"].as_array().unwrap().len();
        assert_eq!(
            e["quantized_inputs"].as_array().unwrap().len(),
            layers,
            "{e}"
        );

        // joulecut: the int8 kernels `joulecut eval` runs
        let ck = Checkpoint::open(&q).unwrap();
        let cfg = Model::config_of(&ck, None).unwrap();
        let kernels = RealKernels::for_checkpoint(&ck).unwrap();
        let model = Model::load(&ck, &cfg, &Device::Cpu, &kernels).unwrap();
        let tract = tract_onnx::onnx()
            .model_for_path(&onnx)
            .unwrap()
            .with_input_fact(0, f32::fact([BATCH, dim]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let (mut disagree, mut right_jc, mut right_tract) = (0, 0, 0);
        for (b, images) in test.images.chunks(BATCH * dim).enumerate() {
            let n = images.len() / dim;
            assert_eq!(n, BATCH, "10,000 images in batches of {BATCH}");
            let x = candle_core::Tensor::from_slice(images, (n, dim), &Device::Cpu).unwrap();
            let jc: Vec<f32> = model
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let input = Tensor::from_shape(&[n, dim], images).unwrap();
            let out = tract.run(tvec!(input.into())).unwrap();
            let tr: Vec<f32> = out[0]
                .to_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect();
            let classes = jc.len() / n;
            let labels = &test.labels[b * BATCH..b * BATCH + n];
            for ((a, t), &l) in argmax(&jc, classes)
                .into_iter()
                .zip(argmax(&tr, classes))
                .zip(labels)
            {
                disagree += usize::from(a != t);
                right_jc += usize::from(a == l as usize);
                right_tract += usize::from(t == l as usize);
            }
        }
        let pts = |r: usize| r as f64 * 100.0 / test.len() as f64;
        eprintln!(
            "{arch} int8: joulecut {:.2}%, tract {:.2}%, {disagree} of {} predictions differ",
            pts(right_jc),
            pts(right_tract),
            test.len()
        );
        // joulecut's GEMM sums the int8 products exactly in integers and the graph sums the
        // dequantized values in F32: only a logit tie within F32 rounding could flip an argmax,
        // and none does on this test set
        assert_eq!(disagree, 0, "{arch}: {disagree} predictions differ");
        // the CLI's accuracy is the same model's
        let ev = json(&["eval", s(&q), "--json"]);
        assert!(
            (ev["accuracy"].as_f64().unwrap() * 100.0 - pts(right_jc)).abs() < 1e-9,
            "{ev}"
        );
    }
}
