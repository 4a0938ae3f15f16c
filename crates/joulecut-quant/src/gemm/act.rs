//! Quantizing f32 activation rows for the GEMM (dynamic per-row grids, or one static grid).

use rayon::prelude::*;

use crate::grid::{QuantParams, Symmetry};

/// Rows per rayon task when quantizing activations.
const ROWS_PER_TASK: usize = 64;

/// One rayon task's share: (((input rows, output rows), (scales, zero-points)), row sums).
type RowChunk<'a> = (
    ((&'a [f32], &'a mut [i8]), (&'a mut [f32], &'a mut [i32])),
    &'a mut [i32],
);

/// Quantized activation rows `[m, k_pad]` with their grids.
#[derive(Debug, Clone, Default)]
pub struct QuantizedRows {
    /// Row count.
    pub m: usize,
    /// Row stride (the weights' `k_padded()`).
    pub stride: usize,
    /// int8 values; the padding columns are ignored (their weights are zero).
    pub data: Vec<i8>,
    /// Scale per row.
    pub scales: Vec<f32>,
    /// Zero-point per row.
    pub zeros: Vec<i32>,
    /// `Σ_k a[m, k]` per row (only filled when the weights have zero-points).
    pub sums: Vec<i32>,
}

/// How activations get their grid.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum ActivationQuant {
    /// Per row at run time: asymmetric over `[min(x, 0), max(x, 0)]` (255 levels; post-ReLU rows use all of them).
    #[default]
    Dynamic,
    /// One calibrated grid for every row (see [`crate::RangeObserver`]).
    Static(QuantParams),
    /// Per row at run time, 7-bit unsigned: `[min(x, 0), max(x, 0)]` onto `0..=127` (128 levels,
    /// zero-point `round(-min / scale)`). Half the resolution of [`ActivationQuant::Dynamic`], but
    /// the values are non-negative, so the AVX2 kernel skips its sign handling (about 1.4× faster).
    DynamicU7,
    /// Per row at run time, 6-bit unsigned: `[min(x, 0), max(x, 0)]` onto `0..=63` (64 levels).
    /// Small enough that the AVX2 kernel adds two `vpmaddubsw` products in 16 bits before widening
    /// them (|2 · 2 · 63 · 128| < 2¹⁵), which saves a quarter of its multiply-port work.
    DynamicU6,
}

/// One row's grid: `q = clamp(round(x / scale) + zero_point, lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowGrid {
    pub scale: f32,
    pub zero_point: i32,
    pub lo: i32,
    pub hi: i32,
}

impl RowGrid {
    fn from_params(p: QuantParams) -> RowGrid {
        RowGrid {
            scale: p.scale,
            zero_point: p.zero_point,
            lo: p.qmin(),
            hi: p.qmax(),
        }
    }

    /// `[min(lo, 0), max(hi, 0)]` onto `0..=top` (`top` = 127 for u7, 63 for u6).
    fn unsigned(lo: f32, hi: f32, top: i32) -> RowGrid {
        let range = hi - lo;
        let scale = if range == 0.0 {
            1.0
        } else {
            (range / top as f32).max(f32::MIN_POSITIVE)
        };
        let zp = (-f64::from(lo) / f64::from(scale))
            .round_ties_even()
            .clamp(0.0, f64::from(top)) as i32;
        RowGrid {
            scale,
            zero_point: zp,
            lo: 0,
            hi: top,
        }
    }
}

impl ActivationQuant {
    /// The smallest and largest code this mode produces: what the kernels may assume of every
    /// quantized value (non-negative: the AVX2 sign-free loop; at most 63: its paired loop).
    pub fn code_range(self) -> (i32, i32) {
        match self {
            ActivationQuant::Dynamic => (-128, 127),
            ActivationQuant::DynamicU7 => (0, 127),
            ActivationQuant::DynamicU6 => (0, 63),
            ActivationQuant::Static(p) => (p.qmin(), p.qmax()),
        }
    }
}

/// Quantizes one row into `dst[..row.len()]`, zeroes `dst`'s padding, and returns
/// `(scale, zero_point, Σ q)` (the sum only when `need_sum`, else 0).
#[inline]
pub(crate) fn quantize_one(
    row: &[f32],
    dst: &mut [i8],
    mode: ActivationQuant,
    need_sum: bool,
) -> (f32, i32, i32) {
    let k = row.len();
    let g = match mode {
        ActivationQuant::Dynamic => {
            let (lo, hi) = row_range(row);
            RowGrid::from_params(QuantParams::from_range(lo, hi, Symmetry::Asymmetric))
        }
        ActivationQuant::DynamicU7 | ActivationQuant::DynamicU6 => {
            let (lo, hi) = row_range(row);
            RowGrid::unsigned(lo, hi, mode.code_range().1)
        }
        ActivationQuant::Static(p) => RowGrid::from_params(p),
    };
    quantize_row(row, &mut dst[..k], g);
    dst[k..].fill(0);
    let sum = if need_sum {
        dst[..k].iter().map(|&v| i32::from(v)).sum()
    } else {
        0
    };
    (g.scale, g.zero_point, sum)
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
    // Every row (padding included) is rewritten below: no need to clear first.
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
            (s[i], z[i], sums[i]) = quantize_one(row, d, mode, need_sums);
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
    if joulecut_ops::Isa::detected().avx2() {
        // SAFETY: AVX2 checked (`Isa` never claims a feature the CPU lacks).
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

/// Row min/max (with 0) in 8-lane AVX registers; NaN is skipped (`vminps` returns the second
/// operand when either is NaN, and the running bound is the second operand).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_range_avx2(row: &[f32]) -> (f32, f32) {
    use core::arch::x86_64::*;
    let mut lo = _mm256_setzero_ps();
    let mut hi = _mm256_setzero_ps();
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: c has 8 floats.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut l8, mut h8) = ([0f32; 8], [0f32; 8]);
    // SAFETY: 8-float arrays.
    unsafe {
        _mm256_storeu_ps(l8.as_mut_ptr(), lo);
        _mm256_storeu_ps(h8.as_mut_ptr(), hi);
    }
    let mut l = l8.iter().fold(0f32, |a, &b| a.min(b));
    let mut h = h8.iter().fold(0f32, |a, &b| a.max(b));
    for &v in rest {
        l = l.min(v);
        h = h.max(v);
    }
    (l, h)
}

#[inline]
fn quantize_row(row: &[f32], dst: &mut [i8], p: RowGrid) {
    #[cfg(target_arch = "x86_64")]
    if joulecut_ops::Isa::detected().avx2() {
        // SAFETY: AVX2 checked (`Isa` never claims a feature the CPU lacks).
        return unsafe { quantize_row_avx2(row, dst, p) };
    }
    quantize_row_generic(row, dst, p)
}

/// `clamp(round_half_even(x · (1/scale)) + zp)`; NaN maps to the zero-point's neighbourhood (the
/// clamp's lower bound) instead of being undefined.
#[inline(always)]
fn quantize_row_generic(row: &[f32], dst: &mut [i8], p: RowGrid) {
    let inv = 1.0 / p.scale;
    let zp = p.zero_point as f32;
    let (lo, hi) = (p.lo as f32, p.hi as f32);
    for (d, &x) in dst.iter_mut().zip(row) {
        // f32::max/min return the non-NaN operand, so NaN lands on `lo`.
        let q = ((x * inv).round_ties_even() + zp).max(lo).min(hi);
        *d = q as i32 as i8;
    }
}

/// 32 values per step: scale, round half to even, add the zero-point, clamp (NaN → lower bound),
/// convert, and pack i32 → i16 → i8 (the packs interleave 128-bit lanes; a permute restores order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(row: &[f32], dst: &mut [i8], p: RowGrid) {
    use core::arch::x86_64::*;
    let inv = _mm256_set1_ps(1.0 / p.scale);
    let zp = _mm256_set1_ps(p.zero_point as f32);
    let lo = _mm256_set1_ps(p.lo as f32);
    let hi = _mm256_set1_ps(p.hi as f32);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let n = row.len().min(dst.len());
    let full = n / 32 * 32;
    let q8 = |off: usize| -> __m256i {
        // SAFETY: off + 8 <= full <= row.len().
        let v = unsafe { _mm256_loadu_ps(row.as_ptr().add(off)) };
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, inv),
        );
        let c = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), lo), hi);
        _mm256_cvtps_epi32(c)
    };
    let mut off = 0;
    while off < full {
        let ab = _mm256_packs_epi32(q8(off), q8(off + 8));
        let cd = _mm256_packs_epi32(q8(off + 16), q8(off + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        // SAFETY: off + 32 <= full <= dst.len().
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(off) as *mut __m256i, bytes) };
        off += 32;
    }
    quantize_row_generic(&row[full..n], &mut dst[full..n], p);
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// The dispatched row range (AVX2 where available) equals the plain loop on every length
    /// 0..=100 (each tail path), with and without NaN/-0.0 in the row.
    #[test]
    fn row_range_matches_generic_with_tails_and_nan() {
        let mut lcg = joulecut_testkit::Lcg32::new(3);
        let mut rnd = move || (lcg.next_f32() - 0.3) * 7.0;
        for len in 0..=100 {
            let mut row: Vec<f32> = (0..len).map(|_| rnd()).collect();
            assert_eq!(row_range(&row), row_range_generic(&row), "len {len}");
            if len > 0 {
                row[len / 2] = f32::NAN;
                row[len - 1] = -0.0;
                let (lo, hi) = row_range(&row);
                assert!(!lo.is_nan() && !hi.is_nan(), "len {len}: NaN leaked");
                assert_eq!((lo, hi), row_range_generic(&row), "len {len} with NaN");
            }
        }
    }
}
