//! Sharded sources, the streaming rewrite (layouts, windows, kept bytes) and index validation.

use std::path::Path;

use joulecut_checkpoint::{
    Checkpoint, CheckpointWriter, Decode, DenseTensor, EntrySpec, Error, FloatType, HistoryEntry,
    Int8Tensor, Plan, Source, SparseTensor, StreamOptions, TensorData, TensorRef, Transform,
    stream,
};

fn dense(shape: Vec<usize>, seed: usize) -> TensorData {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i * 31 + seed * 7) % 17) as f32 - 8.0) / 16.0)
        .collect();
    TensorData::Dense(DenseTensor::from_f32(shape, &v))
}

/// A two-shard checkpoint with an index: dense, int8 and sparse tensors, foreign metadata.
fn sharded(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut a = CheckpointWriter::new();
    a.set_metadata("format", "pt");
    a.insert("l0.weight", dense(vec![8, 4], 1));
    a.insert("l0.bias", dense(vec![8], 2));
    a.insert(
        "l1.weight",
        TensorData::Int8(Int8Tensor {
            shape: vec![2, 3],
            values: vec![1, -2, 3, -127, 127, 0],
            scales: vec![0.5, 0.25],
            zero_points: None,
            axis: Some(0),
            orig_dtype: FloatType::BF16,
            in_scales: None,
        }),
    );
    a.write(dir.join("m-1.safetensors"), &[]).unwrap();
    let mut b = CheckpointWriter::new();
    b.set_metadata("format", "pt");
    b.insert(
        "l2.weight",
        TensorData::Sparse(SparseTensor::pack_f32(
            vec![3, 4],
            &[0., 1., 0., 0., 2., 0., 0., 3., 0., 0., 0., 4.],
            FloatType::F32,
        )),
    );
    b.insert("l3.weight", dense(vec![5, 8], 3));
    b.write(dir.join("m-2.safetensors"), &[]).unwrap();
    let mut map = serde_json::Map::new();
    for (f, names) in [
        (
            "m-1.safetensors",
            vec!["l0.weight", "l0.bias", "l1.weight", "l1.weight:scale"],
        ),
        (
            "m-2.safetensors",
            vec!["l2.weight:bitmap", "l2.weight:values", "l3.weight"],
        ),
    ] {
        for n in names {
            map.insert(n.into(), f.into());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": 1, "note": "kept"}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"hidden\": 8}").unwrap();
}

/// Negates selected tensors (F32 out), keeps the rest: a transform with a known answer.
struct Negate;

impl Transform for Negate {
    type Error = Error;
    type Report = usize;

    fn plan(&self, t: &TensorRef<'_>) -> Result<Plan, Error> {
        if t.encoding().is_some() || t.name.ends_with("bias") {
            return Ok(Plan::Keep);
        }
        Ok(Plan::Replace {
            entries: vec![EntrySpec::new(t.name, "F32", t.shape()?)],
            encoding: None,
        })
    }

    fn produce(&self, t: &TensorRef<'_>, _: &[EntrySpec]) -> Result<(Vec<Vec<u8>>, usize), Error> {
        let (_, v) = t.checkpoint.get_f32(t.name)?;
        let out: Vec<u8> = v.iter().flat_map(|x| (-x).to_le_bytes()).collect();
        Ok((vec![out], v.len()))
    }
}

fn opts() -> StreamOptions {
    StreamOptions::new(HistoryEntry::new("test", serde_json::json!({})))
}

#[test]
fn sharded_stream_keeps_layout_bytes_and_metadata() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    sharded(&input);
    let src = Source::open(&input).unwrap();
    assert_eq!(src.shards().len(), 2);
    assert_eq!(src.names().len(), 5);
    let out = d.path().join("out");
    let w = stream(&src, &out, &opts(), &Negate).unwrap();
    assert!(w.is_dir);
    assert_eq!(w.reports.len(), 2);
    assert_eq!(w.sidecars, vec![Path::new("config.json").to_path_buf()]);
    let got = Source::open(&out).unwrap();
    assert_eq!(got.names(), src.names());
    for n in src.names() {
        let (a, b) = (src.shard_of(n), got.shard_of(n));
        let (_, va) = a.get_f32(n).unwrap();
        let (_, vb) = b.get_f32(n).unwrap();
        if n == "l0.weight" || n == "l3.weight" {
            assert!(va.iter().zip(&vb).all(|(x, y)| *y == -*x), "{n}");
        } else {
            assert_eq!(a.get(n).unwrap(), b.get(n).unwrap(), "{n} kept");
        }
        assert_eq!(b.metadata()["format"], "pt");
        assert_eq!(b.history().unwrap().last().unwrap().command, "test");
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.safetensors.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["metadata"]["note"], "kept");
    assert_eq!(index["weight_map"]["l1.weight:scale"], "m-1.safetensors");

    // Tiny windows (one tensor each) and one big window write the same bytes.
    let one = d.path().join("one.safetensors");
    let many = d.path().join("many.safetensors");
    let mut o = opts();
    o.single_file = true;
    o.budget = 1;
    stream(&src, &many, &o, &Negate).unwrap();
    o.budget = usize::MAX;
    stream(&src, &one, &o, &Negate).unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&many).unwrap());
    assert_eq!(Checkpoint::open(&one).unwrap().names(), src.names());
}

#[test]
fn decode_restores_dense_original_types() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    sharded(&input);
    let src = Source::open(input.join("model.safetensors.index.json")).unwrap();
    assert!(!src.is_dir() && src.is_multi());
    let out = d.path().join("dense");
    stream(&src, &out, &opts(), &Decode::default()).unwrap();
    let got = Source::open(&out).unwrap();
    assert!(
        got.sidecars().unwrap().is_empty(),
        "index inputs carry no sidecars"
    );
    for n in src.names() {
        let before = src.shard_of(n).get(n).unwrap();
        let after = got.shard_of(n).get(n).unwrap();
        assert!(matches!(after, TensorData::Dense(_)), "{n}");
        assert_eq!(after.float_type(), before.float_type(), "{n}");
        assert_eq!(after.to_f32(), before.to_f32(), "{n}");
    }
}

fn expect_bad_index(dir: &Path, needle: &str) {
    match Source::open(dir) {
        Err(e @ Error::BadIndex { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.is_bad_input());
        }
        other => panic!("expected a bad index ({needle}), got {other:?}"),
    }
}

#[test]
fn inconsistent_indexes_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    sharded(&input);
    let ix = input.join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&ix).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        std::fs::write(&ix, v.to_string()).unwrap();
    };
    std::fs::write(&ix, "{not json").unwrap();
    expect_bad_index(&input, "not JSON");
    edit(&|v| v["weight_map"]["l3.weight"] = "m-1.safetensors".into());
    expect_bad_index(&input, "l3.weight");
    edit(&|v| {
        v["weight_map"].as_object_mut().unwrap().remove("l0.bias");
    });
    expect_bad_index(&input, "missing from the weight_map");
    edit(&|v| v["weight_map"]["l0.bias"] = "../m-1.safetensors".into());
    expect_bad_index(&input, "not a file in the index's directory");
    edit(&|v| v["weight_map"]["l0.bias"] = "gone.safetensors".into());
    expect_bad_index(&input, "does not exist");
    std::fs::write(&ix, &good).unwrap();
    assert!(Source::open(&input).is_ok());
}

#[test]
fn outputs_inside_or_over_inputs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    sharded(&input);
    let src = Source::open(&input).unwrap();
    for (out, want) in [
        (input.clone(), "input file"),
        (input.join("x"), "inside the input directory"),
        (input.join("m-1.safetensors"), "input file"),
    ] {
        let e = stream(&src, &out, &opts(), &Negate).unwrap_err();
        assert!(e.is_bad_input() && e.to_string().contains(want), "{e}");
    }
    let busy = d.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("f"), b"x").unwrap();
    let e = stream(&src, &busy, &opts(), &Negate).unwrap_err();
    assert!(matches!(e, Error::OutputNotEmpty { .. }), "{e}");
    let e = stream(&src, &d.path().join("x.safetensors"), &opts(), &Negate).unwrap_err();
    assert!(matches!(e, Error::BadOutput { .. }), "{e}");
    assert_eq!(std::fs::read(busy.join("f")).unwrap(), b"x");
}
