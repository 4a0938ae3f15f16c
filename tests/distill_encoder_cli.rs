//! `joulecut distill --teacher DIR --corpus FILE` on a small generated BERT: a pruned student is
//! trained back and written as a model directory, the report's joules add up, an interrupted run
//! resumed equals an uninterrupted one, layers can be dropped, and misuse exits 2.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use joulecut::checkpoint::Checkpoint;
use joulecut::embed::generate::{SyntheticBert, vocabulary};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn teacher() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = scratch().join("teacher");
        let g = SyntheticBert {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            max_position_embeddings: 64,
            position_ids: true,
            ..SyntheticBert::default()
        };
        write_hf_bert(&g, &d);
        d
    })
}

/// `n` generated sentences (seeded) in a file.
fn text(name: &str, n: usize, seed: u64) -> PathBuf {
    let words: Vec<String> = vocabulary()
        .into_iter()
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    let mut rng = joulecut::ops::Rng::new(seed);
    let mut out = String::new();
    for _ in 0..n {
        let len = 4 + rng.below(10);
        let line: Vec<&str> = (0..len)
            .map(|_| words[rng.below(words.len())].as_str())
            .collect();
        out += &line.join(" ");
        out.push('\n');
    }
    let p = scratch().join(name);
    std::fs::write(&p, out).unwrap();
    p
}

/// The teacher pruned to 50% by SparseGPT.
fn student() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = scratch().join("student");
        let calib = text("calib.txt", 24, 1);
        let out = joulecut()
            .args([
                "prune",
                s(teacher()),
                "-o",
                s(&d),
                "--method",
                "sparsegpt",
                "--sparsity",
                "0.5",
            ])
            .args(["--calibration", s(&calib)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
}

fn corpus() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| text("corpus.txt", 96, 2))
}

fn held_out() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| text("held-out.txt", 32, 3))
}

fn distill(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "distill",
        "--teacher",
        s(teacher()),
        "--corpus",
        s(corpus()),
        "-o",
        s(out),
        "--json",
        "--lr",
        "2e-3",
        "--batch-size",
        "8",
    ];
    args.extend_from_slice(extra);
    json(&args)
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<String> = ck
        .names()
        .iter()
        .filter(|n| n.starts_with("encoder."))
        .cloned()
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = ck.get_f32(&n).unwrap().1;
            (n, v)
        })
        .collect()
}

#[test]
fn a_pruned_student_is_trained_back_and_its_report_adds_up() {
    let out = scratch().join("recovered");
    let v = distill(
        &out,
        &[
            "--student",
            s(student()),
            "--held-out",
            s(held_out()),
            "--epochs",
            "3",
        ],
    );
    assert_eq!(v["epochs_done"], 3);
    assert_eq!(v["finished"], true);
    assert_eq!(v["per_epoch"].as_array().unwrap().len(), 3);
    let (before, after) = (
        v["eval_cosine_before"].as_f64().unwrap(),
        v["eval_cosine"].as_f64().unwrap(),
    );
    assert!(
        after > before + 0.005,
        "held-out cosine {before} -> {after}"
    );
    // the compression's joules are the teacher outputs' and the epochs'
    let epochs: f64 = v["per_epoch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["energy"]["joules"].as_f64().unwrap())
        .sum();
    let teacher_j = v["teacher_outputs"]["energy"]["joules"].as_f64().unwrap();
    let total = v["compression_joules"].as_f64().unwrap();
    assert!((v["training_joules"].as_f64().unwrap() - epochs).abs() < 1e-9);
    assert!(
        (total - epochs - teacher_j).abs() < 1e-6 * total.max(1.0),
        "{total} vs {epochs} + {teacher_j}"
    );
    assert!(epochs > 0.0 && teacher_j > 0.0);
    // break-even: the compression's joules over the saving per sentence, or null when nothing is saved
    let tj = v["inference"]["teacher"]["joules_per_1000_sentences"]
        .as_f64()
        .unwrap();
    let sj = v["inference"]["student"]["joules_per_1000_sentences"]
        .as_f64()
        .unwrap();
    let be = &v["break_even"];
    assert!((be["saved_joules_per_1000"].as_f64().unwrap() - (tj - sj)).abs() < 1e-9);
    match be["break_even_items"].as_f64() {
        Some(n) => assert!(tj > sj && (n - total / (tj - sj) * 1000.0).abs() <= 1e-6 * n.max(1.0)),
        None => assert!(
            tj <= sj || v["saving"] == "nominal",
            "a real saving needs a break-even count"
        ),
    }
    assert!(["measured", "estimated", "mixed"].contains(&be["provenance"].as_str().unwrap()));
    // zeros stored densely run on the teacher's kernels: nothing real to pay back with
    assert_eq!(v["saving"], "nominal");
    assert_eq!(be["break_even_items"], serde_json::Value::Null);
    // the zeros survived training, and no resume state is left behind
    for ((n, a), (_, b)) in weights(student()).iter().zip(weights(&out)) {
        if n.ends_with(".weight") && !n.contains("LayerNorm") {
            let kept = a
                .iter()
                .zip(&b)
                .filter(|(x, _)| **x == 0.0)
                .all(|(_, y)| *y == 0.0);
            assert!(kept, "{n} lost zeros");
        }
    }
    assert!(!PathBuf::from(format!("{}.train-state.safetensors", out.display())).exists());
}

#[test]
fn a_stopped_run_resumed_equals_an_uninterrupted_one() {
    let whole = scratch().join("whole");
    distill(&whole, &["--student", s(student()), "--epochs", "2"]);
    let parts = scratch().join("parts");
    let v = distill(
        &parts,
        &[
            "--student",
            s(student()),
            "--epochs",
            "2",
            "--stop-after",
            "1",
        ],
    );
    assert_eq!(
        (v["epochs_done"].as_u64(), v["finished"].as_bool()),
        (Some(1), Some(false))
    );
    let state = PathBuf::from(format!("{}.train-state.safetensors", parts.display()));
    assert!(state.is_file(), "the state stays for --resume");
    let v = distill(
        &parts,
        &["--student", s(student()), "--epochs", "2", "--resume"],
    );
    assert_eq!(v["epochs_done"], 2);
    for ((n, a), (_, b)) in weights(&whole).iter().zip(weights(&parts)) {
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{n}: resumed run differs by {d}");
    }
    // a state from another run is refused
    let other = distill(
        &scratch().join("other"),
        &[
            "--student",
            s(student()),
            "--epochs",
            "3",
            "--stop-after",
            "1",
        ],
    );
    assert_eq!(other["finished"], false);
    let out = joulecut()
        .args([
            "distill",
            "--teacher",
            s(teacher()),
            "--student",
            s(student()),
            "--corpus",
            s(corpus()),
        ])
        .args([
            "-o",
            s(&scratch().join("other")),
            "--epochs",
            "2",
            "--resume",
        ])
        .output()
        .unwrap();
    assert_bad_input(&out, "training state");
}

#[test]
fn dropping_layers_writes_a_shallower_model_that_runs() {
    let out = scratch().join("one-layer");
    let v = distill(&out, &["--keep-layers", "1", "--held-out", s(held_out())]);
    assert_eq!(v["layers"], 1);
    assert_eq!(v["saving"], "real");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 1);
    assert!(weights(&out).iter().all(|(n, _)| !n.contains("layer.1.")));
    assert!(
        out.join("1_Pooling/config.json").is_file(),
        "sidecars are copied"
    );
    assert!(v["inference"]["speed_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn misuse_exits_2_and_writes_nothing() {
    let out = scratch().join("never");
    let run = |extra: &[&str]| {
        joulecut()
            .args(["distill", "--teacher", s(teacher()), "-o", s(&out)])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_bad_input(&run(&["--student", s(student())]), "--corpus");
    assert_bad_input(&run(&["--corpus", s(corpus())]), "nothing to train");
    assert_bad_input(
        &run(&[
            "--corpus",
            s(corpus()),
            "--keep-layers",
            "0",
            "--temperature",
            "2",
        ]),
        "--temperature",
    );
    assert_bad_input(
        &run(&["--corpus", s(corpus()), "--keep-layers", "5"]),
        "layer 5",
    );
    assert_bad_input(
        &run(&["--corpus", s(corpus()), "--keep-layers", "0", "--map", "x"]),
        "--map",
    );
    assert_bad_input(
        &run(&["--corpus", s(corpus()), "--keep-layers", "0", "--resume"]),
        "training state",
    );
    assert!(!out.exists());
    // a user's non-empty directory is refused before any training
    let taken = scratch().join("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("keep.txt"), "mine").unwrap();
    let r = joulecut()
        .args(["distill", "--teacher", s(teacher()), "--keep-layers", "0"])
        .args(["--corpus", s(corpus()), "-o", s(&taken)])
        .output()
        .unwrap();
    assert_bad_input(&r, "taken");
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
    // transformer flags with a checkpoint teacher
    let ck = scratch().join("t.safetensors");
    let o = joulecut()
        .args([
            "distill",
            "--teacher",
            s(&ck),
            "--student",
            "lenet-300-100",
            "-o",
            s(&out),
            "--corpus",
            s(corpus()),
        ])
        .output()
        .unwrap();
    assert_bad_input(&o, "--corpus");
}
