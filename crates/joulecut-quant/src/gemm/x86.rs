//! x86-64 kernels: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI (`vpdpbusd`).
//!
//! Both walk a task panel by panel (16 output columns; the VNNI kernel takes two panels at a time)
//! and, inside a panel, rows in micro-tiles; a panel's weights (16 × k bytes, 12.5 KiB at k = 784)
//! stay in L1 while the task's rows stream past from L2.
//!
//! The AVX2 micro-tile is 4 rows × 16 columns: 8 accumulators, 2 weight vectors, the broadcast
//! activations and temporaries fit the 16 ymm registers without spills (measured on Zen 3: 4 × 16
//! beats 6 × 16, 3 × 24 and 2 × 32, which spill). It has two inner loops:
//! * signed activations: `vpsignb(w, a)` → `vpmaddubsw(|a|, ·)` (pairs ≤ 2·128·127, exact as long
//!   as no weight is -128);
//! * non-negative activations (every byte in `0..=127`, e.g. [`super::ActivationQuant::DynamicU7`]):
//!   `vpmaddubsw(a, w)` directly (pairs ≤ 2·127·128, exact for every weight) — no `vpabsb`/`vpsignb`,
//!   about 1.4× the throughput;
//! * 6-bit activations (every byte in `0..=63`, e.g. [`super::ActivationQuant::DynamicU6`]): two
//!   groups' `vpmaddubsw` products are added in 16 bits (|2 · 2 · 63 · 128| < 2¹⁵, still exact) before
//!   one `vpmaddwd` widens them: 3 multiply-port instructions per 128 products instead of 4.

use core::arch::x86_64::*;

use super::{BLOCK, GROUP_K, PANEL_N, PackedWeights, Signs, Task, TileSink};

/// Rows per AVX2 micro-tile (4 rows × 2 vectors = 8 accumulators of 16 registers).
const MR_AVX2: usize = 4;

/// # Safety
/// The CPU must support AVX2; `a` must hold `t.r1` rows of `stride = w.k_pad` bytes; with
/// `Signs::Mixed` no weight may be -128, with `Signs::NonNegative` no activation may be negative.
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
    for p in t.p0..t.p1 {
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
                    Signs::Mixed => go!(true),
                    Signs::NonNegative => go!(false),
                    Signs::SixBit => match rows {
                        4 => tile_avx2_paired::<4>(ap, stride, panel, kq, &mut acc),
                        3 => tile_avx2_paired::<3>(ap, stride, panel, kq, &mut acc),
                        2 => tile_avx2_paired::<2>(ap, stride, panel, kq, &mut acc),
                        _ => tile_avx2_paired::<1>(ap, stride, panel, kq, &mut acc),
                    },
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

/// [`tile_avx2`] for activations in `0..=63`: groups `q` and `q + 1` are multiplied, their 16-bit
/// pair sums added (at most 2 · 2 · 63 · 128 = 32,256 in magnitude: no saturation), and only then
/// widened to 32 bits. An odd last group runs alone.
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
