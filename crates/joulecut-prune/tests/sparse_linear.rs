//! `SparseLinear` against the reference loop and against candle's dense `Linear`.

use candle_core::{Device, Module, Tensor};
use joulecut_prune::{CsrMatrix, SparseLinear};
use joulecut_testkit::XorShift64;
use proptest::prelude::*;

/// Relative tolerance: the kernels sum in a different order than the oracle.
const REL_TOL: f32 = 1e-4;

fn close(a: &[f32], b: &[f32]) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("lengths {} vs {}", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if (x - y).abs() > REL_TOL * (1.0 + x.abs().max(y.abs())) {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

fn matrix(rows: usize, cols: usize, density: f64, seed: u64) -> Vec<f32> {
    let mut rng = XorShift64::from_state(seed);
    (0..rows * cols)
        .map(|_| {
            let u = rng.next_f64();
            if u < density {
                ((u / density) * 2.0 - 1.0) as f32
            } else {
                0.0
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn sparse_kernel_equals_reference_and_dense(
        rows in 1usize..70, cols in 1usize..90, batch in prop_oneof![1usize..6, 6usize..150],
        density in 0.0f64..1.0, seed in any::<u64>(), with_bias in any::<bool>(),
    ) {
        let dev = Device::Cpu;
        let w = matrix(rows, cols, density, seed);
        let x = matrix(batch, cols, 1.0, seed.wrapping_add(7));
        let bias: Option<Vec<f32>> = with_bias.then(|| matrix(1, rows, 1.0, seed.wrapping_add(3)));
        let csr = CsrMatrix::from_dense(rows, cols, &w).unwrap();
        prop_assert_eq!(csr.to_dense(), w.clone());

        let want = csr.matmul_reference(&x, batch, bias.as_deref());
        let layer = SparseLinear::new(csr, bias.clone()).unwrap();
        close(&want, &layer.forward_slice(&x, batch)).map_err(TestCaseError::fail)?;

        let wt = Tensor::from_slice(&w, (rows, cols), &dev).unwrap();
        let bt = bias.as_ref().map(|b| Tensor::from_slice(b, rows, &dev).unwrap());
        let dense = candle_nn::Linear::new(wt, bt);
        let xt = Tensor::from_slice(&x, (batch, cols), &dev).unwrap();
        let d = dense.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let s = layer.forward(&xt).unwrap();
        prop_assert_eq!(s.dims(), &[batch, rows]);
        close(&d, &s.flatten_all().unwrap().to_vec1::<f32>().unwrap()).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn module_accepts_higher_rank_and_other_dtypes() {
    let dev = Device::Cpu;
    let w = matrix(5, 8, 0.3, 11);
    let layer = SparseLinear::new(CsrMatrix::from_dense(5, 8, &w).unwrap(), None).unwrap();
    let x = Tensor::from_slice(&matrix(6, 8, 1.0, 5), (2, 3, 8), &dev).unwrap();
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    let y16 = layer
        .forward(&x.to_dtype(candle_core::DType::F16).unwrap())
        .unwrap();
    assert_eq!(y16.dtype(), candle_core::DType::F16);
    assert!(
        layer
            .forward(&Tensor::zeros((2, 7), candle_core::DType::F32, &dev).unwrap())
            .is_err()
    );
}

#[test]
fn large_layers_take_the_parallel_paths() {
    // 784-300 at 10% density, batch 1 and 256: both above the threading threshold.
    let (rows, cols) = (300, 784);
    let w = matrix(rows, cols, 0.6, 99);
    let csr = CsrMatrix::from_dense(rows, cols, &w).unwrap();
    for batch in [1, 2, 256, 257] {
        let x = matrix(batch, cols, 1.0, 3);
        let mut y = vec![0.0; batch * rows];
        csr.matmul_into(&x, batch, None, &mut y);
        close(&csr.matmul_reference(&x, batch, None), &y).unwrap();
    }
}
