//! `joulecut export --format compressed-tensors` and `joulecut import` end to end: every encoding
//! compressed-tensors can hold comes back from export → import bit for bit; what it cannot hold,
//! and malformed compressed-tensors inputs, exit 2 with a hint and write nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use joulecut::checkpoint::{CheckpointWriter, DenseTensor, FloatType, Int8Tensor, TensorData};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Stored tensors (dtype, shape, bytes) and `__metadata__` of a safetensors file.
type Stored = (
    BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
    BTreeMap<String, String>,
);

fn stored(path: &Path) -> Stored {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect();
    let md = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, md)
}

/// The metadata that describes the model (history and the format tags aside).
fn essential(md: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    md.iter()
        .filter(|(k, _)| !["joulecut.history", "joulecut.format", "format"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn run_ok(args: &[&str]) {
    let out = joulecut().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "joulecut {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A float MLP whose widths exercise the bitmask's row padding (20 and 36 columns are not
/// multiples of 8) and fit 2:4 groups.
fn base(dir: &Path) -> PathBuf {
    let p = dir.join("base.safetensors");
    ForeignMlp::new(&[20, 36, 12], Values::Random(XorShift64::new(7))).write(&p);
    p
}

fn round_trip(dir: &Path, name: &str, src: &Path) -> serde_json::Value {
    let ct = dir.join(format!("{name}-ct"));
    let back = dir.join(format!("{name}-back.safetensors"));
    let e = json(&[
        "export",
        s(src),
        "-o",
        s(&ct),
        "--format",
        "compressed-tensors",
        "--json",
    ]);
    assert!(ct.join("model.safetensors").is_file() && ct.join("config.json").is_file());
    json(&["import", s(&ct), "-o", s(&back), "--json"]);
    let (a, am) = stored(src);
    let (b, bm) = stored(&back);
    assert_eq!(a, b, "{name}: tensors differ after export → import");
    assert_eq!(essential(&am), essential(&bm), "{name}: metadata differs");
    e
}

#[test]
fn every_expressible_encoding_round_trips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = base(d);
    let f = |n: &str| d.join(format!("{n}.safetensors"));
    run_ok(&[
        "quantize",
        s(&src),
        "-o",
        s(&f("ch")),
        "--dtype",
        "int8",
        "--granularity",
        "channel",
    ]);
    run_ok(&[
        "quantize",
        s(&src),
        "-o",
        s(&f("pt")),
        "--dtype",
        "int8",
        "--granularity",
        "tensor",
    ]);
    run_ok(&["quantize", s(&src), "-o", s(&f("h")), "--dtype", "f16"]);
    run_ok(&["quantize", s(&src), "-o", s(&f("b")), "--dtype", "bf16"]);
    run_ok(&[
        "prune",
        s(&src),
        "-o",
        s(&f("sp")),
        "--sparsity",
        "0.7",
        "--pack",
    ]);
    run_ok(&[
        "quantize",
        s(&f("sp")),
        "-o",
        s(&f("spq")),
        "--dtype",
        "int8",
    ]);
    run_ok(&["prune", s(&src), "-o", s(&f("nm")), "--nm", "2:4", "--pack"]);
    run_ok(&[
        "quantize",
        s(&f("nm")),
        "-o",
        s(&f("nmq")),
        "--dtype",
        "int8",
    ]);

    let e = round_trip(d, "f32", &src);
    assert_eq!(e["int8"].as_array().unwrap().len(), 0);
    for n in ["h", "b", "ch", "pt"] {
        round_trip(d, n, &f(n));
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("ch-ct/config.json")).unwrap()).unwrap();
    let qc = &cfg["quantization_config"];
    assert_eq!(qc["quant_method"], "compressed-tensors");
    assert_eq!(qc["format"], "naive-quantized");
    assert_eq!(
        qc["config_groups"]["group_0"]["weights"]["strategy"],
        "channel"
    );
    let (ct, _) = stored(&d.join("ch-ct/model.safetensors"));
    assert_eq!(ct["fc1.weight"].0, "I8");
    assert_eq!(ct["fc1.weight_scale"].1, vec![36, 1]);
    assert!(!ct.contains_key("fc1.weight_zero_point"));
    let (ct, _) = stored(&d.join("pt-ct/model.safetensors"));
    assert_eq!(ct["fc2.weight_scale"].1, vec![1]);

    for n in ["sp", "spq"] {
        let e = round_trip(d, n, &f(n));
        assert_eq!(e["sparse_format"], "sparse-bitmask", "{n}");
    }
    let (ct, _) = stored(&d.join("sp-ct/model.safetensors"));
    assert_eq!(ct["fc1.bitmask"].1, vec![36, 3]);
    assert_eq!(
        ct["fc1.row_offsets"],
        ("I64".into(), vec![36], ct["fc1.row_offsets"].2.clone())
    );
    assert_eq!(
        ct["fc1.shape"].2,
        [36i64, 20]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>()
    );
    for n in ["nm", "nmq"] {
        let e = round_trip(d, n, &f(n));
        assert_eq!(e["sparse_format"], "sparse-24-bitmask", "{n}");
        assert_eq!(e["padded"], 0);
    }
    let (ct, _) = stored(&d.join("nmq-ct/model.safetensors"));
    assert_eq!(ct["fc1.compressed"].1, vec![36, 10]);
    assert_eq!(ct["fc1.compressed"].0, "I8");
    assert_eq!(ct["fc1.shape"].1, vec![2, 1]);
    assert!(ct.contains_key("fc1.weight_scale"));

    // Unstructured sparsity is refused as 2:4, with the layout that holds it named.
    let out = joulecut()
        .args([
            "export",
            s(&f("sp")),
            "-o",
            s(&d.join("x")),
            "--format",
            "compressed-tensors",
        ])
        .args(["--sparse-format", "2:4"])
        .output()
        .unwrap();
    assert_bad_input(&out, "fc1.weight");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sparse-format bitmask"));
    assert!(!d.join("x").exists());
}

#[test]
fn a_hugging_face_directory_keeps_its_config_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = d.join("bert");
    write_hf_bert(&joulecut::embed::generate::SyntheticBert::default(), &model);
    let q = d.join("bert-int8");
    run_ok(&["quantize", s(&model), "-o", s(&q), "--dtype", "int8"]);
    let ct = d.join("bert-ct");
    run_ok(&[
        "export",
        s(&q),
        "-o",
        s(&ct),
        "--format",
        "compressed-tensors",
    ]);
    for f in ["tokenizer.json", "1_Pooling/config.json"] {
        assert_eq!(
            std::fs::read(model.join(f)).unwrap(),
            std::fs::read(ct.join(f)).unwrap(),
            "{f}"
        );
    }
    let orig: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ct.join("config.json")).unwrap()).unwrap();
    let qc = cfg
        .as_object_mut()
        .unwrap()
        .remove("quantization_config")
        .unwrap();
    assert_eq!(cfg, orig, "every other config field is kept");
    let targets = &qc["config_groups"]["group_0"]["targets"];
    assert!(
        targets
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "encoder.layer.0.attention.self.query")
    );
    let (t, md) = stored(&ct.join("model.safetensors"));
    assert_eq!(md["format"], "pt");
    assert_eq!(t["encoder.layer.0.attention.self.query.weight"].0, "I8");

    let back = d.join("bert-back");
    run_ok(&["import", s(&ct), "-o", s(&back)]);
    let (a, am) = stored(&q.join("model.safetensors"));
    let (b, bm) = stored(&back.join("model.safetensors"));
    assert_eq!(a, b);
    assert_eq!(essential(&am), essential(&bm));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg, orig, "quantization_config is gone after the import");
    // The imported model runs through joulecut like the original int8 one.
    let sentences = d.join("s.txt");
    std::fs::write(&sentences, "a small test sentence\nanother one\n").unwrap();
    let v = json(&[
        "eval-embeddings",
        s(&q),
        s(&back),
        "--sentences",
        s(&sentences),
        "--json",
    ]);
    assert!(v["cosine"]["mean"].as_f64().unwrap() > 0.999_999, "{v}");
}

fn write_int8(path: &Path, name: &str, shape: Vec<usize>, axis: Option<usize>) {
    let n: usize = shape.iter().product();
    let c = axis.map_or(1, |a| shape[a]);
    let mut w = CheckpointWriter::new();
    w.insert(
        name,
        TensorData::Int8(Int8Tensor {
            shape,
            values: (0..n).map(|i| (i % 50) as i8).collect(),
            scales: vec![0.01; c],
            zero_points: None,
            axis,
            orig_dtype: FloatType::F32,
            in_scales: None,
        }),
    );
    w.insert(
        "fc9.bias",
        TensorData::Dense(DenseTensor::from_f32(vec![2], &[1.0, 2.0])),
    );
    w.write(path, &[]).unwrap();
}

#[test]
fn what_compressed_tensors_cannot_hold_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (file, name, shape, axis, needle) in [
        ("axis1", "fc1.weight", vec![4, 6], Some(1), "axis 1"),
        ("conv", "conv1.weight", vec![4, 1, 5, 5], Some(0), "2-D"),
        ("bias", "fc1.bias", vec![4], None, "fc1.bias"),
    ] {
        let p = d.join(format!("{file}.safetensors"));
        write_int8(&p, name, shape, axis);
        let out_dir = d.join(format!("{file}-ct"));
        let out = joulecut()
            .args([
                "export",
                s(&p),
                "-o",
                s(&out_dir),
                "--format",
                "compressed-tensors",
            ])
            .output()
            .unwrap();
        assert_bad_input(&out, needle);
        assert!(String::from_utf8_lossy(&out.stderr).contains(name));
        assert!(!out_dir.exists(), "nothing is written");
    }
}

/// A compressed-tensors directory with these tensors and `quantization_config`.
fn ct_dir(dir: &Path, tensors: &[common::Stored], qc: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(
        &dir.join("model.safetensors"),
        tensors,
        Some(pytorch_metadata()),
    );
    let cfg = serde_json::json!({ "model_type": "bert", "quantization_config": qc });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

#[test]
fn malformed_compressed_tensors_inputs_exit_2() {
    use safetensors::Dtype;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let int8 = serde_json::json!({"quant_method": "compressed-tensors", "format": "naive-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "int",
            "symmetric": true, "strategy": "channel"}}}});
    let weight = (
        "fc1.weight".to_string(),
        Dtype::I8,
        vec![2, 4],
        vec![1u8; 8],
    );
    let scale = (
        "fc1.weight_scale".to_string(),
        Dtype::F32,
        vec![2, 1],
        f32_bytes(&[0.1, 0.2]),
    );

    let cases: Vec<(&str, Vec<common::Stored>, serde_json::Value, &str)> = vec![
        (
            "noscale",
            vec![weight.clone()],
            int8.clone(),
            "fc1.weight_scale",
        ),
        (
            "gptq",
            vec![weight.clone(), scale.clone()],
            serde_json::json!({"quant_method": "gptq", "bits": 4}),
            "gptq",
        ),
        (
            "int4",
            vec![weight.clone(), scale.clone()],
            serde_json::json!({"quant_method": "compressed-tensors", "format": "pack-quantized"}),
            "pack-quantized",
        ),
        (
            "badscale",
            vec![
                weight.clone(),
                (
                    "fc1.weight_scale".into(),
                    Dtype::F32,
                    vec![3, 1],
                    f32_bytes(&[0.1, 0.2, 0.3]),
                ),
            ],
            int8.clone(),
            "fc1.weight_scale",
        ),
    ];
    for (name, tensors, qc, needle) in cases {
        let input = d.join(name);
        ct_dir(&input, &tensors, qc);
        let out_path = d.join(format!("{name}-out"));
        let out = joulecut()
            .args(["import", s(&input), "-o", s(&out_path)])
            .output()
            .unwrap();
        assert_bad_input(&out, needle);
        assert!(!out_path.exists(), "{name}: nothing is written");
    }
    // A well-formed one imports.
    let ok = d.join("ok");
    ct_dir(&ok, &[weight, scale], int8);
    let v = json(&[
        "import",
        s(&ok),
        "-o",
        s(&d.join("ok.safetensors")),
        "--json",
    ]);
    assert_eq!(v["int8"], serde_json::json!(["fc1.weight"]));
    // Not a directory.
    let out = joulecut()
        .args([
            "import",
            s(&d.join("ok.safetensors")),
            "-o",
            s(&d.join("y")),
        ])
        .output()
        .unwrap();
    assert_bad_input(&out, "config.json");
}
