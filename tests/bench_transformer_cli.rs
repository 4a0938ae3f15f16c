//! `joulecut bench` on a transformer: a suite file naming a generated BERT directory runs end to
//! end, and every variant's model directory is exactly what the printed `joulecut prune` /
//! `joulecut quantize` / `joulecut distill` commands make (one pipeline behind both front-ends).
//! Bad input: exit 2, a hint, nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_bad_input, joulecut, json, scratch};
use joulecut::embed::generate::SyntheticBert;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated BERT directory, calibration and evaluation sentences, and a suite file naming
/// them.
fn fixture(name: &str, variants: &str) -> (PathBuf, PathBuf) {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("bert");
    SyntheticBert::default().write_dir(&model).unwrap();
    let words = "the cat sat on the red chair by the river at night and people read a book \
                 about energy in a small network of new layers with more weight than the old one";
    let w: Vec<&str> = words.split_whitespace().collect();
    let lines = |n: usize, k: usize| -> String {
        (0..n)
            .map(|i| {
                let len = 6 + (i * k) % 9;
                (0..len)
                    .map(|j| w[(i * 7 + j * k) % w.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
                    + "\n"
            })
            .collect()
    };
    std::fs::write(dir.join("calib.txt"), lines(32, 3)).unwrap();
    std::fs::write(dir.join("eval.txt"), lines(24, 5)).unwrap();
    std::fs::write(dir.join("corpus.txt"), lines(40, 7)).unwrap();
    let cfg = dir.join("suite.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"kind": "transformer", "name": "cli-test", "model": {:?},
                "text": {{"source": "files", "calibration": {:?}, "evaluation": {:?}, "corpus": {:?}}},
                "eval": {{"batch_size": 8, "neighbours": 3}},
                "variants": [{variants}]}}"#,
            model,
            dir.join("calib.txt"),
            dir.join("eval.txt"),
            dir.join("corpus.txt")
        ),
    )
    .unwrap();
    (cfg, dir)
}

/// Every stored safetensors entry of a model directory: name, dtype, shape and bytes (the
/// metadata, which records the command's history, is left out).
fn stored(dir: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                format!("{:?}", t.dtype()),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn bench_variants_are_what_the_cli_commands_make() {
    let (cfg, dir) = fixture(
        "same",
        r#"{"name": "sparsegpt50-packed", "steps": [{"op": "prune", "method": "sparsegpt", "sparsity": 0.5, "pack": true}]},
           {"name": "wanda-2:4-int8", "steps": [{"op": "prune", "method": "wanda", "granularity": "2:4"},
                                                {"op": "quantize", "dtype": "int8"}]},
           {"name": "bf16", "steps": [{"op": "quantize", "dtype": "bf16"}]}"#,
    );
    let out = dir.join("out");
    let v = json(&[
        "bench",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--min-cosine",
        "0.5",
        "--json",
    ]);
    assert_eq!(v["min_cosine"], 0.5);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["variant"], "baseline");
    assert_eq!(rows[1]["saving"], "real");
    assert_eq!(rows[3]["saving"], "nominal");
    for f in ["report.json", "report.csv", "report.md", "pareto.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    replay(rows, &dir);
}

#[test]
fn structured_and_recover_steps_are_what_the_cli_commands_make() {
    let (cfg, dir) = fixture(
        "recover",
        r#"{"name": "neurons50-recovered", "steps": [{"op": "structured", "granularity": "neurons", "sparsity": 0.5, "method": "wanda"},
                                                     {"op": "recover"}]},
           {"name": "layers2", "steps": [{"op": "recover", "keep_layers": [0, 2]}]}"#,
    );
    let out = dir.join("out");
    let v = json(&["bench", "--config", s(&cfg), "--out", s(&out), "--json"]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows[1..] {
        assert_eq!(r["saving"], "real", "{}", r["variant"]);
    }
    assert!(out.join("text/corpus.txt").is_file());
    replay(rows, &dir);
}

/// Runs each row's printed commands into fresh directories under `dir` (a chain's later command
/// reading the previous one's output) and checks they write the same tensors as the bench, byte
/// for byte.
fn replay(rows: &[serde_json::Value], dir: &Path) {
    for r in &rows[1..] {
        let cmds = r["commands"].as_array().unwrap();
        let mut input: Option<PathBuf> = None;
        for (k, c) in cmds.iter().enumerate() {
            let mut args: Vec<String> = c
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            assert_eq!(args.remove(0), "joulecut");
            let o = args.iter().position(|a| a == "-o").unwrap() + 1;
            let bench_out = PathBuf::from(&args[o]);
            let mine = dir.join(format!("cli-{}-{k}", r["variant"].as_str().unwrap()));
            args[o] = s(&mine).to_string();
            if let Some(i) = &input {
                // chains read the previous command's output (`distill` reads it as --student)
                let at = match args.iter().position(|a| a == "--student") {
                    Some(k) => k + 1,
                    None => 1,
                };
                args[at] = s(i).to_string();
            }
            let res = joulecut().args(&args).output().unwrap();
            assert!(
                res.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            assert_eq!(
                stored(&mine),
                stored(&bench_out),
                "{}: step {k} differs from `{}`",
                r["variant"],
                c
            );
            // structured pruning and dropped layers rewrite config.json; others copy it
            assert_eq!(
                std::fs::read_to_string(mine.join("config.json")).unwrap(),
                std::fs::read_to_string(bench_out.join("config.json")).unwrap(),
                "{}: step {k}'s config.json differs from `{}`",
                r["variant"],
                c
            );
            input = Some(mine);
        }
    }
}

#[test]
fn bad_transformer_bench_input_is_refused_without_writing() {
    let (cfg, dir) = fixture(
        "bad",
        r#"{"name": "int8", "steps": [{"op": "quantize", "dtype": "int8"}]}"#,
    );
    let out = dir.join("out");
    let run = |args: &[&str]| joulecut().args(args).output().unwrap();
    let missing = dir.join("no-such-model");
    assert_bad_input(
        &run(&[
            "bench",
            "--config",
            s(&cfg),
            "--model",
            s(&missing),
            "--out",
            s(&out),
        ]),
        "no-such-model",
    );
    assert_bad_input(
        &run(&[
            "bench",
            "--config",
            s(&cfg),
            "--shard",
            "0/2",
            "--out",
            s(&out),
        ]),
        "--shard",
    );
    assert_bad_input(
        &run(&[
            "bench",
            "--config",
            s(&cfg),
            "--min-cosine",
            "2",
            "--out",
            s(&out),
        ]),
        "--min-cosine",
    );
    assert_bad_input(
        &run(&[
            "bench",
            "--suite",
            "quick",
            "--min-cosine",
            "0.9",
            "--out",
            s(&out),
        ]),
        "--min-cosine",
    );
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg).unwrap().replace(
            r#""dtype": "int8""#,
            r#""dtype": "int8", "activations": "u5""#,
        ),
    )
    .unwrap();
    assert_bad_input(
        &run(&["bench", "--config", s(&bad), "--out", s(&out)]),
        "bad.json",
    );
    assert!(!out.exists(), "nothing is written for bad input");
    // the built-in suite's config prints, and is a transformer suite
    let p = run(&["bench", "--suite", "transformer", "--print-config"]);
    assert!(p.status.success());
    let text = String::from_utf8(p.stdout).unwrap();
    assert!(joulecut::harness::bench::TransformerSuite::is_transformer_text(&text));
}
