//! `y = x·Wᵀ + b` (optionally ReLU) for batches of any size, straight from row-major `x [n, i]`
//! and `W [o, i]`: no packing, no transposed copies, no allocation.
//!
//! Both operands are contiguous along `k` (the input features), so each output is a dot product.
//! A micro-tile takes 3 rows of `x` and 4 rows of `W` and keeps their 12 dot products in 8-lane
//! accumulators: per 8 `k` it loads 7 vectors for 12 FMAs, which keeps Zen 3 / Skylake's two FMA
//! pipes busy without spilling the 16 ymm registers. Each group of 4 weight rows (12.5 KiB at
//! k = 784) sits in L1 and is reused by every row of the task. A single row of `x` (batch 1) takes
//! 8 weight rows per tile instead: with 4 it had 4 accumulators, and the FMA latency, not the
//! weight bytes, bounded a 16-bit layer (f16 LeNet-300-100 at batch 1, Zen 3: 15.1-16.4 µs with 4,
//! 11.9-15.3 µs with 8; f32, bound by reading its weights, unchanged). Very deep layers are cut into
//! `k`-blocks (≤ `KC` floats); a block's partial sums are reduced horizontally once and added to
//! `y`, which holds the bias from the start; the ReLU runs after the last block.
//!
//! A general GEMM (the `gemm` crate) packs `W` (940 KB for the MLP's first layer) and `x` on
//! every call; this kernel reads each operand where it lies, which is what an inference call with
//! fixed weights and a training forward with fresh weights both want.
//!
//! `W` may also be stored as f16 or bf16 ([`WeightElem`]), widened in registers as it is loaded
//! (`vcvtph2ps` for f16; bf16 16 at a time by a shift and a mask, which give the even and the odd
//! elements, `x` split to match once per block), so a half-precision model streams half the bytes
//! and runs the same FMAs. That pays at batch 1, where a layer is bound by reading its weights
//! (LeNet-300-100 on Zen 3, criterion, three interleaved rounds: f16 13.7 / 18.7 / 11.7 µs, bf16
//! 13.3 / 15.4 / 13.7 µs, f32 18.3 / 20.6 / 19.9 µs); from batch 4 the
//! conversions cost more than the bytes save (f16 58 µs against f32 36 µs), so callers keep an
//! f32 copy for batches.

use crate::isa::Isa;
use crate::storage::threads;

/// Rows of `x` per micro-tile.
const MR: usize = 3;
/// Rows of `W` per micro-tile.
const NR: usize = 4;
/// Rows of `W` per micro-tile when `x` has one row.
const NR1: usize = 8;
/// Most `k` per block. Measured on Zen 3 (MLP, batch 256, 2 threads): one block for k = 784
/// (1.22-1.28 ms) beat 2 blocks (1.38-1.41 ms) and 4 (1.36-1.50 ms): each block costs every tile
/// a horizontal reduction and a read-modify-write of its outputs, more than L2 misses on `x` cost.
const KC: usize = 1024;
/// Multiply-adds below which a product runs on the calling thread.
const PAR_MACS: usize = 1 << 17;
/// The same for a few rows (latency calls), where the split must wake a worker on every call. On
/// the 2-vCPU VM that wake-up made LeNet-300-100's batch-1 latency bimodal from one process to the
/// next: 12-15 µs when the worker was still spinning, 38-64 µs when it slept (about 5 futex calls
/// and 5 `sched_yield`s per call), whatever the weights' file type; on one thread it is 18-25 µs
/// every time, and the idle core is not kept spinning. Half a layer must pay for the wake-up.
const LATENCY_PAR_MACS: usize = 1 << 20;

/// A weight element the kernel reads: f32 as stored, or a 16-bit float widened on the fly.
pub(crate) trait WeightElem: Copy + Send + Sync + 'static {
    /// The value as f32 (the portable loop).
    fn to_f32(self) -> f32;

    /// Eight consecutive elements as f32 lanes.
    ///
    /// # Safety
    /// AVX2 and F16C; 8 elements readable at `p`. Inlined into the `target_feature` kernel.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256;
    /// The first `n < 8` elements at `p` as f32 lanes, the rest zero; reads nothing past them.
    /// (A copy into a zeroed buffer compiled to a `memcpy` call, with every accumulator spilled
    /// around it, once per weight row at the end of each block.)
    ///
    /// # Safety
    /// AVX2 and F16C; `n` elements readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load_tail(p: *const Self, n: usize) -> core::arch::x86_64::__m256;
    /// Whether [`WeightElem::load16`] is cheaper than two [`WeightElem::load8`]s.
    const PAIRED: bool = false;
    /// Sixteen consecutive elements as two vectors: the even-numbered ones and the odd-numbered
    /// ones (what a shift and a mask give a bf16 pair, with no shuffle µop); the kernel splits
    /// `x` to match.
    ///
    /// # Safety
    /// AVX2; 16 elements readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> (core::arch::x86_64::__m256, core::arch::x86_64::__m256) {
        // SAFETY: per the trait; the default is two plain loads split the same way.
        unsafe { x86::split16(Self::load8(p), Self::load8(p.add(8))) }
    }
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256 {
        // SAFETY: per the trait.
        unsafe { core::arch::x86_64::_mm256_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_tail(p: *const Self, n: usize) -> core::arch::x86_64::__m256 {
        // SAFETY: per the trait; masked-off lanes are not read.
        unsafe { core::arch::x86_64::_mm256_maskload_ps(p, x86::tail_mask(n)) }
    }
}

impl WeightElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        // SAFETY: per the trait (16 bytes readable; F16C present).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_tail(p: *const Self, n: usize) -> core::arch::x86_64::__m256 {
        // SAFETY: per the trait.
        unsafe { core::arch::x86_64::_mm256_cvtph_ps(x86::tail16(p as *const u16, n)) }
    }
}

impl WeightElem for half::bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        // SAFETY: per the trait. bf16 is the top half of an f32: widen and shift by 16.
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_tail(p: *const Self, n: usize) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        // SAFETY: per the trait.
        unsafe {
            let h = _mm256_cvtepu16_epi32(x86::tail16(p as *const u16, n));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
    // Zen 3 runs vector shuffles on two of its four FP pipes, one of them an FMA pipe; the
    // shift and the mask below leave both FMA pipes to the FMAs. Unpacking with zeros (two
    // shuffles per 16), with one sum spilled to the stack, ran LeNet-300-100 at batch 1 in
    // 16.4-17.6 µs; this, with the sums in registers, 13.3-15.4 µs (f16 11.7-18.7 µs).
    const PAIRED: bool = true;
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> (core::arch::x86_64::__m256, core::arch::x86_64::__m256) {
        use core::arch::x86_64::*;
        // SAFETY: per the trait. Each 32-bit lane holds an (even, odd) pair of bf16s, the odd one
        // on top: its f32 is the lane with the low half cleared, the even one's the lane shifted
        // up by 16.
        unsafe {
            let v = _mm256_loadu_si256(p as *const __m256i);
            let hi = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
                _mm256_castsi256_ps(x86::and(v, hi)),
            )
        }
    }
}

/// `y[r, j] = b[j] + Σ_k x[r, k] · w[j, k]` for `r < n`, then ReLU if asked.
/// `x`: `[n, i]`, `w`: `[o, i]`, `b`: `[o]`, `y`: `[n, o]`, all row-major.
pub(crate) fn xwt<W: WeightElem>(
    x: &[f32],
    n: usize,
    w: &[W],
    (o, i): (usize, usize),
    b: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    assert!(x.len() == n * i && w.len() == o * i && b.len() == o && y.len() == n * o);
    if n == 0 || o == 0 {
        return;
    }
    for row in y.chunks_exact_mut(o) {
        row.copy_from_slice(b);
    }
    if i == 0 {
        finish(y, relu);
        return;
    }
    let isa = Isa::detected();
    let t = threads();
    let few_rows = n < 2 * MR * t;
    if n * o * i < PAR_MACS || t == 1 || (few_rows && n * o * i < LATENCY_PAR_MACS) {
        // SAFETY: y holds n rows of o columns.
        unsafe { block(isa, x, n, w, o, i, y.as_mut_ptr(), o, relu) };
    } else if !few_rows {
        // Split the batch: each task streams all of `W` past its own rows.
        use rayon::prelude::*;
        let per = n.div_ceil(t).next_multiple_of(MR);
        x.par_chunks(per * i)
            .zip(y.par_chunks_mut(per * o))
            .with_max_len(1)
            // SAFETY: each task owns its rows of y.
            .for_each(|(xs, ys)| unsafe {
                block(isa, xs, xs.len() / i, w, o, i, ys.as_mut_ptr(), o, relu)
            });
    } else {
        // Few rows (latency): split the weight rows instead, so each thread reads half of `W`.
        let per = o.div_ceil(t).next_multiple_of(NR);
        let ys = SendPtr(y.as_mut_ptr());
        let part = move |j0: usize| {
            let ys = ys;
            let cols = per.min(o - j0);
            // SAFETY: columns j0..j0+cols of every row belong to this part alone; the scope
            // outlives it.
            unsafe {
                block(
                    isa,
                    x,
                    n,
                    &w[j0 * i..(j0 + cols) * i],
                    cols,
                    i,
                    ys.0.add(j0),
                    o,
                    relu,
                )
            }
        };
        // The calling thread takes the first part itself, so fewer sleeping workers must wake.
        rayon::in_place_scope(|s| {
            for j0 in (per..o).step_by(per) {
                s.spawn(move |_| part(j0));
            }
            part(0);
        });
    }
}

/// `y [n, o] += x [n, i] · w [o, i]ᵀ` on the calling thread: no bias, no ReLU, no packing.
pub(crate) fn add_xwt(x: &[f32], n: usize, w: &[f32], o: usize, i: usize, y: &mut [f32]) {
    assert!(x.len() == n * i && w.len() == o * i && y.len() == n * o);
    if n == 0 || o == 0 || i == 0 {
        return;
    }
    // SAFETY: y holds n rows of o columns.
    unsafe { block(Isa::detected(), x, n, w, o, i, y.as_mut_ptr(), o, false) };
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint column ranges inside one `rayon::in_place_scope`.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Adds `x · wᵀ` into `y` (row stride `ys`) block by block over `k`, then applies the ReLU.
///
/// # Safety
/// `y` must be valid for `n` rows of stride `ys`, `o` columns each, and not aliased meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block<W: WeightElem>(
    isa: Isa,
    x: &[f32],
    n: usize,
    w: &[W],
    o: usize,
    i: usize,
    y: *mut f32,
    ys: usize,
    relu: bool,
) {
    let blocks = i.div_ceil(KC);
    let kc = i.div_ceil(blocks).next_multiple_of(8);
    // One row has one accumulator per weight row: eight of them, not four, keep both FMA pipes
    // busy through the FMA latency (LeNet-300-100 at batch 1, Zen 3: see `NR1`).
    let nr_step = if n == 1 { NR1 } else { NR };
    // A single row of `x` against paired (bf16) weights is split into even and odd elements once
    // per block, here, rather than once per tile of weight rows.
    let presplit = n == 1 && W::PAIRED && x86_tiles(isa);
    let mut split = [std::mem::MaybeUninit::<f32>::uninit(); KC];
    let mut k0 = 0;
    while k0 < i {
        let kl = kc.min(i - k0);
        let xs = if presplit {
            split16_row(&x[k0..k0 + kl], &mut split[..kl]);
            split.as_ptr().cast::<f32>()
        } else {
            x.as_ptr()
        };
        for j0 in (0..o).step_by(nr_step) {
            let nr = nr_step.min(o - j0);
            for r0 in (0..n).step_by(MR) {
                let mr = MR.min(n - r0);
                // SAFETY: rows r0..r0+mr of x (or the split row), rows j0..j0+nr of w,
                // k0..k0+kl inside both; the output entries are inside y per the caller.
                unsafe {
                    tile(
                        isa,
                        if presplit { xs } else { xs.add(r0 * i + k0) },
                        w.as_ptr().add(j0 * i + k0),
                        i,
                        kl,
                        (mr, nr),
                        y.add(r0 * ys + j0),
                        ys,
                        presplit,
                    )
                };
            }
        }
        k0 += kl;
    }
    if relu {
        for r in 0..n {
            // SAFETY: row r, columns 0..o are inside y.
            let row = unsafe { std::slice::from_raw_parts_mut(y.add(r * ys), o) };
            finish(row, true);
        }
    }
}

/// Whether [`tile`] runs the x86 kernel (AVX2 + FMA + F16C) rather than the portable loop.
fn x86_tiles(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa.avx2_fma() && isa.f16c()
}

/// `out` = `x` with each whole 16-element chunk reordered as its 8 even elements, then its 8 odd
/// ones (the lane order of [`WeightElem::load16`]); a last partial chunk is copied as it is.
fn split16_row(x: &[f32], out: &mut [std::mem::MaybeUninit<f32>]) {
    let whole = x.len() / 16 * 16;
    for (c, o) in x[..whole].chunks_exact(16).zip(out.chunks_exact_mut(16)) {
        for l in 0..8 {
            o[l].write(c[2 * l]);
            o[8 + l].write(c[2 * l + 1]);
        }
    }
    for (o, v) in out[whole..].iter_mut().zip(&x[whole..]) {
        o.write(*v);
    }
}

fn finish(y: &mut [f32], relu: bool) {
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.));
    }
}

/// `y[r, j] += Σ_{k<kl} x[r·s + k] · w[j·s + k]` for `r < mr`, `j < nr` (`s` = row stride),
/// with AVX2 + FMA when `isa` has them. `split`: `x` is one row already reordered by
/// [`split16_row`] (paired weights on the x86 kernel only).
///
/// # Safety
/// The rows and outputs must be in bounds.
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<W: WeightElem>(
    isa: Isa,
    x: *const f32,
    w: *const W,
    s: usize,
    kl: usize,
    (mr, nr): (usize, usize),
    y: *mut f32,
    ys: usize,
    split: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if x86_tiles(isa) {
        macro_rules! go {
            ($($m:literal $n:literal),*) => {
                match (mr, nr) {
                    // SAFETY: AVX2 + FMA + F16C checked; bounds per the caller.
                    $(($m, $n) => return unsafe { x86::tile::<$m, $n, W>(x, w, s, kl, y, ys, split) },)*
                    _ => unreachable!("tile sizes are at most {MR} x {NR}, or 1 x {NR1}"),
                }
            };
        }
        go!(3 4, 3 3, 3 2, 3 1, 2 4, 2 3, 2 2, 2 1, 1 8, 1 7, 1 6, 1 5, 1 4, 1 3, 1 2, 1 1);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    debug_assert!(!split, "only the x86 kernel reads a split row");
    for r in 0..mr {
        for j in 0..nr {
            let mut acc = 0f32;
            for k in 0..kl {
                // SAFETY: in bounds per the caller.
                acc = unsafe { (*x.add(r * s + k)).mul_add((*w.add(j * s + k)).to_f32(), acc) };
            }
            // SAFETY: as above.
            unsafe { *y.add(r * ys + j) += acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::WeightElem;

    /// `n < 8` 16-bit elements at `p` in the low lanes, the rest zero, reading only those `n`.
    ///
    /// # Safety
    /// `n` elements readable at `p`.
    #[inline(always)]
    pub(super) unsafe fn tail16(p: *const u16, n: usize) -> __m128i {
        // Shifted into two integers rather than copied into a buffer, which LLVM turns into a
        // `memcpy` call.
        let (mut lo, mut hi) = (0u64, 0u64);
        for t in 0..n.min(8) {
            // SAFETY: t < n, readable per the caller.
            let v = u64::from(unsafe { p.add(t).read_unaligned() });
            if t < 4 {
                lo |= v << (16 * t);
            } else {
                hi |= v << (16 * (t - 4));
            }
        }
        // SAFETY: plain register construction (SSE2 is baseline on x86_64).
        unsafe { _mm_set_epi64x(hi as i64, lo as i64) }
    }

    /// Lanes of the last partial vector of a `k`-block (`kl % 8` of them) as a load mask.
    #[inline(always)]
    pub(super) unsafe fn tail_mask(t: usize) -> __m256i {
        // SAFETY: plain register arithmetic.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(t as i32), idx)
        }
    }

    /// `acc += a · b`, always in the accumulator's own register (`vfmadd231ps`). In the paired
    /// bf16 loop LLVM wrote the product into the unpacked weight's register (`vfmadd213ps`) and
    /// moved it back, which cost so many registers that one of the 1 x 8 tile's accumulators
    /// lived on the stack: a store-to-load round trip in its dependency chain every 16 `k`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma231(acc: &mut __m256, a: __m256, b: __m256) {
        // SAFETY: a register-only FMA; the caller's target features include FMA.
        unsafe {
            core::arch::asm!(
                "vfmadd231ps {acc}, {a}, {b}",
                acc = inout(ymm_reg) *acc,
                a = in(ymm_reg) a,
                b = in(ymm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            )
        };
    }

    /// `a & b` as `vpand`, which runs on any of Zen 3's four FP pipes. Written as the intrinsic,
    /// LLVM turned the mask into a `vpblendw` with zero, a shuffle-pipe µop like the unpacking
    /// this replaces.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        let out;
        // SAFETY: a register-only AVX2 instruction; the caller's target features include AVX2.
        unsafe {
            core::arch::asm!(
                "vpand {o}, {a}, {b}",
                o = lateout(ymm_reg) out,
                a = in(ymm_reg) a,
                b = in(ymm_reg) b,
                options(pure, nomem, nostack, preserves_flags),
            )
        };
        out
    }

    /// The even-numbered and the odd-numbered lanes of the 16 in `(a, b)`, each in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split16(a: __m256, b: __m256) -> (__m256, __m256) {
        // Within each 128-bit half, evens then odds; then the halves regrouped.
        let idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let (a, b) = (
            _mm256_permutevar8x32_ps(a, idx),
            _mm256_permutevar8x32_ps(b, idx),
        );
        (
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }

    /// The 4 horizontal sums of `a[0..4]` in one xmm (lane j = Σ a[j]).
    #[inline(always)]
    unsafe fn hsum4(a: [__m256; 4]) -> __m128 {
        // SAFETY: plain register arithmetic.
        unsafe {
            let t01 = _mm256_hadd_ps(a[0], a[1]);
            let t23 = _mm256_hadd_ps(a[2], a[3]);
            let t = _mm256_hadd_ps(t01, t23);
            _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
        }
    }

    /// # Safety
    /// AVX2 + FMA + F16C; `x` rows `0..R` and `w` rows `0..N` (stride `s`) hold `kl` elements
    /// each; `y` rows `0..R` (stride `ys`) hold `N` floats each.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // index loops over const sizes unroll into registers
    pub(super) unsafe fn tile<const R: usize, const N: usize, W: WeightElem>(
        x: *const f32,
        w: *const W,
        s: usize,
        kl: usize,
        y: *mut f32,
        ys: usize,
        split: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); N]; R];
        let body = kl / 8 * 8;
        let mut k = 0;
        // SAFETY (whole body): every load is at k < body ≤ kl inside its row, or masked to
        // k..kl; stores stay inside y's R × N entries.
        unsafe {
            if W::PAIRED {
                // 16 at a time, x split into even and odd elements like the weights
                while k + 16 <= body {
                    let mut xe = [_mm256_setzero_ps(); R];
                    let mut xo = [_mm256_setzero_ps(); R];
                    for r in 0..R {
                        let a = _mm256_loadu_ps(x.add(r * s + k));
                        let b = _mm256_loadu_ps(x.add(r * s + k + 8));
                        (xe[r], xo[r]) = if split { (a, b) } else { split16(a, b) };
                    }
                    for j in 0..N {
                        let (we, wo) = W::load16(w.add(j * s + k));
                        for r in 0..R {
                            fma231(&mut acc[r][j], xe[r], we);
                            fma231(&mut acc[r][j], xo[r], wo);
                        }
                    }
                    k += 16;
                }
            }
            while k < body {
                let mut xv = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    xv[r] = _mm256_loadu_ps(x.add(r * s + k));
                }
                for j in 0..N {
                    let wv = W::load8(w.add(j * s + k));
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(xv[r], wv, acc[r][j]);
                    }
                }
                k += 8;
            }
            if k < kl {
                let m = tail_mask(kl - k);
                let mut xv = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    xv[r] = _mm256_maskload_ps(x.add(r * s + k), m);
                }
                for j in 0..N {
                    // the row's last elements, zero-padded to a whole vector
                    let wv = W::load_tail(w.add(j * s + k), kl - k);
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(xv[r], wv, acc[r][j]);
                    }
                }
            }
            for r in 0..R {
                // four weight rows' sums at a time
                for j0 in (0..N).step_by(4) {
                    let nn = (N - j0).min(4);
                    let mut a4 = [_mm256_setzero_ps(); 4];
                    a4[..nn].copy_from_slice(&acc[r][j0..j0 + nn]);
                    let sums = hsum4(a4);
                    let yr = y.add(r * ys + j0);
                    if nn == 4 {
                        _mm_storeu_ps(yr, _mm_add_ps(_mm_loadu_ps(yr), sums));
                    } else {
                        let mut tmp = [0f32; 4];
                        _mm_storeu_ps(tmp.as_mut_ptr(), sums);
                        for j in 0..nn {
                            *yr.add(j) += tmp[j];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 oracle.
    fn reference(
        x: &[f32],
        n: usize,
        w: &[f32],
        o: usize,
        i: usize,
        b: &[f32],
        relu: bool,
    ) -> Vec<f32> {
        let mut y = vec![0f32; n * o];
        for r in 0..n {
            for j in 0..o {
                let s: f64 = (0..i)
                    .map(|k| x[r * i + k] as f64 * w[j * i + k] as f64)
                    .sum();
                let v = s as f32 + b[j];
                y[r * o + j] = if relu { v.max(0.) } else { v };
            }
        }
        y
    }

    /// f16 and bf16 weights give what their widened f32 values give (every tail length, tile
    /// remainder and both threading paths).
    #[test]
    fn half_weights_match_their_widened_values() {
        let mut lcg = joulecut_testkit::Lcg32::new(11);
        let mut rnd = move || lcg.next_f32() - 0.5;
        for &(n, o, i) in &[
            (1, 300, 784),
            (1, 10, 100),
            (1, 15, 37),
            (3, 7, 13),
            (2, 1100, 600),
            (256, 30, 77),
            (5, 9, 1100),
            (1, 9, 1100),
            (1, 8, 48),
        ] {
            let x: Vec<f32> = (0..n * i).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..o * i).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..o).map(|_| rnd()).collect();
            let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let g: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let wide_h: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
            let wide_g: Vec<f32> = g.iter().map(|v| v.to_f32()).collect();
            for relu in [false, true] {
                let check = |got: &[f32], wide: &[f32], what: &str| {
                    let want = reference(&x, n, wide, o, i, &b, relu);
                    for (a, e) in got.iter().zip(&want) {
                        assert!(
                            (a - e).abs() <= 1e-4 * (1. + e.abs()),
                            "{what} {n}x{o}x{i}: {a} vs {e}"
                        );
                    }
                };
                let mut y = vec![f32::NAN; n * o];
                xwt(&x, n, &h, (o, i), &b, relu, &mut y);
                check(&y, &wide_h, "f16");
                xwt(&x, n, &g, (o, i), &b, relu, &mut y);
                check(&y, &wide_g, "bf16");
            }
        }
    }

    #[test]
    fn matches_reference_on_odd_shapes() {
        let mut lcg = joulecut_testkit::Lcg32::new(7);
        let mut rnd = move || lcg.next_f32() - 0.5;
        // Odd batch (tile remainders 1 and 2), odd widths (remainders of 4), k tails of 1-7 lanes,
        // several k-blocks (1100 > KC), both parallel splits (many rows; few rows, many outputs).
        for &(n, o, i) in &[
            (5, 10, 784),
            (256, 300, 784),
            (7, 3, 1),
            (8, 1, 13),
            (130, 101, 300),
            (6, 9, 1100),
            (9, 400, 1000),
            (3, 7, 0),
            // Batches of 1-4 (latency): on the calling thread below LATENCY_PAR_MACS, the outputs
            // split over threads above it; odd widths and depths.
            (2, 1100, 600),
            (1, 1401, 785),
            (1, 300, 784),
            (3, 10, 100),
            (4, 7, 13),
            (2, 1, 1),
            (1, 301, 785),
            // one row: 8 weight rows per tile, remainders of 1-7
            (1, 14, 33),
            (1, 15, 9),
            (1, 8, 16),
            (4, 9000, 3),
        ] {
            let x: Vec<f32> = (0..n * i).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..o * i).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..o).map(|_| rnd()).collect();
            for relu in [false, true] {
                let want = reference(&x, n, &w, o, i, &b, relu);
                let mut y = vec![f32::NAN; n * o];
                xwt(&x, n, &w, (o, i), &b, relu, &mut y);
                for (a, e) in y.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-4 * (1. + e.abs()),
                        "{n}x{o}x{i}: {a} vs {e}"
                    );
                }
            }
        }
    }
}
