//! Regression tests of issue 22's rows: stdout that cannot be written (a closed pipe, a full disk),
//! inputs that are not regular files (FIFOs, devices), absurd model sizes and epoch counts. Each
//! ends with a clear exit code and message, never a panic, a hang or an abort.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use safetensors::Dtype;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A float checkpoint with many small tensors, so `inspect --json` prints far more than a pipe
/// holds.
fn many_tensors() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("many.safetensors");
        let t: Vec<Stored> = (0..3000)
            .map(|i| {
                let v: Vec<f32> = (0..8).map(|j| (i * 8 + j) as f32 * 0.01).collect();
                (
                    format!("layer{i}.weight"),
                    Dtype::F32,
                    vec![2, 4],
                    f32_bytes(&v),
                )
            })
            .collect();
        write_safetensors(&p, &t, None);
        p
    })
}

fn fifo() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("pipe");
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(ok.success(), "mkfifo");
        p
    })
}

/// The binary as a plain `std` command (for stdout redirections).
fn raw() -> std::process::Command {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("joulecut"))
}

fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = raw()
        .args(["inspect", "--json", s(many_tensors())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // read a little, then hang up, as `| head -c 10` does
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
}

#[test]
fn a_full_disk_on_stdout_is_an_error_not_a_panic() {
    let out = raw()
        .args(["inspect", "--json", s(many_tensors())])
        .stdout(dev_full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("hint:")), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // the file a command wrote before its summary failed is complete, and the error says so
    let q = scratch().join("q.safetensors");
    let out = raw()
        .args(["quantize", s(many_tensors()), "-o", s(&q), "--dtype", "f16"])
        .stdout(dev_full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("written completely"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    joulecut::checkpoint::Checkpoint::open(&q).expect("the output is complete");
}

#[test]
fn a_fifo_or_a_device_as_input_is_refused_without_blocking() {
    let f = fifo();
    let out_path = scratch().join("never.safetensors");
    let runs: Vec<Vec<&str>> = vec![
        vec!["inspect", s(f)],
        vec!["quantize", s(f), "-o", s(&out_path), "--dtype", "f16"],
        vec!["eval", s(f)],
        vec!["compare", s(many_tensors()), s(f)],
        vec!["decompress", s(f), "-o", s(&out_path)],
        vec!["inspect", "/dev/zero"],
    ];
    for args in runs {
        let out = joulecut()
            .args(&args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_bad_input(&out, "not a regular file");
        assert!(!out_path.exists(), "{args:?} wrote an output");
    }
    // text inputs too
    let m = scratch().join("m");
    let out = joulecut()
        .args(["eval-embeddings", s(&m), s(&m), "--sentences", s(f)])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn absurd_models_and_epoch_counts_are_refused_before_anything_runs() {
    let o = scratch().join("t.safetensors");
    for model in [
        "mlp:784-99999999999-10",
        "mlp:784-100000-100000-10",
        "mlp:784-99999999999999999999-10",
    ] {
        let out = joulecut()
            .args(["train", "--model", model, "--epochs", "1", "-o", s(&o)])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("memory allocation"), "{err}");
        assert_eq!(out.status.code(), Some(2), "{model}: {err}");
        assert!(err.lines().any(|l| l.starts_with("hint:")), "{err}");
    }
    let out = joulecut()
        .args([
            "train",
            "--model",
            "mlp:784-99999999999-10",
            "--epochs",
            "1",
            "-o",
            s(&o),
        ])
        .output()
        .unwrap();
    assert_bad_input(&out, "over the limit");
    let out = joulecut()
        .args([
            "train",
            "--model",
            "mlp:784-8-10",
            "--epochs",
            "18446744073709551615",
            "-o",
            s(&o),
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_bad_input(&out, "--epochs must be 1 to 10000");
    let out = joulecut()
        .args([
            "distill",
            "--teacher",
            s(many_tensors()),
            "--student",
            "mlp:784-99999999999-10",
            "-o",
            s(&o),
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert_bad_input(&out, "over the limit");
    // a bench config asking for a trillion epochs
    let cfg = scratch().join("epochs.json");
    std::fs::write(
        &cfg,
        r#"{"name": "x", "models": ["mlp:784-8-10"], "seeds": [0],
            "baseline": {"epochs": 1000000000000, "batch_size": 64, "lr": 0.001},
            "eval": {"batch_size": 256, "repeats": 1, "latency_iters": 1},
            "variants": []}"#,
    )
    .unwrap();
    let out = joulecut()
        .args([
            "bench",
            "--config",
            s(&cfg),
            "--out",
            s(&scratch().join("b")),
        ])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("10000") || err.contains("epochs"), "{err}");
    assert!(!o.exists(), "nothing written");
}

/// Row 10: every exit 2 carries a hint, clap's own errors and bench configs included.
#[test]
fn every_usage_error_has_a_hint() {
    let cfg = |name: &str, text: &str| {
        let p = scratch().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let m = many_tensors();
    let good = r#"{"name": "x", "models": ["mlp:784-8-10"], "seeds": [0],
        "baseline": {"epochs": 1, "batch_size": 64, "lr": 0.001},
        "eval": {"batch_size": 256, "repeats": 1, "latency_iters": 1}, "variants": []}"#;
    let configs = [
        cfg("unknown-key.json", &good.replace("\"seeds\"", "\"sedes\"")),
        cfg(
            "wrong-type.json",
            &good.replace("\"epochs\": 1", "\"epochs\": \"one\""),
        ),
        cfg(
            "batch0.json",
            &good.replace("\"batch_size\": 64", "\"batch_size\": 0"),
        ),
        cfg("not-json.json", "{ nope"),
        cfg("array.json", "[1, 2]"),
    ];
    let mut runs: Vec<Vec<String>> = vec![
        vec![
            "prune".into(),
            m.display().to_string(),
            "-o".into(),
            "x".into(),
            "--sparsity".into(),
            "0.5x".into(),
        ],
        vec![
            "quantize".into(),
            m.display().to_string(),
            "-o".into(),
            "x".into(),
        ],
        vec![
            "train".into(),
            "--model".into(),
            "lenet-300-100".into(),
            "--lr".into(),
            "nan".into(),
            "-o".into(),
            "x".into(),
        ],
        vec![
            "train".into(),
            "--model".into(),
            "lenet-300-100".into(),
            "--batch-size".into(),
            "0".into(),
            "-o".into(),
            "x".into(),
        ],
        vec!["bench".into(), "--suite".into(), "nope".into()],
        vec!["no-such-command".into()],
    ];
    for c in &configs {
        runs.push(vec![
            "bench".into(),
            "--config".into(),
            c.display().to_string(),
            "--out".into(),
            scratch().join("bo").display().to_string(),
        ]);
    }
    for args in runs {
        let out = joulecut()
            .current_dir(scratch())
            .args(&args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{args:?}: {err}"
        );
        assert!(
            err.lines().any(|l| l.starts_with("hint:")),
            "{args:?}: no hint in\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!scratch().join("x").exists());
}

/// Row 11: a cast that would lose a value (f16 overflow to infinity, NaN) is refused, naming the
/// tensor; bf16 holds the same large value.
#[test]
fn a_cast_that_would_make_infinities_is_refused() {
    let big = scratch().join("big.safetensors");
    let nan = scratch().join("nan.safetensors");
    let t = |v: f32| {
        vec![(
            "w".to_string(),
            Dtype::F32,
            vec![2, 2],
            f32_bytes(&[0.5, v, -1.0, 2.0]),
        )]
    };
    write_safetensors(&big, &t(1e10), None);
    write_safetensors(&nan, &t(f32::NAN), None);
    let out = scratch().join("cast.safetensors");
    let run = |input: &Path, dtype: &str| {
        joulecut()
            .args(["quantize", s(input), "-o", s(&out), "--dtype", dtype])
            .output()
            .unwrap()
    };
    let r = run(&big, "f16");
    assert_bad_input(&r, "`w`");
    assert!(String::from_utf8_lossy(&r.stderr).contains("bf16"));
    assert!(!out.exists());
    for dtype in ["f16", "bf16"] {
        assert_bad_input(&run(&nan, dtype), "`w`");
        assert!(!out.exists());
    }
    assert!(run(&big, "bf16").status.success());
    let (_, v) = joulecut::checkpoint::Checkpoint::open(&out)
        .unwrap()
        .get_f32("w")
        .unwrap();
    assert!(v[1].is_finite() && (v[1] - 1e10).abs() < 1e8);
}

/// A copy of `src` with its `__metadata__` changed by `edit`.
fn with_metadata(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&mut std::collections::HashMap<String, String>),
) {
    let bytes = std::fs::read(src).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut md = header.metadata().clone().unwrap_or_default();
    edit(&mut md);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<Stored> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    write_safetensors(dst, &tensors, Some(md));
}

/// A change to a file's `__metadata__`.
type MetadataEdit = dyn Fn(&mut std::collections::HashMap<String, String>);

/// Row 7: every reader checks the format version; `decompress` checks the model metadata as
/// strictly as `eval`.
#[test]
fn decompress_refuses_what_eval_refuses() {
    let (model, _) = train("mlp:784-8-10", 1, "small.safetensors");
    let out = scratch().join("dec.safetensors");
    let cases: Vec<(&str, Box<MetadataEdit>, &str)> = vec![
        (
            "f999",
            Box::new(|m| {
                m.insert("joulecut.format".into(), "999".into());
            }),
            "format `999`",
        ),
        (
            "f2",
            Box::new(|m| {
                m.insert("joulecut.format".into(), "2".into());
            }),
            "format `2`",
        ),
        (
            "unknown-model",
            Box::new(|m| {
                m.insert(
                    "joulecut.model".into(),
                    r#"{"Transformer": {"layers": 3}}"#.into(),
                );
            }),
            "model config",
        ),
        (
            "wrong-widths",
            Box::new(|m| {
                let v = m
                    .get("joulecut.model")
                    .unwrap()
                    .replace("784-8-10", "784-9-10")
                    .replace("[784,8,10]", "[784,9,10]");
                m.insert("joulecut.model".into(), v);
            }),
            "fc1",
        ),
    ];
    for (name, edit, needle) in cases {
        let bad = scratch().join(format!("{name}.safetensors"));
        with_metadata(&model, &bad, edit);
        let before = std::fs::read(&bad).unwrap();
        for cmd in [
            vec!["decompress", s(&bad), "-o", s(&out)],
            vec!["inspect", s(&bad)],
            vec!["eval", s(&bad)],
        ] {
            // inspect shows any model metadata; it runs no model
            if (name.ends_with("widths") || name.starts_with("unknown")) && cmd[0] == "inspect" {
                continue;
            }
            let r = joulecut().args(&cmd).output().unwrap();
            let err = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(2), "{name} {cmd:?}: {err}");
            assert!(err.contains(needle), "{name} {cmd:?}: {err}");
            assert!(err.lines().any(|l| l.starts_with("hint:")), "{err}");
            assert!(!out.exists(), "{name}: decompress wrote an output");
        }
        assert_eq!(
            std::fs::read(&bad).unwrap(),
            before,
            "the input is unchanged"
        );
    }
}

/// Row 8: a packed tensor whose logical shape overflows (or disagrees with its bitmap) is refused
/// on opening, so no pass copies it through.
#[test]
fn a_corrupt_sparse_shape_is_refused_on_opening() {
    let (model, _) = train("mlp:784-8-10", 1, "small-for-pack.safetensors");
    let packed = scratch().join("packed.safetensors");
    let r = joulecut()
        .args([
            "prune",
            s(&model),
            "-o",
            s(&packed),
            "--sparsity",
            "0.5",
            "--pack",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = scratch().join("cast16.safetensors");
    for (name, shape) in [
        ("overflow", "[4294967296,4294967297]"),
        ("mismatch", "[784,9]"),
    ] {
        let bad = scratch().join(format!("sparse-{name}.safetensors"));
        with_metadata(&packed, &bad, |m| {
            let e = m
                .get("joulecut.encodings")
                .unwrap()
                .replace("[8,784]", shape);
            m.insert("joulecut.encodings".into(), e);
        });
        for cmd in [
            vec!["quantize", s(&bad), "-o", s(&out), "--dtype", "f16"],
            vec!["inspect", s(&bad)],
            vec!["decompress", s(&bad), "-o", s(&out)],
        ] {
            let r = joulecut().args(&cmd).output().unwrap();
            assert_bad_input(&r, "sparse shape");
            assert!(!out.exists());
        }
    }
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Row 9: an empty training split (whose statistics normalise every input) is refused by `eval`
/// as by `train`.
#[test]
fn an_empty_training_split_is_refused() {
    let (model, _) = train("mlp:784-8-10", 1, "small-for-empty.safetensors");
    let dir = scratch().join("empty-train");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx(&[0, 28, 28], &[])).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[0], &[])).unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx(&[1, 28, 28], &[7; 784]),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[1], &[3])).unwrap();
    for cmd in [
        vec!["eval", s(&model), "--data", s(&dir)],
        vec![
            "train",
            "--model",
            "mlp:784-8-10",
            "--data",
            s(&dir),
            "-o",
            s(&scratch().join("e.safetensors")),
        ],
    ] {
        let r = joulecut().args(&cmd).output().unwrap();
        assert_bad_input(&r, "no images");
    }
}

/// Row 6: what a killed directory write leaves (`.OUT.joulecut-tmp-PID/`) is removed by the next
/// write of anything in that folder, not only of the same destination.
#[test]
fn a_killed_writes_temporary_directory_is_swept_by_the_next_write_in_its_folder() {
    let dir = scratch().join("sweep");
    std::fs::create_dir_all(&dir).unwrap();
    // PIDs above pid_max never exist: a writer that is gone
    let stale = dir.join(".killed-out.joulecut-tmp-4294967290");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    let r = joulecut()
        .args([
            "quantize",
            s(many_tensors()),
            "-o",
            s(&dir.join("other.safetensors")),
            "--dtype",
            "f16",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        !stale.exists(),
        "the dead writer's temporary directory is gone"
    );
}

/// Row 13: duplicate header keys, gaps between tensors and bytes after the last one are refused.
#[test]
fn loose_headers_are_refused() {
    let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let cases = [
        (
            "dup",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            data.clone(),
            "twice",
        ),
        (
            "dup-meta",
            r#"{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            data.clone(),
            "twice",
        ),
        (
            "gap",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
            data.clone(),
            "unclaimed",
        ),
        (
            "trailing",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            data.clone(),
            "after the last tensor",
        ),
    ];
    let out = scratch().join("loose-out.safetensors");
    for (name, header, data, needle) in cases {
        let p = scratch().join(format!("loose-{name}.safetensors"));
        std::fs::write(&p, safetensors_bytes(header, &data)).unwrap();
        let before = std::fs::read(&p).unwrap();
        for cmd in [
            vec!["inspect", s(&p)],
            vec!["quantize", s(&p), "-o", s(&out), "--dtype", "f16"],
        ] {
            assert_bad_input(&joulecut().args(&cmd).output().unwrap(), needle);
            assert!(!out.exists());
        }
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}

/// Row 12: a NaN or infinity in either file is counted, not mixed into the figures, and the row and
/// the total agree.
#[test]
fn compare_counts_non_finite_elements_and_its_row_and_total_agree() {
    let a = scratch().join("cmp-a.safetensors");
    let b = scratch().join("cmp-b.safetensors");
    let t = |v: &[f32]| vec![("w".to_string(), Dtype::F32, vec![4], f32_bytes(v))];
    write_safetensors(&a, &t(&[1e10, 1.0, 2.0, 3.0]), None);
    write_safetensors(&b, &t(&[f32::INFINITY, 1.0, 2.0, 3.5]), None);
    let v = json(&["compare", s(&a), s(&b), "--json"]);
    let row = &v["tensors"][0];
    let total = &v["totals"];
    for x in [row, total] {
        assert_eq!(x["non_finite"], 1, "{v}");
        let rel = x["rel_l2"].as_f64().expect("a number");
        assert!(rel > 0.0 && rel.is_finite(), "{v}");
        assert!(
            x["cosine"].as_f64().is_some_and(|c| c > 0.9 && c < 1.0),
            "{v}"
        );
    }
    assert_eq!(row["rel_l2"], total["rel_l2"]);
}

/// Row 14: names with newlines or terminal escapes are printed escaped; a shard that is a FIFO, a
/// device or a directory is named as such, not as missing.
#[test]
fn messages_name_what_they_saw() {
    let p = scratch().join("evil-names.safetensors");
    let evil = "w\nfake row\u{1b}[31m";
    write_safetensors(
        &p,
        &[(evil.to_string(), Dtype::F32, vec![1], f32_bytes(&[1.0]))],
        None,
    );
    let out = joulecut().args(["inspect", s(&p)]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}'), "raw escape printed:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("fake row")),
        "a forged row:\n{text}"
    );
    assert!(text.contains(r"w\nfake row\u{1b}[31m"), "{text}");

    // an index whose shard is a FIFO, a device, a directory
    let dir = scratch().join("odd-shards");
    std::fs::create_dir_all(&dir).unwrap();
    for (shard, kind) in [
        ("fifo.safetensors", "FIFO"),
        ("dir.safetensors", "directory"),
    ] {
        let target = dir.join(shard);
        if kind == "FIFO" {
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(&target)
                    .status()
                    .unwrap()
                    .success()
            );
        } else {
            std::fs::create_dir_all(&target).unwrap();
        }
        let index = dir.join(format!("{kind}.safetensors.index.json"));
        std::fs::write(
            &index,
            format!(r#"{{"metadata": {{}}, "weight_map": {{"w": "{shard}"}}}}"#),
        )
        .unwrap();
        let r = joulecut()
            .args(["inspect", s(&index)])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        assert_bad_input(&r, kind);
    }
}

/// Row 5: an input truncated by another process while it is read (a bus error on its memory map)
/// ends with a message and exit code 2, not death by SIGBUS, and no output.
#[test]
fn an_input_truncated_during_the_run_is_a_clear_error() {
    let p = scratch().join("shrinking.safetensors");
    let v: Vec<f32> = (0..(16usize << 20))
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let tensors: Vec<Stored> = v
        .chunks(4 << 20)
        .enumerate()
        .map(|(i, c)| {
            (
                format!("t{i}.weight"),
                Dtype::F32,
                vec![4096, 1024],
                f32_bytes(c),
            )
        })
        .collect();
    write_safetensors(&p, &tensors, None);
    let out = scratch().join("shrunk-q.safetensors");
    let mut child = raw()
        .args([
            "quantize",
            s(&p),
            "-o",
            s(&out),
            "--dtype",
            "int8",
            "--calibrate",
            "mse",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the whole run takes seconds: cut the file while it is being read
    std::thread::sleep(Duration::from_millis(400));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100_000)
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "killed by a signal or wrong code: {status:?} {err}"
    );
    assert!(err.contains("truncated"), "{err}");
    assert!(!out.exists(), "no output");
}
