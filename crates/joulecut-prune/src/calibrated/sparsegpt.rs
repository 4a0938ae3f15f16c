//! [`sparsegpt`]: one-shot pruning with second-order weight updates (Frantar & Alistarh, 2023),
//! following the reference `sparsegpt.py` (`SparseGPT.fasterprune`); the function's docs give the
//! algorithm and where it departs from the reference.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::linalg::{inverse_upper_factor, sub_scaled};
use super::{InputStats, Method, PruneStats, check_layer, check_stats, prune_group};
use crate::mask::{smallest_k, units_to_prune};
use crate::{Error, Granularity, Result};

/// The retry raises the relative dampening by this factor...
const RETRY_DAMP_FACTOR: f64 = 10.0;
/// ...and to at least this.
const RETRY_DAMP_MIN: f64 = 0.01;

/// SparseGPT's settings (the reference's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SparseGptConfig {
    /// Columns whose unstructured mask is chosen together (≥ 1); 128 in the reference.
    pub block_size: usize,
    /// Dampening added to the Hessian's diagonal, relative to its mean (≥ 0); 0.01 in the
    /// reference.
    pub damp: f64,
}

impl Default for SparseGptConfig {
    fn default() -> Self {
        SparseGptConfig {
            block_size: 128,
            damp: 0.01,
        }
    }
}

impl SparseGptConfig {
    /// Fails on a zero block size or a negative or non-finite dampening.
    pub fn validate(&self) -> Result<()> {
        if self.block_size == 0 {
            return Err(Error::IncompatibleOptions {
                message: "SparseGPT's block size must be at least 1".into(),
                hint: "use the default block size of 128 columns".into(),
            });
        }
        if !self.damp.is_finite() || self.damp < 0.0 {
            return Err(Error::IncompatibleOptions {
                message: format!(
                    "SparseGPT's dampening {} must be finite and >= 0",
                    self.damp
                ),
                hint: "use the default dampening of 0.01 (1% of the Hessian's mean diagonal)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Prunes the row-major `[out, in]` weight by SparseGPT (Frantar & Alistarh, 2023), updating the
/// weights it keeps; `stats` must hold the Gram matrix ([`InputStats::new`]).
///
/// The steps of the reference `sparsegpt.py` (`SparseGPT.fasterprune`):
/// 1. `H = (2/N) XᵀX`; a dead input (`H[j,j] = 0`) gets `H[j,j] = 1` and its weight column is
///    zeroed.
/// 2. `H += damp · mean(diag H) · I`, then `U` = the upper Cholesky factor of `H⁻¹` (`UᵀU = H⁻¹`).
/// 3. Columns are walked left to right. Unstructured: at the start of each block of `block_size`
///    columns, the block's scores `w² / U[j,j]²` are ranked across *all rows* and the lowest
///    `round(sparsity · out · block)` are pruned (the reference's per-block threshold, so single
///    rows may lose more or less than `sparsity`). N:M: at the start of each group of `m` columns,
///    each row prunes the `m - n` lowest scores of the group.
/// 4. Pruning column `c` of a row: `e = w[c] / U[c,c]`, `w[c] = 0`, and
///    `w[c+1..] -= e · U[c, c+1..]` — the optimal-brain-surgeon update that moves the lost output
///    onto the weights still to come.
///
/// The reference defers the updates of later blocks to one matrix product per block (GPU
/// efficiency); applying them at once gives the same weights, so each row runs on its own (on
/// rayon's threads) between two mask selections. Its threshold `scores <= sorted[⌊k⌋]` prunes
/// one weight more than `k` (and every tie); here exactly `k` go, ties to the lower index. N:M
/// groups are aligned to absolute columns, as the reference's are when `block_size` is a multiple
/// of `m`.
///
/// If the Cholesky factorisation fails (a singular or indefinite `H`, e.g. fewer calibration
/// tokens than inputs with `damp = 0`), it is retried once with the dampening raised to
/// `max(10 · damp, 0.01)`; [`PruneStats::damp`] reports the one used, and
/// [`Error::NotPositiveDefinite`] the failure of both.
pub fn sparsegpt(
    name: &str,
    weight: &mut [f32],
    shape: [usize; 2],
    stats: &InputStats,
    granularity: Granularity,
    sparsity: f64,
    cfg: &SparseGptConfig,
) -> Result<PruneStats> {
    check_layer(
        Method::SparseGpt,
        name,
        weight,
        shape,
        granularity,
        sparsity,
    )?;
    cfg.validate()?;
    let [out, in_] = shape;
    check_stats(name, in_, stats, true)?;
    let mut h = stats.hessian().ok_or_else(|| Error::InvalidCalibration {
        name: name.into(),
        reason: "SparseGPT needs the inputs' Gram matrix".into(),
        hint: "collect the inputs with InputStats::new",
    })?;
    let dead: Vec<bool> = (0..in_).map(|j| h[j * in_ + j] == 0.0).collect();
    for j in (0..in_).filter(|j| dead[*j]) {
        h[j * in_ + j] = 1.0;
    }
    let (u, damp) = factor(name, &h, in_, cfg.damp)?;
    drop(h);

    let mut w: Vec<f64> = weight
        .iter()
        .enumerate()
        .map(|(k, v)| if dead[k % in_] { 0.0 } else { f64::from(*v) })
        .collect();
    if !w.is_empty() {
        match granularity {
            Granularity::Nm { n, m } => w
                .par_chunks_mut(in_)
                .for_each(|row| prune_row_nm(row, &u, n, m)),
            _ => prune_blocks(&mut w, &u, [out, in_], sparsity, cfg.block_size),
        }
    }
    let original = weight.to_vec();
    for (dst, v) in weight.iter_mut().zip(&w) {
        *dst = *v as f32;
    }
    let mut report = PruneStats::measure(
        Method::SparseGpt,
        granularity,
        &original,
        weight,
        Some(stats),
    )?;
    report.damp = Some(damp);
    Ok(report)
}

/// `U` of the dampened `h`, retrying once with a larger dampening; returns `U` and the relative
/// dampening used.
fn factor(name: &str, h: &[f64], n: usize, damp: f64) -> Result<(Vec<f64>, f64)> {
    let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n.max(1) as f64;
    let retry = (damp * RETRY_DAMP_FACTOR).max(RETRY_DAMP_MIN);
    let mut failure = Error::NotPositiveDefinite {
        name: name.into(),
        damp,
        pivot: 0,
    };
    for rel in [damp, retry] {
        let mut hd = h.to_vec();
        for j in 0..n {
            hd[j * n + j] += rel * mean;
        }
        match inverse_upper_factor(&hd, n) {
            Ok(u) => return Ok((u, rel)),
            Err(e) => {
                failure = Error::NotPositiveDefinite {
                    name: name.into(),
                    damp: rel,
                    pivot: e.pivot,
                }
            }
        }
    }
    Err(failure)
}

/// Prunes column `c` of one row and moves its loss onto the later columns.
fn prune_column(row: &mut [f64], u: &[f64], c: usize) {
    let n = row.len();
    let u_row = &u[c * n..(c + 1) * n];
    let e = row[c] / u_row[c];
    row[c] = 0.0;
    if e != 0.0 {
        sub_scaled(&mut row[c + 1..], e, &u_row[c + 1..]);
    }
}

/// Unstructured: one mask per block of columns, ranked across all rows, then the rows' updates.
fn prune_blocks(w: &mut [f64], u: &[f64], [out, in_]: [usize; 2], sparsity: f64, block: usize) {
    for i1 in (0..in_).step_by(block) {
        let i2 = (i1 + block).min(in_);
        let count = i2 - i1;
        let scores: Vec<f64> = w
            .par_chunks(in_)
            .flat_map_iter(|row| {
                (i1..i2).map(move |c| {
                    let d = u[c * in_ + c];
                    row[c] * row[c] / (d * d)
                })
            })
            .collect();
        let k = units_to_prune(sparsity, out * count);
        let pruned = smallest_k(&scores, k, f64::total_cmp);
        w.par_chunks_mut(in_)
            .zip(pruned.par_chunks(count))
            .for_each(|(row, pruned)| {
                for (i, _) in pruned.iter().enumerate().filter(|(_, p)| **p) {
                    prune_column(row, u, i1 + i);
                }
            });
    }
}

/// N:M for one row: each group's mask from the row as it stands when the group is reached.
fn prune_row_nm(row: &mut [f64], u: &[f64], n: usize, m: usize) {
    let in_ = row.len();
    let mut scores = vec![0.0f64; m];
    let mut pruned = vec![false; m];
    for g in (0..in_).step_by(m) {
        for (k, s) in scores.iter_mut().enumerate() {
            let (c, d) = (g + k, u[(g + k) * in_ + g + k]);
            *s = row[c] * row[c] / (d * d);
        }
        pruned.fill(false);
        prune_group(&scores, n, &mut pruned);
        for k in (0..m).filter(|k| pruned[*k]) {
            prune_column(row, u, g + k);
        }
    }
}

#[cfg(test)]
mod tests {
    use joulecut_testkit::XorShift64;

    use super::*;
    use crate::calibrated::linalg::tests::{inverse_oracle, upper_cholesky_oracle};

    /// Correlated inputs with features of different scales.
    fn stats(in_: usize, tokens: usize, seed: u64) -> (InputStats, Vec<f32>) {
        let mut rng = XorShift64::new(seed);
        let mix = rng.signed_vec(in_ * in_, 1.0);
        let x: Vec<f32> = (0..tokens)
            .flat_map(|_| {
                let z = rng.signed_vec(in_, 1.0);
                (0..in_)
                    .map(|j| {
                        (0..in_).map(|k| z[k] * mix[k * in_ + j]).sum::<f32>() * (1 + j % 5) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut s = InputStats::new(in_);
        s.add(&x, tokens).unwrap();
        (s, x)
    }

    fn weight(out: usize, in_: usize, seed: u64) -> Vec<f32> {
        XorShift64::new(seed).signed_vec(out * in_, 1.0)
    }

    /// The reference's algorithm as written: explicit inverse, its Cholesky factor, deferred
    /// (per-block) updates of the later columns.
    fn reference(
        w: &[f32],
        [out, n]: [usize; 2],
        stats: &InputStats,
        g: Granularity,
        sparsity: f64,
        cfg: &SparseGptConfig,
    ) -> Vec<f32> {
        let mut h = stats.hessian().unwrap();
        let mut w: Vec<f64> = w.iter().map(|v| f64::from(*v)).collect();
        for j in 0..n {
            if h[j * n + j] == 0.0 {
                h[j * n + j] = 1.0;
                (0..out).for_each(|r| w[r * n + j] = 0.0);
            }
        }
        let mean = (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64;
        (0..n).for_each(|j| h[j * n + j] += cfg.damp * mean);
        let hinv = upper_cholesky_oracle(&inverse_oracle(&h, n), n);
        for i1 in (0..n).step_by(cfg.block_size) {
            let i2 = (i1 + cfg.block_size).min(n);
            let count = i2 - i1;
            let mut mask = vec![false; out * count];
            if g == Granularity::Unstructured {
                let scores: Vec<f64> = (0..out * count)
                    .map(|k| {
                        let c = i1 + k % count;
                        w[(k / count) * n + c].powi(2) / hinv[c * n + c].powi(2)
                    })
                    .collect();
                mask = smallest_k(
                    &scores,
                    units_to_prune(sparsity, out * count),
                    f64::total_cmp,
                );
            }
            let mut err = vec![0.0f64; out * count];
            for i in 0..count {
                let c = i1 + i;
                if let Granularity::Nm { n: keep, m } = g
                    && i % m == 0
                {
                    for r in 0..out {
                        let s: Vec<f64> = (c..c + m)
                            .map(|j| w[r * n + j].powi(2) / hinv[j * n + j].powi(2))
                            .collect();
                        prune_group(&s, keep, &mut mask[r * count + i..r * count + i + m]);
                    }
                }
                for r in 0..out {
                    let q = if mask[r * count + i] {
                        0.0
                    } else {
                        w[r * n + c]
                    };
                    let e = (w[r * n + c] - q) / hinv[c * n + c];
                    for j in c..i2 {
                        w[r * n + j] -= e * hinv[c * n + j];
                    }
                    w[r * n + c] = q;
                    err[r * count + i] = e;
                }
            }
            for r in 0..out {
                for j in i2..n {
                    w[r * n + j] -= (0..count)
                        .map(|i| err[r * count + i] * hinv[(i1 + i) * n + j])
                        .sum::<f64>();
                }
            }
        }
        w.iter().map(|v| *v as f32).collect()
    }

    fn assert_same_weights(a: &[f32], b: &[f32]) {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(*x == 0.0, *y == 0.0, "mask differs at {k}: {x} vs {y}");
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "[{k}] {x} vs {y}");
        }
    }

    #[test]
    fn matches_the_reference_algorithm() {
        let (out, n) = (6, 32);
        let (s, _) = stats(n, 200, 1);
        let w0 = weight(out, n, 2);
        let cases = [
            (Granularity::Unstructured, 0.5, 8),
            (Granularity::Unstructured, 0.3, 12), // a short last block
            (Granularity::Unstructured, 0.6, 128), // one block
            (Granularity::nm(2, 4).unwrap(), 0.0, 8),
            (Granularity::nm(1, 4).unwrap(), 0.0, 16),
        ];
        for (g, sparsity, block_size) in cases {
            let cfg = SparseGptConfig {
                block_size,
                damp: 0.01,
            };
            let mut w = w0.clone();
            let r = sparsegpt("l", &mut w, [out, n], &s, g, sparsity, &cfg).unwrap();
            assert_same_weights(&w, &reference(&w0, [out, n], &s, g, sparsity, &cfg));
            assert_eq!(r.damp, Some(0.01));
            assert!(r.reconstruction_error.unwrap() > 0.0);
        }
    }

    #[test]
    fn every_block_loses_exactly_its_share() {
        let (out, n) = (5, 32);
        let (s, _) = stats(n, 100, 3);
        let cfg = SparseGptConfig {
            block_size: 10,
            damp: 0.01,
        };
        let mut w = weight(out, n, 4);
        let r = sparsegpt(
            "l",
            &mut w,
            [out, n],
            &s,
            Granularity::Unstructured,
            0.3,
            &cfg,
        )
        .unwrap();
        let zeros = |cols: std::ops::Range<usize>| {
            w.chunks(n)
                .map(|row| row[cols.clone()].iter().filter(|v| **v == 0.0).count())
                .sum::<usize>()
        };
        // round(0.3 · 5 · 10) = 15 in each full block, round(0.3 · 5 · 2) = 3 in the last.
        assert_eq!(
            [zeros(0..10), zeros(10..20), zeros(20..30), zeros(30..32)],
            [15, 15, 15, 3]
        );
        assert_eq!(r.zeros, 48);
    }

    #[test]
    fn nm_keeps_n_in_every_group_and_zero_sparsity_changes_nothing() {
        let (out, n) = (4, 24);
        let (s, _) = stats(n, 80, 5);
        let cfg = SparseGptConfig::default();
        let g = Granularity::nm(2, 4).unwrap();
        let mut w = weight(out, n, 6);
        let r = sparsegpt("l", &mut w, [out, n], &s, g, 0.7, &cfg).unwrap();
        assert!(
            w.chunks(4)
                .all(|grp| grp.iter().filter(|v| **v != 0.0).count() == 2)
        );
        assert_eq!(r.zeros, out * n / 2);
        let w0 = weight(out, n, 6);
        let mut w = w0.clone();
        let r = sparsegpt(
            "l",
            &mut w,
            [out, n],
            &s,
            Granularity::Unstructured,
            0.0,
            &cfg,
        )
        .unwrap();
        assert_eq!(w, w0);
        assert_eq!(r.reconstruction_error, Some(0.0));
    }

    #[test]
    fn a_dead_input_is_zeroed_and_needs_no_dampening() {
        let (out, n, tokens) = (3, 8, 40);
        let mut rng = XorShift64::new(7);
        let x: Vec<f32> = (0..tokens * n)
            .map(|k| if k % n == 3 { 0.0 } else { rng.signed_f32(1.0) })
            .collect();
        let mut s = InputStats::new(n);
        s.add(&x, tokens).unwrap();
        let cfg = SparseGptConfig {
            block_size: 128,
            damp: 0.0,
        };
        let mut w = weight(out, n, 8);
        let r = sparsegpt(
            "l",
            &mut w,
            [out, n],
            &s,
            Granularity::Unstructured,
            0.25,
            &cfg,
        )
        .unwrap();
        assert!(w.chunks(n).all(|row| row[3] == 0.0));
        assert!(w.iter().all(|v| v.is_finite()));
        // The dead column's zeros fill the budget first: 6 of 24 pruned, 3 of them on input 3.
        assert_eq!(r.zeros, 6);
        assert_eq!(r.damp, Some(0.0), "H[3,3] = 1 made H positive definite");
    }

    #[test]
    fn a_singular_hessian_is_retried_with_more_dampening() {
        // Tokens [0, 0, 0, 0] and [2, 2, 0, 0]: H's live block [[4, 4], [4, 4]] is exactly singular.
        let mut s = InputStats::new(4);
        s.add(&[0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0], 2).unwrap();
        let cfg = SparseGptConfig {
            block_size: 128,
            damp: 0.0,
        };
        let mut w = weight(2, 4, 9);
        let r = sparsegpt(
            "l",
            &mut w,
            [2, 4],
            &s,
            Granularity::Unstructured,
            0.5,
            &cfg,
        )
        .unwrap();
        assert_eq!(r.damp, Some(RETRY_DAMP_MIN));
        assert!(w.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn an_indefinite_hessian_fails_and_leaves_the_weight_alone() {
        // Eigenvalues 3 and -1: no dampening of 1% or 10% of the mean diagonal helps.
        let s = InputStats::from_gram(2, 4, vec![1.0, 2.0, 2.0, 1.0]);
        let w0 = weight(3, 2, 10);
        let mut w = w0.clone();
        let e = sparsegpt(
            "l",
            &mut w,
            [3, 2],
            &s,
            Granularity::Unstructured,
            0.5,
            &SparseGptConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::NotPositiveDefinite { damp, .. } if damp == 0.1),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("`l`") && e.to_string().contains("not positive definite"),
            "{e}"
        );
        assert!(e.hint().unwrap().contains("more tokens"));
        assert_eq!(w, w0);
    }

    #[test]
    fn bad_settings_and_statistics_are_refused() {
        let (s, x) = stats(8, 20, 11);
        let w0 = weight(2, 8, 12);
        let un = Granularity::Unstructured;
        let run = |s: &InputStats, cfg: SparseGptConfig| {
            let mut w = w0.clone();
            let e = sparsegpt("l", &mut w, [2, 8], s, un, 0.5, &cfg).unwrap_err();
            assert_eq!(w, w0);
            e.to_string()
        };
        let zero_block = SparseGptConfig {
            block_size: 0,
            damp: 0.01,
        };
        assert!(run(&s, zero_block).contains("block size"));
        for damp in [-0.1, f64::NAN] {
            assert!(
                run(
                    &s,
                    SparseGptConfig {
                        block_size: 8,
                        damp
                    }
                )
                .contains("dampening")
            );
        }
        let mut light = InputStats::norms_only(8);
        light.add(&x, 20).unwrap();
        assert!(run(&light, SparseGptConfig::default()).contains("Gram matrix"));
        let mut w = w0.clone();
        let e = sparsegpt(
            "l",
            &mut w,
            [2, 8],
            &s,
            Granularity::Rows,
            0.5,
            &SparseGptConfig::default(),
        );
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("sparsegpt prunes single weights")
        );
    }
}
