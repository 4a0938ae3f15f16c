//! Element loops of the optimizers, compiled per instruction set and chunked
//! across rayon's pool.

use rayon::prelude::*;

use crate::isa::Isa;

/// Elements per rayon task; below two of these a tensor is updated on one thread.
const CHUNK: usize = 32 * 1024;

/// Scalars of one Adam/AdamW step, already in f32 as PyTorch applies them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamStep {
    /// `1 - beta1`.
    pub one_minus_b1: f32,
    pub beta2: f32,
    /// `1 - beta2`.
    pub one_minus_b2: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// Coupled (L2) weight decay added to the gradient (Adam); 0 for none.
    pub l2: f32,
    /// Decoupled decay factor `1 - lr * wd` (AdamW); 1 for none.
    pub decay: f32,
}

/// Scalars of one SGD step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdStep {
    pub lr: f32,
    pub l2: f32,
    pub momentum: f32,
    /// `1 - dampening`.
    pub one_minus_damp: f32,
    pub nesterov: bool,
    /// First step: the momentum buffer is initialised to the gradient.
    pub first: bool,
}

#[inline(always)]
fn adam_body(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i] + s.l2 * p[i];
        // exp_avg.lerp_(grad, 1 - beta1)
        let mi = m[i] + s.one_minus_b1 * (gi - m[i]);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        let vi = v[i] * s.beta2 + s.one_minus_b2 * (gi * gi);
        let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
        p[i] = p[i] * s.decay - s.step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

#[inline(always)]
fn sgd_body(p: &mut [f32], g: &[f32], buf: &mut [f32], s: &SgdStep) {
    let n = p.len();
    let (g, buf) = (&g[..n], &mut buf[..n]);
    for i in 0..n {
        let gi = g[i] + s.l2 * p[i];
        let b = if s.first {
            gi
        } else {
            s.momentum * buf[i] + s.one_minus_damp * gi
        };
        buf[i] = b;
        let d = if s.nesterov { gi + s.momentum * b } else { b };
        p[i] -= s.lr * d;
    }
}

#[inline(always)]
fn sgd_plain_body(p: &mut [f32], g: &[f32], s: &SgdStep) {
    let n = p.len();
    let g = &g[..n];
    for i in 0..n {
        p[i] -= s.lr * (g[i] + s.l2 * p[i]);
    }
}

/// Defines `$name`, which runs `$body` compiled for the best instruction set `isa` has
/// (AVX-512F, else AVX2+FMA, else the baseline).
macro_rules! multiversion {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if isa.avx512f() {
                    // SAFETY: the CPU supports AVX-512F (an `Isa` only reports detected features).
                    return unsafe { avx512($($arg),*) };
                }
                if isa.avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (as above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body($($arg),*)
        }
    };
}

multiversion!(adam_chunk, adam_body, (p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep));
multiversion!(sgd_chunk, sgd_body, (p: &mut [f32], g: &[f32], buf: &mut [f32], s: &SgdStep));
multiversion!(sgd_plain_chunk, sgd_plain_body, (p: &mut [f32], g: &[f32], s: &SgdStep));

/// One Adam/AdamW update of a whole tensor.
pub(crate) fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let isa = Isa::detected();
    if p.len() < 2 * CHUNK {
        adam_chunk(isa, p, g, m, v, s);
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| adam_chunk(isa, p, g, m, v, s));
    }
}

/// One SGD update of a whole tensor; `buf` is empty when momentum is 0.
pub(crate) fn sgd(p: &mut [f32], g: &[f32], buf: &mut [f32], s: &SgdStep) {
    let isa = Isa::detected();
    match (buf.is_empty(), p.len() < 2 * CHUNK) {
        (true, true) => sgd_plain_chunk(isa, p, g, s),
        (true, false) => p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(p, g)| sgd_plain_chunk(isa, p, g, s)),
        (false, true) => sgd_chunk(isa, p, g, buf, s),
        (false, false) => p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(buf.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| sgd_chunk(isa, p, g, b, s)),
    }
}
