//! End-to-end tests of `joulecut quantize` and `joulecut decompress` on foreign safetensors files:
//! sizes, per-tensor errors, bit-exact round trips, and bad input (exit 2, nothing written).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Per-tensor relative L2 error allowed for int8 per-channel weights.
const INT8_REL_L2: f64 = 0.01;

/// Writes a foreign MLP 784-300-100-10 (F32, PyTorch names), a quarter of each tensor zero, with
/// `poison` written into fc2.weight[0].
fn foreign_mlp(path: &Path, poison: Option<f32>) {
    let rng = XorShift64::from_state(0x2545_f491_4f6c_dd1d);
    ForeignMlp::new(&ForeignMlp::LENET_300_100, Values::Random(rng))
        .zero_every(4)
        .poison(poison)
        .pytorch_format()
        .write(path);
}

fn input() -> &'static PathBuf {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("quant-foreign.safetensors");
        foreign_mlp(&p, None);
        p
    })
}

fn out(name: &str) -> PathBuf {
    scratch().join(format!("quant-{name}.safetensors"))
}

#[test]
fn int8_per_channel_is_small_and_accurate() {
    let o = out("int8");
    let v = json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--dtype",
        "int8",
        "--json",
    ]);
    let before = v["bytes"]["before"].as_f64().unwrap();
    let after = v["bytes"]["after"].as_f64().unwrap();
    // Weights are quantized, biases (rank 1) stay f32 by default.
    assert!(
        after / before <= 0.27,
        "int8 file is {:.3}x of f32",
        after / before
    );
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 3);
    for t in tensors {
        assert_eq!(t["encoding"], "int8");
        assert!(t["rel_l2"].as_f64().unwrap() < INT8_REL_L2, "{t}");
        assert!(t["max_abs"].as_f64().unwrap() > 0.0);
    }
    // Plain safetensors: the values are I8 with F32 scales, readable by any reader.
    let bytes = std::fs::read(&o).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("fc1.weight").unwrap().dtype(), Dtype::I8);
    assert_eq!(st.tensor("fc1.weight:scale").unwrap().shape(), &[300]);
    // inspect sees the encoding.
    let i = json(&["inspect", o.to_str().unwrap(), "--json"]);
    assert!(
        i["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["encoding"] == "int8")
    );
}

#[test]
fn every_scheme_and_calibration_runs() {
    for (i, extra) in [
        vec!["--granularity", "tensor"],
        vec!["--scheme", "asymmetric"],
        vec!["--calibrate", "percentile", "--percentile", "99.9"],
        vec![
            "--calibrate",
            "mse",
            "--granularity",
            "tensor",
            "--scheme",
            "asymmetric",
        ],
        vec!["--include", "fc1.*", "--exclude", "*.bias"],
    ]
    .into_iter()
    .enumerate()
    {
        let o = out(&format!("scheme{i}"));
        let mut args = vec![
            "quantize",
            input().to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
            "--dtype",
            "int8",
            "--json",
        ];
        args.extend(extra.iter().copied());
        let v = json(&args);
        for t in v["tensors"].as_array().unwrap() {
            assert!(t["rel_l2"].as_f64().unwrap() < 0.05, "{extra:?}: {t}");
        }
    }
}

#[test]
fn decompress_restores_dense_and_f16_round_trips_bit_exactly() {
    // int8 -> decompress: dense F32 with the original names, zeros still zero.
    let q = out("int8-for-decompress");
    json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        q.to_str().unwrap(),
        "--dtype",
        "int8",
        "--json",
    ]);
    let d = out("decompressed");
    json(&[
        "decompress",
        q.to_str().unwrap(),
        "-o",
        d.to_str().unwrap(),
        "--json",
    ]);
    let orig_bytes = std::fs::read(input()).unwrap();
    let orig = SafeTensors::deserialize(&orig_bytes).unwrap();
    let dec_bytes = std::fs::read(&d).unwrap();
    let dec = SafeTensors::deserialize(&dec_bytes).unwrap();
    let mut names: Vec<String> = dec.names().into_iter().map(String::from).collect();
    names.sort();
    let mut want: Vec<String> = orig.names().into_iter().map(String::from).collect();
    want.sort();
    assert_eq!(names, want);
    for n in &names {
        let (a, b) = (orig.tensor(n).unwrap(), dec.tensor(n).unwrap());
        assert_eq!(b.dtype(), Dtype::F32);
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.data().chunks_exact(4).zip(b.data().chunks_exact(4)) {
            if x == [0, 0, 0, 0] {
                assert_eq!(y, [0, 0, 0, 0], "{n}: zero not kept");
            }
        }
    }
    // f16 -> decompress -> f16 again: bit-identical values.
    let h1 = out("f16-a");
    json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        h1.to_str().unwrap(),
        "--dtype",
        "f16",
        "--json",
    ]);
    let h1_bytes = std::fs::read(&h1).unwrap();
    let h1_st = SafeTensors::deserialize(&h1_bytes).unwrap();
    assert_eq!(h1_st.tensor("fc1.weight").unwrap().dtype(), Dtype::F16);
    let h1d = out("f16-dec");
    json(&[
        "decompress",
        h1.to_str().unwrap(),
        "-o",
        h1d.to_str().unwrap(),
        "--f32",
        "--json",
    ]);
    let h2 = out("f16-b");
    json(&[
        "quantize",
        h1d.to_str().unwrap(),
        "-o",
        h2.to_str().unwrap(),
        "--dtype",
        "f16",
        "--json",
    ]);
    let h2_bytes = std::fs::read(&h2).unwrap();
    let h2_st = SafeTensors::deserialize(&h2_bytes).unwrap();
    for n in ["fc1.weight", "fc2.weight", "fc3.weight"] {
        assert_eq!(
            h1_st.tensor(n).unwrap().data(),
            h2_st.tensor(n).unwrap().data(),
            "{n}"
        );
    }
    // bf16 works too.
    let b = out("bf16");
    let v = json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--dtype",
        "bf16",
        "--json",
    ]);
    assert!(
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["rel_l2"].as_f64().unwrap() < 4e-3)
    );
}

fn assert_refused(inp: &Path, args: &[&str], needle: &str) {
    let before = std::fs::read(inp).unwrap();
    let o = out(&format!(
        "bad-{}",
        needle.replace([' ', '-', '/', '*'], "_")
    ));
    let r = joulecut()
        .arg("quantize")
        .arg(inp)
        .arg("-o")
        .arg(&o)
        .args(args)
        .output()
        .unwrap();
    assert_bad_input(&r, needle);
    assert_eq!(std::fs::read(inp).unwrap(), before, "input modified");
    assert!(!o.exists(), "output written despite the error");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    for (i, poison) in [f32::NAN, f32::INFINITY].into_iter().enumerate() {
        let p = scratch().join(format!("quant-poison{i}.safetensors"));
        foreign_mlp(&p, Some(poison));
        assert_refused(&p, &["--dtype", "int8"], "fc2.weight");
    }
    // clap rejects an unknown dtype (exit 2, with its own "tip:").
    let o = out("bad-int4");
    let r = joulecut()
        .arg("quantize")
        .arg(input())
        .arg("-o")
        .arg(&o)
        .args(["--dtype", "int4"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("int4"));
    assert!(!o.exists());
    assert_refused(
        input(),
        &["--dtype", "f16", "--scheme", "asymmetric"],
        "int8 only",
    );
    assert_refused(
        input(),
        &[
            "--dtype",
            "int8",
            "--calibrate",
            "percentile",
            "--percentile",
            "0",
        ],
        "percentile",
    );
    assert_refused(
        input(),
        &["--dtype", "int8", "--include", "nothing.matches"],
        "nothing.matches",
    );
    // An I8 tensor whose scale is missing or of the wrong shape.
    let good = out("int8-for-corruption");
    json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        good.to_str().unwrap(),
        "--dtype",
        "int8",
        "--json",
    ]);
    let bytes = std::fs::read(&good).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    for (case, drop_scale) in [("missing", true), ("shape", false)] {
        let mut views: Vec<(String, TensorView)> = Vec::new();
        let short = vec![0u8; 4 * 7];
        for (n, t) in st.tensors() {
            if n == "fc1.weight:scale" {
                if drop_scale {
                    continue;
                }
                views.push((
                    n.clone(),
                    TensorView::new(Dtype::F32, vec![7], &short).unwrap(),
                ));
            } else {
                views.push((n.clone(), t));
            }
        }
        let p = scratch().join(format!("quant-corrupt-{case}.safetensors"));
        safetensors::serialize_to_file(views, meta.metadata().clone(), &p).unwrap();
        for cmd in ["decompress", "inspect"] {
            let o = out(&format!("corrupt-{case}-{cmd}"));
            let mut c = joulecut();
            c.arg(cmd).arg(&p);
            if cmd == "decompress" {
                c.arg("-o").arg(&o);
            }
            let r = c.output().unwrap();
            assert_bad_input(&r, "fc1.weight");
            assert!(!o.exists());
        }
    }
}

/// The `__metadata__` map of a safetensors file.
fn metadata_of(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h["__metadata__"].as_object().cloned().unwrap_or_default()
}

/// The same file with one `__metadata__` entry replaced (header re-serialised, data kept).
fn with_metadata(from: &Path, to: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(from).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h["__metadata__"][key] = value.into();
    let mut head = serde_json::to_vec(&h).unwrap();
    head.resize(head.len().div_ceil(8) * 8, b' ');
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(to, out).unwrap();
}

/// `--int8-activations` is recorded in the file (u6 by default), `eval` honours it unless told
/// otherwise, `decompress` drops it, and a value joulecut doesn't know is refused.
#[test]
fn int8_activation_grid_is_recorded_and_honoured() {
    const KEY: &str = "joulecut.int8_activations";
    let (mlp, _) = trained_mlp(1);
    let (u6, u7, s8) = (out("act-u6"), out("act-u7"), out("act-s8"));
    let q = |o: &Path, extra: &[&str]| {
        let mut a = vec![
            "quantize",
            mlp.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
            "--dtype",
            "int8",
            "--json",
        ];
        a.extend_from_slice(extra);
        json(&a)
    };
    q(&u6, &[]);
    q(&u7, &["--int8-activations", "u7"]);
    q(&s8, &["--int8-activations", "s8"]);
    assert_eq!(metadata_of(&u6)[KEY], "u6");
    assert_eq!(metadata_of(&u7)[KEY], "u7");
    assert_eq!(metadata_of(&s8)[KEY], "s8");
    let eval = |f: &Path, extra: &[&str]| {
        let mut a = vec![
            "eval",
            f.to_str().unwrap(),
            "--latency-iters",
            "5",
            "--json",
        ];
        a.extend_from_slice(extra);
        json(&a)["accuracy"].as_f64().unwrap()
    };
    let f32_acc = eval(mlp, &[]);
    let accs = [eval(&u6, &[]), eval(&u7, &[]), eval(&s8, &[])];
    for (what, acc) in ["u6", "u7", "s8"].into_iter().zip(accs) {
        assert!(
            (acc - f32_acc).abs() <= 0.005,
            "int8 {what} accuracy {acc} vs f32 {f32_acc}"
        );
    }
    // Same weights: overriding a file's grid reproduces the file written with that grid exactly.
    assert_eq!(eval(&u6, &["--int8-activations", "s8"]), accs[2]);
    assert_eq!(eval(&s8, &["--int8-activations", "u7"]), accs[1]);
    assert_eq!(eval(&u7, &["--int8-activations", "u6"]), accs[0]);

    let dense = out("act-decompressed");
    json(&[
        "decompress",
        u7.to_str().unwrap(),
        "-o",
        dense.to_str().unwrap(),
        "--json",
    ]);
    assert!(!metadata_of(&dense).contains_key(KEY));

    let odd = out("act-u9");
    with_metadata(&u7, &odd, KEY, "u9");
    let r = joulecut()
        .args(["eval", odd.to_str().unwrap(), "--latency-iters", "5"])
        .output()
        .unwrap();
    assert_bad_input(&r, KEY);
    assert_refused(
        input(),
        &["--dtype", "bf16", "--int8-activations", "u7"],
        "int8 only",
    );
}

#[test]
fn quantize_writes_an_energy_card_beside_the_output() {
    let o = out("card");
    let (card_json, card_md) = (o.with_extension("energy.json"), o.with_extension("card.md"));
    let _ = std::fs::remove_file(&card_json);
    let _ = std::fs::remove_file(&card_md);
    json(&[
        "quantize",
        input().to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--dtype",
        "int8",
        "--json",
    ]);
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_json).unwrap()).unwrap();
    assert_eq!(card["schema_version"], 1);
    assert_eq!(card["command"], "quantize");
    // what was done: the file's own history, the quantize step last
    let history = card["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["command"], "quantize");
    assert_eq!(history.last().unwrap()["params"]["dtype"], "int8");
    // the compression's joules carry their provenance (no counter here: estimated, by a model)
    let e = &card["compression_energy"];
    assert_eq!(e["provenance"], "estimated");
    assert!(e["joules"].as_f64().unwrap() > 0.0);
    assert!(
        e["sources"]
            .as_str()
            .unwrap()
            .contains("cpu: estimated by cpu-time x"),
        "{e}"
    );
    assert_eq!(e["domains"]["gpu"], serde_json::Value::Null);
    // quality: measured where measured, else said so
    let q = &card["quality"];
    assert_eq!(q["measured"][0]["name"], "weight_rel_l2_max");
    assert!(q["measured"][0]["value"].as_f64().unwrap() < INT8_REL_L2);
    assert!(
        q["not_measured"][0]
            .as_str()
            .unwrap()
            .contains("joulecut eval")
    );
    assert!(card["size"]["ratio"].as_f64().unwrap() < 0.3);
    assert_eq!(card["break_even"], serde_json::Value::Null);
    assert!(
        card["break_even_note"]
            .as_str()
            .unwrap()
            .starts_with("not measured")
    );
    assert!(!card["host"]["hostname"].as_str().unwrap().is_empty());
    let md = std::fs::read_to_string(&card_md).unwrap();
    assert!(
        md.contains("## Energy of the compression") && md.contains("estimated"),
        "{md}"
    );

    // --no-card writes none and removes the stale one
    let r = joulecut()
        .args([
            "quantize",
            input().to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ])
        .args(["--dtype", "f16", "--no-card"])
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(!card_json.exists() && !card_md.exists());
}

#[test]
fn a_failing_quantize_leaves_no_card() {
    let bad = scratch().join("quant-card-bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let o = out("card-failed");
    let r = joulecut()
        .args(["quantize", bad.to_str().unwrap(), "-o", o.to_str().unwrap()])
        .args(["--dtype", "int8"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(!o.exists());
    assert!(!o.with_extension("energy.json").exists());
    assert!(!o.with_extension("card.md").exists());
}

/// f16 and bf16 files keep their 16-bit weights for single rows (`half` layers, a `real` saving at
/// `--batch-size 1`); batches run an f32 copy, which `eval` calls `nominal`. Accuracy is the f32
/// model's within 0.05 pt.
#[test]
fn f16_and_bf16_files_read_their_16_bit_weights_at_batch_1() {
    let (src, _) = trained_mlp(1);
    let eval = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            file.to_str().unwrap(),
            "--latency-iters",
            "20",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&args)
    };
    let base = eval(src, &[]);
    for dtype in ["f16", "bf16"] {
        let out = scratch().join(format!("half-eval-{dtype}.safetensors"));
        json(&[
            "quantize",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--dtype",
            dtype,
            "--json",
        ]);
        let one = eval(&out, &["--batch-size", "1"]);
        assert_eq!(one["saving"], "real", "{dtype}: {one}");
        let layers = one["layers"].as_array().unwrap();
        assert!(
            layers.iter().all(|l| l["path"] == "half"),
            "{dtype}: {layers:?}"
        );
        let many = eval(&out, &[]);
        assert_eq!(many["saving"], "nominal", "{dtype}");
        let (a, b) = (
            many["accuracy"].as_f64().unwrap(),
            base["accuracy"].as_f64().unwrap(),
        );
        assert!((a - b).abs() <= 0.0005, "{dtype}: accuracy {a} vs f32 {b}");
        assert_eq!(
            one["accuracy"], many["accuracy"],
            "{dtype}: batch 1 and batches agree"
        );
    }
}
