//! Checkpoint types: quantizing dense and sparse tensors, casts, int8 layers from stored tensors.

use candle_core::{Device, Module, Tensor};
use joulecut_checkpoint::{DenseTensor, FloatType, SparseTensor, SparseValues, TensorData};
use joulecut_quant::{Error, Int8Config, Int8Linear, Symmetry, cast_data, quantize_data};

fn weights() -> Vec<f32> {
    (0..60)
        .map(|i| {
            if i % 3 == 0 {
                0.0
            } else {
                ((i * 37) % 17) as f32 / 17.0 - 0.5
            }
        })
        .collect()
}

#[test]
fn sparse_int8_keeps_zeros_and_matches_dense_int8() {
    let w = weights();
    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
        let cfg = Int8Config {
            symmetry,
            ..Int8Config::default()
        };
        let sparse = TensorData::Sparse(SparseTensor::pack_f32(vec![6, 10], &w, FloatType::F32));
        let q = quantize_data("fc.weight", &sparse, &cfg).unwrap();
        assert_eq!(q.encoding_name(), "sparse-int8");
        let TensorData::Sparse(s) = &q else { panic!() };
        s.validate("fc.weight").unwrap();
        assert!(matches!(&s.values, SparseValues::Int8(t) if t.orig_dtype == FloatType::F32));
        let back = q.to_f32();
        for (x, y) in w.iter().zip(&back) {
            if *x == 0.0 {
                assert_eq!(*y, 0.0);
            }
        }
        // The int8 layer built from the sparse tensor equals the one from the dense int8 tensor
        // when both use the same grids (min-max includes 0 either way).
        let dense = quantize_data(
            "fc.weight",
            &TensorData::Dense(DenseTensor::from_f32(vec![6, 10], &w)),
            &cfg,
        )
        .unwrap();
        let x = Tensor::from_vec(
            (0..30).map(|i| i as f32 / 10.0 - 1.0).collect::<Vec<_>>(),
            (3, 10),
            &Device::Cpu,
        )
        .unwrap();
        let a = Int8Linear::from_data("fc.weight", &q, None)
            .unwrap()
            .forward(&x)
            .unwrap();
        let b = Int8Linear::from_data("fc.weight", &dense, None)
            .unwrap()
            .forward(&x)
            .unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
    }
}

#[test]
fn casts_round_to_nearest_and_keep_sparsity() {
    let w = weights();
    for dtype in [FloatType::F16, FloatType::BF16] {
        let d = cast_data(
            "w",
            &TensorData::Dense(DenseTensor::from_f32(vec![6, 10], &w)),
            dtype,
        )
        .unwrap();
        assert_eq!(d.float_type(), dtype);
        let s = cast_data(
            "w",
            &TensorData::Sparse(SparseTensor::pack_f32(vec![6, 10], &w, FloatType::F32)),
            dtype,
        )
        .unwrap();
        assert_eq!(s.to_f32(), d.to_f32());
        let q = quantize_data("w", &d, &Int8Config::default()).unwrap();
        assert!(
            matches!(cast_data("w", &q, dtype), Err(e @ Error::BadParams { .. }) if e.is_bad_input())
        );
    }
}

#[test]
fn bad_int8_tensors_are_rejected() {
    let w = weights();
    let TensorData::Int8(mut q) = quantize_data(
        "w",
        &TensorData::Dense(DenseTensor::from_f32(vec![6, 10], &w)),
        &Int8Config::default(),
    )
    .unwrap() else {
        panic!()
    };
    q.scales.pop();
    let err = Int8Linear::from_int8("fc1.weight", &q, None).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("fc1.weight"),
        "{err}"
    );
    let nan = DenseTensor::from_f32(vec![1, 2], &[1.0, f32::NAN]);
    assert!(matches!(
        quantize_data("w", &TensorData::Dense(nan), &Int8Config::default()),
        Err(Error::NonFinite { .. })
    ));
}
