//! What users see from the command line: completions, help texts that tell the truth, one
//! convention for outputs, results and progress.

mod common;

use common::*;

#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = joulecut().args(["completions", shell]).output().unwrap();
        assert!(r.status.success(), "{shell}");
        let text = String::from_utf8(r.stdout).unwrap();
        for cmd in [
            "train",
            "bench",
            "eval-embeddings",
            "quantize",
            "distill",
            "completions",
        ] {
            assert!(text.contains(cmd), "{shell} completions lack `{cmd}`");
        }
    }
    // flags of subcommands are there too
    let r = joulecut().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&r.stdout).contains("--calibration"));
    let r = joulecut().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("hint:"));
}

#[test]
fn quiet_silences_progress_but_not_results() {
    let dir = scratch().join("ux-quiet");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("m.safetensors");
    let train = |quiet: bool| {
        let mut args = vec![
            "train",
            "--model",
            "mlp:784-16-10",
            "--epochs",
            "1",
            "-o",
            out.to_str().unwrap(),
        ];
        if quiet {
            args.push("-q");
        }
        let r = joulecut().args(&args).output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        (
            String::from_utf8(r.stdout).unwrap(),
            String::from_utf8(r.stderr).unwrap(),
        )
    };
    let (_, err) = train(false);
    assert!(
        err.contains("epoch 1/1:"),
        "the epoch line names i/N: {err}"
    );
    let (_, err) = train(true);
    assert!(!err.contains("epoch"), "-q still printed progress: {err}");
    // -q is global: it goes before the command too
    let r = joulecut()
        .args(["-q", "inspect", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stdout).contains("fc1.weight"));
}

#[test]
fn train_init_keeps_a_packed_file_packed() {
    let dir = scratch().join("ux-keep");
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let r = joulecut().args(args).output().unwrap();
        assert!(
            r.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8(r.stdout).unwrap()
    };
    ok(&[
        "train",
        "--model",
        "mlp:784-64-10",
        "--epochs",
        "1",
        "-o",
        &p("d.safetensors"),
        "-q",
    ]);
    // pruning alone says it did not measure accuracy, and how to fine-tune
    let r = joulecut()
        .args([
            "prune",
            &p("d.safetensors"),
            "-o",
            &p("s.safetensors"),
            "--sparsity",
            "0.9",
            "--pack",
        ])
        .output()
        .unwrap();
    assert!(r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("accuracy was not measured") && err.contains("train --init"),
        "{err}"
    );
    let out = ok(&[
        "train",
        "--init",
        &p("s.safetensors"),
        "--epochs",
        "1",
        "-o",
        &p("t.safetensors"),
    ]);
    assert!(out.contains("in their --init encoding"), "{out}");
    let encodings = |f: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["inspect", &p(f), "--json"])).unwrap();
        v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["encoding"] == "sparse")
            .count()
    };
    let packed = encodings("s.safetensors");
    assert!(packed >= 1);
    assert_eq!(
        encodings("t.safetensors"),
        packed,
        "retraining unpacked the file"
    );
    assert!(
        std::fs::metadata(p("t.safetensors")).unwrap().len()
            < std::fs::metadata(p("d.safetensors")).unwrap().len() / 2
    );
    ok(&[
        "train",
        "--init",
        &p("s.safetensors"),
        "--epochs",
        "1",
        "-o",
        &p("u.safetensors"),
        "--keep-encoding",
        "false",
    ]);
    assert_eq!(encodings("u.safetensors"), 0);
}

#[test]
fn no_card_without_init_is_refused_not_ignored() {
    let out = scratch().join("ux-nocard.safetensors");
    let r = joulecut()
        .args([
            "train",
            "--model",
            "mlp:784-16-10",
            "--epochs",
            "1",
            "--no-card",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("--no-card") && err.contains("hint:"), "{err}");
    assert!(!out.exists());
}
