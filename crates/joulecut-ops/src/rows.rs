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

/// `e^x` to within ~2 ulp over the f32 range (Cephes' polynomial after reducing by `ln 2`); no
/// branches, so loops over it vectorise. Clamps its input to [-87.3, 88] (2⁻¹²⁶ and 1.6e38 at the ends).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    // selects, not `clamp`/`as i32` (NaN and saturation checks): the loop stays vectorised
    let x = if x < -87.336_54 { -87.336_54 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    // round(x / ln 2) by the 1.5·2²³ trick (exact for |n| < 2²²), no SSE4.1 `round` needed; the
    // low byte of `t`'s bits is then n (two's complement)
    let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2ⁿ: biased exponent n + 127 in [1, 254] after the clamp
    e * f32::from_bits((t.to_bits().wrapping_add(127) & 0xFF) << 23)
}

/// `erf(x)` with absolute error below 1e-6 in f32 (Abramowitz & Stegun 7.1.26: 1.5e-7 in exact arithmetic), branch-free.
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_fast(-a * a);
    y.copysign(x)
}

/// GELU as BERT defines it (the exact form, `x · Φ(x)`, through [`erf_fast`]).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
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
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `y += a · x`.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[inline(always)]
fn bias_gelu_body(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (y, &b) in row.iter_mut().zip(bias) {
            *y = gelu(*y + b);
        }
    }
}

#[inline(always)]
fn gelu_body(rows: &mut [f32]) {
    for y in rows {
        *y = gelu(*y);
    }
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let m = max(row);
    for x in row.iter_mut() {
        *x = exp_fast(*x - m);
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
/// else for the baseline target.
macro_rules! dispatch {
    ($name:ident, $avx:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) {
            $body($($arg),*)
        }

        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if isa.avx2_fma() {
                // SAFETY: `isa` comes from `Isa::detected` (never above the CPU's features), and it
                // reports AVX2 and FMA.
                return unsafe { $avx($($arg),*) };
            }
            let _ = isa;
            $body($($arg),*)
        }
    };
}

pub(crate) use dispatch;

dispatch!(bias_gelu_isa, bias_gelu_avx2, bias_gelu_body, (rows: &mut [f32], bias: &[f32]));
dispatch!(gelu_isa, gelu_avx2, gelu_body, (rows: &mut [f32]));
dispatch!(softmax_isa, softmax_avx2, softmax_body, (row: &mut [f32]));
dispatch!(norm_isa, norm_avx2, norm_body, (x: &mut [f32], ln: &LayerNorm<'_>));
dispatch!(
    residual_norm_isa,
    residual_norm_avx2,
    residual_norm_body,
    (x: &mut [f32], y: &[f32], bias: Option<&[f32]>, ln: &LayerNorm<'_>)
);

dispatch!(
    attend_isa,
    attend_avx2,
    attend_body,
    (qkv: &[f32], ctx: &mut [f32], count: usize, dim: usize, scores: &mut [f32])
);

/// One sentence's multi-head attention: `ctx[t, h·d..(h+1)·d] = Σ_j softmax_j(q_t · k_j / √d) v_j`
/// for `qkv` `[len, 3·count·dim]` (query, key and value blocks side by side), `ctx`
/// `[len, count·dim]` (overwritten) and `scores` a scratch row of `len`. The scale, the softmax and
/// the weighted sum are fused into one pass over each score row; compiled for AVX2 + FMA where the
/// CPU has them (for the baseline x86-64 the dot products and sums ran 128 bits wide, and took
/// 8.6 % of the int8 MiniLM's time). The same operations in the same order on every path.
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

#[inline(always)]
fn attend_body(qkv: &[f32], ctx: &mut [f32], count: usize, dim: usize, scores: &mut [f32]) {
    let (w, d) = (count * dim, dim);
    let stride = 3 * w;
    let scale = 1.0 / (d as f32).sqrt();
    ctx.fill(0.0);
    for h in 0..count {
        let (qo, ko, vo) = (h * d, w + h * d, 2 * w + h * d);
        for i in 0..scores.len() {
            let q = &qkv[i * stride + qo..i * stride + qo + d];
            for (j, sc) in scores.iter_mut().enumerate() {
                *sc = dot(q, &qkv[j * stride + ko..j * stride + ko + d]) * scale;
            }
            softmax_body(scores);
            let out = &mut ctx[i * w + h * d..i * w + h * d + d];
            for (j, &p) in scores.iter().enumerate() {
                axpy(out, p, &qkv[j * stride + vo..j * stride + vo + d]);
            }
        }
    }
}

/// Rows per rayon task for `rows` rows of `width`: everything on this thread when small.
pub(crate) fn rows_per_task(rows: usize, width: usize) -> usize {
    if rows * width < PAR_ELEMS || rayon::current_num_threads() <= 1 {
        rows.max(1)
    } else {
        rows.div_ceil(rayon::current_num_threads() * 4).max(1)
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
    fn bias_gelu_rows_and_dot() {
        let mut y = vec![0.5f32; 6];
        bias_gelu(&mut y, 3, &[0.0, 0.5, -0.5]);
        assert!((y[0] - gelu(0.5)).abs() < 1e-7 && (y[4] - gelu(1.0)).abs() < 1e-7);
        assert!((y[5]).abs() < 1e-7);
        let a: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..21).map(|i| (i * i) as f32).sum::<f32>());
    }
}
