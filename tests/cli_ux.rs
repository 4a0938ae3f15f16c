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
