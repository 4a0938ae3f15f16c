//! Row-wise pruning by a score: [`magnitude`] (`|W[i,j]|`) and [`wanda`] (`|W[i,j]|·‖X[:,j]‖₂`).
//!
//! As in Wanda's reference (`lib/prune.py`), the comparison group is the output row: each row loses
//! `round(sparsity · in)` weights (the reference truncates; `round` matches the rest of this crate),
//! or, for N:M, the `m - n` lowest scores of each group of `m` consecutive inputs. Neither updates
//! the weights that remain.

use rayon::prelude::*;

use super::{InputStats, Method, PruneStats, check_layer, check_stats, prune_group};
use crate::mask::{smallest_k, units_to_prune};
use crate::{Granularity, Result};

/// Prunes the smallest `|W[i,j]|` of each output row of the row-major `[out, in]` weight.
///
/// `stats` is optional and only serves the reported reconstruction error.
pub fn magnitude(
    name: &str,
    weight: &mut [f32],
    shape: [usize; 2],
    stats: Option<&InputStats>,
    granularity: Granularity,
    sparsity: f64,
) -> Result<PruneStats> {
    check_layer(
        Method::Magnitude,
        name,
        weight,
        shape,
        granularity,
        sparsity,
    )?;
    if let Some(stats) = stats {
        check_stats(name, shape[1], stats, false)?;
    }
    let original = weight.to_vec();
    prune_rows(weight, shape[1], granularity, sparsity, |_, w| {
        f64::from(w.abs())
    });
    PruneStats::measure(Method::Magnitude, granularity, &original, weight, stats)
}

/// Prunes the smallest `|W[i,j]|·‖X[:,j]‖₂` of each output row of the row-major `[out, in]`
/// weight, with `‖X[:,j]‖₂² = stats.col_norms_sq()[j]`.
pub fn wanda(
    name: &str,
    weight: &mut [f32],
    shape: [usize; 2],
    stats: &InputStats,
    granularity: Granularity,
    sparsity: f64,
) -> Result<PruneStats> {
    check_layer(Method::Wanda, name, weight, shape, granularity, sparsity)?;
    check_stats(name, shape[1], stats, false)?;
    let norms: Vec<f64> = stats.col_norms_sq().iter().map(|v| v.sqrt()).collect();
    let original = weight.to_vec();
    prune_rows(weight, shape[1], granularity, sparsity, |j, w| {
        f64::from(w.abs()) * norms[j]
    });
    PruneStats::measure(Method::Wanda, granularity, &original, weight, Some(stats))
}

/// Zeroes the lowest `score(column, weight)` of each row (unstructured) or of each N:M group.
fn prune_rows(
    weight: &mut [f32],
    in_: usize,
    granularity: Granularity,
    sparsity: f64,
    score: impl Fn(usize, f32) -> f64 + Sync,
) {
    if in_ == 0 {
        return;
    }
    weight.par_chunks_mut(in_).for_each(|row| {
        let scores: Vec<f64> = row.iter().enumerate().map(|(j, w)| score(j, *w)).collect();
        let pruned = match granularity {
            Granularity::Nm { n, m } => {
                let mut pruned = vec![false; in_];
                for (s, p) in scores.chunks(m).zip(pruned.chunks_mut(m)) {
                    prune_group(s, n, p);
                }
                pruned
            }
            _ => smallest_k(&scores, units_to_prune(sparsity, in_), f64::total_cmp),
        };
        for (w, p) in row.iter_mut().zip(pruned) {
            if p {
                *w = 0.0;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use joulecut_testkit::XorShift64;

    use super::*;
    use crate::Error;

    fn weight(out: usize, in_: usize, seed: u64) -> Vec<f32> {
        // Non-zero, so every zero afterwards was pruned.
        XorShift64::new(seed)
            .signed_vec(out * in_, 1.0)
            .into_iter()
            .map(|v| if v == 0.0 { 0.5 } else { v })
            .collect()
    }

    fn stats(in_: usize, tokens: usize, seed: u64) -> InputStats {
        let mut rng = XorShift64::new(seed);
        let x: Vec<f32> = (0..tokens * in_)
            .map(|k| rng.signed_f32(1.0) * (1 + k % in_) as f32)
            .collect();
        let mut s = InputStats::new(in_);
        s.add(&x, tokens).unwrap();
        s
    }

    fn zeros_per_row(w: &[f32], in_: usize) -> Vec<usize> {
        w.chunks(in_)
            .map(|r| r.iter().filter(|v| **v == 0.0).count())
            .collect()
    }

    #[test]
    fn every_row_loses_exactly_its_share() {
        let (out, in_) = (7, 10);
        let s = stats(in_, 32, 1);
        for (sparsity, per_row) in [(0.0, 0), (0.25, 3), (0.5, 5), (0.9, 9)] {
            for method in [Method::Magnitude, Method::Wanda] {
                let mut w = weight(out, in_, 2);
                let r = match method {
                    Method::Wanda => wanda(
                        "l",
                        &mut w,
                        [out, in_],
                        &s,
                        Granularity::Unstructured,
                        sparsity,
                    ),
                    _ => magnitude(
                        "l",
                        &mut w,
                        [out, in_],
                        Some(&s),
                        Granularity::Unstructured,
                        sparsity,
                    ),
                }
                .unwrap();
                assert_eq!(
                    zeros_per_row(&w, in_),
                    vec![per_row; out],
                    "{method} at {sparsity}"
                );
                assert_eq!((r.zeros, r.total), (per_row * out, out * in_));
                assert_eq!(r.reconstruction_error.unwrap() == 0.0, per_row == 0);
            }
        }
    }

    #[test]
    fn nm_keeps_n_in_every_group() {
        let (out, in_) = (5, 16);
        let s = stats(in_, 32, 3);
        for (n, m) in [(2, 4), (1, 4), (4, 8), (3, 4)] {
            let g = Granularity::nm(n, m).unwrap();
            let mut a = weight(out, in_, 4);
            let mut b = a.clone();
            // The sparsity is ignored for N:M.
            wanda("l", &mut a, [out, in_], &s, g, 0.9).unwrap();
            magnitude("l", &mut b, [out, in_], None, g, 0.0).unwrap();
            for w in [&a, &b] {
                for group in w.chunks(m) {
                    assert_eq!(group.iter().filter(|v| **v != 0.0).count(), n, "{n}:{m}");
                }
            }
        }
    }

    #[test]
    fn with_equal_feature_norms_wanda_is_magnitude() {
        let (out, in_) = (6, 12);
        // Scaled one-hot tokens: XᵀX = 9·I.
        let mut x = vec![0.0f32; in_ * in_];
        (0..in_).for_each(|j| x[j * in_ + j] = 3.0);
        let mut s = InputStats::new(in_);
        s.add(&x, in_).unwrap();
        for g in [Granularity::Unstructured, Granularity::nm(2, 4).unwrap()] {
            for sparsity in [0.3, 0.5, 0.75] {
                let mut a = weight(out, in_, 5);
                let mut b = a.clone();
                wanda("l", &mut a, [out, in_], &s, g, sparsity).unwrap();
                magnitude("l", &mut b, [out, in_], Some(&s), g, sparsity).unwrap();
                assert_eq!(a, b, "{g} at {sparsity}");
            }
        }
    }

    #[test]
    fn wanda_keeps_small_weights_on_large_inputs() {
        // Equal weights; feature j has norm j + 1: the first half of each row goes.
        let (out, in_) = (3, 8);
        let x: Vec<f32> = (0..in_).map(|j| (j + 1) as f32).collect();
        let mut s = InputStats::norms_only(in_);
        s.add(&x, 1).unwrap();
        let mut w = vec![1.0f32; out * in_];
        w[7] = 0.6; // small, but on a large input: kept over w[..4]
        let r = wanda("l", &mut w, [out, in_], &s, Granularity::Unstructured, 0.5).unwrap();
        assert_eq!(&w[..in_], &[0., 0., 0., 0., 1., 1., 1., 0.6]);
        assert!(
            w[in_..]
                .chunks(in_)
                .all(|r| r == [0., 0., 0., 0., 1., 1., 1., 1.])
        );
        assert_eq!(r.reconstruction_error, None); // norms only
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let s = stats(4, 8, 6);
        let mut w = vec![1.0f32; 8];
        magnitude(
            "l",
            &mut w,
            [2, 4],
            Some(&s),
            Granularity::Unstructured,
            0.5,
        )
        .unwrap();
        assert_eq!(w, [0., 0., 1., 1., 0., 0., 1., 1.]);
    }

    #[test]
    fn bad_input_is_refused_and_leaves_the_weight_alone() {
        let s = stats(8, 16, 7);
        let w0 = weight(4, 8, 8);
        let un = Granularity::Unstructured;
        let cases: Vec<(Error, &str)> = vec![
            (
                wanda("l", &mut w0.clone(), [4, 8], &s, un, -0.1).unwrap_err(),
                "invalid sparsity -0.1",
            ),
            (
                wanda("l", &mut w0.clone(), [4, 8], &s, un, 1.0).unwrap_err(),
                "invalid sparsity 1",
            ),
            (
                wanda("l", &mut w0.clone(), [4, 8], &s, Granularity::Rows, 0.5).unwrap_err(),
                "not rows",
            ),
            (
                magnitude(
                    "l",
                    &mut w0.clone(),
                    [4, 8],
                    None,
                    Granularity::Channels,
                    0.5,
                )
                .unwrap_err(),
                "not channels",
            ),
            (
                wanda("l", &mut w0.clone(), [5, 8], &s, un, 0.5).unwrap_err(),
                "expected [5, 8], got [32]",
            ),
            (
                wanda("l", &mut w0.clone(), [8, 4], &s, un, 0.5).unwrap_err(),
                "8 input features, the weight has 4",
            ),
            (
                wanda("l", &mut w0.clone(), [4, 8], &InputStats::new(8), un, 0.5).unwrap_err(),
                "no calibration tokens",
            ),
            (
                wanda(
                    "l",
                    &mut w0.clone(),
                    [4, 8],
                    &s,
                    Granularity::nm(2, 3).unwrap(),
                    0.5,
                )
                .unwrap_err(),
                "(dim 1, size 8) is not divisible by 3",
            ),
        ];
        for (e, needle) in cases {
            assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
            assert!(e.to_string().contains("`l`"), "{e}");
            assert!(e.is_bad_input());
        }
        let mut nan = InputStats::new(8);
        nan.add(&[f32::INFINITY; 8], 1).unwrap();
        let mut w = w0.clone();
        let e = wanda("l", &mut w, [4, 8], &nan, un, 0.5).unwrap_err();
        assert!(e.to_string().contains("NaN or infinite"), "{e}");
        assert_eq!(w, w0);
    }
}
