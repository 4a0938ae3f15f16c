//! 2:4 weights that run as 2:4: a matrix with at most two non-zeros in every group of four inputs,
//! stored as its kept values and 2-bit positions, and a small-batch kernel that reads only those.
//!
//! At batch 1 a dense linear layer is bound by streaming its weights. The 2:4 form streams half
//! the values plus 1/16 of their size in positions, and selects the matching inputs in registers:
//!
//! * rows are taken in blocks of 8 (4 *pairs*), inputs in *windows* of 8 (2 groups of 4);
//! * a pair's 8 lanes for one window are `[r0 g0 a, r0 g0 b, r1 g0 a, r1 g0 b | the same for g1]`:
//!   each 128-bit half of the register belongs to one group, so the window of `x` loaded as it
//!   lies is permuted within halves (`vpermilps`) into the lanes' inputs, and one FMA does 8 of
//!   the layer's multiply-adds;
//! * a pair's 16 position bits (2 per lane) share a `u32` with the next pair's; a variable shift
//!   per lane leaves each lane's position in the two bits `vpermilps` reads.
//!
//! Batches above [`TwoFourMatrix::MAX_BATCH`] are faster through the dense GEMM, which reads each
//! weight once for many rows; callers keep a dense copy for them (see `joulecut-models`).
//!
//! [`TwoFourMatrix::matmul_portable`] runs the same layout without SIMD; the tests hold both to the
//! dense product.
//!
//! ```
//! use joulecut_prune::TwoFourMatrix;
//! // row 0 keeps inputs 1 and 2 of its group, row 1 keeps input 3
//! let w = [0., 2., 3., 0., 0., 0., 0., 5.];
//! let m = TwoFourMatrix::from_dense(2, 4, &w).unwrap();
//! let mut y = [0f32; 2];
//! m.matmul_into(&[1., 1., 1., 1.], 1, Some(&[0.5, 0.0]), false, &mut y);
//! assert_eq!(y, [5.5, 5.0]);
//! ```

#[cfg(target_arch = "x86_64")]
use joulecut_ops::Isa;

use crate::{Error, Result};

/// Rows per block.
const BLOCK: usize = 8;
/// Inputs per window.
const WINDOW: usize = 8;

/// A `[rows, cols]` f32 matrix with at most 2 non-zeros in each aligned group of 4 columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoFourMatrix {
    rows: usize,
    cols: usize,
    windows: usize,
    /// `[block][window][pair][lane]` kept values (zeros where a group kept fewer than two).
    values: Vec<f32>,
    /// `[block][window][2]`: word `h` holds pair `2h` in bits 0..16 and `2h + 1` in 16..32, lane
    /// `l`'s position in its group at bits `2l`.
    positions: Vec<u32>,
}

impl TwoFourMatrix {
    /// The largest batch worth running here rather than through the dense GEMM (measured on
    /// LeNet-300-100, AMD EPYC Zen 3: 2.0x dense at batch 1, 1.17x at 2, slower from 4).
    pub const MAX_BATCH: usize = 2;

    /// Whether a dense row-major `[rows, cols]` matrix fits the pattern: `cols` a multiple of 4
    /// and at most two non-zeros in every group of four.
    pub fn fits(rows: usize, cols: usize, dense: &[f32]) -> bool {
        rows > 0
            && cols > 0
            && cols % 4 == 0
            && dense.len() == rows * cols
            && dense
                .chunks_exact(4)
                .all(|g| g.iter().filter(|v| **v != 0.0).count() <= 2)
    }

    /// The 2:4 form of a dense row-major `[rows, cols]` matrix, or an error naming what breaks
    /// the pattern.
    pub fn from_dense(rows: usize, cols: usize, dense: &[f32]) -> Result<Self> {
        crate::sparse::check_dense_len(rows, cols, dense)?;
        if !Self::fits(rows, cols, dense) {
            return Err(Error::NotTwoFour { rows, cols });
        }
        let blocks = rows.div_ceil(BLOCK);
        let windows = cols.div_ceil(WINDOW);
        let mut values = vec![0.0f32; blocks * windows * BLOCK * WINDOW / 2];
        let mut positions = vec![0u32; blocks * windows * 2];
        for r in 0..rows {
            let (b, pair, lane_row) = (r / BLOCK, (r % BLOCK) / 2, r % 2);
            for g in 0..cols / 4 {
                let (w, half) = (g / 2, g % 2);
                let group = &dense[r * cols + 4 * g..r * cols + 4 * g + 4];
                let unit = b * windows + w;
                for (slot, (pos, v)) in group
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .enumerate()
                {
                    let lane = 4 * half + 2 * lane_row + slot;
                    values[(unit * 4 + pair) * 8 + lane] = *v;
                    let shift = 16 * (pair % 2) + 2 * lane;
                    positions[unit * 2 + pair / 2] |= (pos as u32) << shift;
                }
            }
        }
        Ok(TwoFourMatrix {
            rows,
            cols,
            windows,
            values,
            positions,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of values and positions (the padding of the last block and window included).
    pub fn memory_bytes(&self) -> usize {
        self.values.len() * 4 + self.positions.len() * 4
    }

    /// `y = x · Wᵀ (+ b)`, then ReLU when `relu`: `x` is `[batch, cols]`, `y` is `[batch, rows]`
    /// (overwritten). Runs on the calling thread; meant for `batch ≤` [`Self::MAX_BATCH`].
    ///
    /// # Panics
    /// When the slice lengths do not match the shapes.
    pub fn matmul_into(
        &self,
        x: &[f32],
        batch: usize,
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        self.check(x, batch, bias, y);
        #[cfg(target_arch = "x86_64")]
        if Isa::detected().avx2_fma() {
            // SAFETY: AVX2 and FMA were detected; `check` validated the slice lengths.
            unsafe { x86::matmul(self, x, batch, bias, relu, y) };
            return;
        }
        self.matmul_portable(x, batch, bias, relu, y);
    }

    /// The same product through the same layout without SIMD.
    ///
    /// # Panics
    /// When the slice lengths do not match the shapes.
    pub fn matmul_portable(
        &self,
        x: &[f32],
        batch: usize,
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        self.check(x, batch, bias, y);
        for (xs, ys) in x.chunks_exact(self.cols).zip(y.chunks_exact_mut(self.rows)) {
            for (r, yr) in ys.iter_mut().enumerate() {
                let (b, pair, lane_row) = (r / BLOCK, (r % BLOCK) / 2, r % 2);
                let mut acc = 0.0f32;
                for w in 0..self.windows {
                    let unit = b * self.windows + w;
                    let word = self.positions[unit * 2 + pair / 2] >> (16 * (pair % 2));
                    for half in 0..2 {
                        for slot in 0..2 {
                            let lane = 4 * half + 2 * lane_row + slot;
                            let pos = ((word >> (2 * lane)) & 3) as usize;
                            let c = w * WINDOW + 4 * half + pos;
                            if c < self.cols {
                                acc += self.values[(unit * 4 + pair) * 8 + lane] * xs[c];
                            }
                        }
                    }
                }
                let v = acc + bias.map_or(0.0, |b| b[r]);
                *yr = if relu { v.max(0.0) } else { v };
            }
        }
    }

    fn check(&self, x: &[f32], batch: usize, bias: Option<&[f32]>, y: &[f32]) {
        assert_eq!(x.len(), batch * self.cols, "x must be [batch, cols]");
        assert_eq!(y.len(), batch * self.rows, "y must be [batch, rows]");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias must be [rows]");
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK, TwoFourMatrix, WINDOW};

    /// Lane `l`'s shift for the pair in the low and the high 16 bits of a position word.
    const SHIFTS: [[i32; 8]; 2] = [
        [0, 2, 4, 6, 8, 10, 12, 14],
        [16, 18, 20, 22, 24, 26, 28, 30],
    ];

    /// # Safety
    /// AVX2 and FMA must be present; the slices must match the shapes (`TwoFourMatrix::check`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul(
        m: &TwoFourMatrix,
        x: &[f32],
        batch: usize,
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        let mut s = 0;
        // Samples in twos, then one: each pass over the weights serves both. (Four at a time, with
        // two pairs of rows per pass, measured slower than the dense GEMM at batch 4 and 8.)
        while batch - s >= 2 {
            for b in 0..m.rows.div_ceil(BLOCK) {
                unsafe { block::<2>(m, x, s, b, bias, relu, y) };
            }
            s += 2;
        }
        if s < batch {
            for b in 0..m.rows.div_ceil(BLOCK) {
                unsafe { block::<1>(m, x, s, b, bias, relu, y) };
            }
        }
    }

    /// The two 128-bit halves of `a` added.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn halves(a: __m256) -> __m128 {
        _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1))
    }

    /// Samples `s0..s0 + S` against the 4 pairs of row block `b`: the accumulators stay in
    /// registers over every window, then each pair's lanes are summed into its two rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const S: usize>(
        m: &TwoFourMatrix,
        x: &[f32],
        s0: usize,
        b: usize,
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) {
        let shifts = [
            unsafe { _mm256_loadu_si256(SHIFTS[0].as_ptr().cast()) },
            unsafe { _mm256_loadu_si256(SHIFTS[1].as_ptr().cast()) },
        ];
        let full = m.cols / WINDOW;
        let xp = unsafe { x.as_ptr().add(s0 * m.cols) };
        let unit0 = b * m.windows;
        let mut acc = [[_mm256_setzero_ps(); S]; BLOCK / 2];
        for w in 0..m.windows {
            let unit = unit0 + w;
            let mut xv = [_mm256_setzero_ps(); S];
            for (s, xv) in xv.iter_mut().enumerate() {
                let at = unsafe { xp.add(s * m.cols + w * WINDOW) };
                // The last window of a width ≡ 4 (mod 8) holds one group: its other half is zero.
                *xv = if w < full {
                    unsafe { _mm256_loadu_ps(at) }
                } else {
                    _mm256_zextps128_ps256(unsafe { _mm_loadu_ps(at) })
                };
            }
            let pos = unsafe { m.positions.as_ptr().add(unit * 2) };
            let vals = unsafe { m.values.as_ptr().add(unit * 32) };
            for (pair, acc) in acc.iter_mut().enumerate() {
                let word = _mm256_set1_epi32(unsafe { *pos.add(pair / 2) } as i32);
                let idx = _mm256_srlv_epi32(word, shifts[pair % 2]);
                let v = unsafe { _mm256_loadu_ps(vals.add(pair * 8)) };
                for (acc, xv) in acc.iter_mut().zip(&xv) {
                    *acc = _mm256_fmadd_ps(_mm256_permutevar_ps(*xv, idx), v, *acc);
                }
            }
        }
        for s in 0..S {
            // Each pair's halves added: [r0, r0, r1, r1]; two pairs' sums: [r0, r1, r2, r3].
            let mut out = [0.0f32; 8];
            for q in 0..BLOCK / 4 {
                let sum = _mm_hadd_ps(halves(acc[2 * q][s]), halves(acc[2 * q + 1][s]));
                unsafe { _mm_storeu_ps(out.as_mut_ptr().add(4 * q), sum) };
            }
            let r0 = b * BLOCK;
            let yr = &mut y[(s0 + s) * m.rows..(s0 + s + 1) * m.rows];
            for (i, o) in out.iter().enumerate() {
                let r = r0 + i;
                if r < m.rows {
                    let v = o + bias.map_or(0.0, |b| b[r]);
                    yr[r] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(s: &mut u64) -> f32 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// A random `[rows, cols]` matrix with 0, 1 or 2 non-zeros per group of four.
    fn two_four(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        let mut w = vec![0.0; rows * cols];
        for g in w.chunks_exact_mut(4) {
            let keep = ((rng(&mut s) + 0.5) * 3.0) as usize % 3;
            let a = ((rng(&mut s) + 0.5) * 4.0) as usize % 4;
            let b = (a + 1 + ((rng(&mut s) + 0.5) * 3.0) as usize % 3) % 4;
            for &p in [a, b].iter().take(keep) {
                g[p] = rng(&mut s);
            }
        }
        w
    }

    fn dense_ref(w: &[f32], x: &[f32], rows: usize, cols: usize, bias: &[f32]) -> Vec<f64> {
        x.chunks_exact(cols)
            .flat_map(|xs| {
                (0..rows).map(move |r| {
                    (0..cols)
                        .map(|c| w[r * cols + c] as f64 * xs[c] as f64)
                        .sum::<f64>()
                        + bias[r] as f64
                })
            })
            .collect()
    }

    #[test]
    fn fits_only_the_pattern() {
        assert!(TwoFourMatrix::fits(1, 4, &[1., 0., 2., 0.]));
        assert!(!TwoFourMatrix::fits(1, 4, &[1., 1., 2., 0.]));
        assert!(!TwoFourMatrix::fits(1, 6, &[1., 0., 0., 0., 0., 0.]));
        assert!(matches!(
            TwoFourMatrix::from_dense(1, 4, &[1., 1., 1., 0.]),
            Err(Error::NotTwoFour { rows: 1, cols: 4 })
        ));
    }

    /// Odd row counts (a partial block), widths ≡ 4 (mod 8) (a half window), every batch split.
    #[test]
    fn simd_and_portable_equal_the_dense_product() {
        for (rows, cols) in [
            (1, 4),
            (3, 12),
            (8, 8),
            (10, 100),
            (17, 36),
            (300, 784),
            (5, 300),
        ] {
            let w = two_four(rows, cols, (rows * 131 + cols) as u64);
            let m = TwoFourMatrix::from_dense(rows, cols, &w).unwrap();
            for batch in 1..=7 {
                let mut s = (batch * 7 + rows) as u64;
                let x: Vec<f32> = (0..batch * cols).map(|_| rng(&mut s) * 4.0).collect();
                let bias: Vec<f32> = (0..rows).map(|_| rng(&mut s)).collect();
                let want = dense_ref(&w, &x, rows, cols, &bias);
                for relu in [false, true] {
                    let (mut fast, mut slow) = (vec![0.0; batch * rows], vec![0.0; batch * rows]);
                    m.matmul_into(&x, batch, Some(&bias), relu, &mut fast);
                    m.matmul_portable(&x, batch, Some(&bias), relu, &mut slow);
                    for (i, want) in want.iter().enumerate() {
                        let want = if relu { want.max(0.0) } else { *want };
                        // f32 sums of at most `cols / 2` products of magnitude < 2
                        let tol = 1e-6 * cols as f64 + 1e-6;
                        assert!(
                            (fast[i] as f64 - want).abs() < tol
                                && (slow[i] as f64 - want).abs() < tol,
                            "{rows}x{cols} batch {batch} relu {relu} [{i}]: {} / {} vs {want}",
                            fast[i],
                            slow[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn stores_half_the_values() {
        let m = TwoFourMatrix::from_dense(300, 784, &two_four(300, 784, 3)).unwrap();
        let dense = 300 * 784 * 4;
        assert!(m.memory_bytes() * 100 < dense * 54, "{}", m.memory_bytes());
    }
}
