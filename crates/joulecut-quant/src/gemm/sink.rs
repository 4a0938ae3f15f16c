//! Tile sinks: where the kernels write finished `rows × 16` (or `× 32`) i32 tiles. [`I32Sink`]
//! copies them out; [`F32Sink`] applies the [`Requant`] epilogue on the way (the fused
//! requantisation).

use super::Requant;

/// Receives finished tiles: `acc` holds `rows × width` i32 results (row-major, `width` = 16 or 32),
/// for output rows `r0..r0+rows` and columns `c0..`.
pub(crate) trait TileSink: Sync {
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]);
}

/// Raw pointer that rayon tasks may share: every task writes a disjoint set of tiles.
#[derive(Clone, Copy)]
pub(super) struct SharedPtr<T>(pub(super) *mut T);
// SAFETY: only used for disjoint writes by the tasks of one GEMM call, which outlives them.
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

/// Copies i32 tiles into a row-major `m × n` output.
pub(super) struct I32Sink {
    pub(super) out: SharedPtr<i32>,
    pub(super) n: usize,
}

impl TileSink for I32Sink {
    #[inline(always)]
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]) {
        let cols = width.min(self.n - c0);
        for r in 0..rows {
            // SAFETY: (r0 + r, c0..c0 + cols) is inside the m × n output and owned by this tile.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.out.0.add((r0 + r) * self.n + c0), cols)
            };
            dst.copy_from_slice(&acc[r * width..r * width + cols]);
        }
    }
}

/// Requantises i32 tiles into a row-major `m × n` f32 output.
pub(super) struct F32Sink<'a> {
    pub(super) out: SharedPtr<f32>,
    pub(super) n: usize,
    pub(super) k: i32,
    /// Per-row grids and sums of the rows this sink receives (row `r` of a tile is entry `r`).
    pub(super) scales: &'a [f32],
    pub(super) zeros: &'a [i32],
    pub(super) sums: &'a [i32],
    pub(super) col_sums: &'a [i32],
    pub(super) rq: &'a Requant,
}

impl F32Sink<'_> {
    /// Requantises one row of a tile into `dst` (`dst.len()` ≤ `width` columns from `c0`).
    #[inline(always)]
    fn row(&self, row: usize, c0: usize, acc: &[i32], dst: &mut [f32]) {
        let w = dst.len();
        let sums = &self.col_sums[c0..c0 + w];
        let scales = &self.rq.scales[c0..c0 + w];
        let bias = &self.rq.bias[c0..c0 + w];
        let acc = &acc[..w];
        let (sa, za) = (self.scales[row], self.zeros[row]);
        match &self.rq.zeros {
            None => {
                for j in 0..w {
                    let v = acc[j].wrapping_sub(za.wrapping_mul(sums[j]));
                    dst[j] = v as f32 * (sa * scales[j]) + bias[j];
                }
            }
            Some(zw) => {
                let zw = &zw[c0..c0 + w];
                let sa_row = self.sums[row];
                for j in 0..w {
                    let v = acc[j]
                        .wrapping_sub(za.wrapping_mul(sums[j]))
                        .wrapping_sub(zw[j].wrapping_mul(sa_row))
                        .wrapping_add(self.k.wrapping_mul(za).wrapping_mul(zw[j]));
                    dst[j] = v as f32 * (sa * scales[j]) + bias[j];
                }
            }
        }
        if self.rq.relu {
            dst.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

impl TileSink for F32Sink<'_> {
    #[inline(always)]
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]) {
        let cols = width.min(self.n - c0);
        for r in 0..rows {
            let row = r0 + r;
            // SAFETY: (row, c0..c0 + cols) is inside the output and owned by this tile.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.out.0.add(row * self.n + c0), cols) };
            // Straight into the output: a per-row `copy_from_slice` of 16 floats was a libc
            // memmove call per row and tile (1.8 % of the int8 MLP profile).
            let acc = &acc[r * width..(r + 1) * width];
            // Fixed lengths let the compiler vectorise the epilogue without remainder loops (16:
            // one AVX2 panel; 32: the VNNI kernel's two panels).
            if cols == 16 {
                self.row(row, c0, acc, &mut dst[..16]);
            } else if cols == 32 {
                self.row(row, c0, acc, &mut dst[..32]);
            } else {
                self.row(row, c0, acc, dst);
            }
        }
    }
}
