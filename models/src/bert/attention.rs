//! Multi-head self-attention over unpadded sentences: `softmax(q·kᵀ/√d)·v` per sentence and head,
//! with the scale, the softmax and the weighted sum fused into one pass over each score row.
//!
//! Sentences are stored back to back (no padding), so there is no attention mask to apply: a
//! sentence's tokens only ever see each other. Sentences are split over rayon by recursive halving,
//! which hands each task a disjoint block of output rows without allocating.

use std::cell::RefCell;

use joulecut_ops::Isa;
use joulecut_ops::rows::attend_sentence;

/// Sizes of one attention product.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    /// Heads (after any structured pruning).
    pub count: usize,
    /// Width of one head.
    pub dim: usize,
}

impl Heads {
    fn width(self) -> usize {
        self.count * self.dim
    }
}

thread_local! {
    /// One sentence's score row, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Tokens below which attention runs on the calling thread.
const PAR_TOKENS: usize = 64;

/// `ctx[t, h·d..(h+1)·d] = Σ_j softmax_j(q_t · k_j / √d) v_j` over the tokens `j` of `t`'s sentence,
/// for `qkv` `[T, 3·H·d]` (query, key and value blocks side by side) and `ctx` `[T, H·d]`.
///
/// # Panics
/// When the buffers do not hold `Σ lengths` rows.
pub(super) fn attention(qkv: &[f32], ctx: &mut [f32], lengths: &[usize], heads: Heads) {
    let tokens: usize = lengths.iter().sum();
    assert_eq!(qkv.len(), tokens * 3 * heads.width(), "qkv rows");
    assert_eq!(ctx.len(), tokens * heads.width(), "ctx rows");
    split(qkv, ctx, lengths, heads, Isa::detected());
}

fn split(qkv: &[f32], ctx: &mut [f32], lengths: &[usize], heads: Heads, isa: Isa) {
    let tokens: usize = lengths.iter().sum();
    if lengths.len() > 1 && tokens >= PAR_TOKENS && joulecut_ops::pool_threads() > 1 {
        let mid = lengths.len() / 2;
        let left: usize = lengths[..mid].iter().sum();
        let (q0, q1) = qkv.split_at(left * 3 * heads.width());
        let (c0, c1) = ctx.split_at_mut(left * heads.width());
        rayon::join(
            || split(q0, c0, &lengths[..mid], heads, isa),
            || split(q1, c1, &lengths[mid..], heads, isa),
        );
        return;
    }
    let mut start = 0;
    for &len in lengths {
        sentence(
            &qkv[start * 3 * heads.width()..(start + len) * 3 * heads.width()],
            &mut ctx[start * heads.width()..(start + len) * heads.width()],
            len,
            heads,
            isa,
        );
        start += len;
    }
}

/// One sentence of `len` tokens.
fn sentence(qkv: &[f32], ctx: &mut [f32], len: usize, heads: Heads, isa: Isa) {
    SCORES.with(|s| {
        let mut scores = s.borrow_mut();
        scores.resize(len, 0.0);
        attend_sentence(isa, qkv, ctx, (heads.count, heads.dim), &mut scores);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook version in f64 for one sentence.
    fn reference(qkv: &[f32], len: usize, heads: Heads) -> Vec<f64> {
        let (w, d) = (heads.width(), heads.dim);
        let mut out = vec![0f64; len * w];
        for h in 0..heads.count {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| {
                                f64::from(qkv[i * 3 * w + h * d + c])
                                    * f64::from(qkv[j * 3 * w + w + h * d + c])
                            })
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    out[i * w + h * d + c] = (0..len)
                        .map(|j| e[j] / z * f64::from(qkv[j * 3 * w + 2 * w + h * d + c]))
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn unpadded_attention_matches_the_textbook_per_sentence() {
        // Head widths 32 and 64 take the 8-key score step and the register-held sums, 16 the
        // former only, 5 and 20 neither; lengths cover whole groups of 8, tails, and beyond the
        // kernel's 64-score padded buffer (70).
        for (count, dim) in [(3, 5), (2, 32), (1, 64), (3, 16), (2, 20)] {
            let heads = Heads { count, dim };
            let lengths = [4usize, 1, 7, 60, 2, 8, 9, 16, 23, 70];
            let t: usize = lengths.iter().sum();
            let qkv: Vec<f32> = (0..t * 3 * heads.width())
                .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0)
                .collect();
            let mut ctx = vec![f32::NAN; t * heads.width()];
            attention(&qkv, &mut ctx, &lengths, heads);
            let mut start = 0;
            for &len in &lengths {
                let w = heads.width();
                let want = reference(&qkv[start * 3 * w..(start + len) * 3 * w], len, heads);
                for (g, r) in ctx[start * w..(start + len) * w].iter().zip(&want) {
                    assert!(
                        (f64::from(*g) - r).abs() < 1e-5,
                        "d={dim} len={len}: {g} vs {r}"
                    );
                }
                start += len;
            }
        }
    }
}
