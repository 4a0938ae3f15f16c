//! Schemes, calibration and casts: error bounds (property tests), zeros, bad input.

use joulecut_quant::ERROR_BOUND_SLACK;
use joulecut_quant::{
    Calibration, Error, HalfType, Int8Config, QuantParams, RangeObserver, ScaleGranularity,
    Symmetry, calibrate_range, dequantize_sparse_values, quantize_sparse_values, quantize_tensor,
    round_trip_half,
};
use proptest::prelude::*;

fn bound(scale: f32, x: f32) -> f32 {
    scale * (0.5 + ERROR_BOUND_SLACK) + x.abs() * f32::EPSILON
}

fn configs() -> Vec<Int8Config> {
    let mut v = Vec::new();
    for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
        for granularity in [ScaleGranularity::Tensor, ScaleGranularity::Channel] {
            v.push(Int8Config {
                symmetry,
                granularity,
                calibration: Calibration::MinMax,
            });
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// quantize → dequantize error ≤ scale/2 per element (min-max calibration: nothing is clipped).
    #[test]
    fn roundtrip_error_is_at_most_half_a_step(
        rows in 1usize..6,
        cols in 1usize..40,
        seed in any::<u64>(),
        mag in prop_oneof![Just(1e-6f32), Just(1e-2), Just(1.0), Just(1e3), Just(1e30)],
        offset in -1.0f32..1.0,
    ) {
        let mut r = joulecut_testkit::XorShift64::from_state(seed);
        let vals: Vec<f32> = (0..rows * cols).map(|_| (r.next_f32() * 2.0 - 1.0 + offset) * mag).collect();
        for cfg in configs() {
            let q = quantize_tensor("t", &vals, &[rows, cols], &cfg).unwrap();
            let back = q.dequantize();
            let per_row = q.axis.is_some();
            for (i, (x, y)) in vals.iter().zip(&back).enumerate() {
                let scale = q.scales[if per_row { i / cols } else { 0 }];
                prop_assert!((x - y).abs() <= bound(scale, *x), "{cfg:?}: {x} -> {y}, scale {scale}");
            }
        }
    }

    /// Any single grid: values inside its range round-trip within half a step, 0 is exact.
    #[test]
    fn params_grid_is_tight(lo in -1e4f32..0.0, hi in 0.0f32..1e4, t in 0.0f32..=1.0, asym in any::<bool>()) {
        let sym = if asym { Symmetry::Asymmetric } else { Symmetry::Symmetric };
        let p = QuantParams::from_range(lo, hi, sym);
        let x = lo + (hi - lo) * t;
        prop_assert!((p.dequantize(p.quantize(x)) - x).abs() <= bound(p.scale, x));
        prop_assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
    }

    /// fp16/bf16 round trips are the nearest representable value (relative error ≤ 2^-11 / 2^-8).
    #[test]
    fn half_round_trip_error(x in -6.0e4f32..6.0e4) {
        let f = round_trip_half(&[x], HalfType::F16)[0];
        prop_assert!((f - x).abs() <= x.abs() * 2f32.powi(-11) + 6e-8);
        let b = round_trip_half(&[x], HalfType::BF16)[0];
        prop_assert!((b - x).abs() <= x.abs() * 2f32.powi(-8));
    }
}

#[test]
fn per_channel_uses_one_grid_per_row() {
    let vals = [1.0f32, -1.0, 100.0, 50.0];
    let q = quantize_tensor("w", &vals, &[2, 2], &Int8Config::default()).unwrap();
    assert_eq!(q.axis, Some(0));
    assert_eq!(q.values, vec![127, -127, 127, 64]);
    assert!((q.scales[0] - 1.0 / 127.0).abs() < 1e-9);
    // Rank-1 tensors fall back to per tensor.
    let b = quantize_tensor("b", &[1.0, 2.0], &[2], &Int8Config::default()).unwrap();
    assert_eq!(b.axis, None);
}

#[test]
fn sparse_values_keep_zeros_exact() {
    let shape = [3usize, 4];
    let dense = [
        0.0f32, 0.7, 0.0, -0.2, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.001,
    ];
    let positions: Vec<usize> = (0..12).filter(|&i| dense[i] != 0.0).collect();
    let values: Vec<f32> = positions.iter().map(|&i| dense[i]).collect();
    for cfg in configs() {
        let q = quantize_sparse_values("w", &values, &positions, &shape, &cfg).unwrap();
        let back = dequantize_sparse_values(&q, &positions);
        for (i, (&x, &y)) in dense.iter().zip(&back).enumerate() {
            if x == 0.0 {
                assert_eq!(y, 0.0, "{cfg:?}: element {i}");
            }
        }
    }
}

#[test]
fn non_finite_weights_are_bad_input() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = quantize_tensor("fc1.weight", &[1.0, bad], &[1, 2], &Int8Config::default())
            .unwrap_err();
        assert!(matches!(err, Error::NonFinite { index: 1, .. }), "{err}");
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("fc1.weight"));
    }
}

#[test]
fn bad_percentile_is_rejected() {
    let cfg = Int8Config {
        calibration: Calibration::Percentile { percentile: 0.0 },
        ..Int8Config::default()
    };
    assert!(matches!(
        quantize_tensor("w", &[1.0], &[1], &cfg),
        Err(Error::BadConfig(_))
    ));
}

#[test]
fn clipping_calibrations_shrink_the_range_on_outliers() {
    let mut vals: Vec<f32> = (0..10_000)
        .map(|i| ((i * 37) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    vals[17] = 50.0;
    let (_, hi_mm) = calibrate_range(&vals, Calibration::MinMax, Symmetry::Symmetric);
    let (_, hi_p) = calibrate_range(
        &vals,
        Calibration::Percentile { percentile: 99.9 },
        Symmetry::Symmetric,
    );
    let (_, hi_mse) = calibrate_range(&vals, Calibration::Mse, Symmetry::Symmetric);
    assert_eq!(hi_mm, 50.0);
    assert!(hi_p < 1.0, "percentile {hi_p}");
    assert!(hi_mse < 50.0, "mse {hi_mse}");
    // MSE never does worse than min-max on the data it was fitted to.
    let mse = |hi: f32| {
        let p = QuantParams::from_range(-hi, hi, Symmetry::Symmetric);
        vals.iter()
            .map(|&v| (v - p.dequantize(p.quantize(v))).powi(2))
            .sum::<f32>()
    };
    assert!(mse(hi_mse) <= mse(hi_mm));
}

#[test]
fn observer_accumulates_over_batches() {
    let mut o = RangeObserver::new(Calibration::MinMax, Symmetry::Asymmetric);
    assert!(o.params().is_none());
    o.observe(&[0.0, 1.0, f32::NAN]);
    o.observe(&[-0.5, 3.0]);
    assert_eq!(o.count(), 4);
    assert_eq!(o.range(), Some((-0.5, 3.0)));
    let mut p = RangeObserver::new(
        Calibration::Percentile { percentile: 50.0 },
        Symmetry::Symmetric,
    );
    p.observe(&(0..1001).map(|i| i as f32).collect::<Vec<_>>());
    let (_, hi) = p.range().unwrap();
    assert!((hi - 500.0).abs() <= 1.0, "{hi}");
}
