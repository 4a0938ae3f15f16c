//! [`InputStats`]: what the calibration inputs of one linear layer leave behind — the token count,
//! each input feature's squared norm (Wanda) and the Gram matrix `XᵀX` (SparseGPT's Hessian and the
//! reconstruction error) — accumulated batch by batch without keeping the inputs.
//!
//! ```
//! use joulecut_prune::InputStats;
//! let mut stats = InputStats::new(2);
//! stats.add(&[1.0, 2.0, 3.0, 4.0], 2)?; // two tokens of two features
//! assert_eq!(stats.tokens(), 2);
//! assert_eq!(stats.col_norms_sq(), &[10.0, 20.0]);
//! assert_eq!(stats.gram().unwrap(), &[10.0, 14.0, 14.0, 20.0]);
//! assert_eq!(stats.hessian().unwrap()[1], 14.0); // (2 / N) XᵀX with N = 2
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use joulecut_ops::{MatRef, matmul_f32};
use rayon::prelude::*;

use super::linalg::dot;
use crate::{Error, Result};

/// Rows per f32 product before it is summed into the f64 Gram matrix: large enough that the
/// product runs at GEMM speed and the f64 sum is a negligible extra pass, small enough that the
/// f32 sums inside one product stay accurate (relative error ~1e-6).
const CHUNK_ROWS: usize = 512;

/// The calibration statistics of one linear layer's input.
///
/// [`InputStats::new`] keeps the Gram matrix `XᵀX` (`in² ` f64s), which SparseGPT and the
/// reconstruction error need; [`InputStats::norms_only`] keeps only the per-feature norms, which is
/// all Wanda reads, and skips the `2·tokens·in²` flops of the product.
#[derive(Debug, Clone, PartialEq)]
pub struct InputStats {
    in_features: usize,
    tokens: usize,
    col_norms_sq: Vec<f64>,
    /// `XᵀX`, symmetric, row-major `[in, in]`.
    gram: Option<Vec<f64>>,
}

impl InputStats {
    /// Empty statistics of a layer with `in_features` inputs that keep the Gram matrix.
    pub fn new(in_features: usize) -> Self {
        InputStats {
            in_features,
            tokens: 0,
            col_norms_sq: vec![0.0; in_features],
            gram: Some(vec![0.0; in_features * in_features]),
        }
    }

    /// Empty statistics that keep only the per-feature norms (enough for magnitude and Wanda,
    /// not for SparseGPT or the reconstruction error).
    pub fn norms_only(in_features: usize) -> Self {
        InputStats {
            in_features,
            tokens: 0,
            col_norms_sq: vec![0.0; in_features],
            gram: None,
        }
    }

    /// Statistics from an explicit Gram matrix (tests of the indefinite case, which no real input
    /// can produce).
    #[cfg(test)]
    pub(crate) fn from_gram(in_features: usize, tokens: usize, gram: Vec<f64>) -> Self {
        let col_norms_sq = (0..in_features)
            .map(|j| gram[j * in_features + j])
            .collect();
        InputStats {
            in_features,
            tokens,
            col_norms_sq,
            gram: Some(gram),
        }
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Number of tokens (rows) added so far.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Whether the Gram matrix is kept (made by [`InputStats::new`]).
    pub fn has_gram(&self) -> bool {
        self.gram.is_some()
    }

    /// Adds `rows` tokens: `x` is row-major `[rows, in_features]`, one row per token.
    ///
    /// The norms are summed in f64; the Gram matrix is summed in f64 over f32 products of
    /// 512-row chunks, which run on rayon's threads. Each call also makes a few `in²` passes over
    /// the Gram matrix, so add whole batches (hundreds of tokens) rather than single sentences
    /// where the layer is wide.
    pub fn add(&mut self, x: &[f32], rows: usize) -> Result<()> {
        let n = self.in_features;
        if rows.checked_mul(n) != Some(x.len()) {
            return Err(Error::ShapeMismatch {
                name: "calibration inputs".into(),
                expected: vec![rows, n],
                actual: vec![x.len()],
            });
        }
        for row in x.chunks_exact(n.max(1)) {
            for (s, v) in self.col_norms_sq.iter_mut().zip(row) {
                *s += f64::from(*v) * f64::from(*v);
            }
        }
        if let Some(gram) = &mut self.gram {
            let mut product = vec![0.0f32; n * n];
            let threads = rayon::current_num_threads();
            for chunk in x.chunks(CHUNK_ROWS * n.max(1)) {
                let k = chunk.len() / n.max(1);
                // Xᵀ (n x k) · X (k x n), both views over the same rows; the output is column-major,
                // which for this symmetric product is the row-major layout up to rounding.
                matmul_f32(
                    (n, n, k),
                    &mut product,
                    n,
                    false,
                    MatRef::new(chunk, n, 1),
                    MatRef::new(chunk, 1, n),
                    threads,
                );
                gram.par_iter_mut()
                    .zip(product.par_iter())
                    .for_each(|(g, p)| *g += f64::from(*p));
            }
            // The product's two triangles may round differently: make the sum exactly symmetric
            // (once per call, as the pass reads one triangle across rows).
            for i in 0..n {
                for j in 0..i {
                    let mean = 0.5 * (gram[i * n + j] + gram[j * n + i]);
                    gram[i * n + j] = mean;
                    gram[j * n + i] = mean;
                }
            }
        }
        self.tokens += rows;
        Ok(())
    }

    /// Adds the statistics of other tokens of the same layer (e.g. captured on another thread).
    pub fn merge(&mut self, other: &InputStats) -> Result<()> {
        if other.in_features != self.in_features {
            return Err(Error::ShapeMismatch {
                name: "calibration statistics".into(),
                expected: vec![self.in_features],
                actual: vec![other.in_features],
            });
        }
        match (&mut self.gram, &other.gram) {
            (Some(a), Some(b)) => a.iter_mut().zip(b).for_each(|(a, b)| *a += b),
            (None, None) => {}
            _ => {
                return Err(Error::IncompatibleOptions {
                    message: "cannot merge calibration statistics with and without a Gram matrix"
                        .into(),
                    hint: "collect every part with InputStats::new, or every part with \
                           InputStats::norms_only"
                        .into(),
                });
            }
        }
        self.col_norms_sq
            .iter_mut()
            .zip(&other.col_norms_sq)
            .for_each(|(a, b)| *a += b);
        self.tokens += other.tokens;
        Ok(())
    }

    /// `Σ_t x[t, j]²` for each input feature `j` (Wanda's squared feature norms).
    pub fn col_norms_sq(&self) -> &[f64] {
        &self.col_norms_sq
    }

    /// `XᵀX`, symmetric, row-major `[in, in]`; `None` for [`InputStats::norms_only`].
    pub fn gram(&self) -> Option<&[f64]> {
        self.gram.as_deref()
    }

    /// SparseGPT's Hessian `H = (2 / N) XᵀX` over the `N` tokens seen (zeros when none);
    /// `None` for [`InputStats::norms_only`].
    pub fn hessian(&self) -> Option<Vec<f64>> {
        let scale = if self.tokens == 0 {
            0.0
        } else {
            2.0 / self.tokens as f64
        };
        self.gram
            .as_ref()
            .map(|g| g.iter().map(|v| v * scale).collect())
    }

    /// Whether every accumulated value is finite (a NaN or infinite input poisons them all).
    pub(crate) fn is_finite(&self) -> bool {
        self.col_norms_sq.iter().all(|v| v.is_finite())
            && self
                .gram
                .as_ref()
                .is_none_or(|g| g.iter().all(|v| v.is_finite()))
    }

    /// The relative reconstruction error of a pruned weight on the calibration inputs,
    /// `‖(W − W′)Xᵀ‖² / ‖WXᵀ‖²`, from the Gram matrix: `Σ_rows d G dᵀ / Σ_rows w G wᵀ` with
    /// `d = w − w′`. Both weights are row-major `[out, in_features]`.
    ///
    /// `Ok(None)` without a Gram matrix. When `W` maps every calibration input to zero the ratio
    /// is 0 if `W′` does too and infinite otherwise.
    pub fn reconstruction_error(&self, original: &[f32], pruned: &[f32]) -> Result<Option<f64>> {
        let n = self.in_features;
        if original.len() != pruned.len() || n == 0 || original.len() % n != 0 {
            return Err(Error::ShapeMismatch {
                name: "pruned weight".into(),
                expected: vec![original.len() / n.max(1), n],
                actual: vec![pruned.len()],
            });
        }
        let Some(gram) = &self.gram else {
            return Ok(None);
        };
        let (num, den) = original
            .par_chunks(QUAD_ROWS * n)
            .zip(pruned.par_chunks(QUAD_ROWS * n))
            .map(|(w, p)| {
                let w64: Vec<f64> = w.iter().map(|v| f64::from(*v)).collect();
                let d: Vec<f64> = w
                    .iter()
                    .zip(p)
                    .map(|(a, b)| f64::from(*a) - f64::from(*b))
                    .collect();
                (quad_sum(gram, n, &d), quad_sum(gram, n, &w64))
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        Ok(Some(match (num, den) {
            (num, den) if den > 0.0 => num / den,
            (num, _) if num > 0.0 => f64::INFINITY,
            _ => 0.0,
        }))
    }
}

/// Weight rows that share one pass over the Gram matrix in [`quad_sum`] (which is then read from
/// memory `out / QUAD_ROWS` times instead of `out` times).
const QUAD_ROWS: usize = 8;

/// `Σ_r v_r G v_rᵀ` over the rows of `v` (row-major `[k, n]`), from `G`'s lower triangle
/// (`v G vᵀ = Σ_i v_i (G_ii v_i + 2 Σ_{j<i} G_ij v_j)`), skipping zero entries of `v`.
fn quad_sum(gram: &[f64], n: usize, v: &[f64]) -> f64 {
    let mut total = 0.0;
    for i in 0..n {
        let (g, gii) = (&gram[i * n..i * n + i], gram[i * n + i]);
        for row in v.chunks_exact(n) {
            let vi = row[i];
            if vi != 0.0 {
                total += vi * (2.0 * dot(g, &row[..i]) + gii * vi);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use joulecut_testkit::XorShift64;

    use super::*;

    fn inputs(rows: usize, n: usize, seed: u64) -> Vec<f32> {
        XorShift64::new(seed).signed_vec(rows * n, 2.0)
    }

    fn assert_close(a: &[f64], b: &[f64], rel: f64) {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= rel * (1.0 + y.abs()), "[{k}] {x} vs {y}");
        }
    }

    /// XᵀX and the norms in plain f64.
    fn oracle(x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut g = vec![0.0; n * n];
        for row in x.chunks(n) {
            for i in 0..n {
                for j in 0..n {
                    g[i * n + j] += f64::from(row[i]) * f64::from(row[j]);
                }
            }
        }
        let norms = (0..n).map(|j| g[j * n + j]).collect();
        (g, norms)
    }

    #[test]
    fn gram_and_norms_match_the_definition_across_chunks() {
        let (rows, n) = (CHUNK_ROWS + 37, 19);
        let x = inputs(rows, n, 1);
        let mut s = InputStats::new(n);
        s.add(&x, rows).unwrap();
        let (g, norms) = oracle(&x, n);
        assert_eq!(s.tokens(), rows);
        assert_close(s.gram().unwrap(), &g, 1e-5);
        assert_close(s.col_norms_sq(), &norms, 1e-12);
        let h = s.hessian().unwrap();
        let scale = 2.0 / rows as f64;
        assert_close(&h, &g.iter().map(|v| v * scale).collect::<Vec<_>>(), 1e-5);
        // Exactly symmetric.
        let gram = s.gram().unwrap();
        assert!((0..n).all(|i| (0..n).all(|j| gram[i * n + j] == gram[j * n + i])));
    }

    #[test]
    fn adding_in_pieces_equals_one_add_and_merge_equals_sequential() {
        let (rows, n) = (300, 24);
        let x = inputs(rows, n, 2);
        let mut whole = InputStats::new(n);
        whole.add(&x, rows).unwrap();
        let mut pieces = InputStats::new(n);
        let mut parts = [InputStats::new(n), InputStats::new(n), InputStats::new(n)];
        for (k, (start, end)) in [(0, 1), (1, 100), (100, 100), (100, 300)]
            .into_iter()
            .enumerate()
        {
            pieces.add(&x[start * n..end * n], end - start).unwrap();
            parts[k % 3]
                .add(&x[start * n..end * n], end - start)
                .unwrap();
        }
        let mut merged = InputStats::new(n);
        parts.iter().for_each(|p| merged.merge(p).unwrap());
        for s in [&pieces, &merged] {
            assert_eq!(s.tokens(), rows);
            assert_close(s.col_norms_sq(), whole.col_norms_sq(), 1e-12);
            assert_close(s.gram().unwrap(), whole.gram().unwrap(), 1e-5);
        }
        // norms_only keeps the same norms and no Gram matrix.
        let mut light = InputStats::norms_only(n);
        light.add(&x, rows).unwrap();
        assert_eq!(light.col_norms_sq(), whole.col_norms_sq());
        assert!(light.gram().is_none() && light.hessian().is_none());
        assert!(matches!(
            light.merge(&whole),
            Err(Error::IncompatibleOptions { .. })
        ));
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut s = InputStats::new(4);
        let e = s.add(&[0.0; 7], 2).unwrap_err();
        assert!(e.to_string().contains("calibration inputs"), "{e}");
        assert!(matches!(
            s.merge(&InputStats::new(3)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(s.tokens(), 0);
        assert!(s.reconstruction_error(&[0.0; 8], &[0.0; 4]).is_err());
    }

    #[test]
    fn a_nan_input_is_detected() {
        let mut s = InputStats::new(2);
        s.add(&[1.0, f32::NAN], 1).unwrap();
        assert!(!s.is_finite());
    }

    #[test]
    fn reconstruction_error_is_the_relative_output_error() {
        let (rows, n, out) = (64, 8, 5);
        let x = inputs(rows, n, 3);
        let mut s = InputStats::new(n);
        s.add(&x, rows).unwrap();
        let w = XorShift64::new(4).signed_vec(out * n, 1.0);
        let mut p = w.clone();
        p.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let y = |w: &[f32]| -> Vec<f64> {
            x.chunks(n)
                .flat_map(|t| {
                    w.chunks(n).map(move |r| {
                        r.iter()
                            .zip(t)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                    })
                })
                .collect()
        };
        let (yw, yp) = (y(&w), y(&p));
        let num: f64 = yw.iter().zip(&yp).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f64 = yw.iter().map(|a| a * a).sum();
        let err = s.reconstruction_error(&w, &p).unwrap().unwrap();
        assert!(
            (err - num / den).abs() < 1e-6 * (num / den),
            "{err} vs {}",
            num / den
        );
        assert_eq!(s.reconstruction_error(&w, &w).unwrap(), Some(0.0));
        assert_eq!(
            InputStats::norms_only(n)
                .reconstruction_error(&w, &p)
                .unwrap(),
            None
        );
    }
}
