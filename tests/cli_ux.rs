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
