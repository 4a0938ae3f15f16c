//! Exactness of every kernel this CPU runs (signed and non-negative activations, odd shapes), and
//! the fused quantize + GEMM + epilogue against the separate steps.

use proptest::prelude::*;

use super::*;

/// xorshift64 bytes.
fn bytes(n: usize, seed: u64) -> Vec<i8> {
    joulecut_testkit::XorShift64::new(seed).i8_vec(n)
}

fn floats(n: usize, seed: u64) -> Vec<f32> {
    bytes(n, seed)
        .into_iter()
        .map(|v| f32::from(v) / 37.0)
        .collect()
}

fn check_all_kernels(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) {
    let packed = PackedWeights::pack(w, n, k).unwrap();
    let want = gemm_reference(a, w, m, n, k);
    for kernel in Int8Kernel::available() {
        let mut got = vec![0i32; m * n];
        gemm_i32(kernel, a, m, &packed, &mut got);
        assert_eq!(got, want, "kernel {kernel}, m={m} n={n} k={k}");
    }
}

#[test]
fn non_negative_activations_are_exact_with_every_weight() {
    // 0..=127 activations take the AVX2 sign-free loop, which is exact even for -128 weights
    // (all weights -128 or 127 are far too many for the paired loop's residual: unpaired).
    for &(m, n, k) in &[
        (1, 10, 784),
        (3, 300, 784),
        (257, 10, 100),
        (5, 17, 7),
        (9, 33, 1),
    ] {
        let a: Vec<i8> = bytes(m * k, 11).into_iter().map(|v| v & 0x7f).collect();
        let w = bytes(n * k, 12);
        check_all_kernels(&a, &w, m, n, k);
        // The extremes: every activation 127, every weight -128 or 127.
        let a = vec![127i8; m * k];
        for wv in [i8::MIN, i8::MAX] {
            check_all_kernels(&a, &vec![wv; n * k], m, n, k);
        }
    }
}

#[test]
fn six_bit_activations_are_exact_at_the_extremes() {
    // 0..=63 activations take the AVX2 paired loop (two products added in 16 bits): the worst
    // cases, every activation 63 against every weight -128 or 127, must not saturate; odd and even
    // group counts (k = 4, 8, 784, 7, 300) cover the unpaired last group. From 32 columns on, pairs
    // of panels take the 2-row × 32-column tile: even and odd row counts (a last single row),
    // an odd last panel (n = 33, 48, 300) and a ragged last pair (n = 20, 40).
    for &(m, n, k) in &[
        (1, 10, 784),
        (5, 17, 7),
        (4, 16, 4),
        (9, 33, 8),
        (257, 10, 100),
        (1, 32, 1),
        (2, 20, 4),
        (3, 48, 300),
        (6, 40, 12),
        (7, 64, 784),
        (128, 300, 784),
    ] {
        let a: Vec<i8> = bytes(m * k, 13).into_iter().map(|v| v & 0x3f).collect();
        check_all_kernels(&a, &bytes(n * k, 14), m, n, k);
        let a = vec![63i8; m * k];
        for wv in [i8::MIN, i8::MAX] {
            check_all_kernels(&a, &vec![wv; n * k], m, n, k);
        }
    }
}

#[test]
fn signs_are_detected_from_the_bytes() {
    if !Int8Kernel::Avx2.is_available() {
        return;
    }
    let mut a = vec![5i8; 100];
    assert_eq!(Signs::of(Int8Kernel::Avx2, &a), Signs::SixBit);
    a[40] = 64; // bit 6, in a full chunk
    assert_eq!(Signs::of(Int8Kernel::Avx2, &a), Signs::NonNegative);
    a[40] = 5;
    a[98] = 100; // bit 6, in the scalar remainder
    assert_eq!(Signs::of(Int8Kernel::Avx2, &a), Signs::NonNegative);
    a[99] = -1; // in the scalar remainder
    assert_eq!(Signs::of(Int8Kernel::Avx2, &a), Signs::Mixed);
    a[99] = 0;
    a[3] = i8::MIN; // in a full 32-byte chunk
    assert_eq!(Signs::of(Int8Kernel::Avx2, &a), Signs::Mixed);
    assert_eq!(Signs::of(Int8Kernel::Portable, &[1, 2]), Signs::Mixed);
}

/// The fused path equals quantize_rows + gemm_requant bit for bit (same arithmetic, per row).
#[test]
fn fused_quantize_gemm_requant_equals_the_separate_steps() {
    let modes = [
        ActivationQuant::Dynamic,
        ActivationQuant::DynamicU7,
        ActivationQuant::DynamicU6,
        ActivationQuant::Static(crate::grid::QuantParams::from_range(
            -2.0,
            3.0,
            crate::grid::Symmetry::Asymmetric,
        )),
    ];
    for &(m, n, k) in &[(1, 10, 784), (257, 300, 784), (64, 100, 300), (33, 10, 5)] {
        let x = floats(m * k, 21);
        let w: Vec<i8> = bytes(n * k, 22).into_iter().map(|v| v.max(-127)).collect();
        let packed = PackedWeights::pack(&w, n, k).unwrap();
        let scales: Vec<f32> = (0..n).map(|j| 0.01 + j as f32 * 1e-4).collect();
        let zw: Vec<i32> = (0..n).map(|j| j as i32 % 5 - 2).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 0.5).collect();
        for zeros in [None, Some(&zw[..])] {
            let rq = Requant::new(n, &scales, zeros, Some(&bias), true).unwrap();
            for mode in modes {
                for kernel in Int8Kernel::available() {
                    let mut rows = QuantizedRows::default();
                    quantize_rows(
                        &x,
                        m,
                        k,
                        packed.k_padded(),
                        mode,
                        rq.needs_row_sums(),
                        &mut rows,
                    );
                    let mut want = vec![0f32; m * n];
                    gemm_requant(kernel, &rows, &packed, &rq, &mut want);
                    let mut got = vec![f32::NAN; m * n];
                    let mut scratch = QuantizedRows::default();
                    quantize_gemm_requant(
                        kernel,
                        &x,
                        m,
                        mode,
                        None,
                        &packed,
                        &rq,
                        &mut scratch,
                        got.as_mut_slice(),
                    );
                    assert_eq!(got, want, "kernel {kernel}, {mode:?}, m={m} n={n} k={k}");
                    assert_eq!(scratch.data, rows.data);
                }
            }
        }
    }
}

#[test]
fn u7_and_u6_rows_are_unsigned_and_within_half_a_step() {
    for (mode, top) in [
        (ActivationQuant::DynamicU7, 127),
        (ActivationQuant::DynamicU6, 63),
    ] {
        unsigned_rows_within_half_a_step(mode, top);
    }
}

fn unsigned_rows_within_half_a_step(mode: ActivationQuant, top: i8) {
    let (m, k) = (7, 53);
    let mut x = floats(m * k, 31);
    x[..k].iter_mut().for_each(|v| *v = v.abs()); // a post-ReLU row
    x[k..2 * k].fill(0.0); // an all-zero row
    let mut rows = QuantizedRows::default();
    quantize_rows(&x, m, k, 56, mode, true, &mut rows);
    for i in 0..m {
        let (s, z) = (rows.scales[i], rows.zeros[i]);
        let r = &rows.data[i * 56..(i + 1) * 56];
        assert!(
            r.iter().all(|&v| (0..=top).contains(&v)),
            "{mode:?} row {i}: {r:?}"
        );
        assert!(
            i == 1 || r.contains(&top),
            "{mode:?} row {i}: the grid's top is used"
        );
        assert!(r[k..].iter().all(|&v| v == 0), "padding");
        if i == 0 {
            assert_eq!(z, 0, "a non-negative row keeps 0 at 0");
        }
        for kk in 0..k {
            let deq = s * (i32::from(r[kk]) - z) as f32;
            assert!(
                (deq - x[i * k + kk]).abs() <= s * 0.5001,
                "row {i}: {deq} vs {}",
                x[i * k + kk]
            );
        }
        assert_eq!(rows.sums[i], r.iter().map(|&v| i32::from(v)).sum::<i32>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random shapes (odd ones included) and random bytes: every kernel equals the oracle, with
    /// signed, non-negative (7-bit) and 6-bit activations (the three AVX2 loops).
    #[test]
    fn gemm_i32_matches_reference_on_random_shapes(
        m in 1usize..40,
        n in 1usize..70,
        k in 1usize..300,
        seed in any::<u64>(),
        mask in prop_oneof![Just(0xffu8), Just(0x7f), Just(0x3f)],
    ) {
        let a: Vec<i8> = bytes(m * k, seed)
            .into_iter()
            .map(|v| (v as u8 & mask) as i8)
            .collect();
        let w: Vec<i8> = bytes(n * k, seed ^ 0xabcd).into_iter().map(|v| v.max(-127)).collect();
        let packed = PackedWeights::pack(&w, n, k).unwrap();
        let want = gemm_reference(&a, &w, m, n, k);
        for kernel in Int8Kernel::available() {
            let mut got = vec![0i32; m * n];
            gemm_i32(kernel, &a, m, &packed, &mut got);
            prop_assert_eq!(&got, &want, "kernel {}", kernel);
        }
    }
}

#[test]
fn residual_corrections_land_in_the_right_tiles() {
    // Weights small enough for the paired 7-bit loop, except one over-bound quad in each chosen
    // column, scattered over panels (first, middle, last, ragged) and rows (1..=9: every tile
    // height of every kernel, the wide tile's single last row included).
    for &(n, k) in &[(70, 300), (33, 1000), (300, 784)] {
        let mut w: Vec<i8> = bytes(n * k, 41).into_iter().map(|v| v / 4).collect();
        for col in [0, n / 2, n - 1] {
            for kk in [8, 9, 12, 13] {
                w[col * k + kk] = 127;
            }
        }
        let packed = PackedWeights::pack(&w, n, k).unwrap();
        assert!(
            packed.pairs_u7() && packed.residual_len() >= 3,
            "n={n} k={k}"
        );
        assert_eq!(packed.unpack(), w);
        for m in 1..=9 {
            let a: Vec<i8> = bytes(m * k, 42 + m as u64)
                .into_iter()
                .map(|v| v & 0x7f)
                .collect();
            check_all_kernels(&a, &w, m, n, k);
        }
    }
}

#[test]
fn weights_with_many_over_bound_quads_keep_no_residual() {
    // Random bytes: a large share of quads over the bound, so 7-bit rows run unpaired.
    let (n, k) = (40, 200);
    let w = bytes(n * k, 43);
    let packed = PackedWeights::pack(&w, n, k).unwrap();
    assert!(!packed.pairs_u7());
    assert_eq!(packed.residual_len(), 0);
    let a: Vec<i8> = bytes(5 * k, 44).into_iter().map(|v| v & 0x7f).collect();
    check_all_kernels(&a, &w, 5, n, k);
}

#[test]
fn packed_panels_are_cache_line_aligned() {
    // Every kernel load of a weight block then stays inside one cache line.
    for &(n, k) in &[(10, 784), (300, 784), (33, 7), (1, 1)] {
        let w = PackedWeights::pack(&bytes(n * k, 21), n, k).unwrap();
        for p in 0..w.n_pad / PANEL_N {
            assert_eq!(
                w.panel(p).as_ptr() as usize % 64,
                0,
                "n={n} k={k} panel {p}"
            );
        }
        assert_eq!(w.bytes(), w.n_pad * w.k_pad);
    }
}
