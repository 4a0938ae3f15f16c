//! A direct int8 convolution for small kernels (stride 1, `kw ≤ 8`) and non-negative activation
//! codes (the u7 and u6 grids), with ReLU and 2 × 2 max pooling fused: no im2col.
//!
//! The im2col + GEMM path loses to f32 on LeNet-5's first layer (1 input channel, 6 outputs,
//! 5 × 5): every output position copies 5 runs of 5 bytes into a 32-byte row, and the GEMM's
//! 16-column panels are 10/16 padding. Here each output row is computed 8 positions at a time
//! straight from the zero-point-padded image:
//!
//! * 16 bytes of an input row are broadcast to both halves of a register and shuffled
//!   (`vpshufb`) into 4-byte windows — position `x`'s bytes `x..x+4` — for 8 positions;
//! * `vpmaddubsw` with a channel's 4 taps (broadcast) and `vpmaddwd` with ones sum them into
//!   one i32 per position; kernels 5-8 wide take a second window at `x + 4` (zero taps beyond
//!   `kw`). With 6-bit codes the two windows' 16-bit sums are added before widening
//!   (|2 · 2 · 63 · 128| < 2¹⁵);
//! * eight output channels accumulate side by side; the shuffled windows are shared by them.
//!
//! Max pooling is taken on the i32 sums before requantisation: the requantisation is
//! non-decreasing (the scales are positive), so the result equals requantise-then-pool exactly,
//! and `Int8Conv2d`'s tests hold the two paths to bit equality.

// Only x86-64 runs the kernel; elsewhere the layout is built but never read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::gemm::Requant;

/// Output channels computed together.
const GROUP: usize = 8;

/// The weights of one conv layer laid out for the direct kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DirectConv {
    oc: usize,
    c: usize,
    kh: usize,
    kw: usize,
    /// 4-tap windows per kernel row: 1 (`kw ≤ 4`) or 2.
    quads: usize,
    /// `[group][ci][dy][quad][GROUP]`: 4 taps as the little-endian bytes of an i32 (zero taps
    /// beyond `kw`, zero channels beyond `oc`).
    taps: Vec<i32>,
    /// `Σ w` per output channel (for the activations' zero-point).
    sums: Vec<i32>,
}

/// One image's quantized input: `c` channels of `ph` rows, `stride` bytes apart, each with the
/// image's zero-point around it.
pub(crate) struct Padded<'a> {
    pub data: &'a [i8],
    pub ph: usize,
    pub stride: usize,
}

impl DirectConv {
    /// The layout of int8 weights `[oc, c, kh, kw]`; `None` when the kernel is too wide.
    pub(crate) fn new(values: &[i8], oc: usize, c: usize, kh: usize, kw: usize) -> Option<Self> {
        if kw == 0 || kw > 8 || kh == 0 || values.len() != oc * c * kh * kw {
            return None;
        }
        let quads = kw.div_ceil(4);
        let groups = oc.div_ceil(GROUP);
        let mut taps = vec![0i32; groups * c * kh * quads * GROUP];
        for o in 0..oc {
            for ci in 0..c {
                for dy in 0..kh {
                    for q in 0..quads {
                        let mut b = [0u8; 4];
                        for (t, b) in b.iter_mut().enumerate() {
                            let dx = 4 * q + t;
                            if dx < kw {
                                *b = values[((o * c + ci) * kh + dy) * kw + dx] as u8;
                            }
                        }
                        let at = (((o / GROUP * c + ci) * kh + dy) * quads + q) * GROUP + o % GROUP;
                        taps[at] = i32::from_le_bytes(b);
                    }
                }
            }
        }
        let k = c * kh * kw;
        let sums = values
            .chunks_exact(k.max(1))
            .map(|w| w.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Some(DirectConv {
            oc,
            c,
            kh,
            kw,
            quads,
            taps,
            sums,
        })
    }

    /// The row stride a [`Padded`] image needs for output width `ow`: room for the last 8-wide
    /// block's loads past the row's end.
    pub(crate) fn row_stride(&self, padded_width: usize, ow: usize) -> usize {
        padded_width.max(ow.div_ceil(GROUP) * GROUP + 4 * self.quads + 16)
    }

    /// Convolves one image (activation grid `sa`, `za`; codes in `0..=63` when `six_bit`, else
    /// `0..=127`), requantises with `rq`, pools `pool × pool` (1 or 2) and writes
    /// `[oc, oh / pool, ow / pool]` into `out`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `img` must hold `c · ph` rows of `stride ≥`
    /// [`DirectConv::row_stride`] bytes with `ph = oh + kh - 1`, every code in range.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn image(
        &self,
        img: &Padded<'_>,
        oh: usize,
        ow: usize,
        pool: usize,
        (sa, za): (f32, i32),
        six_bit: bool,
        rq: &Requant,
        out: &mut [f32],
    ) {
        assert!(pool == 1 || pool == 2);
        assert_eq!(img.ph, oh + self.kh - 1);
        assert!(img.stride >= self.row_stride(ow + self.kw - 1, ow));
        assert!(img.data.len() >= self.c * img.ph * img.stride);
        assert_eq!(out.len(), self.oc * (oh / pool) * (ow / pool));
        // SAFETY: AVX2 (the caller's contract); the buffer sizes are asserted above.
        unsafe {
            if six_bit {
                x86::image::<true>(self, img, oh, ow, pool, (sa, za), rq, out)
            } else {
                x86::image::<false>(self, img, oh, ow, pool, (sa, za), rq, out)
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{DirectConv, GROUP, Padded};
    use crate::gemm::Requant;

    /// `vpshufb` indices: lane 0 holds positions 0-3's windows, lane 1 positions 4-7's.
    const WINDOWS: [i8; 32] = [
        0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6, //
        4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7, 8, 9, 10,
    ];

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn image<const SIX: bool>(
        d: &DirectConv,
        img: &Padded<'_>,
        oh: usize,
        ow: usize,
        pool: usize,
        (sa, za): (f32, i32),
        rq: &Requant,
        out: &mut [f32],
    ) {
        let (ph_out, pw_out) = (oh / pool, ow / pool);
        let plane = ph_out * pw_out;
        // Positions whose outputs are kept (a partial pooling window is dropped).
        let used = pw_out * pool;
        for g in 0..d.oc.div_ceil(GROUP) {
            let chans = (d.oc - g * GROUP).min(GROUP);
            let mut scale = [0f32; GROUP];
            let mut shift = [0i32; GROUP];
            let mut bias = [0f32; GROUP];
            for j in 0..chans {
                let o = g * GROUP + j;
                let (sw, _) = rq.weight_grid(o);
                scale[j] = sa * sw;
                shift[j] = za.wrapping_mul(d.sums[o]);
                bias[j] = rq.bias(o);
            }
            for py in 0..ph_out {
                for x0 in (0..used).step_by(GROUP) {
                    let mut acc = unsafe { row::<SIX>(d, img, g, py * pool, x0) };
                    if pool == 2 {
                        let below = unsafe { row::<SIX>(d, img, g, py * 2 + 1, x0) };
                        for (a, b) in acc.iter_mut().zip(below) {
                            let v = _mm256_max_epi32(*a, b);
                            // neighbours swapped within each pair of lanes
                            *a = _mm256_max_epi32(v, _mm256_shuffle_epi32::<0b10_11_00_01>(v));
                        }
                    }
                    for j in 0..chans {
                        let v = _mm256_sub_epi32(acc[j], _mm256_set1_epi32(shift[j]));
                        let mut y = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(scale[j]));
                        y = _mm256_add_ps(y, _mm256_set1_ps(bias[j]));
                        if rq.relu() {
                            y = _mm256_max_ps(y, _mm256_setzero_ps());
                        }
                        let mut lanes = [0f32; GROUP];
                        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), y) };
                        let dst = &mut out[(g * GROUP + j) * plane + py * pw_out..][..pw_out];
                        let px0 = x0 / pool;
                        for (i, px) in (px0..(px0 + GROUP / pool).min(pw_out)).enumerate() {
                            dst[px] = lanes[i * pool];
                        }
                    }
                }
            }
        }
    }

    /// Output row `oy`, positions `x0..x0 + 8`, of channel group `g`: one i32 vector per channel.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn row<const SIX: bool>(
        d: &DirectConv,
        img: &Padded<'_>,
        g: usize,
        oy: usize,
        x0: usize,
    ) -> [__m256i; GROUP] {
        let shuffle = unsafe { _mm256_loadu_si256(WINDOWS.as_ptr().cast()) };
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); GROUP];
        let taps = unsafe { d.taps.as_ptr().add(g * d.c * d.kh * d.quads * GROUP) };
        for ci in 0..d.c {
            for dy in 0..d.kh {
                let src = unsafe {
                    img.data
                        .as_ptr()
                        .add((ci * img.ph + oy + dy) * img.stride + x0)
                };
                let t = unsafe { taps.add((ci * d.kh + dy) * d.quads * GROUP) };
                let window = |q: usize| {
                    let bytes = unsafe { _mm_loadu_si128(src.add(4 * q).cast()) };
                    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(bytes), shuffle)
                };
                if d.quads == 2 {
                    let (w0, w1) = (window(0), window(1));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let p0 = _mm256_maddubs_epi16(w0, _mm256_set1_epi32(unsafe { *t.add(j) }));
                        let p1 = _mm256_maddubs_epi16(
                            w1,
                            _mm256_set1_epi32(unsafe { *t.add(GROUP + j) }),
                        );
                        *acc = if SIX {
                            let s = _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones);
                            _mm256_add_epi32(*acc, s)
                        } else {
                            let s = _mm256_add_epi32(
                                _mm256_madd_epi16(p0, ones),
                                _mm256_madd_epi16(p1, ones),
                            );
                            _mm256_add_epi32(*acc, s)
                        };
                    }
                } else {
                    let w0 = window(0);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let p = _mm256_maddubs_epi16(w0, _mm256_set1_epi32(unsafe { *t.add(j) }));
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(p, ones));
                    }
                }
            }
        }
        acc
    }
}
