//! `--device` on every command that computes: train, eval, distill, bench (both suite kinds) and
//! eval-embeddings. A CPU-only build (no
//! `cuda` feature) refuses `cuda` with exit code 2 and a hint to rebuild, before touching files; an
//! unknown device is bad input everywhere.

use assert_cmd::Command;

/// Each command's smallest argument list that reaches device selection.
fn commands(dir: &std::path::Path) -> Vec<Vec<String>> {
    let out = |n: &str| dir.join(n).display().to_string();
    let missing = out("missing.safetensors");
    vec![
        vec![
            "train".into(),
            "--model".into(),
            "mlp:784-8-10".into(),
            "-o".into(),
            out("t.safetensors"),
        ],
        vec!["eval".into(), missing.clone()],
        vec![
            "distill".into(),
            "--teacher".into(),
            missing,
            "--student".into(),
            "mlp:784-8-10".into(),
            "-o".into(),
            out("d.safetensors"),
        ],
        vec!["bench".into(), "--out".into(), out("bench")],
        vec![
            "bench".into(),
            "--suite".into(),
            "transformer".into(),
            "--model".into(),
            out("missing-model"),
            "--out".into(),
            out("bench-transformer"),
        ],
        vec![
            "eval-embeddings".into(),
            out("missing-a"),
            out("missing-b"),
            "--sentences".into(),
            out("missing.txt"),
        ],
    ]
}

fn run(args: &[String], device: &str) -> (Option<i32>, String) {
    let out = Command::cargo_bin("joulecut")
        .unwrap()
        .args(args)
        .args(["--device", device])
        .env("JOULECUT_DATA", "/nonexistent-dataset")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_cpu_build_is_refused_with_a_rebuild_hint() {
    let dir = tempfile::tempdir().unwrap();
    for args in commands(dir.path()) {
        for dev in ["cuda", "cuda:1"] {
            let (code, err) = run(&args, dev);
            assert_eq!(code, Some(2), "{} --device {dev}: {err}", args[0]);
            assert!(
                err.contains("built without CUDA support"),
                "{}: {err}",
                args[0]
            );
            assert!(err.contains("--features cuda"), "{}: {err}", args[0]);
        }
    }
    // Nothing was written.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unknown_devices_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for args in commands(dir.path()) {
        for dev in ["tpu", "cuda:x"] {
            let (code, err) = run(&args, dev);
            assert_eq!(code, Some(2), "{} --device {dev}: {err}", args[0]);
            assert!(err.contains(dev), "{}: {err}", args[0]);
        }
    }
}
