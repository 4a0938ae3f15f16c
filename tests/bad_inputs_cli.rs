//! Issue 22's bad-input suite: malformed inputs across the commands, each ending with exit code 2,
//! one `error:` line and a `hint:`, no panic, the input's bytes unchanged and nothing at the output
//! path.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const F32X4: &str = r#""dtype":"F32","shape":[4],"data_offsets":[0,16]"#;

fn with_meta(meta: &str) -> Vec<u8> {
    safetensors_bytes(
        &format!(r#"{{"__metadata__":{meta},"w":{{{F32X4}}}}}"#),
        &f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
    )
}

/// (name, file bytes) of malformed safetensors files.
fn malformed_files() -> Vec<(&'static str, Vec<u8>)> {
    let d16 = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let int8 = |extra: &str| {
        safetensors_bytes(
            &format!(
                r#"{{"__metadata__":{{"joulecut.encodings":"{{\"w\":{{\"kind\":\"int8\",\"axis\":null,\"zero_point\":false,\"dtype\":\"F32\"}}}}"}},"w":{{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}{extra}}}"#
            ),
            &[1, 2, 3, 4, 0, 0, 128, 63],
        )
    };
    vec![
        ("gguf", b"GGUF\x03\0\0\0\x05\0\0\0\0\0\0\0".to_vec()),
        ("pytorch-zip", b"PK\x03\x04archive/data.pkl".to_vec()),
        ("pickle", vec![0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]),
        ("empty", vec![]),
        ("three-bytes", vec![1, 2, 3]),
        ("huge-header-length", u64::MAX.to_le_bytes().to_vec()),
        ("header-past-end", {
            let mut b = 1000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("header-not-json", safetensors_bytes("{not json", &[])),
        ("header-array", safetensors_bytes("[1,2,3]", &[])),
        ("header-string", safetensors_bytes(r#""text""#, &[])),
        ("metadata-not-object", with_meta("[1]")),
        ("metadata-value-number", with_meta(r#"{"k":1}"#)),
        (
            "missing-dtype",
            safetensors_bytes(r#"{"w":{"shape":[4],"data_offsets":[0,16]}}"#, &d16),
        ),
        (
            "unknown-dtype",
            safetensors_bytes(
                r#"{"w":{"dtype":"F99","shape":[4],"data_offsets":[0,16]}}"#,
                &d16,
            ),
        ),
        (
            "negative-shape",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#,
                &d16,
            ),
        ),
        (
            "offsets-reversed",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#,
                &d16,
            ),
        ),
        (
            "offsets-past-end",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#,
                &d16,
            ),
        ),
        (
            "size-mismatch",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                &d16,
            ),
        ),
        (
            "overlap",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &d16,
            ),
        ),
        (
            "gap",
            safetensors_bytes(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &d16,
            ),
        ),
        (
            "trailing-bytes",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &d16,
            ),
        ),
        (
            "duplicate-tensor",
            safetensors_bytes(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                &d16,
            ),
        ),
        ("format-999", with_meta(r#"{"joulecut.format":"999"}"#)),
        (
            "encodings-not-json",
            with_meta(r#"{"joulecut.encodings":"{oops"}"#),
        ),
        (
            "encoding-unknown-kind",
            with_meta(r#"{"joulecut.encodings":"{\"w\":{\"kind\":\"zip\"}}"}"#),
        ),
        (
            "int8-encoding-on-f32",
            with_meta(
                r#"{"joulecut.encodings":"{\"w\":{\"kind\":\"int8\",\"axis\":null,\"zero_point\":false,\"dtype\":\"F32\"}}"}"#,
            ),
        ),
        ("int8-without-scale", int8("")),
        (
            "int8-zero-scale",
            int8(r#","w:scale":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#),
        ),
        ("pytorch-zip", b"PK\x03\x04 a PyTorch archive".to_vec()),
        ("gguf", b"GGUF\x03\x00\x00\x00 a llama.cpp file".to_vec()),
        (
            "nan-weight",
            safetensors_bytes(
                &format!(r#"{{"w":{{{F32X4}}}}}"#),
                &f32_bytes(&[1.0, f32::NAN, 3.0, 4.0]),
            ),
        ),
        (
            "inf-weight",
            safetensors_bytes(
                &format!(r#"{{"w":{{{F32X4}}}}}"#),
                &f32_bytes(&[1.0, f32::INFINITY, 3.0, 4.0]),
            ),
        ),
    ]
}

fn assert_contract(args: &[String], input: Option<&Path>, before: Option<&[u8]>, out: &Path) {
    let r = joulecut()
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{args:?}:\n{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{args:?}:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("hint:")),
        "{args:?}: no hint:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?}:\n{err}");
    if let (Some(p), Some(b)) = (input, before) {
        assert_eq!(std::fs::read(p).unwrap(), b, "{args:?} changed its input");
    }
    assert!(!out.exists(), "{args:?} left something at the output path");
}

#[test]
fn malformed_safetensors_files() {
    let dir = scratch().join("malformed");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.safetensors");
    let files = malformed_files();
    assert!(files.len() >= 32);
    for (name, bytes) in files {
        let p = dir.join(format!("{name}.safetensors"));
        std::fs::write(&p, &bytes).unwrap();
        let mut commands = vec![vec!["quantize", s(&p), "-o", s(&out), "--dtype", "int8"]];
        // a NaN or infinite weight is bad only for the conversions that need finite values
        // (decompress copies it as it is); malformed files are bad for every reader
        if !name.ends_with("-weight") {
            commands.push(vec!["decompress", s(&p), "-o", s(&out)]);
            if !name.starts_with("int8-") {
                commands.push(vec!["inspect", s(&p)]);
            }
        }
        for c in commands {
            let args: Vec<String> = c.iter().map(|x| x.to_string()).collect();
            assert_contract(&args, Some(&p), Some(&bytes), &out);
        }
    }
}

/// A model in another format is named as such, with a hint for that format.
#[test]
fn foreign_formats_are_named() {
    let dir = scratch().join("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes, says) in [
        ("m.gguf", &b"GGUF\x03\0\0\0\x05\0\0\0"[..], "GGUF"),
        (
            "pytorch_model.bin",
            &b"PK\x03\x04archive/data.pkl"[..],
            "PyTorch",
        ),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = joulecut().args(["inspect", s(&p)]).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{err}");
        assert!(
            err.contains(says) && !err.contains("header length"),
            "{err}"
        );
        assert!(err.lines().any(|l| l.starts_with("hint:")), "{err}");
    }
}

/// Sharded indexes, text and dataset inputs, and settings.
#[test]
fn malformed_indexes_texts_datasets_and_settings() {
    let dir = scratch().join("malformed-other");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let good = dir.join("shard.safetensors");
    std::fs::write(
        &good,
        safetensors_bytes(
            &format!(r#"{{"w":{{{F32X4}}}}}"#),
            &f32_bytes(&[1.0, 2.0, 3.0, 4.0]),
        ),
    )
    .unwrap();
    let index = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(format!("{name}.safetensors.index.json"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let indexes = [
        index("not-json", "{oops"),
        index("no-weight-map", r#"{"metadata": {}}"#),
        index("empty-weight-map", r#"{"weight_map": {}}"#),
        index(
            "missing-shard",
            r#"{"weight_map": {"w": "nope.safetensors"}}"#,
        ),
        index(
            "traversal",
            r#"{"weight_map": {"w": "../shard.safetensors"}}"#,
        ),
        index("absolute", r#"{"weight_map": {"w": "/etc/passwd"}}"#),
        index(
            "wrong-tensor",
            r#"{"weight_map": {"v": "shard.safetensors"}}"#,
        ),
    ];
    for p in &indexes {
        let before = std::fs::read(p).unwrap();
        for c in [
            vec!["inspect".to_string(), p.display().to_string()],
            vec![
                "quantize".into(),
                p.display().to_string(),
                "-o".into(),
                out.display().to_string(),
                "--dtype".into(),
                "f16".into(),
            ],
        ] {
            assert_contract(&c, Some(p), Some(&before), &out);
        }
    }
    // text inputs of the transformer commands, and datasets
    let empty_text = dir.join("empty.txt");
    std::fs::write(&empty_text, "\n\n").unwrap();
    let binary_text = dir.join("binary.txt");
    std::fs::write(&binary_text, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let m = dir.join("no-model-dir");
    let bad_idx = dir.join("bad-idx");
    std::fs::create_dir_all(&bad_idx).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(bad_idx.join(f), b"\x12\x34\x56\x78 not idx").unwrap();
    }
    let o = out.display().to_string();
    let runs: Vec<Vec<String>> = [
        vec![
            "eval-embeddings",
            s(&m),
            s(&m),
            "--sentences",
            s(&empty_text),
        ],
        vec![
            "eval-embeddings",
            s(&m),
            s(&m),
            "--sentences",
            s(&binary_text),
        ],
        vec![
            "train",
            "--model",
            "mlp:784-8-10",
            "--data",
            s(&bad_idx),
            "-o",
            &o,
        ],
        vec!["train", "--model", "mlp:0-8-10", "-o", &o],
        vec!["train", "--model", "cnn:3", "-o", &o],
        vec!["train", "--model", "mlp:784-8-10", "--lr", "-1", "-o", &o],
        vec![
            "train",
            "--model",
            "mlp:784-8-10",
            "--epochs",
            "0",
            "-o",
            &o,
        ],
        vec!["prune", s(&good), "-o", &o, "--sparsity", "1.5"],
        vec!["prune", s(&good), "-o", &o, "--nm", "5:4"],
        vec!["quantize", s(&good), "-o", &o, "--dtype", "int4"],
        vec!["quantize", s(&good), "-o", s(&good), "--dtype", "f16"],
        vec!["compare", s(&good), s(&indexes[0])],
        vec![
            "distill",
            "--teacher",
            s(&good),
            "--student",
            "mlp:784-8-10",
            "-o",
            &o,
            "--temperature",
            "0",
        ],
        vec!["bench", "--suite", "nope"],
        vec!["energy"],
    ]
    .iter()
    .map(|v| v.iter().map(|x| x.to_string()).collect())
    .collect();
    for args in runs {
        let before = std::fs::read(&good).unwrap();
        assert_contract(&args, Some(&good), Some(&before), &out);
    }
}
