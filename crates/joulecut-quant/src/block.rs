//! The block loops of the streaming int8 pass: min/max scans with a non-finite flag, and quantize
//! loops that write stored bytes and measure the error, each as a lane-wise generic loop (the
//! oracle) and an explicit AVX2 loop that matches it bit for bit.

use crate::grid::QuantParams;

/// Lanes of the block loops: independent accumulators let them vectorise (a single f32
/// accumulator is a serial dependency the compiler may not reorder).
const LANES: usize = 8;

/// Min and max (both including 0) of a block, and whether it holds NaN/Inf.
#[inline(always)]
fn scan_block_generic(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    let (mut l, mut h, mut bad) = ([lo; LANES], [hi; LANES], [false; LANES]);
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for j in 0..LANES {
            l[j] = if x[j] < l[j] { x[j] } else { l[j] };
            h[j] = if x[j] > h[j] { x[j] } else { h[j] };
            bad[j] |= !x[j].is_finite();
        }
    }
    for &x in rest {
        l[0] = if x < l[0] { x } else { l[0] };
        h[0] = if x > h[0] { x } else { h[0] };
        bad[0] |= !x.is_finite();
    }
    (
        l.iter().fold(lo, |a, &b| a.min(b)),
        h.iter().fold(hi, |a, &b| a.max(b)),
        bad.iter().any(|&b| b),
    )
}

/// [`scan_block_generic`] with explicit AVX2: 32 elements per step, min/max trees and a sticky
/// non-finite flag (`x * 0` is NaN exactly for NaN/Inf; OR-ing the bits keeps the exponent set).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_block_avx2(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    use std::arch::x86_64::*;
    let n = xs.len() - xs.len() % 32;
    let (mut l, mut h, mut nan) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi), _mm256_setzero_ps());
    let zero = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n <= xs.len(); unaligned loads.
        let (a, b, c, d) = unsafe {
            let p = xs.as_ptr().add(i);
            (
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            )
        };
        l = _mm256_min_ps(_mm256_min_ps(_mm256_min_ps(a, b), _mm256_min_ps(c, d)), l);
        h = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d)), h);
        let z = _mm256_or_ps(
            _mm256_or_ps(_mm256_mul_ps(a, zero), _mm256_mul_ps(b, zero)),
            _mm256_or_ps(_mm256_mul_ps(c, zero), _mm256_mul_ps(d, zero)),
        );
        nan = _mm256_or_ps(nan, z);
        i += 32;
    }
    let (mut la, mut ha, mut za) = ([0f32; 8], [0f32; 8], [0u32; 8]);
    // SAFETY: 8-float stores into 8-element arrays.
    unsafe {
        _mm256_storeu_ps(la.as_mut_ptr(), l);
        _mm256_storeu_ps(ha.as_mut_ptr(), h);
        _mm256_storeu_ps(za.as_mut_ptr().cast(), nan);
    }
    let bad = za.iter().any(|&z| z & 0x7f80_0000 == 0x7f80_0000);
    let (tl, th, tbad) = scan_block_generic(&xs[n..], lo, hi);
    (
        la.iter().fold(tl, |a, &b| a.min(b)),
        ha.iter().fold(th, |a, &b| a.max(b)),
        bad || tbad,
    )
}

/// [`scan_block_generic`], on AVX2 where the CPU has it.
pub(crate) fn scan_block(xs: &[f32], lo: f32, hi: f32) -> (f32, f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if joulecut_ops::Isa::detected().avx2() {
        // SAFETY: the CPU supports AVX2 (`Isa` never claims a feature the CPU lacks).
        return unsafe { scan_block_avx2(xs, lo, hi) };
    }
    scan_block_generic(xs, lo, hi)
}

/// `p.quantize(x)` for one element, and its error `x - dequantize(q)`.
#[inline(always)]
fn quantize_one(x: f32, p: &QuantParams, qmin: f32, qmax: f32, zp: f32) -> (u8, f32) {
    // round(x / s) + zp, clamped: exact in f32 since |round(x / s)| is clamped far below 2^24.
    let r = (x / p.scale).round_ties_even().clamp(-512.0, 512.0);
    let q = (r + zp).clamp(qmin, qmax);
    // q is an integer in [-128, 127]: adding 1.5 * 2^23 puts it in the low mantissa bits, whose
    // low byte is q's two's complement (a vectorisable stand-in for the saturating `as i32`).
    ((q + 12_582_912.0).to_bits() as u8, x - p.scale * (q - zp))
}

/// Per-lane error accumulators of the block loops: Σd², Σx², max|d|.
type Lanes = [[f32; LANES]; 3];

/// `p.quantize(x)` for a block, written into `out`, with the block's error (Σd², Σx², max|d|).
/// Lane-wise so it vectorises; [`QuantParams::quantize`] is the reference it matches bit for bit.
#[inline(always)]
fn quantize_block_generic(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    lane_totals(quantize_lanes(xs, out, p, [[0f32; LANES]; 3]))
}

/// The lane loop of [`quantize_block_generic`], continuing the accumulators `acc` (element `j` of
/// `xs` feeds lane `j % LANES`; a remainder shorter than `LANES` feeds lane 0).
#[inline(always)]
fn quantize_lanes(xs: &[f32], out: &mut [u8], p: QuantParams, acc: Lanes) -> Lanes {
    let (qmin, qmax) = (p.qmin() as f32, p.qmax() as f32);
    let zp = p.zero_point as f32;
    let [mut e2, mut x2, mut m] = acc;
    let n = xs.len() - xs.len() % LANES;
    for (o, x) in out[..n]
        .chunks_exact_mut(LANES)
        .zip(xs[..n].chunks_exact(LANES))
    {
        for j in 0..LANES {
            let (q, d) = quantize_one(x[j], &p, qmin, qmax, zp);
            o[j] = q;
            e2[j] += d * d;
            x2[j] += x[j] * x[j];
            let a = d.abs();
            m[j] = if a > m[j] { a } else { m[j] };
        }
    }
    for (o, &x) in out[n..].iter_mut().zip(&xs[n..]) {
        let (q, d) = quantize_one(x, &p, qmin, qmax, zp);
        *o = q;
        e2[0] += d * d;
        x2[0] += x * x;
        m[0] = m[0].max(d.abs());
    }
    [e2, x2, m]
}

/// The block's (Σd², Σx², max|d|) from its lane accumulators.
#[inline(always)]
fn lane_totals([e2, x2, m]: Lanes) -> (f32, f32, f32) {
    (
        e2.iter().sum(),
        x2.iter().sum(),
        m.iter().fold(0f32, |a, &b| a.max(b)),
    )
}

/// [`quantize_block_generic`] with explicit AVX2, 32 elements per step. The bytes match the
/// generic loop exactly (same divide, round, clamps and magic-number conversion), and so do the
/// statistics: one 8-lane accumulator per statistic, fed in element order like `LANES = 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_block_avx2(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    use std::arch::x86_64::*;
    debug_assert_eq!(LANES, 8);
    let n = xs.len() - xs.len() % 32;
    let (scale, zp) = (_mm256_set1_ps(p.scale), _mm256_set1_ps(p.zero_point as f32));
    let (qmin, qmax) = (
        _mm256_set1_ps(p.qmin() as f32),
        _mm256_set1_ps(p.qmax() as f32),
    );
    let (rmin, rmax) = (_mm256_set1_ps(-512.0), _mm256_set1_ps(512.0));
    let magic = _mm256_set1_ps(12_582_912.0);
    let magic_i = _mm256_set1_epi32(12_582_912f32.to_bits() as i32);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let (mut e2, mut x2, mut m) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    // One vector: (q as i32, d = x - scale * (q - zp)); min/max operand order mirrors `clamp`.
    let one = |x: __m256| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_div_ps(x, scale),
        );
        let r = _mm256_min_ps(_mm256_max_ps(r, rmin), rmax);
        let q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), qmin), qmax);
        let qi = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(q, magic)), magic_i);
        let d = _mm256_sub_ps(x, _mm256_mul_ps(scale, _mm256_sub_ps(q, zp)));
        (qi, d)
    };
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n <= xs.len() == out.len() (checked by the caller's slicing).
        let xv = unsafe {
            let p = xs.as_ptr().add(i);
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let mut qs = [_mm256_setzero_si256(); 4];
        for k in 0..4 {
            let (q, d) = one(xv[k]);
            qs[k] = q;
            e2 = _mm256_add_ps(e2, _mm256_mul_ps(d, d));
            x2 = _mm256_add_ps(x2, _mm256_mul_ps(xv[k], xv[k]));
            let a = _mm256_and_ps(d, abs_mask);
            m = _mm256_max_ps(a, m);
        }
        // i32 -> i8 (all in [-128, 127], so the saturating packs are exact), then undo the
        // per-128-bit-lane interleave of the packs.
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(qs[0], qs[1]),
            _mm256_packs_epi32(qs[2], qs[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, order);
        // SAFETY: out has at least i + 32 bytes (out.len() == xs.len()).
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), w) };
        i += 32;
    }
    let (mut ea, mut xa, mut ma) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    // SAFETY: 8-float stores into 8-element arrays.
    unsafe {
        _mm256_storeu_ps(ea.as_mut_ptr(), e2);
        _mm256_storeu_ps(xa.as_mut_ptr(), x2);
        _mm256_storeu_ps(ma.as_mut_ptr(), m);
    }
    // The tail continues the same lanes, as the generic loop would (n is a multiple of LANES).
    lane_totals(quantize_lanes(&xs[n..], &mut out[n..], p, [ea, xa, ma]))
}

/// [`quantize_block_generic`], on AVX2 where the CPU has it.
pub(crate) fn quantize_block(xs: &[f32], out: &mut [u8], p: QuantParams) -> (f32, f32, f32) {
    // The AVX2 loop writes through raw pointers sized by `xs`.
    assert_eq!(
        xs.len(),
        out.len(),
        "quantize_block: input and output lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if joulecut_ops::Isa::detected().avx2() {
        // SAFETY: the CPU supports AVX2 (`Isa` never claims a feature the CPU lacks).
        return unsafe { quantize_block_avx2(xs, out, p) };
    }
    quantize_block_generic(xs, out, p)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod avx2_tests {
    use super::*;
    use crate::grid::Symmetry;

    fn data(n: usize, seed: u32, spread: f32) -> Vec<f32> {
        let mut r = joulecut_testkit::XorShift32::new(seed);
        (0..n).map(|_| (r.next_f32() - 0.4) * spread).collect()
    }

    /// The explicit AVX2 loops agree with the generic ones exactly (bytes, statistics, ranges),
    /// on odd lengths, both grids and values beyond the grid (clamping).
    #[test]
    fn avx2_block_loops_match_generic_exactly() {
        if !joulecut_ops::Isa::detected().avx2() {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        for (k, &n) in [0usize, 1, 7, 8, 31, 32, 33, 100, 784, 1023, 4096]
            .iter()
            .enumerate()
        {
            let xs = data(n, 17 + k as u32, 3.0);
            // SAFETY: AVX2 checked above.
            let fast = unsafe { scan_block_avx2(&xs, 0.0, 0.0) };
            assert_eq!(fast, scan_block_generic(&xs, 0.0, 0.0), "scan, n = {n}");
            for p in [
                QuantParams::from_range(-1.0, 1.5, Symmetry::Symmetric),
                QuantParams::from_range(-0.3, 2.0, Symmetry::Asymmetric),
            ] {
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                // SAFETY: AVX2 checked above.
                let fast = unsafe { quantize_block_avx2(&xs, &mut a, p) };
                let slow = quantize_block_generic(&xs, &mut b, p);
                assert_eq!(a, b, "bytes, n = {n}, {p:?}");
                assert_eq!(fast, slow, "stats, n = {n}, {p:?}");
            }
        }
    }

    #[test]
    fn avx2_scan_flags_every_non_finite_position() {
        if !joulecut_ops::Isa::detected().avx2() {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0usize, 5, 31, 32, 63, 64, 99] {
                let mut xs = data(100, 3, 1.0);
                xs[at] = bad;
                // SAFETY: AVX2 checked above.
                let (_, _, flagged) = unsafe { scan_block_avx2(&xs, 0.0, 0.0) };
                assert!(flagged, "{bad} at {at} not flagged");
            }
        }
    }
}
