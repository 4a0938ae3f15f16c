//! Row-wise kernels of a transformer layer on raw `[rows, width]` f32 buffers: bias + GELU, bias +
//! residual + LayerNorm, softmax, and the fast `exp`/`erf` they need.
//!
//! Each is one pass over memory that candle would spend three or four tensor ops (and allocations)
//! on. The bodies are branch-free loops over 8-lane accumulators, written once and compiled twice:
//! for the baseline target and with `avx2,fma` enabled, picked at run time from [`Isa::detected`]
//! (the compiler vectorises the same code for each). Rows are split over rayon when there are
//! enough of them to pay for it.
//!
//! ```
//! use joulecut_ops::rows::{bias_gelu, softmax};
//! let mut y = [0f32, 1.0, -1.0];
//! bias_gelu(&mut y, 3, &[0.0, 0.0, 0.0]);
//! assert!((y[1] - 0.841_344_7).abs() < 1e-6);
//! let mut p = [1f32, 1.0];
//! softmax(&mut p);
//! assert!((p[0] - 0.5).abs() < 1e-7);
//! ```

use rayon::prelude::*;

use crate::isa::Isa;

/// Elements below which a row-wise pass runs on the calling thread.
const PAR_ELEMS: usize = 1 << 15;

const LANES: usize = 8;

/// `a · b + c`, one fused instruction where `FMA` (bodies compiled with `fma` enabled pass `true`;
/// elsewhere `mul_add` would be a libm call). The polynomials below are mostly these: without
/// FMA, GELU's loop was a `vmulps` + `vaddps` pair per term (5.9 % of the int8 MiniLM's time).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `e^x` to within ~2 ulp over the f32 range (Cephes' polynomial after reducing by `ln 2`); no
/// branches, so loops over it vectorise. Clamps its input to [-87.3, 88] (2⁻¹²⁶ and 1.6e38 at the ends).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    exp_with::<false>(x)
}

#[inline(always)]
fn exp_with<const FMA: bool>(x: f32) -> f32 {
    // selects, not `clamp`/`as i32` (NaN and saturation checks): the loop stays vectorised
    let x = if x < -87.336_54 { -87.336_54 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    // round(x / ln 2) by the 1.5·2²³ trick (exact for |n| < 2²²), no SSE4.1 `round` needed; the
    // low byte of `t`'s bits is then n (two's complement)
    let t = madd::<FMA>(x, std::f32::consts::LOG2_E, 12_582_912.0);
    let n = t - 12_582_912.0;
    let r = madd::<FMA>(n, 2.121_944_4e-4, madd::<FMA>(-n, 0.693_359_4, x));
    let p = 1.987_569_1e-4;
    let p = madd::<FMA>(p, r, 1.398_199_9e-3);
    let p = madd::<FMA>(p, r, 8.333_452e-3);
    let p = madd::<FMA>(p, r, 4.166_579_6e-2);
    let p = madd::<FMA>(p, r, 1.666_666_5e-1);
    let p = madd::<FMA>(p, r, 5e-1);
    let e = madd::<FMA>(p * r, r, r + 1.0);
    // 2ⁿ: biased exponent n + 127 in [1, 254] after the clamp
    e * f32::from_bits((t.to_bits().wrapping_add(127) & 0xFF) << 23)
}

/// `erf(x)` with absolute error below 1e-6 in f32 (Abramowitz & Stegun 7.1.26: 1.5e-7 in exact arithmetic), branch-free.
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    erf_with::<false>(x)
}

#[inline(always)]
fn erf_with<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / madd::<FMA>(0.327_591_1, a, 1.0);
    let p = madd::<FMA>(t, 1.061_405_4, -1.453_152_1);
    let p = madd::<FMA>(t, p, 1.421_413_7);
    let p = madd::<FMA>(t, p, -0.284_496_74);
    let p = madd::<FMA>(t, p, 0.254_829_6);
    let y = madd::<FMA>(-(t * p), exp_with::<FMA>(-a * a), 1.0);
    y.copysign(x)
}

/// GELU as BERT defines it (the exact form, `x · Φ(x)`, through [`erf_fast`]).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    gelu_with::<false>(x)
}

#[inline(always)]
fn gelu_with<const FMA: bool>(x: f32) -> f32 {
    let h = 0.5 * x;
    madd::<FMA>(h, erf_with::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2), h)
}

#[inline(always)]
pub(crate) fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in chunks.remainder() {
        s += x;
    }
    s
}

#[inline(always)]
pub(crate) fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in chunks.remainder() {
        m = m.max(x);
    }
    m
}

/// Σ (v - mean)², in two passes for accuracy.
#[inline(always)]
pub(crate) fn centred_sq(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in chunks.remainder() {
        s += (x - mean) * (x - mean);
    }
    s
}

/// Dot product of two equal-length slices with 8-lane accumulators.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s = madd::<FMA>(*x, *y, s);
    }
    s
}

/// `y += a · x`.
#[inline(always)]
fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    // In 8-lane chunks: as one zip with `mul_add`, LLVM kept the loop scalar.
    let mut yc = y.chunks_exact_mut(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (y, x) in (&mut yc).zip(&mut xc) {
        for l in 0..LANES {
            y[l] = madd::<FMA>(a, x[l], y[l]);
        }
    }
    for (y, &x) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *y = madd::<FMA>(a, x, *y);
    }
}

#[inline(always)]
fn bias_gelu_body<const FMA: bool>(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (y, &b) in row.iter_mut().zip(bias) {
            *y = gelu_with::<FMA>(*y + b);
        }
    }
}

#[inline(always)]
fn gelu_body<const FMA: bool>(rows: &mut [f32]) {
    for y in rows {
        *y = gelu_with::<FMA>(*y);
    }
}

#[inline(always)]
fn softmax_body<const FMA: bool>(row: &mut [f32]) {
    let m = max(row);
    for x in row.iter_mut() {
        *x = exp_with::<FMA>(*x - m);
    }
    let inv = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// LayerNorm parameters: `y = (x - mean) / sqrt(var + eps) · gamma + beta`.
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm<'a> {
    /// Scale, one per column.
    pub gamma: &'a [f32],
    /// Shift, one per column.
    pub beta: &'a [f32],
    /// Added to the variance.
    pub eps: f32,
}

#[inline(always)]
fn layer_norm_row(x: &mut [f32], ln: &LayerNorm<'_>) {
    let w = x.len() as f32;
    let mean = sum(x) / w;
    let inv = 1.0 / (centred_sq(x, mean) / w + ln.eps).sqrt();
    for ((x, &g), &b) in x.iter_mut().zip(ln.gamma).zip(ln.beta) {
        *x = (*x - mean) * inv * g + b;
    }
}

/// `x ← LayerNorm(x + y + bias)` row by row (the residual connection after a projection).
#[inline(always)]
fn residual_norm_body(x: &mut [f32], y: &[f32], bias: Option<&[f32]>, ln: &LayerNorm<'_>) {
    let w = ln.gamma.len();
    for (xr, yr) in x.chunks_exact_mut(w).zip(y.chunks_exact(w)) {
        match bias {
            Some(b) => {
                for ((x, &y), &b) in xr.iter_mut().zip(yr).zip(b) {
                    *x += y + b;
                }
            }
            None => {
                for (x, &y) in xr.iter_mut().zip(yr) {
                    *x += y;
                }
            }
        }
        layer_norm_row(xr, ln);
    }
}

#[inline(always)]
fn norm_body(x: &mut [f32], ln: &LayerNorm<'_>) {
    for xr in x.chunks_exact_mut(ln.gamma.len()) {
        layer_norm_row(xr, ln);
    }
}

/// Declares a public entry point that runs `$body` compiled for AVX2+FMA when the CPU has them,
/// else for the baseline target. With `fma:` first, `$body` takes `const FMA: bool` (see [`madd`]):
/// `true` in the AVX2+FMA build, `false` in the baseline one.
macro_rules! dispatch {
    (fma: $name:ident, $avx:ident, $body:ident, $args:tt) => {
        $crate::rows::dispatch!(@go $name, $avx, [$body::<true>], [$body::<false>], $args);
    };
    ($name:ident, $avx:ident, $body:ident, $args:tt) => {
        $crate::rows::dispatch!(@go $name, $avx, [$body], [$body], $args);
    };
    (@go $name:ident, $avx:ident, [$($fast:tt)*], [$($base:tt)*], ($($arg:ident : $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) {
            $($fast)*($($arg),*)
        }

        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if isa.avx2_fma() {
                // SAFETY: `isa` comes from `Isa::detected` (never above the CPU's features), and it
                // reports AVX2 and FMA.
                return unsafe { $avx($($arg),*) };
            }
            let _ = isa;
            $($base)*($($arg),*)
        }
    };
}

pub(crate) use dispatch;

dispatch!(fma: bias_gelu_isa, bias_gelu_avx2, bias_gelu_body, (rows: &mut [f32], bias: &[f32]));
dispatch!(fma: gelu_isa, gelu_avx2, gelu_body, (rows: &mut [f32]));
dispatch!(fma: softmax_isa, softmax_avx2, softmax_body, (row: &mut [f32]));
dispatch!(norm_isa, norm_avx2, norm_body, (x: &mut [f32], ln: &LayerNorm<'_>));
dispatch!(
    residual_norm_isa,
    residual_norm_avx2,
    residual_norm_body,
    (x: &mut [f32], y: &[f32], bias: Option<&[f32]>, ln: &LayerNorm<'_>)
);

dispatch!(
    fma: attend_isa,
    attend_avx2,
    attend_body,
    (qkv: &[f32], ctx: &mut [f32], count: usize, dim: usize, scores: &mut [f32])
);

/// One sentence's multi-head attention: `ctx[t, h·d..(h+1)·d] = Σ_j softmax_j(q_t · k_j / √d) v_j`
/// for `qkv` `[len, 3·count·dim]` (query, key and value blocks side by side), `ctx`
/// `[len, count·dim]` (overwritten) and `scores` a scratch row of `len`. The scale, the softmax and
/// the weighted sum are fused into one pass over each score row; compiled for AVX2 + FMA where the
/// CPU has them (for the baseline x86-64 the dot products and sums ran 128 bits wide, and took
/// 8.6 % of the int8 MiniLM's time). The AVX2 + FMA build fuses its multiply-adds and scores 8 keys
/// at a time ([`dot8_avx2`]), so its results differ from the baseline build's in the last bits.
/// (Computing four keys' scores and four values' sums at a time, written in plain Rust, measured
/// slower: 11.0 % of the int8 MiniLM's time against 7.8 %.)
///
/// # Panics
/// When the buffers do not hold `len` rows.
pub fn attend_sentence(
    isa: Isa,
    qkv: &[f32],
    ctx: &mut [f32],
    (count, dim): (usize, usize),
    scores: &mut [f32],
) {
    let len = scores.len();
    assert_eq!(
        qkv.len(),
        len * 3 * count * dim,
        "attend_sentence: qkv rows"
    );
    assert_eq!(ctx.len(), len * count * dim, "attend_sentence: ctx rows");
    attend_isa(isa, qkv, ctx, count, dim, scores);
}

/// A score no real one comes near: after the max is subtracted its `exp` is the clamp's 2⁻¹²⁶,
/// so the (at most 7) padded scores add below one ulp to the softmax's sum.
const PAD_SCORE: f32 = -1e30;

#[inline(always)]
fn attend_body<const FMA: bool>(
    qkv: &[f32],
    ctx: &mut [f32],
    count: usize,
    dim: usize,
    scores: &mut [f32],
) {
    let (w, d) = (count * dim, dim);
    let stride = 3 * w;
    let scale = 1.0 / (d as f32).sqrt();
    let len = scores.len();
    // Scores padded to whole vectors: softmax without scalar remainders (sentences average 14.6
    // tokens, so the remainder was up to half of each row).
    let mut padded = [0f32; 64];
    let lp = len.next_multiple_of(LANES);
    let scores: &mut [f32] = if lp <= padded.len() {
        &mut padded[..lp]
    } else {
        scores
    };
    for h in 0..count {
        let (qo, ko, vo) = (h * d, w + h * d, 2 * w + h * d);
        for i in 0..len {
            let q = &qkv[i * stride + qo..i * stride + qo + d];
            let mut j0 = 0;
            #[cfg(target_arch = "x86_64")]
            if FMA && d % LANES == 0 {
                while j0 + LANES <= len {
                    // SAFETY: `FMA` is true only in the AVX2 + FMA build (`dispatch!(fma: …)`).
                    unsafe { dot8_avx2(q, &qkv[j0 * stride + ko..], stride, &mut scores[j0..]) };
                    j0 += LANES;
                }
                scores[..j0].iter_mut().for_each(|s| *s *= scale);
            }
            for j in j0..len {
                scores[j] = dot::<FMA>(q, &qkv[j * stride + ko..j * stride + ko + d]) * scale;
            }
            // Every row: the last softmax overwrote the padding with probabilities.
            scores[len..].fill(PAD_SCORE);
            softmax_body::<FMA>(scores);
            let out = &mut ctx[i * w + h * d..i * w + h * d + d];
            let values = |j: usize| &qkv[j * stride + vo..j * stride + vo + d];
            match d {
                32 => weighted_sum::<FMA, 32>(out, &scores[..len], values),
                64 => weighted_sum::<FMA, 64>(out, &scores[..len], values),
                _ => {
                    out.fill(0.0);
                    for (j, &p) in scores[..len].iter().enumerate() {
                        axpy::<FMA>(out, p, values(j));
                    }
                }
            }
        }
    }
}

/// `out[j] = q · k_j` for 8 keys `k_j = keys[j · stride..][..q.len()]` (`q.len()` a multiple of 8,
/// any width): 8 vector accumulators, then one transposed reduction (`vhaddps` ×6, a lane swap)
/// instead of 8 horizontal sums. Sentences are short, so a key's 32-float dot product is only 4
/// FMAs and its horizontal sum cost as much (about a quarter of the attention's time).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot8_avx2(q: &[f32], keys: &[f32], stride: usize, out: &mut [f32]) {
    use core::arch::x86_64::*;
    let d = q.len();
    assert!(d % LANES == 0 && keys.len() >= 7 * stride + d && out.len() >= LANES);
    let mut acc = [_mm256_setzero_ps(); LANES];
    for c in (0..d).step_by(LANES) {
        // SAFETY: c + 8 <= d, and key j's floats c..c+8 are inside `keys` (asserted).
        unsafe {
            let qc = _mm256_loadu_ps(q.as_ptr().add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                let k = _mm256_loadu_ps(keys.as_ptr().add(j * stride + c));
                *a = _mm256_fmadd_ps(qc, k, *a);
            }
        }
    }
    // [a0 a1 | ...] pairwise: after two rounds lane l of the low half holds key l's low-half sum
    // (l < 4) and the high half its high-half sum; the lane swap adds the halves.
    let t0 = _mm256_hadd_ps(acc[0], acc[1]);
    let t1 = _mm256_hadd_ps(acc[2], acc[3]);
    let t2 = _mm256_hadd_ps(acc[4], acc[5]);
    let t3 = _mm256_hadd_ps(acc[6], acc[7]);
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    let lo = _mm256_permute2f128_ps::<0x20>(u0, u1);
    let hi = _mm256_permute2f128_ps::<0x31>(u0, u1);
    // SAFETY: out has 8 floats (asserted).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(lo, hi)) };
}

/// `out = Σ_j p_j · v_j` for heads `D` wide (32: MiniLM; 64: BERT-base), the sum held in
/// registers across `j`. (Through `axpy` into `out` each step waited on the previous step's store:
/// 17 % of the attention's time on one `vmovups`.)
#[inline(always)]
fn weighted_sum<'a, const FMA: bool, const D: usize>(
    out: &mut [f32],
    p: &[f32],
    v: impl Fn(usize) -> &'a [f32],
) {
    let mut acc = [0f32; D];
    for (j, &pj) in p.iter().enumerate() {
        let vj: &[f32; D] = v(j).try_into().expect("a head is D wide");
        for l in 0..D {
            acc[l] = madd::<FMA>(pj, vj[l], acc[l]);
        }
    }
    out.copy_from_slice(&acc);
}

/// Rows per rayon task for `rows` rows of `width`: everything on this thread when small.
pub(crate) fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = crate::storage::threads();
    if rows * width < PAR_ELEMS || threads <= 1 {
        rows.max(1)
    } else {
        rows.div_ceil(threads * 4).max(1)
    }
}

/// `y ← GELU(y + bias)` for `y` `[rows, width]` row-major (`bias.len() == width`). With an empty
/// `bias`, `y ← GELU(y)`.
///
/// # Panics
/// When `y.len()` is not a multiple of `width`, or `bias` is neither empty nor `width` long.
pub fn bias_gelu(y: &mut [f32], width: usize, bias: &[f32]) {
    assert!(width > 0 && y.len() % width == 0, "bias_gelu: ragged rows");
    assert!(
        bias.is_empty() || bias.len() == width,
        "bias_gelu: bias width"
    );
    let isa = Isa::detected();
    let per = rows_per_task(y.len() / width, width) * width;
    y.par_chunks_mut(per).for_each(|c| {
        if bias.is_empty() {
            gelu_isa(isa, c)
        } else {
            bias_gelu_isa(isa, c, bias)
        }
    });
}

/// Softmax of one row in place.
pub fn softmax(row: &mut [f32]) {
    if !row.is_empty() {
        softmax_isa(Isa::detected(), row);
    }
}

/// Softmax of one row in place, with the ISA already looked up (for callers in a hot loop).
pub fn softmax_with(isa: Isa, row: &mut [f32]) {
    if !row.is_empty() {
        softmax_isa(isa, row);
    }
}

/// `x ← LayerNorm(x)` for `x` `[rows, ln.gamma.len()]`.
///
/// # Panics
/// When the widths disagree.
pub fn layer_norm(x: &mut [f32], ln: &LayerNorm<'_>) {
    let w = ln.gamma.len();
    assert!(
        w > 0 && ln.beta.len() == w && x.len() % w == 0,
        "layer_norm: widths"
    );
    let isa = Isa::detected();
    let per = rows_per_task(x.len() / w, w) * w;
    x.par_chunks_mut(per).for_each(|c| norm_isa(isa, c, ln));
}

/// `x ← LayerNorm(x + y + bias)` for `x`, `y` `[rows, ln.gamma.len()]`: the residual add of a
/// projection's output and the LayerNorm after it, in one pass.
///
/// # Panics
/// When the sizes disagree.
pub fn residual_layer_norm(x: &mut [f32], y: &[f32], bias: Option<&[f32]>, ln: &LayerNorm<'_>) {
    let w = ln.gamma.len();
    assert!(
        w > 0 && ln.beta.len() == w && x.len() % w == 0 && y.len() == x.len(),
        "residual_layer_norm: sizes"
    );
    assert!(
        bias.is_none_or(|b| b.len() == w),
        "residual_layer_norm: bias"
    );
    let isa = Isa::detected();
    let per = rows_per_task(x.len() / w, w) * w;
    x.par_chunks_mut(per)
        .zip(y.par_chunks(per))
        .for_each(|(xc, yc)| residual_norm_isa(isa, xc, yc, bias, ln));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Taylor series; converges fast for |x| <= 3, and erf is 1 - 2e-5 beyond
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut s, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            s += term / (2.0 * n + 1.0);
        }
        s * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_matches_std_over_the_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_fast(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}): {got} vs {want}"
            );
            x += 0.173;
        }
        assert_eq!(exp_fast(-1000.0), exp_fast(-87.336_54));
        assert!(exp_fast(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_and_gelu_match_their_definitions() {
        let mut x = -5.0f32;
        while x < 5.0 {
            let want = erf_ref(f64::from(x));
            assert!((f64::from(erf_fast(x)) - want).abs() < 1e-6, "erf({x})");
            let g = 0.5 * f64::from(x) * (1.0 + erf_ref(f64::from(x) / 2f64.sqrt()));
            assert!((f64::from(gelu(x)) - g).abs() < 1e-6, "gelu({x})");
            x += 0.0371;
        }
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let mut r: Vec<f32> = (0..37).map(|i| (i as f32 * 7.3) % 11.0 + 500.0).collect();
        let want: Vec<f64> = {
            let m = r.iter().copied().fold(f32::MIN, f32::max) as f64;
            let e: Vec<f64> = r.iter().map(|&x| (x as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax(&mut r);
        for (g, w) in r.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() < 1e-6);
        }
    }

    #[test]
    fn residual_layer_norm_equals_the_three_steps() {
        let (rows, w) = (70, 19);
        let x0: Vec<f32> = (0..rows * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let y: Vec<f32> = (0..rows * w)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
            .collect();
        let b: Vec<f32> = (0..w).map(|i| i as f32 * 0.1).collect();
        let g: Vec<f32> = (0..w).map(|i| 1.0 + i as f32 * 0.05).collect();
        let be: Vec<f32> = (0..w).map(|i| -(i as f32) * 0.02).collect();
        let ln = LayerNorm {
            gamma: &g,
            beta: &be,
            eps: 1e-12,
        };
        let mut got = x0.clone();
        residual_layer_norm(&mut got, &y, Some(&b), &ln);
        for r in 0..rows {
            let s: Vec<f64> = (0..w)
                .map(|c| f64::from(x0[r * w + c] + y[r * w + c] + b[c]))
                .collect();
            let mean = s.iter().sum::<f64>() / w as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w as f64;
            for c in 0..w {
                let want =
                    (s[c] - mean) / (var + 1e-12).sqrt() * f64::from(g[c]) + f64::from(be[c]);
                assert!(
                    (f64::from(got[r * w + c]) - want).abs() < 1e-5,
                    "row {r} col {c}"
                );
            }
        }
    }

    #[test]
    fn bias_gelu_rows() {
        let mut y = vec![0.5f32; 6];
        bias_gelu(&mut y, 3, &[0.0, 0.5, -0.5]);
        assert!((y[0] - gelu(0.5)).abs() < 1e-7 && (y[4] - gelu(1.0)).abs() < 1e-7);
        assert!((y[5]).abs() < 1e-7);
    }
}
