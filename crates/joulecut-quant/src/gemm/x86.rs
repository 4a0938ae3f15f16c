//! x86-64 kernels: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI (`vpdpbusd`).
//!
//! Both walk a task panel by panel (16 output columns; the VNNI kernel takes two panels at a time)
//! and, inside a panel, rows in micro-tiles; a panel's weights (16 × k bytes, 12.5 KiB at k = 784)
//! stay in L1 while the task's rows stream past from L2.
//!
//! The AVX2 micro-tile is 4 rows × 16 columns: 8 accumulators, 2 weight vectors, the broadcast
//! activations and temporaries fit the 16 ymm registers without spills (measured on Zen 3 with
//! intrinsics: 4 × 16 beats 6 × 16, 3 × 24 and 2 × 32, which spill; the paired loop's 2 × 32 tile
//! below is assembly, which does not). It has these inner loops:
//! * signed activations: `vpsignb(w, a)` → `vpmaddubsw(|a|, ·)` (pairs ≤ 2·128·127, exact as long
//!   as no weight is -128);
//! * non-negative activations (every byte in `0..=127`, e.g. [`super::ActivationQuant::DynamicU7`]):
//!   `vpmaddubsw(a, w)` directly (pairs ≤ 2·127·128, exact for every weight) — no `vpabsb`/`vpsignb`,
//!   about 1.4× the throughput;
//! * the paired loop: two groups' `vpmaddubsw` products are added in 16 bits before one `vpmaddwd`
//!   widens them: 3 multiply-port instructions per 128 products instead of 4. Exact for 6-bit
//!   activations (`0..=63`, e.g. [`super::ActivationQuant::DynamicU6`]) with any weights
//!   (|2 · 2 · 63 · 128| < 2¹⁵), and for 7-bit ones when packing kept every paired quad's
//!   same-sign weights within 258 (`127 · 258 < 2¹⁵`), the few weights past that in a residual
//!   (residual.rs; [`PackedWeights::pairs_u7`]). Pairs of panels run this loop on a 2-row ×
//!   32-column tile written in assembly (`tile_avx2_paired_wide`): fewer broadcasts and adds per
//!   product, which pays most when the VM's FP pipes are contended (raw GEMM 256 × 304 × 784, one
//!   thread: 3 % faster in the fast state, 13 % in the slow one).

use core::arch::x86_64::*;

use super::{BLOCK, GROUP_K, PANEL_N, PackedWeights, Signs, Task, TileSink};

/// Rows per AVX2 micro-tile (4 rows × 2 vectors = 8 accumulators of 16 registers).
const MR_AVX2: usize = 4;

/// # Safety
/// The CPU must support AVX2; `a` must hold `t.r1` rows of `stride = w.k_pad` bytes; with
/// `Signs::Mixed` no body weight may be -128, with `Signs::NonNegative` no activation may be
/// negative, with `Signs::SixBit` none may be outside `0..=63`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn task_avx2<S: TileSink>(
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    signs: Signs,
    sink: &S,
) {
    assert!(a.len() >= t.r1 * stride && stride == w.k_pad);
    let kq = w.k_pad / GROUP_K;
    let mut p0 = t.p0;
    let paired = w.pairs(signs);
    if paired {
        // Pairs of panels in 2-row tiles (`tile_avx2_paired_wide`); an odd last panel below.
        while p0 + 1 < t.p1 {
            let (pa, pb) = (w.panel(p0).as_ptr(), w.panel(p0 + 1).as_ptr());
            let mut r = t.r0;
            while r < t.r1 {
                let rows = MR_WIDE.min(t.r1 - r);
                // A last single row runs as both rows of the tile (stride 0); only one is kept.
                let row_step = if rows == MR_WIDE { stride } else { 0 };
                let mut acc = [0i32; MR_WIDE * 2 * PANEL_N];
                // SAFETY: rows r..r+rows are in bounds (asserted above), each with kq · 4 bytes;
                // both panels hold kq blocks.
                unsafe {
                    tile_avx2_paired_wide(
                        a.as_ptr().add(r * stride),
                        row_step,
                        pa,
                        pb,
                        kq,
                        &mut acc,
                    );
                }
                sink.tile(
                    r,
                    rows,
                    p0 * PANEL_N,
                    2 * PANEL_N,
                    &acc[..rows * 2 * PANEL_N],
                );
                r += rows;
            }
            p0 += 2;
        }
    }
    for p in p0..t.p1 {
        let panel = w.panel(p).as_ptr();
        let mut r = t.r0;
        while r < t.r1 {
            let rows = MR_AVX2.min(t.r1 - r);
            let mut acc = [0i32; MR_AVX2 * PANEL_N];
            let ap = a.as_ptr().wrapping_add(r * stride);
            // SAFETY: rows r..r+rows are in bounds (asserted above); the panel holds kq blocks.
            unsafe {
                macro_rules! go {
                    ($s:literal) => {
                        match rows {
                            4 => tile_avx2::<4, $s>(ap, stride, panel, kq, &mut acc),
                            3 => tile_avx2::<3, $s>(ap, stride, panel, kq, &mut acc),
                            2 => tile_avx2::<2, $s>(ap, stride, panel, kq, &mut acc),
                            _ => tile_avx2::<1, $s>(ap, stride, panel, kq, &mut acc),
                        }
                    };
                }
                match signs {
                    _ if paired => match rows {
                        4 => tile_avx2_paired::<4>(ap, stride, panel, kq, &mut acc),
                        3 => tile_avx2_paired::<3>(ap, stride, panel, kq, &mut acc),
                        2 => tile_avx2_paired::<2>(ap, stride, panel, kq, &mut acc),
                        _ => tile_avx2_paired::<1>(ap, stride, panel, kq, &mut acc),
                    },
                    Signs::Mixed => go!(true),
                    Signs::NonNegative | Signs::SixBit => go!(false),
                }
            }
            sink.tile(r, rows, p * PANEL_N, PANEL_N, &acc[..rows * PANEL_N]);
            r += rows;
        }
    }
}

/// `R` rows × 16 columns over `kq` groups of 4.
///
/// Per group and row: broadcast 4 activation bytes; when `SIGNED`, `|a|` once and per 8-column
/// vector `vpsignb(w, a)` moves the activation's sign onto the weight; then `vpmaddubsw` →
/// `vpmaddwd(·, 1)` → add.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize, const SIGNED: bool>(
    a: *const i8,
    stride: usize,
    w: *const i8,
    kq: usize,
    out: &mut [i32],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = [_mm256_setzero_si256(); R];
    let mut acc1 = [_mm256_setzero_si256(); R];
    for q in 0..kq {
        // SAFETY: block q of the panel is 64 bytes; row bytes q*4..q*4+4 are inside each row.
        unsafe {
            let wb = w.add(q * BLOCK);
            let w0 = _mm256_loadu_si256(wb as *const __m256i);
            let w1 = _mm256_loadu_si256(wb.add(32) as *const __m256i);
            for r in 0..R {
                let av = _mm256_set1_epi32(
                    (a.add(r * stride + q * GROUP_K) as *const i32).read_unaligned(),
                );
                let (p0, p1) = if SIGNED {
                    let aa = _mm256_abs_epi8(av);
                    (
                        _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, av)),
                        _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, av)),
                    )
                } else {
                    (_mm256_maddubs_epi16(av, w0), _mm256_maddubs_epi16(av, w1))
                };
                acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(p0, ones));
                acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(p1, ones));
            }
        }
    }
    for r in 0..R {
        // SAFETY: out holds R × 16 i32.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().add(r * PANEL_N) as *mut __m256i, acc0[r]);
            _mm256_storeu_si256(
                out.as_mut_ptr().add(r * PANEL_N + 8) as *mut __m256i,
                acc1[r],
            );
        }
    }
}

/// [`tile_avx2`]'s paired loop ([`PackedWeights::pairs`]): groups `q` and `q + 1` are multiplied,
/// their 16-bit pair sums added (at most 2 · 2 · 63 · 128 = 32,256 in magnitude for 6-bit
/// activations, 127 · 258 = 32,766 for 7-bit ones on a `pairs_u7` body: no saturation), and only
/// then widened to 32 bits. An odd last group runs alone.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2_paired<const R: usize>(
    a: *const i8,
    stride: usize,
    w: *const i8,
    kq: usize,
    out: &mut [i32],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = [_mm256_setzero_si256(); R];
    let mut acc1 = [_mm256_setzero_si256(); R];
    let mut q = 0;
    while q + 1 < kq {
        // SAFETY: blocks q and q+1 of the panel are 64 bytes each; row bytes q*4..q*4+8 are inside
        // each row.
        unsafe {
            let wb = w.add(q * BLOCK);
            let w0 = _mm256_loadu_si256(wb as *const __m256i);
            let w1 = _mm256_loadu_si256(wb.add(32) as *const __m256i);
            let w2 = _mm256_loadu_si256(wb.add(BLOCK) as *const __m256i);
            let w3 = _mm256_loadu_si256(wb.add(BLOCK + 32) as *const __m256i);
            for r in 0..R {
                let ap = a.add(r * stride + q * GROUP_K);
                let x = _mm256_set1_epi32((ap as *const i32).read_unaligned());
                let y = _mm256_set1_epi32((ap.add(GROUP_K) as *const i32).read_unaligned());
                let p0 = _mm256_add_epi16(_mm256_maddubs_epi16(x, w0), _mm256_maddubs_epi16(y, w2));
                let p1 = _mm256_add_epi16(_mm256_maddubs_epi16(x, w1), _mm256_maddubs_epi16(y, w3));
                acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(p0, ones));
                acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(p1, ones));
            }
        }
        q += 2;
    }
    if q < kq {
        // SAFETY: as in `tile_avx2`: block q and row bytes q*4..q*4+4 are in bounds.
        unsafe {
            let wb = w.add(q * BLOCK);
            let w0 = _mm256_loadu_si256(wb as *const __m256i);
            let w1 = _mm256_loadu_si256(wb.add(32) as *const __m256i);
            for r in 0..R {
                let x = _mm256_set1_epi32(
                    (a.add(r * stride + q * GROUP_K) as *const i32).read_unaligned(),
                );
                acc0[r] = _mm256_add_epi32(
                    acc0[r],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones),
                );
                acc1[r] = _mm256_add_epi32(
                    acc1[r],
                    _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones),
                );
            }
        }
    }
    for r in 0..R {
        // SAFETY: out holds R × 16 i32.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().add(r * PANEL_N) as *mut __m256i, acc0[r]);
            _mm256_storeu_si256(
                out.as_mut_ptr().add(r * PANEL_N + 8) as *mut __m256i,
                acc1[r],
            );
        }
    }
}

/// Rows per [`tile_avx2_paired_wide`] tile.
const MR_WIDE: usize = 2;

/// `vpmaddubsw ymm$dst, ymm$x, [{$w} + $off]`: one weight vector as a memory operand.
macro_rules! wide_mul {
    ($dst:literal, $x:literal, $w:literal, $off:literal) => {
        concat!(
            "vpmaddubsw ymm",
            $dst,
            ", ymm",
            $x,
            ", ymmword ptr [{",
            $w,
            "} + ",
            $off,
            "]\n"
        )
    };
}

/// `acc$acc += vpmaddwd(ymm12, ones)`: widen the 16-bit sums in ymm12 and accumulate them.
macro_rules! wide_acc {
    ($acc:literal) => {
        concat!(
            "vpmaddwd ymm12, ymm12, ymm14\n",
            "vpaddd ymm",
            $acc,
            ", ymm",
            $acc,
            ", ymm12\n"
        )
    };
}

/// One weight vector of [`tile_avx2_paired_wide`]'s loop: `acc += vpmaddwd(vpmaddubsw(x, w[q]) +
/// vpmaddubsw(y, w[q + 1]), 1)`, the blocks at `$w + $off` and `$w + $off2` (64 bytes on).
macro_rules! wide_pair {
    ($acc:literal, $x:literal, $y:literal, $w:literal, $off:literal, $off2:literal) => {
        concat!(
            wide_mul!("12", $x, $w, $off),
            wide_mul!("13", $y, $w, $off2),
            "vpaddw ymm12, ymm12, ymm13\n",
            wide_acc!($acc),
        )
    };
}

/// [`wide_pair`] for an odd last group: one block, no 16-bit pair sum.
macro_rules! wide_single {
    ($acc:literal, $x:literal, $w:literal, $off:literal) => {
        concat!(wide_mul!("12", $x, $w, $off), wide_acc!($acc))
    };
}

/// The loop of [`tile_avx2_paired`] on a 2-row × 32-column tile (two adjacent panels), in
/// assembly. Each pair of broadcast activations feeds four weight vectors instead of two, which
/// takes a third of the broadcasts and vector adds off the FP pipes per product; the weights are
/// `vpmaddubsw` memory operands (L1-resident: two panels are 25 KiB at k = 784), so the 8
/// accumulators, 4 broadcasts, 2 temporaries and the ones vector fit the 16 ymm registers. (The
/// same loop in intrinsics gets its weight loads hoisted into registers by LLVM, spills
/// accumulators, and runs 20 % slower than the 4 × 16 tile; this one runs 3 % faster in the VM's
/// fast state and 13-20 % in its slow one: docs/QUANT-KERNELS.md, "Session 7".)
///
/// `out[r · 32 + c]` for row `r` (at `a + r · row_step`) and column `c` (panel `wa`'s 16, then
/// `wb`'s).
///
/// # Safety
/// AVX2; both rows (`a` and `a + row_step`) have `kq · 4` readable bytes that the weights can
/// pair ([`PackedWeights::pairs`]); `wa` and
/// `wb` hold `kq` 64-byte blocks each.
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2_paired_wide(
    a: *const i8,
    row_step: usize,
    wa: *const i8,
    wb: *const i8,
    kq: usize,
    out: &mut [i32; MR_WIDE * 2 * PANEL_N],
) {
    static ONES: [i16; 16] = [1; 16];
    // SAFETY: the loop reads rows `a`, `a + row_step` up to byte kq · 4 and blocks 0..kq of `wa`,
    // `wb` (per the contract); it writes only `out`'s 64 i32. Registers: ymm0-3 row 0's and ymm4-7
    // row 1's accumulators (panel a low/high, panel b low/high), ymm8/9 row 0's and ymm10/11 row 1's
    // broadcasts for groups q/q+1, ymm12/13 products, ymm14 ones.
    unsafe {
        core::arch::asm!(
            "vpxor xmm0, xmm0, xmm0",
            "vpxor xmm1, xmm1, xmm1",
            "vpxor xmm2, xmm2, xmm2",
            "vpxor xmm3, xmm3, xmm3",
            "vpxor xmm4, xmm4, xmm4",
            "vpxor xmm5, xmm5, xmm5",
            "vpxor xmm6, xmm6, xmm6",
            "vpxor xmm7, xmm7, xmm7",
            "vmovdqu ymm14, ymmword ptr [{ones}]",
            "test {pairs}, {pairs}",
            "jz 3f",
            "2:",
            "vpbroadcastd ymm8, dword ptr [{a}]",
            "vpbroadcastd ymm9, dword ptr [{a} + 4]",
            "vpbroadcastd ymm10, dword ptr [{a} + {s}]",
            "vpbroadcastd ymm11, dword ptr [{a} + {s} + 4]",
            wide_pair!("0", "8", "9", "wa", "0", "64"),
            wide_pair!("4", "10", "11", "wa", "0", "64"),
            wide_pair!("1", "8", "9", "wa", "32", "96"),
            wide_pair!("5", "10", "11", "wa", "32", "96"),
            wide_pair!("2", "8", "9", "wb", "0", "64"),
            wide_pair!("6", "10", "11", "wb", "0", "64"),
            wide_pair!("3", "8", "9", "wb", "32", "96"),
            wide_pair!("7", "10", "11", "wb", "32", "96"),
            "add {a}, 8",
            "add {wa}, 128",
            "add {wb}, 128",
            "dec {pairs}",
            "jnz 2b",
            "3:",
            "test {odd}, {odd}",
            "jz 4f",
            "vpbroadcastd ymm8, dword ptr [{a}]",
            "vpbroadcastd ymm10, dword ptr [{a} + {s}]",
            wide_single!("0", "8", "wa", "0"),
            wide_single!("4", "10", "wa", "0"),
            wide_single!("1", "8", "wa", "32"),
            wide_single!("5", "10", "wa", "32"),
            wide_single!("2", "8", "wb", "0"),
            wide_single!("6", "10", "wb", "0"),
            wide_single!("3", "8", "wb", "32"),
            wide_single!("7", "10", "wb", "32"),
            "4:",
            "vmovdqu ymmword ptr [{out}], ymm0",
            "vmovdqu ymmword ptr [{out} + 32], ymm1",
            "vmovdqu ymmword ptr [{out} + 64], ymm2",
            "vmovdqu ymmword ptr [{out} + 96], ymm3",
            "vmovdqu ymmword ptr [{out} + 128], ymm4",
            "vmovdqu ymmword ptr [{out} + 160], ymm5",
            "vmovdqu ymmword ptr [{out} + 192], ymm6",
            "vmovdqu ymmword ptr [{out} + 224], ymm7",
            a = inout(reg) a => _,
            s = in(reg) row_step,
            wa = inout(reg) wa => _,
            wb = inout(reg) wb => _,
            pairs = inout(reg) kq / 2 => _,
            odd = in(reg) kq % 2,
            ones = in(reg) ONES.as_ptr(),
            out = in(reg) out.as_mut_ptr(),
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _,
            options(nostack),
        );
    }
}

/// The bitwise OR of every byte (32 bytes per step): bit 7 clear means all are in `0..=127`, bits
/// 7 and 6 clear mean all are in `0..=63`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn or_all_avx2(a: &[i8]) -> u8 {
    let chunks = a.chunks_exact(32);
    let rest = chunks.remainder();
    let mut any = _mm256_setzero_si256();
    for c in chunks {
        // SAFETY: c has 32 bytes.
        any = _mm256_or_si256(any, unsafe {
            _mm256_loadu_si256(c.as_ptr() as *const __m256i)
        });
    }
    let mut lanes = [0u8; 32];
    // SAFETY: 32-byte array.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, any) };
    let o = lanes.iter().fold(0u8, |o, &b| o | b);
    rest.iter().fold(o, |o, &v| o | v as u8)
}

/// Rows per VNNI micro-tile (8 rows × 2 panels = 16 of 32 registers).
const MR_VNNI: usize = 8;

/// # Safety
/// The CPU must support AVX-512F/BW and AVX-512 VNNI; `a` must hold `t.r1` rows of `stride = w.k_pad`;
/// with `Signs::NonNegative` or `Signs::SixBit` no activation may be negative.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn task_vnni<S: TileSink>(
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    signs: Signs,
    sink: &S,
) {
    // Non-negative activations already are the u8 operand `vpdpbusd` wants: no flip by 0x80 and
    // no -128·Σw start (the flip was a third of the port-0/5 work next to the dot products).
    let flip = signs == Signs::Mixed;
    let zeros = [0i32; 2 * PANEL_N];
    assert!(a.len() >= t.r1 * stride && stride == w.k_pad);
    let kq = w.k_pad / GROUP_K;
    let mut p = t.p0;
    while p < t.p1 {
        let np = if t.p1 - p >= 2 { 2 } else { 1 };
        let panel = w.panel(p).as_ptr();
        let init = if flip {
            w.vnni_init[p * PANEL_N..].as_ptr()
        } else {
            zeros.as_ptr()
        };
        let mut r = t.r0;
        while r < t.r1 {
            let rows = MR_VNNI.min(t.r1 - r);
            let mut acc = [0i32; MR_VNNI * 2 * PANEL_N];
            let ap = a.as_ptr().wrapping_add(r * stride);
            let pstride = kq * BLOCK;
            // SAFETY: rows and panels are in bounds; `init` has np × 16 entries from panel p on.
            unsafe {
                macro_rules! go {
                    ($r:literal) => {
                        match (np == 2, flip) {
                            (true, true) => tile_vnni::<$r, 2, true>(
                                ap, stride, panel, pstride, init, kq, &mut acc,
                            ),
                            (false, true) => tile_vnni::<$r, 1, true>(
                                ap, stride, panel, pstride, init, kq, &mut acc,
                            ),
                            (true, false) => tile_vnni::<$r, 2, false>(
                                ap, stride, panel, pstride, init, kq, &mut acc,
                            ),
                            (false, false) => tile_vnni::<$r, 1, false>(
                                ap, stride, panel, pstride, init, kq, &mut acc,
                            ),
                        }
                    };
                }
                match rows {
                    8 => go!(8),
                    7 => go!(7),
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
            }
            let width = np * PANEL_N;
            sink.tile(r, rows, p * PANEL_N, width, &acc[..rows * width]);
            r += rows;
        }
        p += np;
    }
}

/// `R` rows × `NP` panels of 16 columns: `vpdpbusd(acc, a ^ 0x80, w)` with `acc` starting at
/// `-128 · Σw`, which makes the u8 × i8 product of the flipped activations exact for i8 × i8;
/// without `FLIP` (activations known non-negative) `vpdpbusd(acc, a, w)` from `init` (zeros).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const R: usize, const NP: usize, const FLIP: bool>(
    a: *const i8,
    stride: usize,
    w: *const i8,
    pstride: usize,
    init: *const i32,
    kq: usize,
    out: &mut [i32],
) {
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = [[_mm512_setzero_si512(); NP]; R];
    for (j, _) in (0..NP).enumerate() {
        // SAFETY: init has NP × 16 entries.
        let v = unsafe { _mm512_loadu_si512(init.add(j * PANEL_N) as *const _) };
        for accr in acc.iter_mut() {
            accr[j] = v;
        }
    }
    for q in 0..kq {
        // SAFETY: block q of panels p..p+NP; row bytes q*4..q*4+4 are inside each row.
        unsafe {
            let mut wv = [_mm512_setzero_si512(); NP];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.add(j * pstride + q * BLOCK) as *const _);
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(
                    (a.add(r * stride + q * GROUP_K) as *const i32).read_unaligned(),
                );
                let au = if FLIP { _mm512_xor_si512(av, flip) } else { av };
                for j in 0..NP {
                    accr[j] = _mm512_dpbusd_epi32(accr[j], au, wv[j]);
                }
            }
        }
    }
    let width = NP * PANEL_N;
    for (r, accr) in acc.iter().enumerate() {
        for (j, v) in accr.iter().enumerate() {
            // SAFETY: out holds R × width i32.
            unsafe {
                _mm512_storeu_si512(out.as_mut_ptr().add(r * width + j * PANEL_N) as *mut _, *v)
            };
        }
    }
}
