//! Dense f64 linear algebra for SparseGPT: the Cholesky factor of a symmetric positive definite
//! matrix, the inverse of a lower-triangular matrix, and from the two the upper Cholesky factor of
//! the inverse (`U` with `UᵀU = H⁻¹`), which is what the OBS updates read row by row.
//!
//! Matrices are row-major `n x n` slices. Inner products run over contiguous row prefixes with
//! several accumulators (so they vectorise), and the independent rows or columns of each step are
//! split over rayon's threads.

use rayon::prelude::*;

/// A pivot that was not positive (or not finite): the matrix is not positive definite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotPositiveDefinite {
    /// The row at which the factorisation stopped.
    pub pivot: usize,
}

/// `Σ a[k]·b[k]` over the shorter length, with eight accumulators.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `y -= a·x` elementwise over the shorter length.
pub(crate) fn sub_scaled(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y -= a * x;
    }
}

/// The lower Cholesky factor `L` of `h` (`h = L Lᵀ`); reads only the lower triangle of `h`.
///
/// Column by column (Crout): the diagonal entry from the row's finished prefix, then every row
/// below it in parallel.
pub(crate) fn cholesky_lower(h: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    debug_assert_eq!(h.len(), n * n);
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let (head, below) = l.split_at_mut((j + 1) * n);
        let row_j = &mut head[j * n..];
        let pivot = h[j * n + j] - dot(&row_j[..j], &row_j[..j]);
        // NaN is not finite either.
        if !pivot.is_finite() || pivot <= 0.0 {
            return Err(NotPositiveDefinite { pivot: j });
        }
        let d = pivot.sqrt();
        row_j[j] = d;
        let row_j = &*row_j;
        below
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(off, row_i)| {
                let i = j + 1 + off;
                row_i[j] = (h[i * n + j] - dot(&row_i[..j], &row_j[..j])) / d;
            });
    }
    Ok(l)
}

/// The inverse of a lower-triangular `l` with a non-zero diagonal, as its transpose: row `c` of the
/// result is column `c` of `l⁻¹` (zero above the diagonal, i.e. before index `c`).
///
/// Each column is an independent forward substitution against `e_c`, so columns run in parallel.
fn invert_lower_transposed(l: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0f64; n * n];
    t.par_chunks_mut(n).enumerate().for_each(|(c, x)| {
        x[c] = 1.0 / l[c * n + c];
        for i in c + 1..n {
            let row = &l[i * n..i * n + i];
            x[i] = -dot(&row[c..], &x[c..i]) / l[i * n + i];
        }
    });
    t
}

/// The upper-triangular `U` with a positive diagonal and `UᵀU = h⁻¹` (what
/// `cholesky(cholesky_inverse(cholesky(h)), upper=True)` gives in PyTorch).
///
/// It is computed without forming `h⁻¹`: with `P` the index reversal, factor `P h P = M Mᵀ`; then
/// `h = R Rᵀ` for the upper-triangular `R = P M P`, so `h⁻¹ = (R⁻¹)ᵀ R⁻¹` and `U = R⁻¹ = P M⁻¹ P`.
/// The factor is unique, so this is the same matrix for half the arithmetic and without the
/// rounding of an explicit inverse.
pub(crate) fn inverse_upper_factor(h: &[f64], n: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let rev = n.saturating_sub(1);
    let mut reversed = vec![0.0f64; n * n];
    reversed.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = h[(rev - i) * n + (rev - j)];
        }
    });
    let m = cholesky_lower(&reversed, n).map_err(|e| NotPositiveDefinite {
        pivot: rev - e.pivot,
    })?;
    // minv_t[c][i] = M⁻¹[i][c]; U[i][j] = M⁻¹[rev-i][rev-j] = minv_t[rev-j][rev-i].
    let minv_t = invert_lower_transposed(&m, n);
    let mut u = vec![0.0f64; n * n];
    u.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = minv_t[(rev - j) * n + (rev - i)];
        }
    });
    Ok(u)
}

#[cfg(test)]
pub(crate) mod tests {
    use joulecut_testkit::XorShift64;

    use super::*;

    const TOL: f64 = 1e-12;

    /// The inverse of a lower-triangular `l` with a non-zero diagonal (row-major, lower-triangular).
    fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
        transpose(&invert_lower_transposed(l, n), n)
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        let mut t = vec![0.0f64; n * n];
        t.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[j * n + i];
            }
        });
        t
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{k}] {x} vs {y}");
        }
    }

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    fn identity(n: usize) -> Vec<f64> {
        let mut e = vec![0.0; n * n];
        (0..n).for_each(|i| e[i * n + i] = 1.0);
        e
    }

    /// Gauss-Jordan with partial pivoting: the oracle for the inverse.
    pub(crate) fn inverse_oracle(a: &[f64], n: usize) -> Vec<f64> {
        let mut a = a.to_vec();
        let mut inv = identity(n);
        for c in 0..n {
            let p = (c..n)
                .max_by(|x, y| a[x * n + c].abs().total_cmp(&a[y * n + c].abs()))
                .unwrap();
            for j in 0..n {
                a.swap(c * n + j, p * n + j);
                inv.swap(c * n + j, p * n + j);
            }
            let d = a[c * n + c];
            for j in 0..n {
                a[c * n + j] /= d;
                inv[c * n + j] /= d;
            }
            for r in (0..n).filter(|r| *r != c) {
                let f = a[r * n + c];
                for j in 0..n {
                    a[r * n + j] -= f * a[c * n + j];
                    inv[r * n + j] -= f * inv[c * n + j];
                }
            }
        }
        inv
    }

    /// Textbook Cholesky–Banachiewicz, upper factor: the oracle for the factorisation.
    pub(crate) fn upper_cholesky_oracle(a: &[f64], n: usize) -> Vec<f64> {
        let mut u = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let s: f64 = (0..i).map(|k| u[k * n + i] * u[k * n + j]).sum();
                u[i * n + j] = if i == j {
                    (a[i * n + i] - s).sqrt()
                } else {
                    (a[i * n + j] - s) / u[i * n + i]
                };
            }
        }
        u
    }

    fn random_spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = XorShift64::new(seed);
        let b: Vec<f64> = (0..n * n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum::<f64>();
            }
            h[i * n + i] += 0.1;
        }
        h
    }

    #[test]
    fn dot_matches_a_plain_sum_at_every_tail_length() {
        for n in [0, 1, 7, 8, 9, 23] {
            let a: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 3.0).collect();
            let b: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < TOL, "n = {n}");
        }
    }

    #[test]
    fn cholesky_of_the_textbook_matrix() {
        let h = [4., 12., -16., 12., 37., -43., -16., -43., 98.];
        let l = cholesky_lower(&h, 3).unwrap();
        assert_close(&l, &[2., 0., 0., 6., 1., 0., -8., 5., 3.], TOL);
    }

    #[test]
    fn lower_inverse_of_the_textbook_factor() {
        let l = [2., 0., 0., 6., 1., 0., -8., 5., 3.];
        let inv = invert_lower(&l, 3);
        let third = 1.0 / 3.0;
        assert_close(
            &inv,
            &[0.5, 0., 0., -3., 1., 0., 19. * third, -5. * third, third],
            TOL,
        );
    }

    #[test]
    fn inverse_factor_of_a_2x2_by_hand() {
        // h⁻¹ = [[3, -2], [-2, 4]] / 8, whose upper factor is [[√(3/8), -1/√6], [0, 1/√3]].
        let u = inverse_upper_factor(&[4., 2., 2., 3.], 2).unwrap();
        assert_close(
            &u,
            &[
                (3.0f64 / 8.0).sqrt(),
                -1.0 / 6f64.sqrt(),
                0.0,
                1.0 / 3f64.sqrt(),
            ],
            TOL,
        );
    }

    #[test]
    fn inverse_factor_equals_the_factor_of_the_explicit_inverse() {
        for n in [1, 5, 17, 40] {
            let h = random_spd(n, n as u64);
            let u = inverse_upper_factor(&h, n).unwrap();
            let oracle = upper_cholesky_oracle(&inverse_oracle(&h, n), n);
            assert_close(&u, &oracle, 1e-8);
            // UᵀU h = I.
            let ut = transpose(&u, n);
            assert_close(&matmul(&matmul(&ut, &u, n), &h, n), &identity(n), 1e-8);
        }
    }

    #[test]
    fn not_positive_definite_names_the_pivot() {
        // Eigenvalues 3 and -1.
        assert_eq!(
            cholesky_lower(&[1., 2., 2., 1.], 2),
            Err(NotPositiveDefinite { pivot: 1 })
        );
        assert_eq!(
            cholesky_lower(&[0., 0., 0., 1.], 2),
            Err(NotPositiveDefinite { pivot: 0 })
        );
        assert!(cholesky_lower(&[f64::NAN, 0., 0., 1.], 2).is_err());
        assert!(inverse_upper_factor(&[1., 2., 2., 1.], 2).is_err());
    }
}
