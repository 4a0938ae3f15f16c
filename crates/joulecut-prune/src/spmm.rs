//! The blocked sparse × dense kernel behind [`crate::CsrMatrix::matmul_into`] at batches ≥ 4.
//!
//! At 50% density a sparse product does half the multiply-adds of a dense one, but every
//! multiply-add needs its own load of `x` (no register reuse across output rows, as a dense GEMM
//! has). It only beats the dense GEMM when those loads hit L1 and nothing else gets in the way, so
//! the weights are laid out once, at construction, for exactly that:
//! * rows go in groups of [`GROUP`], interleaved step by step (padded to the group's longest row
//!   with zero weights that read an all-zero row of `x`), so a `T`-sample tile keeps
//!   `GROUP · T / lanes` independent accumulators in registers: enough to hide the FMA latency
//!   (a single row at T = 16 had two and waited on them);
//! * columns go in blocks of at most [`BLOCK_COLS`], so a tile's transposed block of `x`
//!   (`[block, T]`) stays in L1 while every row group walks it; partial sums go to a scratch
//!   between blocks;
//! * rows groups go in chunks of [`CHUNK`] groups, and a chunk walks every column block before
//!   the next starts, so its partial sums (4 KiB at T = 16) stay in L1 too; the weights are stored
//!   in exactly that order, one sequential stream;
//! * the transposed tile is 64-byte aligned: a 16-sample row of `x` is then one cache line, not
//!   two (unaligned, every other load split a line);
//! * column indices are `u16`, local to their block;
//! * outputs leave as `GROUP` contiguous floats per sample, not one scattered float per sample.
//!
//! The scratch buffers are per thread and reused, so a call allocates nothing once warm.

use std::cell::RefCell;

use joulecut_ops::Isa;

/// Output rows computed together.
pub(crate) const GROUP: usize = 4;
/// Widest column block: 384 columns × 16 samples × 4 bytes = 24 KiB of `x` per tile, inside a
/// 32 KiB L1 beside the streamed weights.
const BLOCK_COLS: usize = 192;
/// Row groups that walk the column blocks together.
const CHUNK: usize = 16;

/// The weights of a [`crate::CsrMatrix`], grouped and blocked for the tile kernel.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Blocked {
    rows: usize,
    /// Column-block boundaries (`blocks + 1` entries, first 0, last `cols`).
    bounds: Vec<usize>,
    /// First step and step count of each (block, group) segment, at `block · groups + group`.
    seg: Vec<[usize; 2]>,
    /// `GROUP` weights per step.
    vals: Vec<f32>,
    /// `GROUP` block-local column indices per step; the block's width marks a padding step.
    idx: Vec<u16>,
}

impl Blocked {
    /// Lays out CSR arrays (column indices ascending within each row).
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        row_ptr: &[usize],
        col_idx: &[u32],
        values: &[f32],
    ) -> Self {
        let blocks = cols.div_ceil(BLOCK_COLS).max(1);
        let width = cols.div_ceil(blocks);
        let bounds: Vec<usize> = (0..=blocks).map(|b| (b * width).min(cols)).collect();
        let groups = rows.div_ceil(GROUP);
        let mut cursor: Vec<usize> = row_ptr[..rows].to_vec();
        let mut bl = Blocked {
            rows,
            bounds,
            seg: Vec::with_capacity(blocks * groups + 1),
            vals: Vec::with_capacity(values.len() + values.len() / 8),
            idx: Vec::with_capacity(values.len() + values.len() / 8),
        };
        bl.seg = vec![[0, 0]; blocks * groups];
        for c0 in (0..groups).step_by(CHUNK) {
            for b in 0..blocks {
                let (k0, k1) = (bl.bounds[b], bl.bounds[b + 1]);
                let pad = (k1 - k0) as u16;
                for g in c0..(c0 + CHUNK).min(groups) {
                    // Each row's entries in this block: [cursor, end).
                    let mut span = [(0usize, 0usize); GROUP];
                    for (rr, s) in span.iter_mut().enumerate() {
                        let r = g * GROUP + rr;
                        if r < rows {
                            let start = cursor[r];
                            let mut end = start;
                            while end < row_ptr[r + 1] && (col_idx[end] as usize) < k1 {
                                end += 1;
                            }
                            cursor[r] = end;
                            *s = (start, end);
                        }
                    }
                    let len = span.iter().map(|(a, b)| b - a).max().unwrap_or(0);
                    bl.seg[b * groups + g] = [bl.vals.len() / GROUP, len];
                    for s in 0..len {
                        for &(a, e) in &span {
                            if a + s < e {
                                bl.vals.push(values[a + s]);
                                bl.idx.push((col_idx[a + s] as usize - k0) as u16);
                            } else {
                                bl.vals.push(0.0);
                                bl.idx.push(pad);
                            }
                        }
                    }
                }
            }
        }
        bl
    }

    /// Bytes held by the blocked arrays.
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.bounds.len() + 2 * self.seg.len()) * size_of::<usize>()
            + self.vals.len() * 4
            + self.idx.len() * 2
    }

    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    pub(crate) fn blocks(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Floats of a transposed tile of `T` samples: each block's columns plus one zero row.
    pub(crate) fn tile_len<const T: usize>(&self) -> usize {
        (self.bounds[self.blocks()] + self.blocks()) * T
    }

    /// Transposes samples `x[j]` (`j < nb ≤ T`, each `cols` long) into `xt`, block by block,
    /// each block followed by a zero row; samples `nb..T` are zero.
    pub(crate) fn transpose_tile<const T: usize>(&self, x: &[f32], nb: usize, xt: &mut [f32]) {
        let cols = self.bounds[self.blocks()];
        if nb < T {
            xt.fill(0.0);
        }
        for b in 0..self.blocks() {
            let (k0, k1) = (self.bounds[b], self.bounds[b + 1]);
            let base = (k0 + b) * T;
            xt[base + (k1 - k0) * T..base + (k1 - k0 + 1) * T].fill(0.0);
            for j in 0..nb {
                let xr = &x[j * cols + k0..j * cols + k1];
                for (c, v) in xr.iter().enumerate() {
                    xt[base + c * T + j] = *v;
                }
            }
        }
    }
}

/// Where a tile's outputs go: sample `j`, row `r` lands at `y[j * stride + r - row0]`.
pub(crate) struct Out<'a> {
    pub(crate) y: &'a mut [f32],
    pub(crate) stride: usize,
    pub(crate) row0: usize,
}

/// Partial sums a thread keeps between column blocks: one chunk of row groups.
pub(crate) const fn part_len<const T: usize>() -> usize {
    CHUNK * GROUP * T
}

/// One tile of `nb ≤ T` samples (`xt` from [`Blocked::transpose_tile`]) through the row groups
/// `g0..g1`; `part` holds [`part_len`] partial sums between column blocks.
#[inline(always)]
fn tile_body<const T: usize, const H: usize, const FMA: bool>(
    bl: &Blocked,
    xt: &[f32],
    (g0, g1): (usize, usize),
    bias: Option<&[f32]>,
    part: &mut [f32],
    nb: usize,
    out: &mut Out<'_>,
) {
    let blocks = bl.blocks();
    let groups = bl.groups();
    assert!(xt.len() >= bl.tile_len::<T>(), "tile too short");
    assert!(part.len() >= part_len::<T>(), "scratch too short");
    assert!(g1 <= groups && g0 <= g1);
    for c0 in (g0..g1).step_by(CHUNK) {
        for b in 0..blocks {
            let (k0, k1) = (bl.bounds[b], bl.bounds[b + 1]);
            // Every index of this block is ≤ k1 - k0 (the zero row).
            let xb = &xt[(k0 + b) * T..(k1 + b + 1) * T];
            let (first, last) = (b == 0, b + 1 == blocks);
            for g in c0..(c0 + CHUNK).min(g1) {
                let seg = bl.seg[b * groups + g];
                group_block::<T, H, FMA>(bl, xb, seg, (g, c0), (first, last), bias, part, nb, out);
            }
        }
    }
}

/// Row group `g` over one column block `xb` (its weights: `seg` = first step, step count):
/// starts from the bias (`first`) or the partial sums, ends in `out` (`last`) or the partial sums.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn group_block<const T: usize, const H: usize, const FMA: bool>(
    bl: &Blocked,
    xb: &[f32],
    [s0, len]: [usize; 2],
    (g, c0): (usize, usize),
    (first, last): (bool, bool),
    bias: Option<&[f32]>,
    part: &mut [f32],
    nb: usize,
    out: &mut Out<'_>,
) {
    let pg = &mut part[(g - c0) * GROUP * T..(g - c0 + 1) * GROUP * T];
    let vals = &bl.vals[s0 * GROUP..(s0 + len) * GROUP];
    let idx = &bl.idx[s0 * GROUP..(s0 + len) * GROUP];
    // H rows at a time: as many accumulators as the registers hold.
    for h in (0..GROUP).step_by(H) {
        if g * GROUP + h >= bl.rows {
            break; // only padding rows left
        }
        let mut acc = [[0.0f32; T]; H];
        let ph = &mut pg[h * T..(h + H) * T];
        if first {
            if let Some(bias) = bias {
                for (i, a) in acc.iter_mut().enumerate() {
                    let r = g * GROUP + h + i;
                    if r < bl.rows {
                        *a = [bias[r]; T];
                    }
                }
            }
        } else {
            for (a, p) in acc.iter_mut().zip(ph.chunks_exact(T)) {
                a.copy_from_slice(p);
            }
        }
        for (v, c) in vals.chunks_exact(GROUP).zip(idx.chunks_exact(GROUP)) {
            for i in 0..H {
                let c = c[h + i] as usize;
                debug_assert!(c * T + T <= xb.len());
                // SAFETY: `Blocked::new` stores indices ≤ the block's width, and `xb` holds
                // width + 1 rows of T.
                let xr = unsafe { &*(xb.as_ptr().add(c * T) as *const [f32; T]) };
                let v = v[h + i];
                for j in 0..T {
                    acc[i][j] = if FMA {
                        v.mul_add(xr[j], acc[i][j])
                    } else {
                        acc[i][j] + v * xr[j]
                    };
                }
            }
        }
        if last {
            let r0 = g * GROUP + h;
            let rows = (bl.rows - r0).min(H);
            let at = r0 - out.row0;
            for (j, yj) in out.y.chunks_mut(out.stride).take(nb).enumerate() {
                for (i, y) in yj[at..at + rows].iter_mut().enumerate() {
                    *y = acc[i][j];
                }
            }
        } else {
            for (a, p) in acc.iter().zip(ph.chunks_exact_mut(T)) {
                p.copy_from_slice(a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn tile_avx512<const T: usize>(
    bl: &Blocked,
    xt: &[f32],
    gs: (usize, usize),
    bias: Option<&[f32]>,
    part: &mut [f32],
    nb: usize,
    out: &mut Out<'_>,
) {
    // 4 rows × T/16 vectors: 8 accumulators of 32 registers at T = 32.
    tile_body::<T, GROUP, true>(bl, xt, gs, bias, part, nb, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2<const T: usize>(
    bl: &Blocked,
    xt: &[f32],
    gs: (usize, usize),
    bias: Option<&[f32]>,
    part: &mut [f32],
    nb: usize,
    out: &mut Out<'_>,
) {
    // 8 accumulators of 16 registers: 4 rows at T = 16, 2 at T = 32.
    if T <= 16 {
        tile_body::<T, GROUP, true>(bl, xt, gs, bias, part, nb, out)
    } else {
        tile_body::<T, 2, true>(bl, xt, gs, bias, part, nb, out)
    }
}

/// [`tile_body`] compiled for the best instruction set `isa` allows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_dispatch<const T: usize>(
    isa: Isa,
    bl: &Blocked,
    xt: &[f32],
    gs: (usize, usize),
    bias: Option<&[f32]>,
    part: &mut [f32],
    nb: usize,
    out: &mut Out<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.avx512f_fma() {
            // SAFETY: the CPU supports the features this function is compiled for (an `Isa` only
            // reports detected features).
            return unsafe { tile_avx512::<T>(bl, xt, gs, bias, part, nb, out) };
        }
        if isa.avx2_fma() {
            // SAFETY: as above.
            return unsafe { tile_avx2::<T>(bl, xt, gs, bias, part, nb, out) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    tile_body::<T, GROUP, false>(bl, xt, gs, bias, part, nb, out)
}

thread_local! {
    /// This thread's transposed tile and partial sums.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The calling thread's staging for outputs computed by row groups on several threads.
    pub(crate) static STAGING: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f(xt, part)` on this thread's scratch (`xt` 64-byte aligned), grown to the sizes asked
/// for.
pub(crate) fn with_scratch<R>(
    xt_len: usize,
    part_len: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    const ALIGN: usize = 64 / size_of::<f32>();
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (xt, part) = &mut *s;
        if xt.len() < xt_len + ALIGN {
            xt.resize(xt_len + ALIGN, 0.0);
        }
        if part.len() < part_len {
            part.resize(part_len, 0.0);
        }
        let at = xt.as_ptr().align_offset(64).min(ALIGN);
        f(&mut xt[at..at + xt_len], &mut part[..part_len])
    })
}

/// Row groups in total, for splitting work.
pub(crate) fn group_count(bl: &Blocked) -> usize {
    bl.groups()
}
