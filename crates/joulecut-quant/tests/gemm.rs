//! The int8 GEMM equals the scalar reference exactly, for every kernel this CPU can run.

use joulecut_quant::gemm::QuantizedRows;
use joulecut_quant::gemm::{
    ActivationQuant, Int8Kernel, PackedWeights, Requant, gemm_i32, gemm_reference, gemm_requant,
    quantize_rows,
};

/// xorshift64 bytes.
fn bytes(n: usize, seed: u64) -> Vec<i8> {
    joulecut_testkit::XorShift64::new(seed).i8_vec(n)
}

fn kernels() -> Vec<Int8Kernel> {
    let k = Int8Kernel::available();
    eprintln!("kernels: {k:?}");
    k
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 10, 784),
    (3, 10, 784),
    (257, 10, 784),
    (1, 300, 784),
    (3, 300, 784),
    (257, 300, 784),
    (256, 100, 300),
    (256, 10, 100),
    (1, 1, 1),
    (2, 3, 5),
    (7, 17, 13),
    (9, 33, 31),
    (17, 47, 66),
    (64, 16, 4),
    (300, 6, 25),
    (13, 31, 1031),
];

#[test]
fn gemm_i32_matches_reference_on_odd_shapes() {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        let a = bytes(m * k, 2 * i as u64 + 1);
        // Symmetric weights in [-127, 127] (the AVX2 fast path).
        let w: Vec<i8> = bytes(n * k, 2 * i as u64 + 2)
            .into_iter()
            .map(|v| v.max(-127))
            .collect();
        let packed = PackedWeights::pack(&w, n, k).unwrap();
        assert_eq!(packed.unpack(), w);
        let want = gemm_reference(&a, &w, m, n, k);
        for kernel in kernels() {
            let mut got = vec![0i32; m * n];
            gemm_i32(kernel, &a, m, &packed, &mut got);
            assert_eq!(got, want, "kernel {kernel}, m={m} n={n} k={k}");
        }
    }
}

#[test]
fn gemm_i32_is_exact_at_the_extremes() {
    // All -128 activations against ±127 / -128 weights: the largest pairwise products.
    for &(m, n, k) in &[(5, 20, 784), (1, 10, 7), (33, 16, 256)] {
        for wv in [-128i8, -127, 127] {
            let a = vec![-128i8; m * k];
            let w: Vec<i8> = (0..n * k)
                .map(|i| if i % 3 == 0 { wv } else { 127 })
                .collect();
            let packed = PackedWeights::pack(&w, n, k).unwrap();
            let want = gemm_reference(&a, &w, m, n, k);
            for kernel in kernels() {
                let mut got = vec![0i32; m * n];
                gemm_i32(kernel, &a, m, &packed, &mut got);
                assert_eq!(got, want, "kernel {kernel}, weight {wv}, m={m} n={n} k={k}");
            }
        }
    }
}

#[test]
fn gemm_i32_with_min_weights_falls_back_exactly() {
    let (m, n, k) = (19, 21, 99);
    let a = bytes(m * k, 77);
    let w = bytes(n * k, 78); // contains -128
    assert!(w.contains(&i8::MIN));
    let packed = PackedWeights::pack(&w, n, k).unwrap();
    let want = gemm_reference(&a, &w, m, n, k);
    for kernel in kernels() {
        let mut got = vec![0i32; m * n];
        gemm_i32(kernel, &a, m, &packed, &mut got);
        assert_eq!(got, want, "kernel {kernel}");
    }
}

/// The fused epilogue equals the reference requantisation computed in f64 (to f32 rounding).
#[test]
fn gemm_requant_matches_reference_epilogue() {
    const TOL: f64 = 1e-5;
    let (m, n, k) = (37, 23, 131);
    let a = bytes(m * k, 5);
    let w: Vec<i8> = bytes(n * k, 6).into_iter().map(|v| v.max(-127)).collect();
    let packed = PackedWeights::pack(&w, n, k).unwrap();
    let scales: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-3).collect();
    let zw: Vec<i32> = (0..n).map(|j| j as i32 % 7 - 3).collect();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 1.0).collect();
    for with_zero in [false, true] {
        for relu in [false, true] {
            let rq =
                Requant::new(n, &scales, with_zero.then_some(&zw[..]), Some(&bias), relu).unwrap();
            let kp = packed.k_padded();
            let mut rows = QuantizedRows {
                m,
                stride: kp,
                data: vec![0; m * kp],
                scales: (0..m).map(|i| 0.02 + i as f32 * 1e-3).collect(),
                zeros: (0..m).map(|i| i as i32 % 11 - 5).collect(),
                sums: Vec::new(),
            };
            for i in 0..m {
                rows.data[i * kp..i * kp + k].copy_from_slice(&a[i * k..(i + 1) * k]);
            }
            rows.sums = (0..m)
                .map(|i| a[i * k..(i + 1) * k].iter().map(|&v| v as i32).sum())
                .collect();
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let za = rows.zeros[i] as i64;
                    let zwj = if with_zero { zw[j] as i64 } else { 0 };
                    let s: i64 = (0..k)
                        .map(|kk| (a[i * k + kk] as i64 - za) * (w[j * k + kk] as i64 - zwj))
                        .sum();
                    let y = s as f64 * rows.scales[i] as f64 * scales[j] as f64 + bias[j] as f64;
                    want[i * n + j] = if relu { y.max(0.0) } else { y };
                }
            }
            for kernel in kernels() {
                let mut got = vec![0f32; m * n];
                gemm_requant(kernel, &rows, &packed, &rq, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= TOL * (1.0 + w.abs()),
                        "kernel {kernel}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn dynamic_row_quantization_stays_within_half_a_step() {
    let (m, k) = (5, 37);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 3.0)
        .collect();
    let mut rows = QuantizedRows::default();
    quantize_rows(&x, m, k, 40, ActivationQuant::Dynamic, true, &mut rows);
    for i in 0..m {
        let (s, z) = (rows.scales[i], rows.zeros[i]);
        for kk in 0..k {
            let deq = s * (rows.data[i * 40 + kk] as i32 - z) as f32;
            assert!(
                (deq - x[i * k + kk]).abs() <= s * 0.5001,
                "row {i}: {deq} vs {}",
                x[i * k + kk]
            );
        }
        let sum: i32 = rows.data[i * 40..i * 40 + k]
            .iter()
            .map(|&v| v as i32)
            .sum();
        assert_eq!(rows.sums[i], sum);
    }
}

#[test]
fn pack_rejects_bad_shapes() {
    assert!(PackedWeights::pack(&[1, 2, 3], 2, 2).is_err());
    assert!(PackedWeights::pack(&[], 0, 4).is_err());
}
