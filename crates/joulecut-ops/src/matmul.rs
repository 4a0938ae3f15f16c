//! A safe front to the `gemm` crate's f32 product, the one place this workspace calls it.
//!
//! `gemm::gemm` takes raw pointers and strides, so every call used to restate the same nineteen
//! arguments under its own `unsafe`. [`matmul_f32`] takes slices, checks that the sizes and
//! strides stay inside them, and passes the fixed parts (unit scale factors, no conjugation, a
//! unit row stride for the output) itself.
//!
//! ```
//! use joulecut_ops::{MatRef, matmul_f32};
//! // Column-major 2x2 times 2x1: [[1, 2], [3, 4]] · [1, 1] = [3, 7].
//! let a = [1f32, 3., 2., 4.];
//! let b = [1f32, 1.];
//! let mut y = [0f32; 2];
//! matmul_f32((2, 1, 2), &mut y, 2, false, MatRef::new(&a, 2, 1), MatRef::new(&b, 2, 1), 1);
//! assert_eq!(y, [3., 7.]);
//! ```

use gemm::{Parallelism, gemm};

/// A read-only `rows x cols` f32 matrix inside a slice: element `(r, c)` is
/// `data[r * row_stride + c * col_stride]`. Transposing a matrix is swapping its strides.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    col_stride: usize,
    row_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A view of `data` with the given distances between columns and between rows.
    pub fn new(data: &'a [f32], col_stride: usize, row_stride: usize) -> Self {
        MatRef {
            data,
            col_stride,
            row_stride,
        }
    }
}

/// Elements a `rows x cols` matrix with these strides must find in its slice.
fn span(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    (rows - 1) * row_stride + (cols - 1) * col_stride + 1
}

fn stride(s: usize) -> isize {
    isize::try_from(s).expect("matmul_f32: stride exceeds isize::MAX")
}

/// `dst = [dst +] lhs · rhs` for `dst` `m x n` (column-major: row stride 1, column stride
/// `dst_col_stride`), `lhs` `m x k` and `rhs` `k x n`. With `accumulate` the product is added to
/// what `dst` holds, else `dst` is overwritten. `threads` > 1 lets `gemm` split the product over
/// that many of rayon's threads; 1 runs it on the calling thread.
///
/// # Panics
/// When an operand's sizes and strides reach outside its slice, or when two columns of `dst`
/// would overlap (`dst_col_stride < m` with more than one column).
pub fn matmul_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_col_stride: usize,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    threads: usize,
) {
    assert!(
        n <= 1 || dst_col_stride >= m,
        "matmul_f32: dst column stride {dst_col_stride} < {m} rows"
    );
    assert!(
        dst.len() >= span(m, n, 1, dst_col_stride),
        "matmul_f32: dst holds {} elements, {m}x{n} with column stride {dst_col_stride} needs more",
        dst.len()
    );
    for (name, a, (rows, cols)) in [("lhs", &lhs, (m, k)), ("rhs", &rhs, (k, n))] {
        assert!(
            a.data.len() >= span(rows, cols, a.row_stride, a.col_stride),
            "matmul_f32: {name} holds {} elements, {rows}x{cols} with strides (col {}, row {}) needs more",
            a.data.len(),
            a.col_stride,
            a.row_stride
        );
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every element the sizes and strides address inside its
    // slice, and distinct elements of `dst` at distinct addresses; `dst` is borrowed mutably, so
    // it cannot overlap `lhs` or `rhs`.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            stride(dst_col_stride),
            1,
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop over the same strided views.
    fn reference(
        (m, n, k): (usize, usize, usize),
        dst: &mut [f32],
        dcs: usize,
        acc: bool,
        l: MatRef<'_>,
        r: MatRef<'_>,
    ) {
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k)
                    .map(|p| {
                        l.data[i * l.row_stride + p * l.col_stride]
                            * r.data[p * r.row_stride + j * r.col_stride]
                    })
                    .sum();
                let d = &mut dst[i + j * dcs];
                *d = if acc { *d + s } else { s };
            }
        }
    }

    #[test]
    fn matches_the_triple_loop_for_every_layout() {
        let (m, n, k) = (5, 4, 3);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 2.).collect();
        let b: Vec<f32> = (0..k * n).map(|v| 1. - v as f32 * 0.25).collect();
        // Column-major and row-major views of both operands.
        let lhs = [MatRef::new(&a, m, 1), MatRef::new(&a, 1, k)];
        let rhs = [MatRef::new(&b, k, 1), MatRef::new(&b, 1, n)];
        for l in lhs {
            for r in rhs {
                for acc in [false, true] {
                    for threads in [1, 2] {
                        let mut got = vec![1f32; m * n];
                        let mut want = got.clone();
                        matmul_f32((m, n, k), &mut got, m, acc, l, r, threads);
                        reference((m, n, k), &mut want, m, acc, l, r);
                        for (g, w) in got.iter().zip(&want) {
                            assert!((g - w).abs() <= 1e-5 * (1. + w.abs()), "{g} vs {w}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "lhs holds")]
    fn short_operands_panic() {
        let mut y = [0f32; 4];
        matmul_f32(
            (2, 2, 2),
            &mut y,
            2,
            false,
            MatRef::new(&[0.; 3], 2, 1),
            MatRef::new(&[0.; 4], 2, 1),
            1,
        );
    }

    #[test]
    #[should_panic(expected = "dst column stride")]
    fn overlapping_output_columns_panic() {
        let mut y = [0f32; 4];
        let a = [0f32; 4];
        matmul_f32(
            (2, 2, 2),
            &mut y,
            1,
            false,
            MatRef::new(&a, 2, 1),
            MatRef::new(&a, 2, 1),
            1,
        );
    }
}
