//! End-to-end tests of `joulecut prune --granularity heads|neurons` on generated BERT model
//! directories: the output's layers are physically smaller, `config.json` records what was removed
//! (and accumulates over repeated passes), `eval-embeddings` runs it on joulecut's engine and calls
//! the saving real, a head that contributes nothing is removed without changing the embeddings,
//! the candle engine refuses it with a typed error, and bad requests exit 2 with nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use joulecut::embed::generate::{SyntheticBert, write_weights};
use safetensors::SafeTensors;

/// Removing units whose output is exactly zero leaves only float summation order.
const SILENT_HEAD_MIN_COSINE: f64 = 0.99999;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small() -> SyntheticBert {
    SyntheticBert {
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 256,
        max_position_embeddings: 64,
        position_ids: true,
        ..SyntheticBert::default()
    }
}

/// A generated model directory with a nested sidecar, as sentence-transformers ship one.
fn orig() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = scratch().join("bert");
        write_hf_bert(&small(), &d);
        d
    })
}

fn sentences() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("calib.txt");
        std::fs::write(
            &p,
            "the cat sat on the red chair\nquantized weights save energy in a small network\n\
             people read books by the river at night\nthe model was trained to compress\n\
             a dog and a bird sleep in the house\nten men walk to the city by the sea\n",
        )
        .unwrap();
        p
    })
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

fn shape(dir: &Path, name: &str) -> Vec<usize> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().shape().to_vec()
}

fn eval(a: &Path, b: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval-embeddings",
        s(a),
        s(b),
        "--sentences",
        s(sentences()),
        "--batch1-sentences",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

#[test]
fn heads_then_neurons_then_heads_again_accumulate_in_config_json() {
    let before = std::fs::read(orig().join("model.safetensors")).unwrap();
    let heads = scratch().join("heads");
    let v = json(&[
        "prune",
        s(orig()),
        "-o",
        s(&heads),
        "--granularity",
        "heads",
        "--sparsity",
        "0.25",
        "--method",
        "wanda",
        "--calibration",
        s(sentences()),
        "--json",
    ]);
    assert_eq!(v["saving"], "real");
    assert_eq!(v["removed"]["heads"], 2);
    assert_eq!(v["score"], "activation");
    assert_eq!(v["calibration"]["sentences"], 6);
    let (pb, pa) = (
        v["linear_params"]["before"].as_u64().unwrap(),
        v["linear_params"]["after"].as_u64().unwrap(),
    );
    // each layer loses a quarter of its 4·64·64 attention weights
    assert_eq!(pb - pa, 2 * 64 * 64);
    let c = config(&heads);
    let ph = c["pruned_heads"].as_object().unwrap();
    assert_eq!(ph.len(), 2);
    assert!(ph.values().all(|h| h.as_array().unwrap().len() == 1));
    assert!(c.get("joulecut_intermediate_sizes").is_none());
    assert_eq!(c["num_attention_heads"], 4, "the original head count stays");
    for m in ["query", "key", "value"] {
        let n = format!("encoder.layer.1.attention.self.{m}.weight");
        assert_eq!(shape(&heads, &n), [48, 64]);
    }
    assert_eq!(
        shape(&heads, "encoder.layer.0.attention.output.dense.weight"),
        [64, 48]
    );
    assert_eq!(shape(&heads, "embeddings.position_ids"), [1, 64]);
    for f in ["tokenizer.json", "1_Pooling/config.json"] {
        assert_eq!(
            std::fs::read(heads.join(f)).unwrap(),
            std::fs::read(orig().join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read(orig().join("model.safetensors")).unwrap(),
        before,
        "input untouched"
    );
    let e = eval(orig(), &heads, &[]);
    assert_eq!(e["saving"], "real");
    assert!(
        e["compressed"]["linear_params"].as_u64() < e["original"]["linear_params"].as_u64(),
        "{e}"
    );
    let cos = e["cosine"]["mean"].as_f64().unwrap();
    assert!(cos.is_finite() && cos > 0.0 && cos < 1.0, "{cos}");

    // neurons, by magnitude, on the head-pruned model: both records in config.json
    let both = scratch().join("heads-neurons");
    let v = json(&[
        "prune",
        s(&heads),
        "-o",
        s(&both),
        "--granularity",
        "neurons",
        "--sparsity",
        "0.5",
        "--json",
    ]);
    assert_eq!(v["removed"]["neurons"], 256);
    assert_eq!(v["score"], "magnitude");
    let c = config(&both);
    assert_eq!(c["pruned_heads"], config(&heads)["pruned_heads"]);
    assert_eq!(
        c["joulecut_intermediate_sizes"],
        serde_json::json!([128, 128])
    );
    assert_eq!(
        shape(&both, "encoder.layer.0.intermediate.dense.weight"),
        [128, 64]
    );
    assert_eq!(
        shape(&both, "encoder.layer.0.intermediate.dense.bias"),
        [128]
    );
    assert_eq!(
        shape(&both, "encoder.layer.1.output.dense.weight"),
        [64, 128]
    );
    assert_eq!(eval(orig(), &both, &[])["saving"], "real");

    // heads again: the record names original head indices, two per layer now
    let again = scratch().join("heads-twice");
    json(&[
        "prune",
        s(&both),
        "-o",
        s(&again),
        "--granularity",
        "heads",
        "--sparsity",
        "0.34",
        "--json",
    ]);
    let c = config(&again);
    for (layer, h) in c["pruned_heads"].as_object().unwrap() {
        let h: Vec<u64> = h
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(h.len(), 2, "layer {layer}: {h:?}");
        assert!(h[0] < h[1] && h[1] < 4);
        let first = &config(&heads)["pruned_heads"][layer][0];
        assert!(h.contains(&first.as_u64().unwrap()), "{layer}: {h:?}");
    }
    assert_eq!(
        c["joulecut_intermediate_sizes"],
        serde_json::json!([128, 128])
    );
    assert_eq!(
        shape(&again, "encoder.layer.0.attention.self.query.weight"),
        [32, 64]
    );
    eval(orig(), &again, &[]);
}

#[test]
fn a_silent_head_is_removed_without_changing_the_embeddings() {
    let g = small();
    let d = scratch().join("silent");
    g.write_dir(&d).unwrap();
    let mut t = g.tensors();
    let (h, hd) = (64, 16);
    for layer in 0..2 {
        let head = layer + 1;
        let w = &mut t
            .get_mut(&format!(
                "encoder.layer.{layer}.attention.output.dense.weight"
            ))
            .unwrap()
            .1;
        for r in 0..h {
            w[r * h + head * hd..r * h + (head + 1) * hd].fill(0.0);
        }
    }
    write_weights(&d.join("model.safetensors"), &t).unwrap();
    let out = scratch().join("silent-pruned");
    let v = json(&[
        "prune",
        s(&d),
        "-o",
        s(&out),
        "--granularity",
        "heads",
        "--sparsity",
        "0.25",
        "--method",
        "wanda",
        "--calibration",
        s(sentences()),
        "--json",
    ]);
    assert_eq!(v["layers"][0]["pruned_heads"], serde_json::json!([1]));
    assert_eq!(v["layers"][1]["pruned_heads"], serde_json::json!([2]));
    let e = eval(&d, &out, &[]);
    let min = e["cosine"]["min"].as_f64().unwrap();
    assert!(min >= SILENT_HEAD_MIN_COSINE, "{e}");
    assert_eq!(e["saving"], "real");
}

#[test]
fn the_candle_engine_refuses_a_compacted_model() {
    let out = scratch().join("for-candle");
    json(&[
        "prune",
        s(orig()),
        "-o",
        s(&out),
        "--granularity",
        "neurons",
        "--sparsity",
        "0.25",
        "--json",
    ]);
    let r = joulecut()
        .args([
            "eval-embeddings",
            s(orig()),
            s(&out),
            "--sentences",
            s(sentences()),
            "--engine",
            "candle",
        ])
        .output()
        .unwrap();
    assert_bad_input(&r, "structurally pruned");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--engine joulecut"));
    // a config that drops the record no longer describes the weights
    let c = scratch().join("no-record");
    std::fs::create_dir_all(&c).unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(out.join(f), c.join(f)).unwrap();
    }
    let mut v = config(&out);
    v.as_object_mut()
        .unwrap()
        .remove("joulecut_intermediate_sizes");
    std::fs::write(c.join("config.json"), v.to_string()).unwrap();
    let r = joulecut()
        .args([
            "eval-embeddings",
            s(orig()),
            s(&c),
            "--sentences",
            s(sentences()),
        ])
        .output()
        .unwrap();
    assert_bad_input(&r, "intermediate_size is 256");
}

#[test]
fn bad_requests_exit_2_and_write_nothing() {
    let int8 = scratch().join("int8");
    json(&[
        "quantize",
        s(orig()),
        "-o",
        s(&int8),
        "--dtype",
        "int8",
        "--json",
    ]);
    let mlp = scratch().join("mlp.safetensors");
    let mut t = joulecut::embed::generate::Tensors::new();
    t.insert("fc1.weight".into(), (vec![4, 8], vec![0.5; 32]));
    write_weights(&mlp, &t).unwrap();
    let calib = s(sentences()).to_string();
    let o = s(orig()).to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![&o, "--granularity", "heads", "--sparsity", "1"],
            "--sparsity 1",
        ),
        (
            vec![&o, "--granularity", "neurons", "--sparsity", "-0.1"],
            "outside [0, 1)",
        ),
        (vec![&o, "--granularity", "heads"], "--sparsity is required"),
        (
            vec![s(&mlp), "--granularity", "heads", "--sparsity", "0.25"],
            "model directory",
        ),
        (
            vec![s(&int8), "--granularity", "neurons", "--sparsity", "0.25"],
            "not dense f32",
        ),
        (
            vec![
                &o,
                "--granularity",
                "heads",
                "--sparsity",
                "0.25",
                "--method",
                "wanda",
            ],
            "needs --calibration",
        ),
        (
            vec![
                &o,
                "--granularity",
                "heads",
                "--sparsity",
                "0.25",
                "--calibration",
                &calib,
            ],
            "unused by --method magnitude",
        ),
        (
            vec![
                &o,
                "--granularity",
                "heads",
                "--sparsity",
                "0.25",
                "--method",
                "sparsegpt",
                "--calibration",
                &calib,
            ],
            "sparsegpt",
        ),
        (
            vec![
                &o,
                "--granularity",
                "neurons",
                "--sparsity",
                "0.25",
                "--pack",
            ],
            "--pack",
        ),
    ];
    for (i, (args, needle)) in cases.into_iter().enumerate() {
        let out = scratch().join(format!("bad-{i}"));
        let r = joulecut()
            .arg("prune")
            .args(&args)
            .args(["-o", s(&out)])
            .output()
            .unwrap();
        assert_bad_input(&r, needle);
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
