//! Portable kernels: the scalar oracle over the packed layout, and a plain-Rust tiled kernel.

use super::{BLOCK, GROUP_K, PANEL_N, PackedWeights, Task, TileSink};

/// One row × one panel at a time, from each panel's whole weights read back through
/// [`PackedWeights::get`] (body and residual alike).
pub(super) fn reference_task<S: TileSink>(
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    sink: &S,
) {
    let mut acc = [0i32; PANEL_N];
    for p in t.p0..t.p1 {
        let cols: Vec<Vec<i8>> = (0..PANEL_N)
            .map(|c| p * PANEL_N + c)
            .map(|col| {
                (0..w.k)
                    .map(|kk| if col < w.n { w.get(col, kk) } else { 0 })
                    .collect()
            })
            .collect();
        for r in t.r0..t.r1 {
            let row = &a[r * stride..r * stride + w.k];
            for (out, col) in acc.iter_mut().zip(&cols) {
                *out = row
                    .iter()
                    .zip(col)
                    .map(|(&x, &y)| i32::from(x) * i32::from(y))
                    .sum();
            }
            sink.tile(r, 1, p * PANEL_N, PANEL_N, &acc);
        }
    }
}

const MR: usize = 4;

/// Tiles of 4 rows × 16 columns in plain Rust.
pub(super) fn task<S: TileSink>(a: &[i8], stride: usize, w: &PackedWeights, t: Task, sink: &S) {
    let kq = w.k_pad / GROUP_K;
    for p in t.p0..t.p1 {
        let panel = w.panel(p);
        for r in (t.r0..t.r1).step_by(MR) {
            let rows = MR.min(t.r1 - r);
            let mut acc = [0i32; MR * PANEL_N];
            for q in 0..kq {
                let blk = &panel[q * BLOCK..(q + 1) * BLOCK];
                for rr in 0..rows {
                    let off = (r + rr) * stride + q * GROUP_K;
                    let av = &a[off..off + GROUP_K];
                    let accr = &mut acc[rr * PANEL_N..(rr + 1) * PANEL_N];
                    for (c, o) in accr.iter_mut().enumerate() {
                        let wv = &blk[c * GROUP_K..(c + 1) * GROUP_K];
                        *o += av
                            .iter()
                            .zip(wv)
                            .map(|(&x, &y)| i32::from(x) * i32::from(y))
                            .sum::<i32>();
                    }
                }
            }
            sink.tile(r, rows, p * PANEL_N, PANEL_N, &acc[..rows * PANEL_N]);
        }
    }
}
