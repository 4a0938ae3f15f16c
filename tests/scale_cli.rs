//! End-to-end tests of checkpoints at scale: sharded and Hugging Face directory inputs and outputs,
//! quantize → decompress round trips read back with the `safetensors` crate alone, `compare`, and
//! every bad input (exit 2, one error line, input untouched, nothing written — also when killed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Relative slack on the int8 bound `scale / 2` (f32 rounding in quantize and dequantize).
const INT8_BOUND_SLACK: f32 = 1e-4;

/// Deterministic values in about [-0.05, 0.05].
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut r = XorShift64::new(seed);
    (0..n).map(|_| (r.next_f32() - 0.5) * 0.1).collect()
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        // Norm weights in [0.5, 1): any finite half values do.
        Dtype::F16 => (0..v.len() as u16)
            .flat_map(|i| (0x3800 + i % 1024).to_le_bytes())
            .collect(),
        // Round to nearest even on the upper 16 bits (values are finite).
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| {
                let b = x.to_bits();
                (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16).to_le_bytes()
            })
            .collect(),
        Dtype::I64 => (0..v.len() as i64).flat_map(|i| i.to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

fn decode(t: &TensorView<'_>) -> Vec<f32> {
    let d = t.data();
    match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
        other => panic!("not a float dtype: {other:?}"),
    }
}

/// `(name, dtype, shape)` of a small BERT-shaped encoder, two shards.
fn bert_tensors() -> Vec<(usize, String, Dtype, Vec<usize>)> {
    let mut t = vec![
        (
            0,
            "embeddings.word_embeddings.weight".into(),
            Dtype::F32,
            vec![64, 32],
        ),
        (
            0,
            "embeddings.position_embeddings.weight".into(),
            Dtype::F32,
            vec![16, 32],
        ),
        (0, "embeddings.position_ids".into(), Dtype::I64, vec![1, 16]),
        (
            0,
            "embeddings.LayerNorm.weight".into(),
            Dtype::F32,
            vec![32],
        ),
        (0, "embeddings.LayerNorm.bias".into(), Dtype::F32, vec![32]),
    ];
    for l in 0..2 {
        let dt = if l == 0 { Dtype::F32 } else { Dtype::BF16 };
        let p = format!("encoder.layer.{l}");
        for (n, s) in [
            ("attention.self.query", vec![32, 32]),
            ("attention.self.key", vec![32, 32]),
            ("attention.self.value", vec![32, 32]),
            ("attention.output.dense", vec![32, 32]),
            ("intermediate.dense", vec![64, 32]),
            ("output.dense", vec![32, 64]),
        ] {
            t.push((l, format!("{p}.{n}.weight"), dt, s.clone()));
            t.push((l, format!("{p}.{n}.bias"), dt, vec![s[0]]));
        }
        t.push((
            l,
            format!("{p}.output.LayerNorm.weight"),
            Dtype::F16,
            vec![32],
        ));
    }
    t.push((1, "classifier.weight".into(), Dtype::F32, vec![3, 32]));
    t
}

const SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];
const SIDECARS: [(&str, &str); 4] = [
    (
        "config.json",
        r#"{"model_type": "bert", "hidden_size": 32}"#,
    ),
    ("tokenizer.json", r#"{"version": "1.0"}"#),
    ("vocab.txt", "[PAD]\n[UNK]\nhello\n"),
    (
        "1_Pooling/config.json",
        r#"{"pooling_mode_mean_tokens": true}"#,
    ),
];

fn write_st(path: &Path, tensors: &[Stored]) {
    write_safetensors(path, tensors, Some(pytorch_metadata()));
}

/// A Hugging Face-style sharded model directory.
fn make_hf_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let mut per_shard: Vec<Vec<Stored>> = vec![vec![], vec![]];
    let mut map = BTreeMap::new();
    for (i, (shard, name, dt, shape)) in bert_tensors().into_iter().enumerate() {
        let v = values(i as u64 + 1, shape.iter().product());
        map.insert(name.clone(), SHARDS[shard]);
        per_shard[shard].push((name, dt, shape, encode(dt, &v)));
    }
    let mut total = 0;
    for (k, ts) in per_shard.iter().enumerate() {
        total += ts.iter().map(|t| t.3.len()).sum::<usize>();
        write_st(&dir.join(SHARDS[k]), ts);
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    for (n, c) in SIDECARS {
        std::fs::write(dir.join(n), c).unwrap();
    }
}

fn hf_dir() -> &'static PathBuf {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("bert-tiny");
        make_hf_dir(&p);
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
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn fresh(name: &str) -> PathBuf {
    let p = scratch().join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// All tensors of a directory's shards: name → (file, dtype, shape, bytes).
fn read_dir_tensors(dir: &Path) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            for (n, t) in st.tensors() {
                out.insert(
                    n,
                    (
                        file.clone(),
                        t.dtype(),
                        t.shape().to_vec(),
                        t.data().to_vec(),
                    ),
                );
            }
        }
    }
    out
}

fn metadata_of(file: &Path) -> HashMap<String, String> {
    let bytes = std::fs::read(file).unwrap();
    let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
    m.metadata().clone().unwrap_or_default()
}

#[test]
fn sharded_round_trip_keeps_layout_names_dtypes_and_sidecars() {
    let before = snapshot(hf_dir());
    let q = fresh("rt").join("bert-int8");
    let v = json(&[
        "quantize",
        s(hf_dir()),
        "-o",
        s(&q),
        "--dtype",
        "int8",
        "--json",
    ]);
    assert_eq!(v["layout"], "directory");
    assert_eq!(snapshot(hf_dir()), before, "input modified");

    // Same shard names, an index, and the sidecars byte for byte.
    let out = snapshot(&q);
    for f in SHARDS {
        assert!(
            out.contains_key(Path::new(f)),
            "{f} missing: {:?}",
            out.keys()
        );
    }
    for (n, c) in SIDECARS {
        assert_eq!(out[Path::new(n)], c.as_bytes(), "{n}");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&out[Path::new("model.safetensors.index.json")]).unwrap();
    let stored = read_dir_tensors(&q);
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), stored.len());
    for (name, (file, ..)) in &stored {
        assert_eq!(map[name], file.as_str(), "{name}");
    }
    let shard_bytes: u64 = stored.values().map(|t| t.3.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], shard_bytes);

    // Default selection: projections and MLP weights only; the rest byte-identical.
    let orig = read_dir_tensors(hf_dir());
    let quantized: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(quantized.len(), 12, "{quantized:?}");
    for (name, (file, dt, shape, bytes)) in &orig {
        if quantized.contains(&name.as_str()) {
            assert!(name.ends_with(".weight") && shape.len() == 2, "{name}");
            assert_eq!(stored[name].1, Dtype::I8, "{name}");
            assert_eq!(stored[&format!("{name}:scale")].2, vec![shape[0]]);
        } else {
            assert_eq!(
                &stored[name],
                &(file.clone(), *dt, shape.clone(), bytes.clone()),
                "{name}"
            );
        }
    }
    for f in SHARDS {
        assert_eq!(
            metadata_of(&q.join(f))["format"],
            "pt",
            "foreign metadata kept"
        );
    }

    // Decompress: original names, shapes and dtypes, within int8's error bound, plain safetensors.
    let d = fresh("rt-dec").join("bert-dec");
    json(&["decompress", s(&q), "-o", s(&d), "--json"]);
    let dec = read_dir_tensors(&d);
    assert_eq!(
        dec.keys().collect::<Vec<_>>(),
        orig.keys().collect::<Vec<_>>()
    );
    for (name, (file, dt, shape, bytes)) in &orig {
        let (dfile, ddt, dshape, dbytes) = &dec[name];
        assert_eq!((dfile, ddt, dshape), (file, dt, shape), "{name}");
        if !quantized.contains(&name.as_str()) {
            assert_eq!(dbytes, bytes, "{name}");
            continue;
        }
        let a = decode(&TensorView::new(*dt, shape.clone(), bytes).unwrap());
        let b = decode(&TensorView::new(*ddt, shape.clone(), dbytes).unwrap());
        for (r, (ra, rb)) in a.chunks(shape[1]).zip(b.chunks(shape[1])).enumerate() {
            let absmax = ra.iter().fold(0f32, |m, x| m.max(x.abs()));
            let half_step = absmax / 127.0 / 2.0 * (1.0 + INT8_BOUND_SLACK);
            // F16/BF16 originals are rounded back to their type after dequantizing.
            let cast = if *dt == Dtype::F32 {
                0.0
            } else {
                absmax / 128.0
            };
            for (x, y) in ra.iter().zip(rb) {
                assert!(
                    (x - y).abs() <= half_step + cast,
                    "{name} row {r}: {x} vs {y}"
                );
            }
        }
    }

    // compare: quantized tensors are close, the others identical.
    let c = json(&["compare", s(hf_dir()), s(&q), "--json"]);
    let rows = c["tensors"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        orig.len() - 1,
        "position_ids compared for equality only"
    );
    assert_eq!(c["non_float"][0]["identical"], true);
    for r in rows {
        let name = r["name"].as_str().unwrap();
        if quantized.contains(&name) {
            assert!(r["cosine"].as_f64().unwrap() > 0.999, "{r}");
            assert!(r["snr_db"].as_f64().unwrap() > 30.0, "{r}");
            assert!(r["rel_l2"].as_f64().unwrap() < 0.02, "{r}");
        } else {
            assert_eq!(r["rel_l2"], 0.0, "{r}");
            assert!(r["snr_db"].is_null(), "{r}");
        }
    }
    assert_eq!(c["totals"]["changed"], 12);
}

#[test]
fn index_input_single_file_output_and_inspect() {
    let ix = hf_dir().join("model.safetensors.index.json");
    let o = fresh("single").join("bert.safetensors");
    let v = json(&[
        "quantize",
        s(&ix),
        "-o",
        s(&o),
        "--dtype",
        "f16",
        "--single-file",
        "--json",
    ]);
    assert_eq!(v["layout"], "file");
    let bytes = std::fs::read(&o).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), bert_tensors().len());
    assert_eq!(
        st.tensor("encoder.layer.1.intermediate.dense.weight")
            .unwrap()
            .dtype(),
        Dtype::F16
    );
    assert_eq!(metadata_of(&o)["format"], "pt");
    let i = json(&["inspect", s(hf_dir()), "--json"]);
    assert_eq!(i["totals"]["shards"], 2);
    assert_eq!(i["totals"]["tensors"], bert_tensors().len());
    let ids = i["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "embeddings.position_ids")
        .unwrap();
    assert_eq!(ids["dtype"], "I64");
    assert_eq!(ids["params"], 16);
    let i1 = json(&["inspect", s(&o), "--json"]);
    assert_eq!(i1["totals"]["shards"], 1);
    // Include/exclude globs override the default policy across shards.
    let o2 = fresh("globs").join("out");
    let v = json(&[
        "quantize",
        s(hf_dir()),
        "-o",
        s(&o2),
        "--dtype",
        "int8",
        "--include",
        "*.word_embeddings.weight",
        "--include",
        "classifier.weight",
        "--json",
    ]);
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["embeddings.word_embeddings.weight", "classifier.weight"]
    );
}

/// Runs `quantize` expecting a bad-input failure; checks nothing was written under `out_parent`.
fn refused(input: &Path, out: &Path, extra: &[&str], needle: &str) {
    let watched = if input.is_dir() {
        input.to_path_buf()
    } else {
        input.parent().unwrap().to_path_buf()
    };
    let before = snapshot(&watched);
    // The scratch root is shared with tests running in parallel: only fresh parents are watched.
    let parent = if out.parent().unwrap() == scratch() {
        watched.as_path()
    } else {
        out.parent().unwrap()
    };
    let parent_before = snapshot(parent);
    let r = joulecut()
        .arg("quantize")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--dtype", "int8"])
        .args(extra)
        .output()
        .unwrap();
    eprintln!(
        "refused? {} -> {} ({needle})",
        input.display(),
        out.display()
    );
    assert_bad_input(&r, needle);
    assert_eq!(snapshot(&watched), before, "input modified ({needle})");
    assert_eq!(
        snapshot(parent),
        parent_before,
        "output left behind ({needle})"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in snapshot(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// A copy of the model directory with one shard's bytes replaced by `f(bytes)`.
fn corrupt_shard(case: &str, f: impl Fn(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let d = fresh(&format!("corrupt-{case}")).join("model");
    copy_dir(hf_dir(), &d);
    let p = d.join(SHARDS[1]);
    std::fs::write(&p, f(std::fs::read(&p).unwrap())).unwrap();
    d
}

fn with_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let mut hb = serde_json::to_vec(&h).unwrap();
    while hb.len() % 8 != 0 {
        hb.push(b' ');
    }
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn bad_inputs_exit_2_untouched_and_write_nothing() {
    let cls = "classifier.weight";
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "truncated",
            corrupt_shard("trunc", |b| b[..b.len() - 100].to_vec()),
            "truncated",
        ),
        (
            "header-len",
            corrupt_shard("hlen", |mut b| {
                b[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
                b
            }),
            "header length",
        ),
        (
            "not-json",
            corrupt_shard("json", |mut b| {
                b[8] = b'#';
                b
            }),
            "not JSON",
        ),
        (
            "overlap",
            corrupt_shard("overlap", |b| {
                with_header(&b, |h| {
                    h[cls]["data_offsets"] = serde_json::json!([8, 392]);
                })
            }),
            "overlaps",
        ),
        (
            "oob",
            corrupt_shard("oob", |b| {
                with_header(&b, |h| {
                    h[cls]["data_offsets"] = serde_json::json!([1_000_000, 1_000_384]);
                })
            }),
            "truncated",
        ),
        (
            "dtype",
            corrupt_shard("dtype", |b| {
                with_header(&b, |h| {
                    h[cls]["dtype"] = "I4".into();
                })
            }),
            "unknown dtype",
        ),
    ];
    for (case, dir, needle) in &cases {
        let out = fresh(&format!("out-{case}")).join("q");
        refused(dir, &out, &[], needle);
    }
    // Index inconsistencies.
    let missing = fresh("ix-missing").join("model");
    copy_dir(hf_dir(), &missing);
    std::fs::remove_file(missing.join(SHARDS[1])).unwrap();
    refused(
        &missing,
        &fresh("out-missing").join("q"),
        &[],
        "does not exist",
    );
    let twice = fresh("ix-twice").join("model");
    copy_dir(hf_dir(), &twice);
    let b0 = std::fs::read(twice.join(SHARDS[0])).unwrap();
    let st = SafeTensors::deserialize(&b0).unwrap();
    let mut ts: Vec<Stored> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    ts.push((cls.into(), Dtype::F32, vec![3, 32], vec![0; 384]));
    write_st(&twice.join(SHARDS[0]), &ts);
    refused(
        &twice,
        &fresh("out-twice").join("q"),
        &[],
        "stored in shards",
    );
    // A selected tensor of a dtype joulecut cannot quantize.
    refused(
        hf_dir(),
        &fresh("out-ids").join("q"),
        &["--include", "*.position_ids"],
        "position_ids",
    );
    // Output paths: the input itself, inside it, a .safetensors path for a sharded input, a
    // non-empty directory.
    refused(hf_dir(), hf_dir(), &[], "input");
    refused(
        hf_dir(),
        &hf_dir().join("sub"),
        &[],
        "inside the input directory",
    );
    refused(
        hf_dir(),
        &fresh("out-st").join("q.safetensors"),
        &[],
        "directory",
    );
    let busy = fresh("out-busy").join("q");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"mine").unwrap();
    refused(hf_dir(), &busy, &[], "not empty");
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"mine");
    let shard = hf_dir().join(SHARDS[0]);
    refused(&shard, &shard, &[], "input file");
}

#[test]
fn compare_refuses_different_tensors() {
    let ix = hf_dir().join("model.safetensors.index.json");
    let other = fresh("cmp").join("other.safetensors");
    write_st(&other, &[("x".into(), Dtype::F32, vec![2], vec![0; 8])]);
    let r = joulecut()
        .args(["compare", s(&ix), s(&other)])
        .output()
        .unwrap();
    assert_bad_input(&r, "not in");
    let reshaped = fresh("cmp2").join("r.safetensors");
    let bytes = std::fs::read(hf_dir().join(SHARDS[1])).unwrap();
    std::fs::write(
        &reshaped,
        with_header(&bytes, |h| {
            h["classifier.weight"]["shape"] = serde_json::json!([32, 3]);
        }),
    )
    .unwrap();
    let r = joulecut()
        .args(["compare", s(&hf_dir().join(SHARDS[1])), s(&reshaped)])
        .output()
        .unwrap();
    assert_bad_input(&r, "classifier.weight");
}

/// Paths of files the process has open under `dir` (anonymous temp files included).
fn open_files_under(pid: u32, dir: &Path) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with(dir.to_str().unwrap()))
        .collect()
}

#[test]
fn killed_mid_write_leaves_nothing() {
    // 32 MiB of F32 in 32 tensors: long enough to be caught writing.
    let dir = fresh("kill-in");
    let input = dir.join("big.safetensors");
    let ts: Vec<Stored> = (0..32)
        .map(|i| {
            (
                format!("layers.{i}.proj.weight"),
                Dtype::F32,
                vec![512, 512],
                encode(Dtype::F32, &values(i, 512 * 512)),
            )
        })
        .collect();
    write_st(&input, &ts);
    let before = snapshot(&dir);
    for layout in ["file", "dir"] {
        let mut caught = false;
        for _attempt in 0..20 {
            let out_parent = fresh(&format!("kill-out-{layout}"));
            // A directory input (one shard) gives a directory output.
            let (src, out) = if layout == "file" {
                (input.clone(), out_parent.join("q.safetensors"))
            } else {
                (dir.clone(), out_parent.join("q"))
            };
            let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("joulecut"))
                .arg("quantize")
                .arg(&src)
                .arg("-o")
                .arg(&out)
                .args(["--dtype", "f16"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            let mut seen = false;
            while start.elapsed() < Duration::from_secs(20) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if !open_files_under(child.id(), &out_parent).is_empty() {
                    seen = true;
                    break;
                }
            }
            if seen {
                child.kill().unwrap(); // SIGKILL
            }
            let status = child.wait().unwrap();
            if seen && !status.success() {
                assert!(
                    snapshot(&out_parent).is_empty()
                        && std::fs::read_dir(&out_parent).unwrap().next().is_none(),
                    "{layout}: killed mid-write left {:?}",
                    std::fs::read_dir(&out_parent)
                        .unwrap()
                        .flatten()
                        .map(|e| e.file_name())
                        .collect::<Vec<_>>()
                );
                caught = true;
                break;
            }
        }
        assert!(caught, "{layout}: never caught the writer in the act");
        assert_eq!(snapshot(&dir), before, "input modified");
    }
}

/// prune takes sharded inputs (tests/hf_models_cli.rs); a .safetensors output path for one is
/// refused before any work, saying why.
#[test]
fn prune_refuses_a_file_output_for_sharded_input_clearly() {
    let out = fresh("prune-out").join("p.safetensors");
    let r = joulecut()
        .args(["prune", s(hf_dir()), "-o", s(&out), "--sparsity", "0.5"])
        .output()
        .unwrap();
    assert_bad_input(&r, "sharded");
    assert!(!out.exists());
}

/// prune on a sharded model directory: the same shards, an index, the sidecars byte for byte, the
/// I64 ids copied unchanged and reported as kept; the input untouched.
#[test]
fn prune_writes_a_sharded_directory_like_quantize() {
    let before = snapshot(hf_dir());
    let out = fresh("prune-sharded").join("bert-pruned");
    let v = json(&[
        "prune",
        s(hf_dir()),
        "-o",
        s(&out),
        "--sparsity",
        "0.5",
        "--json",
    ]);
    assert_eq!(v["layout"], "directory", "{v}");
    assert_eq!(v["non_float"][0]["name"], "embeddings.position_ids", "{v}");
    assert_eq!(snapshot(hf_dir()), before, "input modified");
    let files = snapshot(&out);
    for f in SHARDS.iter().chain(&["model.safetensors.index.json"]) {
        assert!(files.contains_key(Path::new(f)), "{f} missing");
    }
    for (n, c) in SIDECARS {
        assert_eq!(files[Path::new(n)], c.as_bytes(), "{n}");
    }
    let (orig, pruned) = (read_dir_tensors(hf_dir()), read_dir_tensors(&out));
    let layers: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 12, "{layers:?}");
    for (name, t) in &orig {
        let p = &pruned[name];
        assert_eq!(
            (&p.0, p.1, &p.2),
            (&t.0, t.1, &t.2),
            "{name}: shard, dtype, shape"
        );
        if layers.contains(&name.as_str()) {
            assert_ne!(p.3, t.3, "{name} not pruned");
        } else {
            assert_eq!(p.3, t.3, "{name} changed");
        }
    }
}
