//! End-to-end tests of every command on Hugging Face model directories (generated BERT encoders
//! with an I64 `position_ids` buffer, and the real all-MiniLM-L6-v2): non-float tensors pass
//! through unchanged and are reported as kept, a directory in gives a complete model directory out
//! that `eval-embeddings` loads, `eval` points transformers to `eval-embeddings`, and bad model
//! directories and sentence files exit 2 with a hint. Also `joulecut text wordnet`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use joulecut::embed::generate::SyntheticBert;
use joulecut::embed::wordnet::{WordnetConfig, WordnetSplit};
use safetensors::SafeTensors;

const IDS: &str = "embeddings.position_ids";
/// Sidecar files every output directory must carry, byte for byte.
const SIDECARS: [&str; 3] = ["config.json", "tokenizer.json", "1_Pooling/config.json"];
const EVAL_HINT: &str =
    "hint: use joulecut eval-embeddings ORIG_DIR COMPRESSED_DIR --sentences FILE";
/// int8 per channel on the real MiniLM keeps this mean cosine (issue 18 measured 0.9996).
const MINILM_INT8_MIN_MEAN: f64 = 0.998;
/// 30% magnitude pruning per layer, no retraining (issue 18 measured 0.936 in PyTorch).
const MINILM_PRUNE30_MIN_MEAN: f64 = 0.9;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated BERT directory as Hugging Face ships one: config, tokenizer, weights with the I64
/// `position_ids` buffer, and a nested sidecar.
fn orig() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = scratch().join("bert-hf");
        let g = SyntheticBert {
            position_ids: true,
            ..SyntheticBert::default()
        };
        write_hf_bert(&g, &d);
        d
    })
}

fn sentences() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("sentences.txt");
        std::fs::write(
            &p,
            "the cat sat on the red chair\nquantized weights save energy in a small network\n\
             people read books by the river at night\nthe model was trained to compress\n",
        )
        .unwrap();
        p
    })
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The stored bytes and dtype of one tensor of a safetensors file.
fn stored(file: &Path, name: &str) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (
        format!("{:?}", t.dtype()),
        t.shape().to_vec(),
        t.data().to_vec(),
    )
}

fn eval_embeddings(a: &Path, b: &Path) -> serde_json::Value {
    json(&[
        "eval-embeddings",
        s(a),
        s(b),
        "--sentences",
        s(sentences()),
        "--json",
    ])
}

/// The `non_float` report names exactly the I64 buffer.
fn assert_reports_ids(v: &serde_json::Value, shape: &[usize]) {
    assert_eq!(
        v["non_float"],
        serde_json::json!([{ "name": IDS, "dtype": "I64", "shape": shape }]),
        "{v}"
    );
}

/// Names in a command's per-tensor list (`layers` of prune, `tensors` of quantize).
fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The output directory is a complete model: weights, every sidecar byte for byte, the I64 buffer
/// byte for byte; and `eval-embeddings` loads it next to the original.
fn assert_model_dir(out: &Path) -> serde_json::Value {
    let orig_files = snapshot(orig());
    let files = snapshot(out);
    assert!(
        files.contains_key(Path::new("model.safetensors")),
        "{files:?}"
    );
    for f in SIDECARS {
        assert_eq!(files.get(Path::new(f)), orig_files.get(Path::new(f)), "{f}");
    }
    assert_eq!(
        stored(&out.join("model.safetensors"), IDS),
        stored(&orig().join("model.safetensors"), IDS),
        "position_ids changed"
    );
    let v = eval_embeddings(orig(), out);
    assert!(v["cosine"]["mean"].as_f64().unwrap() > 0.0, "{v}");
    v
}

#[test]
fn every_command_takes_a_model_directory_and_keeps_non_float_tensors() {
    let before = snapshot(orig());
    let shape = [1, SyntheticBert::default().max_position_embeddings];
    let dir = scratch().join("outs");
    std::fs::create_dir_all(&dir).unwrap();

    let pruned = dir.join("pruned");
    let v = json(&[
        "prune",
        s(orig()),
        "-o",
        s(&pruned),
        "--sparsity",
        "0.5",
        "--json",
    ]);
    assert_eq!(v["layout"], "directory", "{v}");
    assert_reports_ids(&v, &shape);
    let layers = names(&v, "layers");
    assert!(
        !layers.is_empty() && !layers.contains(&IDS.to_string()),
        "{layers:?}"
    );
    assert!(
        (v["global"]["sparsity"].as_f64().unwrap() - 0.5).abs() < 0.01,
        "{v}"
    );
    let e = assert_model_dir(&pruned);
    assert!(
        e["cosine"]["mean"].as_f64().unwrap() < 0.9999,
        "pruning changed nothing? {e}"
    );

    for dtype in ["int8", "f16", "bf16"] {
        let q = dir.join(format!("q-{dtype}"));
        let v = json(&[
            "quantize",
            s(orig()),
            "-o",
            s(&q),
            "--dtype",
            dtype,
            "--json",
        ]);
        assert_reports_ids(&v, &shape);
        let quantized = names(&v, "tensors");
        assert!(!quantized.is_empty() && !quantized.contains(&IDS.to_string()));
        let e = assert_model_dir(&q);
        assert!(e["cosine"]["mean"].as_f64().unwrap() > 0.99, "{dtype}: {e}");
    }

    let dec = dir.join("decompressed");
    let v = json(&[
        "decompress",
        s(&dir.join("q-int8")),
        "-o",
        s(&dec),
        "--json",
    ]);
    assert_reports_ids(&v, &shape);
    assert_model_dir(&dec);

    let i = json(&["inspect", s(&pruned), "--json"]);
    assert_reports_ids(&i, &shape);
    let c = json(&["compare", s(orig()), s(&pruned), "--json"]);
    assert_eq!(
        c["non_float"],
        serde_json::json!([{ "name": IDS, "identical": true }])
    );

    // The human reports say so too.
    let out = joulecut()
        .args([
            "prune",
            s(orig()),
            "-o",
            s(&dir.join("pruned-h")),
            "--sparsity",
            "0.3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("kept as is") && text.contains(IDS),
        "{text}"
    );

    assert_eq!(snapshot(orig()), before, "input modified");
}

#[test]
fn prune_takes_a_file_or_writes_a_directory_input_as_one_file() {
    let dir = scratch().join("prune-files");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = orig().join("model.safetensors");
    for (input, out, extra) in [
        (weights.clone(), dir.join("from-file.safetensors"), None),
        (
            orig().to_path_buf(),
            dir.join("one.safetensors"),
            Some("--single-file"),
        ),
    ] {
        let mut args = vec![
            "prune",
            s(&input),
            "-o",
            s(&out),
            "--sparsity",
            "0.5",
            "--json",
        ];
        args.extend(extra);
        let v = json(&args);
        assert_eq!(v["layout"], "file", "{v}");
        assert_eq!(stored(&out, IDS), stored(&weights, IDS));
    }
    // A directory input written to a .safetensors path without --single-file: refused up front.
    let out = dir.join("refused.safetensors");
    let r = joulecut()
        .args(["prune", s(orig()), "-o", s(&out), "--sparsity", "0.5"])
        .output()
        .unwrap();
    assert_bad_input(&r, "directory");
    assert!(!out.exists());
}

#[test]
fn selecting_a_non_float_tensor_is_refused_and_excluding_it_is_fine() {
    let dir = scratch().join("prune-globs");
    std::fs::create_dir_all(&dir).unwrap();
    for cmd in [
        &["prune", "--sparsity", "0.5"][..],
        &["quantize", "--dtype", "int8"],
    ] {
        let out = dir.join(format!("{}-inc", cmd[0]));
        let r = joulecut()
            .args(&cmd[..1])
            .args([s(orig()), "-o", s(&out)])
            .args(&cmd[1..])
            .args(["--include", "*.position_ids"])
            .output()
            .unwrap();
        assert_bad_input(&r, IDS);
        assert!(String::from_utf8_lossy(&r.stderr).contains("not a float tensor"));
        assert!(!out.exists(), "{} wrote output", cmd[0]);
        let out = dir.join(format!("{}-exc", cmd[0]));
        let mut args = vec![cmd[0], s(orig()), "-o", s(&out)];
        args.extend(&cmd[1..]);
        args.extend(["--exclude", "*.position_ids", "--json"]);
        let v = json(&args);
        assert_reports_ids(&v, &[1, SyntheticBert::default().max_position_embeddings]);
    }
}

#[test]
fn eval_points_transformers_to_eval_embeddings() {
    for p in [orig().to_path_buf(), orig().join("model.safetensors")] {
        let r = joulecut().args(["eval", s(&p)]).output().unwrap();
        assert_bad_input(&r, s(&p));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.lines().any(|l| l == EVAL_HINT), "{err}");
    }
}

// ---- bad model directories and sentence files: exit 2, one error line, a hint ----

/// A copy of the generated directory with `config.json` edited.
fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let d = scratch().join(name);
    for (rel, bytes) in snapshot(orig()) {
        let p = d.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let p = d.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
    d
}

fn eval_embeddings_output(a: &Path, b: &Path, sentences: &Path) -> std::process::Output {
    joulecut()
        .args(["eval-embeddings", s(a), s(b), "--sentences", s(sentences)])
        .output()
        .unwrap()
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_refused() {
    let base = SyntheticBert::default();
    for (field, value) in [
        ("hidden_size", base.hidden_size * 2),
        ("intermediate_size", base.intermediate_size + 64),
        ("num_hidden_layers", base.num_hidden_layers - 1),
        ("num_hidden_layers", base.num_hidden_layers + 1),
        ("vocab_size", 50_000),
    ] {
        let d = with_config(&format!("cfg-{field}-{value}"), |v| {
            v[field] = value.into();
        });
        let r = eval_embeddings_output(orig(), &d, sentences());
        assert_bad_input(&r, field);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("config.json") && err.contains(&value.to_string()),
            "{err}"
        );
    }
}

#[test]
fn an_unknown_model_type_or_a_missing_config_is_refused() {
    let d = with_config("cfg-roberta", |v| v["model_type"] = "roberta".into());
    let r = eval_embeddings_output(orig(), &d, sentences());
    assert_bad_input(&r, "roberta");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("supported model_type: bert"), "{err}");

    let d = with_config("cfg-missing", |_| {});
    std::fs::remove_file(d.join("config.json")).unwrap();
    assert_bad_input(
        &eval_embeddings_output(orig(), &d, sentences()),
        "config.json",
    );
}

#[test]
fn empty_or_binary_sentence_files_are_refused() {
    for (name, bytes) in [
        ("empty.txt", &b""[..]),
        ("blank.txt", b"\n  \n\r\n"),
        ("binary.bin", b"PK\x03\x04\x00\x00binary zip header"),
        ("latin1.txt", b"caf\xe9 au lait\n"),
    ] {
        let p = scratch().join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = eval_embeddings_output(orig(), orig(), &p);
        assert_bad_input(&r, name);
        assert!(String::from_utf8_lossy(&r.stderr).contains("sentence file"));
    }
}

// ---- joulecut text wordnet ----

#[test]
fn text_wordnet_writes_disjoint_seeded_sets() {
    let out = scratch().join("wordnet-sets");
    let v = json(&["text", "wordnet", "--out", s(&out), "--json"]);
    let want = WordnetSplit::load(&WordnetConfig::default()).unwrap();
    let read = |f: &str| -> Vec<String> {
        std::fs::read_to_string(out.join(f))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let (cal, ev, corpus) = (read("calib.txt"), read("eval.txt"), read("corpus.txt"));
    assert_eq!((cal.len(), ev.len(), corpus.len()), (128, 400, 20_000));
    assert_eq!(
        (&cal, &ev, &corpus),
        (&want.calibration, &want.evaluation, &want.corpus)
    );
    assert_eq!(v["files"]["evaluation"]["sentences"], 400, "{v}");
    let mut all: Vec<&String> = cal.iter().chain(&ev).chain(&corpus).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20_528, "the sets overlap");
    assert!(cal.iter().all(|l| l.split_whitespace().count() >= 6));
    // The files are sentence files.
    assert_eq!(
        joulecut::embed::read_sentences(&out.join("eval.txt")).unwrap(),
        ev
    );

    // Another seed, another draw; a busy output and a missing WordNet write nothing.
    let other = scratch().join("wordnet-seed1");
    json(&[
        "text",
        "wordnet",
        "--out",
        s(&other),
        "--seed",
        "1",
        "--corpus",
        "10",
        "--json",
    ]);
    assert_ne!(
        std::fs::read_to_string(other.join("calib.txt")).unwrap(),
        cal.join("\n") + "\n"
    );
    let r = joulecut()
        .args(["text", "wordnet", "--out", s(&out)])
        .output()
        .unwrap();
    assert_bad_input(&r, "not empty");
    let nowhere = scratch().join("wordnet-none");
    let r = joulecut()
        .args([
            "text",
            "wordnet",
            "--out",
            s(&nowhere),
            "--wordnet",
            "/nonexistent/wordnet",
        ])
        .output()
        .unwrap();
    assert_bad_input(&r, "data.noun");
    assert!(String::from_utf8_lossy(&r.stderr).contains("apt-get install wordnet-base"));
    assert!(!nowhere.exists());
}

// ---- the real all-MiniLM-L6-v2 ----

#[test]
fn the_real_minilm_directory_goes_through_every_command() {
    let m = minilm();
    let dir = scratch().join("minilm");
    std::fs::create_dir_all(&dir).unwrap();
    let shape = [1, 512];

    let i = json(&["inspect", s(&m), "--json"]);
    assert_reports_ids(&i, &shape);
    let r = joulecut().args(["eval", s(&m)]).output().unwrap();
    assert_bad_input(&r, "model_type `bert`");

    let pruned = dir.join("pruned");
    let v = json(&[
        "prune",
        s(&m),
        "-o",
        s(&pruned),
        "--sparsity",
        "0.3",
        "--json",
    ]);
    assert_reports_ids(&v, &shape);
    let q = dir.join("int8");
    let v = json(&["quantize", s(&m), "-o", s(&q), "--dtype", "int8", "--json"]);
    assert_reports_ids(&v, &shape);
    for out in [&pruned, &q] {
        assert_eq!(
            stored(&out.join("model.safetensors"), IDS),
            stored(&m.join("model.safetensors"), IDS)
        );
        for f in [
            "config.json",
            "tokenizer.json",
            "vocab.txt",
            "1_Pooling/config.json",
        ] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(m.join(f)).unwrap()
            );
        }
    }
    let c = json(&["compare", s(&m), s(&q), "--json"]);
    assert_eq!(c["non_float"][0]["identical"], true, "{c}");

    let sentences = scratch().join("minilm-sentences.txt");
    let split = WordnetSplit::load(&WordnetConfig {
        evaluation: 32,
        corpus: 0,
        ..WordnetConfig::default()
    })
    .unwrap();
    std::fs::write(&sentences, split.evaluation.join("\n")).unwrap();
    let mean = |out: &Path| {
        let v = json(&[
            "eval-embeddings",
            s(&m),
            s(out),
            "--sentences",
            s(&sentences),
            "--json",
        ]);
        v["cosine"]["mean"].as_f64().unwrap()
    };
    let (int8, pruned) = (mean(&q), mean(&pruned));
    eprintln!("MiniLM: int8 mean cosine {int8:.5}, 30% magnitude-pruned {pruned:.5}");
    assert!((MINILM_INT8_MIN_MEAN..1.0).contains(&int8), "{int8}");
    assert!(
        pruned >= MINILM_PRUNE30_MIN_MEAN && pruned < int8,
        "{pruned}"
    );
}
