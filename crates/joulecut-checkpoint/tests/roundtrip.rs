//! Round trips of every encoding, and the bad files the reader must reject with a precise error.

use joulecut_checkpoint::{
    Checkpoint, CheckpointWriter, DenseTensor, Error, FloatType, HistoryEntry, Int8Tensor,
    SparseTensor, SparseValues, TensorData,
};
use proptest::prelude::*;

fn sample_writer() -> CheckpointWriter {
    let mut w = CheckpointWriter::new();
    w.set_model_config(serde_json::json!({"arch": "mlp", "widths": [4, 3, 2]}));
    w.push_history(HistoryEntry::new("train", serde_json::json!({"epochs": 1})));
    w.insert(
        "fc1.weight",
        TensorData::Dense(DenseTensor::from_f32(vec![3, 4], &[0.5; 12])),
    );
    w.insert(
        "fc2.weight",
        TensorData::Int8(Int8Tensor {
            shape: vec![2, 3],
            values: vec![1, -2, 3, -128, 127, 0],
            scales: vec![0.5, 0.25],
            zero_points: Some(vec![0, 1]),
            axis: Some(0),
            orig_dtype: FloatType::F16,
            in_scales: None,
        }),
    );
    w.insert(
        "fc3.weight",
        TensorData::Sparse(SparseTensor::pack_f32(
            vec![2, 5],
            &[0., 1., 0., 0., 2., 3., 0., 0., 0., 0.],
            FloatType::F32,
        )),
    );
    let mut q = Int8Tensor {
        shape: vec![2, 5],
        values: vec![10, -10, 5],
        scales: vec![0.1, 0.2],
        zero_points: None,
        axis: Some(0),
        orig_dtype: FloatType::F32,
        in_scales: None,
    };
    let sp = SparseTensor::pack_f32(
        vec![2, 5],
        &[1., 0., 0., 0., 2., 0., 0., 0., 3., 0.],
        FloatType::F32,
    );
    q.values = vec![10, -10, 5];
    w.insert(
        "fc4.weight",
        TensorData::Sparse(SparseTensor {
            values: SparseValues::Int8(q),
            ..sp
        }),
    );
    w
}

#[test]
fn every_encoding_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    let w = sample_writer();
    w.write(&p, &[]).unwrap();
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(
        ck.names(),
        &["fc1.weight", "fc2.weight", "fc3.weight", "fc4.weight"]
    );
    for (name, data) in w.tensors() {
        assert_eq!(&ck.get(name).unwrap(), data, "{name}");
    }
    assert_eq!(ck.model_config().unwrap().unwrap()["arch"], "mlp");
    assert_eq!(ck.history().unwrap().len(), 1);
    // fc2: per-channel asymmetric dequantisation.
    assert_eq!(
        ck.get("fc2.weight").unwrap().to_f32(),
        vec![0.5, -1.0, 1.5, -32.25, 31.5, -0.25]
    );
    assert_eq!(
        ck.get("fc4.weight").unwrap().to_f32(),
        vec![1.0, 0., 0., 0., -1.0, 0., 0., 0., 1.0, 0.]
    );
    // Rewriting what we read gives the same bytes.
    let mut w2 = CheckpointWriter::derived_from(&ck).unwrap();
    for n in ck.names() {
        w2.insert(n.clone(), ck.get(n).unwrap());
    }
    let p2 = dir.path().join("b.safetensors");
    w2.write(&p2, &[&p]).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    sample_writer().write(&p, &[]).unwrap();
    let before = std::fs::read(&p).unwrap();
    let err = sample_writer().write(&p, &[&p]).unwrap_err();
    assert!(matches!(err, Error::OutputIsInput { .. }));
    assert_eq!(before, std::fs::read(&p).unwrap());
}

fn reject(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let err = Checkpoint::open(&p).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(
        err.to_string().contains(needle),
        "`{err}` should mention `{needle}`"
    );
}

fn file_with_header(h: &str, data: usize) -> Vec<u8> {
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data));
    v
}

#[test]
fn bad_files_are_rejected_precisely() {
    reject(b"abc", "shorter than");
    reject(&file_with_header("{not json", 0), "not JSON");
    let mut big = file_with_header("{}", 0);
    big[..8].copy_from_slice(&1000u64.to_le_bytes());
    reject(&big, "past the end");
    reject(
        &file_with_header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
        ),
        "truncated",
    );
    reject(
        &file_with_header(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ),
        "overlaps",
    );
    reject(
        &file_with_header(
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        "unknown dtype",
    );
    reject(
        &file_with_header(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        "needs 12",
    );
    // int8 without its scale
    reject(
        &file_with_header(
            r#"{"__metadata__":{"joulecut.encodings":"{\"a\":{\"encoding\":\"int8\",\"axis\":null,\"zero_point\":false,\"dtype\":\"F32\"}}"},"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#,
            2,
        ),
        "a:scale",
    );
}

#[test]
fn wrong_scale_shape_is_rejected_on_read() {
    let h = r#"{"__metadata__":{"joulecut.encodings":"{\"a\":{\"encoding\":\"int8\",\"axis\":0,\"zero_point\":false,\"dtype\":\"F32\"}}"},"a":{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]},"a:scale":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}}"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    std::fs::write(&p, file_with_header(h, 16)).unwrap();
    let ck = Checkpoint::open(&p).unwrap();
    let err = ck.get("a").unwrap_err();
    assert!(
        err.to_string().contains("scale has 3 entries, expected 2"),
        "{err}"
    );
}

/// Smoothed int8 (`:in_scale`): written, read back bit for bit, decoded with the column factors,
/// and its range view agrees with the full decode.
#[test]
fn smoothed_int8_round_trips_and_decodes_with_its_input_scales() {
    let q = Int8Tensor {
        shape: vec![2, 3],
        values: vec![10, -20, 30, 40, 0, -50],
        scales: vec![0.5, 0.25],
        zero_points: None,
        axis: Some(0),
        orig_dtype: FloatType::F32,
        in_scales: Some(vec![2.0, 0.5, 0.125]),
    };
    let mut w = CheckpointWriter::new();
    w.insert("l.weight", TensorData::Int8(q.clone()));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    w.write(&p, &[]).unwrap();
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.get("l.weight").unwrap(), TensorData::Int8(q));
    let want = [10.0, -5.0, 1.875, 20.0, 0.0, -1.5625];
    assert_eq!(ck.get("l.weight").unwrap().to_f32(), want);
    let mut v = [0f32; 6];
    ck.values("l.weight").unwrap().read(0, &mut v);
    assert_eq!(v, want);
    assert_eq!(ck.tensor_bytes("l.weight").unwrap(), 6 + 2 * 4 + 3 * 4);
}

#[test]
fn missing_or_bad_input_scales_are_refused_on_read() {
    let enc = r#"{"__metadata__":{"joulecut.encodings":"{\"a\":{\"encoding\":\"int8\",\"axis\":0,\"zero_point\":false,\"dtype\":\"F32\",\"in_scale\":true}}"},"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.safetensors");
    // no `a:in_scale` entry
    let h = format!(
        r#"{enc}"a":{{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]}},"a:scale":{{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}}}"#
    );
    std::fs::write(&p, file_with_header(&h, 12)).unwrap();
    let err = Checkpoint::open(&p).and_then(|ck| ck.get("a")).unwrap_err();
    assert!(err.to_string().contains("a:in_scale"), "{err}");
    // one factor too many (and all zero)
    let h = format!(
        r#"{enc}"a":{{"dtype":"I8","shape":[2,2],"data_offsets":[0,4]}},"a:scale":{{"dtype":"F32","shape":[2],"data_offsets":[4,12]}},"a:in_scale":{{"dtype":"F32","shape":[3],"data_offsets":[12,24]}}}}"#
    );
    std::fs::write(&p, file_with_header(&h, 24)).unwrap();
    let err = Checkpoint::open(&p).and_then(|ck| ck.get("a")).unwrap_err();
    assert!(err.to_string().contains("in_scale has 3 entries"), "{err}");
}

#[test]
fn readable_by_the_safetensors_crate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.safetensors");
    sample_writer().write(&p, &[]).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("fc2.weight").unwrap().dtype(),
        safetensors::Dtype::I8
    );
    assert_eq!(st.tensor("fc3.weight:bitmap").unwrap().shape(), &[2]);
}

proptest! {
    #[test]
    fn sparse_pack_round_trips(values in proptest::collection::vec(prop_oneof![Just(0.0f32), -10.0f32..10.0], 0..200)) {
        let n = values.len();
        let s = SparseTensor::pack_f32(vec![n], &values, FloatType::F32);
        prop_assert_eq!(s.nnz(), values.iter().filter(|v| **v != 0.0).count());
        s.validate("x").unwrap();
        prop_assert_eq!(s.to_f32(), values);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), hdr in "[ -~]{0,40}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let _ = Checkpoint::open(&p);
        std::fs::write(&p, file_with_header(&hdr, bytes.len())).unwrap();
        if let Ok(ck) = Checkpoint::open(&p) {
            for n in ck.names().to_vec() { let _ = ck.get(&n); }
        }
    }
}
