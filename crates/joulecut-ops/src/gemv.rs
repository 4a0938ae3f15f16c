//! Small-batch `y = x·Wᵀ + b` (optionally ReLU) straight from the row-major weights.
//!
//! At batch 1-4 a general GEMM spends most of its time packing `W` into panels (the whole
//! 784x300 matrix, every call) for a product that reads each weight once. Here each output is
//! a dot product of a contiguous weight row with the input row: no packing, no allocation, one
//! pass over `W` shared by all rows of the batch. Four weight rows are processed together so each
//! input load feeds four FMAs. At batch 1, big layers split their output rows over two rayon tasks.

use crate::storage::threads;

/// Batches up to this size take this path (larger ones amortise the GEMM's packing).
pub(crate) const MAX_BATCH: usize = 4;

/// Multiply-adds from which the output rows are split across threads.
const PAR_MACS: usize = 1 << 17;

/// `y[r, j] = b[j] + Σ_k x[r, k] · w[j, k]` for `r < n`, then ReLU if asked.
/// `x`: `[n, i]`, `w`: `[o, i]`, `b`: `[o]`, `y`: `[n, o]`, all row-major.
pub(crate) fn small_batch(
    x: &[f32],
    n: usize,
    w: &[f32],
    (o, i): (usize, usize),
    b: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    debug_assert!(n <= MAX_BATCH && x.len() == n * i && w.len() == o * i && y.len() == n * o);
    if n == 1 && o * i >= PAR_MACS && o >= 16 && threads() > 1 {
        // Batch 1 is the latency case: split the output rows (independent dot products) in two.
        let half = (o / 2 + 3) & !3;
        let (w0, w1) = w.split_at(half * i);
        let (y0, y1) = y.split_at_mut(half);
        // The calling thread computes one half while one pool thread takes the other: only one
        // sleeping worker has to wake up (`join` from outside the pool hands both halves to the
        // pool, which often runs them one after the other). 35 vs 45 µs median at batch 1.
        rayon::in_place_scope(|s| {
            s.spawn(|_| rows(x, 1, w1, i, &b[half..], relu, y1, o - half));
            rows(x, 1, w0, i, &b[..half], relu, y0, half);
        });
    } else {
        rows(x, n, w, i, b, relu, y, o);
    }
}

/// Computes the outputs of the weight rows in `w` (`w.len() / i` of them) into `y` (row stride `ys`).
#[allow(clippy::too_many_arguments)]
fn rows(x: &[f32], n: usize, w: &[f32], i: usize, b: &[f32], relu: bool, y: &mut [f32], ys: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { rows_avx2(x, n, w, i, b, relu, y, ys) };
            return;
        }
    }
    rows_body(x, n, w, i, b, relu, y, ys, |a, b, c| a * b + c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(
    x: &[f32],
    n: usize,
    w: &[f32],
    i: usize,
    b: &[f32],
    relu: bool,
    y: &mut [f32],
    ys: usize,
) {
    // `mul_add` compiles to one vfmadd here; the lane arrays below vectorise to ymm registers.
    rows_body(x, n, w, i, b, relu, y, ys, f32::mul_add);
}

const LANES: usize = 8;
const ROWS: usize = 4;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_body(
    x: &[f32],
    n: usize,
    w: &[f32],
    i: usize,
    b: &[f32],
    relu: bool,
    y: &mut [f32],
    ys: usize,
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let o = w.len() / i;
    let body = i / LANES * LANES;
    let finish = |v: f32| if relu { v.max(0.) } else { v };
    for r in 0..n {
        let xr = &x[r * i..(r + 1) * i];
        let yr = &mut y[r * ys..r * ys + o];
        let mut j = 0;
        while j + ROWS <= o {
            let mut acc = [[0f32; LANES]; ROWS];
            let ws: [&[f32]; ROWS] = std::array::from_fn(|q| &w[(j + q) * i..(j + q + 1) * i]);
            for k in (0..body).step_by(LANES) {
                let xv: &[f32; LANES] = xr[k..k + LANES].try_into().expect("lane slice");
                for q in 0..ROWS {
                    let wv: &[f32; LANES] = ws[q][k..k + LANES].try_into().expect("lane slice");
                    for l in 0..LANES {
                        acc[q][l] = fma(xv[l], wv[l], acc[q][l]);
                    }
                }
            }
            for q in 0..ROWS {
                let mut s: f32 = acc[q].iter().sum();
                for k in body..i {
                    s = fma(xr[k], ws[q][k], s);
                }
                yr[j + q] = finish(s + b[j + q]);
            }
            j += ROWS;
        }
        for jj in j..o {
            let wr = &w[jj * i..(jj + 1) * i];
            let mut acc = [0f32; LANES];
            for k in (0..body).step_by(LANES) {
                for l in 0..LANES {
                    acc[l] = fma(xr[k + l], wr[k + l], acc[l]);
                }
            }
            let mut s: f32 = acc.iter().sum();
            for k in body..i {
                s = fma(xr[k], wr[k], s);
            }
            yr[jj] = finish(s + b[jj]);
        }
    }
}
