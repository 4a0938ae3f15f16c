//! Quantizing f32 activation rows for the GEMM (dynamic per-row grids, or one static grid).

use rayon::prelude::*;

use super::QuantizedRows;
use crate::scheme::{QuantParams, Symmetry};

/// Rows per rayon task when quantizing activations.
const ROWS_PER_TASK: usize = 64;

/// One rayon task's share: (((input rows, output rows), (scales, zero-points)), row sums).
type RowChunk<'a> = (
    ((&'a [f32], &'a mut [i8]), (&'a mut [f32], &'a mut [i32])),
    &'a mut [i32],
);

/// How activations get their grid.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum ActivationQuant {
    /// Per row at run time: asymmetric over `[min(x, 0), max(x, 0)]` (255 levels; post-ReLU rows use all of them).
    #[default]
    Dynamic,
    /// One calibrated grid for every row (see [`crate::Observer`]).
    Static(QuantParams),
}

/// Quantizes `m` rows of `k` f32 values (row-major `x`) into `out`, with row stride `stride ≥ k`;
/// fills row sums when `need_sums`. Reuses `out`'s buffers.
pub fn quantize_rows(
    x: &[f32],
    m: usize,
    k: usize,
    stride: usize,
    mode: ActivationQuant,
    need_sums: bool,
    out: &mut QuantizedRows,
) {
    assert_eq!(x.len(), m * k, "activation length");
    assert!(stride >= k);
    out.m = m;
    out.stride = stride;
    out.data.clear();
    out.data.resize(m * stride, 0);
    out.scales.resize(m, 0.0);
    out.zeros.resize(m, 0);
    out.sums.resize(m, 0);
    if m == 0 || k == 0 {
        return;
    }
    let par = m * k >= 1 << 15;
    let chunk = if par { ROWS_PER_TASK } else { m.max(1) };
    let body = |(((xr, dst), (s, z)), sums): RowChunk<'_>| {
        for (i, (row, d)) in xr
            .chunks_exact(k)
            .zip(dst.chunks_exact_mut(stride))
            .enumerate()
        {
            let p = match mode {
                ActivationQuant::Dynamic => {
                    let (lo, hi) = row_range(row);
                    QuantParams::from_range(lo, hi, Symmetry::Asymmetric)
                }
                ActivationQuant::Static(p) => p,
            };
            s[i] = p.scale;
            z[i] = p.zero_point;
            quantize_row(row, &mut d[..k], p);
            sums[i] = if need_sums {
                d[..k].iter().map(|&v| i32::from(v)).sum()
            } else {
                0
            };
        }
    };
    let it = x
        .chunks(chunk * k)
        .zip(out.data.chunks_mut(chunk * stride))
        .zip(
            out.scales
                .chunks_mut(chunk)
                .zip(out.zeros.chunks_mut(chunk)),
        )
        .zip(out.sums.chunks_mut(chunk));
    if par {
        it.collect::<Vec<_>>().into_par_iter().for_each(body);
    } else {
        it.for_each(body);
    }
}

#[inline]
fn row_range(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 checked.
        return unsafe { row_range_avx2(row) };
    }
    row_range_generic(row)
}

#[inline(always)]
fn row_range_generic(row: &[f32]) -> (f32, f32) {
    let mut lo = [0f32; 8];
    let mut hi = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            lo[j] = lo[j].min(c[j]);
            hi[j] = hi[j].max(c[j]);
        }
    }
    let mut l = lo.iter().fold(0f32, |a, &b| a.min(b));
    let mut h = hi.iter().fold(0f32, |a, &b| a.max(b));
    for &v in rest {
        l = l.min(v);
        h = h.max(v);
    }
    (l, h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_range_avx2(row: &[f32]) -> (f32, f32) {
    row_range_generic(row)
}

#[inline]
fn quantize_row(row: &[f32], dst: &mut [i8], p: QuantParams) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 checked.
        return unsafe { quantize_row_avx2(row, dst, p) };
    }
    quantize_row_generic(row, dst, p)
}

/// `clamp(round_half_even(x · (1/scale)) + zp)`; NaN maps to the zero-point's neighbourhood (the
/// clamp's lower bound) instead of being undefined.
#[inline(always)]
fn quantize_row_generic(row: &[f32], dst: &mut [i8], p: QuantParams) {
    let inv = 1.0 / p.scale;
    let zp = p.zero_point as f32;
    let (lo, hi) = (p.qmin() as f32, p.qmax() as f32);
    for (d, &x) in dst.iter_mut().zip(row) {
        // f32::max/min return the non-NaN operand, so NaN lands on `lo`.
        let q = ((x * inv).round_ties_even() + zp).max(lo).min(hi);
        *d = q as i32 as i8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(row: &[f32], dst: &mut [i8], p: QuantParams) {
    quantize_row_generic(row, dst, p)
}
