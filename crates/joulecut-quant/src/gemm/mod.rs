//! int8 GEMM with i32 accumulation: `y[m, n] = Σ_k a[m, k] · w[n, k]`.
//!
//! * `a`: int8 activations, row-major `[m, k]` (any value in `[-128, 127]`);
//! * `w`: int8 weights `[n, k]` (PyTorch Linear layout), packed once by [`PackedWeights::pack`] into
//!   panels of 16 output columns × 4 consecutive `k` (64 bytes), the layout of one AVX-512 VNNI
//!   `vpdpbusd` operand and of two AVX2 vectors; `k` and `n` are zero-padded to multiples of 4 and 16.
//!
//! Kernels, chosen at run time ([`Kernel::detect`]):
//! * [`Kernel::Avx512Vnni`]: `vpdpbusd` (u8 × i8). The activations are flipped to `a + 128` (a bit
//!   flip) and the accumulators start at `-128 · Σ_k w[n, k]`, so the result is exact.
//! * [`Kernel::Avx2`]: `vpmaddubsw(|a|, sign(w, a))` + `vpmaddwd(·, 1)`. The pairwise i16 sums stay
//!   below 2·128·127 = 32512, so nothing saturates — exact, provided no weight is -128 (packing
//!   records that; such weights run on [`Kernel::Portable`]).
//! * [`Kernel::Portable`]: plain Rust over the packed layout (the compiler vectorises it).
//! * [`Kernel::Reference`]: the scalar triple loop, the tests' oracle ([`gemm_reference`]).
//!
//! Rows and columns are split over rayon tasks when the product is large enough to pay for it.
//! The requantisation epilogue (`i32 → f32` with per-row activation scale × per-column weight scale,
//! zero-point corrections, bias, optional ReLU) is fused into the tile write-back ([`Requant`]).
//!
//! ```
//! use joulecut_quant::gemm::{gemm_i32, gemm_reference, Kernel, PackedWeights};
//! let (m, n, k) = (3, 10, 7);
//! let a: Vec<i8> = (0..m * k).map(|i| (i as i32 * 37 % 255 - 127) as i8).collect();
//! let w: Vec<i8> = (0..n * k).map(|i| (i as i32 * 91 % 255 - 127) as i8).collect();
//! let packed = PackedWeights::pack(&w, n, k).unwrap();
//! let mut y = vec![0i32; m * n];
//! gemm_i32(Kernel::detect(), &a, m, &packed, &mut y);
//! assert_eq!(y, gemm_reference(&a, &w, m, n, k));
//! ```

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{Error, Result};

mod act;
mod portable;

pub use act::{ActivationQuant, quantize_rows};
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Output columns per packed panel.
pub const PANEL_N: usize = 16;
/// Consecutive `k` per packed group.
pub const GROUP_K: usize = 4;
/// Bytes of one (panel, k-group) block.
const BLOCK: usize = PANEL_N * GROUP_K;
const _: () = assert!(BLOCK == 64, "one block is one 512-bit vector");

/// Largest `k` for which the i32 epilogue (zero-point corrections included) cannot overflow.
pub const MAX_K: usize = 1 << 15;

/// Work (m·n·k multiply-adds) below which a GEMM runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// An int8 GEMM implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Scalar triple loop (the test oracle; slow).
    Reference,
    /// Portable Rust over the packed layout.
    Portable,
    /// AVX2 `vpmaddubsw`/`vpmaddwd`.
    Avx2,
    /// AVX-512 VNNI `vpdpbusd`.
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel, slowest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Reference,
        Kernel::Portable,
        Kernel::Avx2,
        Kernel::Avx512Vnni,
    ];

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Reference | Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512Vnni => false,
        }
    }

    /// The kernels this CPU can run.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest available kernel, or the one named by `JOULECUT_INT8_KERNEL`
    /// (`reference`, `portable`, `avx2`, `avx512vnni`) when that is available. Cached.
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let forced = std::env::var("JOULECUT_INT8_KERNEL")
                .ok()
                .and_then(|v| v.parse::<Kernel>().ok());
            match forced {
                Some(k) if k.is_available() => k,
                _ => *Kernel::available().last().unwrap_or(&Kernel::Portable),
            }
        })
    }

    /// Short lowercase name (`avx512vnni`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Reference => "reference",
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kernel> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| Error::BadConfig(format!("unknown int8 kernel `{s}`")))
    }
}

/// One `[16][4]` block of packed weights, aligned so that no kernel load of it (32 bytes for
/// AVX2, 64 for AVX-512) straddles two cache lines: a split load costs a second load slot, and the
/// AVX2 6-bit loop issues close to two loads per cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
struct Block([i8; BLOCK]);

/// int8 weights `[n, k]` packed for the kernels, with their column sums.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    n: usize,
    k: usize,
    k_pad: usize,
    n_pad: usize,
    /// `[n_pad / 16][k_pad / 4][16][4]`, one 64-byte block per `[16][4]`.
    data: Vec<Block>,
    /// `Σ_k w[n, k]`, padded with zeros to `n_pad`.
    col_sums: Vec<i32>,
    /// `-128 · col_sums`: the VNNI kernel's starting accumulators.
    vnni_init: Vec<i32>,
    /// Whether some weight is -128 (the AVX2 kernel can't take those exactly).
    has_min: bool,
}

impl PackedWeights {
    /// Packs row-major `w` of shape `[n, k]`.
    pub fn pack(w: &[i8], n: usize, k: usize) -> Result<PackedWeights> {
        if w.len() != n * k || n == 0 || k == 0 || k > MAX_K {
            return Err(Error::BadShape {
                name: "int8 weight".into(),
                shape: vec![n, k],
                reason: format!(
                    "{} values; need n·k of them with n, k ≥ 1 and k ≤ {MAX_K}",
                    w.len()
                ),
            });
        }
        let k_pad = k.next_multiple_of(GROUP_K);
        let n_pad = n.next_multiple_of(PANEL_N);
        let kq = k_pad / GROUP_K;
        let mut data = vec![Block([0; BLOCK]); n_pad * k_pad / BLOCK];
        for (col, row) in w.chunks_exact(k).enumerate() {
            let (panel, c) = (col / PANEL_N, col % PANEL_N);
            for (kk, &v) in row.iter().enumerate() {
                data[panel * kq + kk / GROUP_K].0[c * GROUP_K + kk % GROUP_K] = v;
            }
        }
        let mut col_sums: Vec<i32> = w
            .chunks_exact(k)
            .map(|r| r.iter().map(|&v| i32::from(v)).sum())
            .collect();
        col_sums.resize(n_pad, 0);
        let vnni_init = col_sums.iter().map(|s| -128 * s).collect();
        Ok(PackedWeights {
            n,
            k,
            k_pad,
            n_pad,
            data,
            col_sums,
            vnni_init,
            has_min: w.contains(&i8::MIN),
        })
    }

    /// Output columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Depth (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `k` rounded up to a multiple of 4: the row stride the kernels want for activations.
    pub fn k_padded(&self) -> usize {
        self.k_pad
    }

    /// `Σ_k w[c, k]` for each column `c`.
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums[..self.n]
    }

    /// The weight `w[col, kk]` (unpacked).
    pub fn get(&self, col: usize, kk: usize) -> i8 {
        let kq = self.k_pad / GROUP_K;
        self.bytes_flat()[((col / PANEL_N) * kq + kk / GROUP_K) * BLOCK
            + (col % PANEL_N) * GROUP_K
            + kk % GROUP_K]
    }

    /// The weights back in `[n, k]` row-major order.
    pub fn unpack(&self) -> Vec<i8> {
        (0..self.n)
            .flat_map(|c| (0..self.k).map(move |kk| (c, kk)))
            .map(|(c, kk)| self.get(c, kk))
            .collect()
    }

    /// Bytes of packed weight data.
    pub fn bytes(&self) -> usize {
        self.data.len() * BLOCK
    }

    fn panel(&self, p: usize) -> &[i8] {
        let len = (self.k_pad / GROUP_K) * BLOCK;
        &self.bytes_flat()[p * len..(p + 1) * len]
    }

    /// The packed bytes, 64-byte aligned.
    fn bytes_flat(&self) -> &[i8] {
        // SAFETY: `Block` is `[i8; 64]` with a larger alignment and no padding, so the blocks are
        // `64 · len` contiguous, initialised bytes.
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().cast::<i8>(), self.data.len() * BLOCK)
        }
    }
}

/// Per-column requantisation: `y = sa[m] · sw[n] · (acc − za[m]·Σw[n] − zw[n]·Σa[m] + k·za[m]·zw[n]) + b[n]`,
/// then optional ReLU. Build once per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// Weight scale per output column (padded to a multiple of 16).
    scales: Vec<f32>,
    /// Weight zero-point per output column; `None` when all are zero.
    zeros: Option<Vec<i32>>,
    /// Bias per output column (zeros when there is none).
    bias: Vec<f32>,
    /// Apply `max(y, 0)`.
    relu: bool,
}

impl Requant {
    /// `scales` (one per column, or one for all), optional zero-points (same count), optional bias
    /// (one per column), ReLU on/off.
    pub fn new(
        n: usize,
        scales: &[f32],
        zero_points: Option<&[i32]>,
        bias: Option<&[f32]>,
        relu: bool,
    ) -> Result<Requant> {
        let bad = |reason: String| Error::BadParams {
            name: "int8 epilogue".into(),
            reason,
        };
        let n_pad = n.next_multiple_of(PANEL_N);
        let widen_i = |v: &[i32]| -> Result<Vec<i32>> {
            let mut out = match v.len() {
                1 => vec![v[0]; n],
                l if l == n => v.to_vec(),
                l => return Err(bad(format!("{l} zero-points for {n} columns"))),
            };
            out.resize(n_pad, 0);
            Ok(out)
        };
        let mut s = match scales.len() {
            1 => vec![scales[0]; n],
            l if l == n => scales.to_vec(),
            l => return Err(bad(format!("{l} scales for {n} columns"))),
        };
        s.resize(n_pad, 0.0);
        let zeros = match zero_points {
            Some(z) if z.iter().any(|&v| v != 0) => Some(widen_i(z)?),
            _ => None,
        };
        let mut b = match bias {
            Some(b) if b.len() == n => b.to_vec(),
            Some(b) => return Err(bad(format!("bias has {} values for {n} columns", b.len()))),
            None => vec![0.0; n],
        };
        b.resize(n_pad, 0.0);
        Ok(Requant {
            scales: s,
            zeros,
            bias: b,
            relu,
        })
    }

    /// Whether the weights have non-zero zero-points (then the activations' row sums are needed).
    pub fn needs_row_sums(&self) -> bool {
        self.zeros.is_some()
    }

    /// The same epilogue with ReLU switched on or off.
    pub fn with_relu(mut self, relu: bool) -> Requant {
        self.relu = relu;
        self
    }

    /// Whether ReLU is applied.
    pub fn relu(&self) -> bool {
        self.relu
    }
}

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

/// Receives finished tiles: `acc` holds `rows × width` i32 results (row-major, `width` = 16 or 32),
/// for output rows `r0..r0+rows` and columns `c0..`.
pub(crate) trait TileSink: Sync {
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]);
}

/// Raw pointer that rayon tasks may share: every task writes a disjoint set of tiles.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
// SAFETY: only used for disjoint writes by the tasks of one GEMM call, which outlives them.
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

struct I32Sink {
    out: SharedPtr<i32>,
    n: usize,
}

impl TileSink for I32Sink {
    #[inline(always)]
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]) {
        let cols = width.min(self.n - c0);
        for r in 0..rows {
            // SAFETY: (r0 + r, c0..c0 + cols) is inside the m × n output and owned by this tile.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.out.0.add((r0 + r) * self.n + c0), cols)
            };
            dst.copy_from_slice(&acc[r * width..r * width + cols]);
        }
    }
}

struct F32Sink<'a> {
    out: SharedPtr<f32>,
    n: usize,
    k: i32,
    /// Per-row grids and sums of the rows this sink receives (row `r` of a tile is entry `r`).
    scales: &'a [f32],
    zeros: &'a [i32],
    sums: &'a [i32],
    col_sums: &'a [i32],
    rq: &'a Requant,
}

impl F32Sink<'_> {
    /// Requantises one row of a tile into `dst` (`dst.len()` ≤ `width` columns from `c0`).
    #[inline(always)]
    fn row(&self, row: usize, c0: usize, acc: &[i32], dst: &mut [f32]) {
        let w = dst.len();
        let sums = &self.col_sums[c0..c0 + w];
        let scales = &self.rq.scales[c0..c0 + w];
        let bias = &self.rq.bias[c0..c0 + w];
        let acc = &acc[..w];
        let (sa, za) = (self.scales[row], self.zeros[row]);
        match &self.rq.zeros {
            None => {
                for j in 0..w {
                    let v = acc[j].wrapping_sub(za.wrapping_mul(sums[j]));
                    dst[j] = v as f32 * (sa * scales[j]) + bias[j];
                }
            }
            Some(zw) => {
                let zw = &zw[c0..c0 + w];
                let sa_row = self.sums[row];
                for j in 0..w {
                    let v = acc[j]
                        .wrapping_sub(za.wrapping_mul(sums[j]))
                        .wrapping_sub(zw[j].wrapping_mul(sa_row))
                        .wrapping_add(self.k.wrapping_mul(za).wrapping_mul(zw[j]));
                    dst[j] = v as f32 * (sa * scales[j]) + bias[j];
                }
            }
        }
        if self.rq.relu {
            dst.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

impl TileSink for F32Sink<'_> {
    #[inline(always)]
    fn tile(&self, r0: usize, rows: usize, c0: usize, width: usize, acc: &[i32]) {
        let cols = width.min(self.n - c0);
        for r in 0..rows {
            let row = r0 + r;
            // SAFETY: (row, c0..c0 + cols) is inside the output and owned by this tile.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.out.0.add(row * self.n + c0), cols) };
            // Straight into the output: a per-row `copy_from_slice` of 16 floats was a libc
            // memmove call per row and tile (1.8 % of the int8 MLP profile).
            let acc = &acc[r * width..(r + 1) * width];
            // Fixed lengths let the compiler vectorise the epilogue without remainder loops (16:
            // one AVX2 panel; 32: the VNNI kernel's two panels).
            if cols == 16 {
                self.row(row, c0, acc, &mut dst[..16]);
            } else if cols == 32 {
                self.row(row, c0, acc, &mut dst[..32]);
            } else {
                self.row(row, c0, acc, dst);
            }
        }
    }
}

/// A rectangle of work: rows `r0..r1`, panels `p0..p1`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Task {
    pub r0: usize,
    pub r1: usize,
    pub p0: usize,
    pub p1: usize,
}

/// Threads a GEMM may split over: 1 when it already runs on a rayon worker (e.g. one row chunk of a
/// batch that the model split across threads), where a nested split only adds hand-offs.
fn pool_threads() -> usize {
    if rayon::current_thread_index().is_some() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Splits `m × panels` into tasks for the rayon pool.
fn plan(m: usize, w: &PackedWeights) -> Vec<Task> {
    let panels = w.n_pad / PANEL_N;
    let work = m * w.n_pad * w.k_pad;
    let threads = pool_threads();
    if work < PARALLEL_MIN_WORK || threads == 1 {
        return vec![Task {
            r0: 0,
            r1: m,
            p0: 0,
            p1: panels,
        }];
    }
    let target = 4 * threads;
    let row_chunks = (m / 16).clamp(1, target);
    let col_groups = target.div_ceil(row_chunks).min(panels);
    let rows_per = m.div_ceil(row_chunks).next_multiple_of(8);
    let panels_per = panels.div_ceil(col_groups);
    let mut tasks = Vec::new();
    for r0 in (0..m).step_by(rows_per) {
        for p0 in (0..panels).step_by(panels_per) {
            tasks.push(Task {
                r0,
                r1: (r0 + rows_per).min(m),
                p0,
                p1: (p0 + panels_per).min(panels),
            });
        }
    }
    tasks
}

/// Whether the activations have negative values: picks the AVX2 inner loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signs {
    /// Any int8 value.
    Mixed,
    /// Every value in `0..=127`.
    NonNegative,
    /// Every value in `0..=63` (the AVX2 kernel pairs groups before widening).
    SixBit,
}

impl Signs {
    /// Scans `a` (a few µs for a 256 × 784 batch, against the GEMM's milliseconds).
    fn of(kernel: Kernel, a: &[i8]) -> Signs {
        #[cfg(target_arch = "x86_64")]
        // The scan is AVX2 code; every AVX-512 VNNI CPU has AVX2 too.
        if matches!(kernel, Kernel::Avx2 | Kernel::Avx512Vnni) && Kernel::Avx2.is_available() {
            // SAFETY: AVX2 checked.
            let bits = unsafe { x86::or_all_avx2(a) };
            // Bit 7 set: some value is negative. Otherwise the OR bounds every value from above
            // and is at most 63 exactly when every value is.
            return if bits & 0x80 != 0 {
                Signs::Mixed
            } else {
                Signs::of_range(0, i32::from(bits))
            };
        }
        let _ = (kernel, a);
        Signs::Mixed
    }

    /// The loop values in `lo..=hi` allow.
    fn of_range(lo: i32, hi: i32) -> Signs {
        match (lo >= 0, hi <= 63) {
            (true, true) => Signs::SixBit,
            (true, false) => Signs::NonNegative,
            (false, _) => Signs::Mixed,
        }
    }

    /// What every value a `mode` produces is known to satisfy.
    fn of_mode(mode: ActivationQuant) -> Signs {
        let (lo, hi) = mode.code_range();
        Signs::of_range(lo, hi)
    }
}

/// The kernel that actually runs: unavailable ones fall back to portable code, and AVX2 with
/// signed activations can't take -128 weights exactly.
fn effective(kernel: Kernel, w: &PackedWeights, signs: Signs) -> Kernel {
    match kernel {
        Kernel::Avx2 if w.has_min && signs == Signs::Mixed => Kernel::Portable,
        k if !k.is_available() => Kernel::Portable,
        k => k,
    }
}

/// Runs one task with an already [`effective`] kernel.
#[inline]
fn exec<S: TileSink>(
    kernel: Kernel,
    a: &[i8],
    stride: usize,
    w: &PackedWeights,
    t: Task,
    signs: Signs,
    sink: &S,
) {
    match kernel {
        Kernel::Reference => portable::reference_task(a, stride, w, t, sink),
        Kernel::Portable => portable::task(a, stride, w, t, sink),
        // SAFETY: availability (and the -128 rule) was checked by `effective`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { x86::task_avx2(a, stride, w, t, signs, sink) },
        // SAFETY: availability was checked by `effective`.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => unsafe { x86::task_vnni(a, stride, w, t, signs, sink) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => portable::task(a, stride, w, t, sink),
    }
}

fn run<S: TileSink>(
    kernel: Kernel,
    a: &[i8],
    stride: usize,
    m: usize,
    w: &PackedWeights,
    sink: &S,
) {
    let signs = Signs::of(kernel, &a[..m * stride]);
    let kernel = effective(kernel, w, signs);
    let tasks = plan(m, w);
    if tasks.len() == 1 {
        exec(kernel, a, stride, w, tasks[0], signs, sink);
    } else {
        tasks
            .par_iter()
            .for_each(|t| exec(kernel, a, stride, w, *t, signs, sink));
    }
}

/// `out[m, n] = Σ_k a[m, k] · w[n, k]` exactly, for row-major `a` of shape `[m, w.k()]`.
///
/// # Panics
/// When `a.len() != m · w.k()` or `out.len() != m · w.n()`.
pub fn gemm_i32(kernel: Kernel, a: &[i8], m: usize, w: &PackedWeights, out: &mut [i32]) {
    assert_eq!(a.len(), m * w.k, "activation length");
    assert_eq!(out.len(), m * w.n, "output length");
    if m == 0 {
        return;
    }
    let sink = I32Sink {
        out: SharedPtr(out.as_mut_ptr()),
        n: w.n,
    };
    if w.k == w.k_pad {
        return run(kernel, a, w.k_pad, m, w, &sink);
    }
    PAD_SCRATCH.with(|p| {
        let mut p = p.borrow_mut();
        p.resize(m * w.k_pad, 0);
        for (dst, src) in p.chunks_exact_mut(w.k_pad).zip(a.chunks_exact(w.k)) {
            dst[..w.k].copy_from_slice(src);
            dst[w.k..].fill(0);
        }
        run(kernel, &p[..m * w.k_pad], w.k_pad, m, w, &sink);
    });
}

thread_local! {
    /// [`gemm_i32`]'s copy of activations whose `k` is not a multiple of 4, reused across calls.
    static PAD_SCRATCH: RefCell<Vec<i8>> = const { RefCell::new(Vec::new()) };
}

/// The fused int8 GEMM + requantisation: `out[m, n]` (f32) from quantized rows and packed weights.
///
/// # Panics
/// When the rows' stride is not `w.k_padded()`, `out.len() != rows.m · w.n()`, or row sums are
/// needed and missing.
pub fn gemm_requant(
    kernel: Kernel,
    rows: &QuantizedRows,
    w: &PackedWeights,
    rq: &Requant,
    out: &mut [f32],
) {
    assert_eq!(rows.stride, w.k_pad, "activation row stride");
    assert_eq!(rows.data.len(), rows.m * w.k_pad, "activation length");
    assert_eq!(out.len(), rows.m * w.n, "output length");
    assert_eq!(rq.scales.len(), w.n_pad, "epilogue width");
    assert!(
        !rq.needs_row_sums() || rows.sums.len() == rows.m,
        "row sums"
    );
    if rows.m == 0 {
        return;
    }
    let sink = F32Sink {
        out: SharedPtr(out.as_mut_ptr()),
        n: w.n,
        k: w.k as i32,
        scales: &rows.scales,
        zeros: &rows.zeros,
        sums: &rows.sums,
        col_sums: &w.col_sums,
        rq,
    };
    run(kernel, &rows.data, rows.stride, rows.m, w, &sink);
}

/// Rows per task of [`quantize_gemm_requant`], or `m` when the product should stay on the calling
/// thread (small batches: batch-1 latency must not pay for a rayon round trip).
fn rows_per_task(m: usize, w: &PackedWeights) -> usize {
    let threads = pool_threads();
    if m * w.n_pad * w.k_pad < PARALLEL_MIN_WORK || threads == 1 || m < 2 * MIN_TASK_ROWS {
        return m;
    }
    // Two tasks per thread: enough slack for work stealing on a busy machine, few enough that each
    // task's tiles stay large. Multiples of 4 keep the AVX2 micro-tiles full.
    m.div_ceil(2 * threads)
        .next_multiple_of(4)
        .max(MIN_TASK_ROWS)
}

/// Fewest rows worth a rayon task.
const MIN_TASK_ROWS: usize = 8;

/// An output buffer of f32s: initialised (`[f32]`) or not (`[MaybeUninit<f32>]`, e.g. a `Vec`'s
/// spare capacity — the GEMM writes every element, so callers that allocate need not zero it).
pub trait F32Out {
    /// The buffer as possibly-uninitialised f32s; only initialised f32s are written through it.
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>];
}

impl F32Out for [f32] {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>] {
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and every write through the result is a
        // valid f32.
        unsafe { &mut *(self as *mut [f32] as *mut [MaybeUninit<f32>]) }
    }
}

impl F32Out for [MaybeUninit<f32>] {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<f32>] {
        self
    }
}

/// Quantizes f32 rows `x` (`[m, w.k()]`) per `mode` and multiplies them by `w` with the fused
/// requantisation, writing every element of `out[m, n]`. Each rayon task quantizes its own rows and
/// runs them through every panel, so there is one parallel pass per layer; `scratch` holds the int8
/// rows (reused across calls, no allocation once it is large enough).
///
/// # Panics
/// When `x.len() != m · w.k()`, `out.len() != m · w.n()`, or `rq` was built for another width.
#[allow(clippy::too_many_arguments)] // the GEMM's operands, the epilogue, and the caller's scratch
pub fn quantize_gemm_requant<O: F32Out + ?Sized>(
    kernel: Kernel,
    x: &[f32],
    m: usize,
    mode: ActivationQuant,
    w: &PackedWeights,
    rq: &Requant,
    scratch: &mut QuantizedRows,
    out: &mut O,
) {
    let out = out.as_uninit();
    assert_eq!(x.len(), m * w.k, "activation length");
    assert_eq!(out.len(), m * w.n, "output length");
    assert_eq!(rq.scales.len(), w.n_pad, "epilogue width");
    let stride = w.k_pad;
    scratch.m = m;
    scratch.stride = stride;
    scratch.data.resize(m * stride, 0);
    scratch.scales.resize(m, 0.0);
    scratch.zeros.resize(m, 0);
    scratch.sums.resize(m, 0);
    if m == 0 {
        return;
    }
    let signs = Signs::of_mode(mode);
    let kernel = effective(kernel, w, signs);
    let need_sums = rq.needs_row_sums();
    let panels = w.n_pad / PANEL_N;
    let per = rows_per_task(m, w);
    let body = |(((xs, q), ((sc, zp), sm)), o): TaskChunk<'_>| {
        let rows = sc.len();
        for (i, (row, d)) in xs
            .chunks_exact(w.k)
            .zip(q.chunks_exact_mut(stride))
            .enumerate()
        {
            (sc[i], zp[i], sm[i]) = act::quantize_one(row, d, mode, need_sums);
        }
        let sink = F32Sink {
            out: SharedPtr(o.as_mut_ptr().cast::<f32>()),
            n: w.n,
            k: w.k as i32,
            scales: sc,
            zeros: zp,
            sums: sm,
            col_sums: &w.col_sums,
            rq,
        };
        let t = Task {
            r0: 0,
            r1: rows,
            p0: 0,
            p1: panels,
        };
        exec(kernel, q, stride, w, t, signs, &sink);
    };
    if per >= m {
        body((
            (
                (x, &mut scratch.data[..]),
                (
                    (&mut scratch.scales[..], &mut scratch.zeros[..]),
                    &mut scratch.sums[..],
                ),
            ),
            out,
        ));
    } else {
        x.par_chunks(per * w.k)
            .zip(scratch.data.par_chunks_mut(per * stride))
            .zip(
                scratch
                    .scales
                    .par_chunks_mut(per)
                    .zip(scratch.zeros.par_chunks_mut(per))
                    .zip(scratch.sums.par_chunks_mut(per)),
            )
            .zip(out.par_chunks_mut(per * w.n))
            .with_max_len(1)
            .for_each(body);
    }
}

/// One task's share of [`quantize_gemm_requant`]: ((f32 rows, int8 rows), ((scales, zero-points),
/// row sums)), output rows.
type TaskChunk<'a> = (
    (
        (&'a [f32], &'a mut [i8]),
        ((&'a mut [f32], &'a mut [i32]), &'a mut [i32]),
    ),
    &'a mut [MaybeUninit<f32>],
);

/// The oracle: `Σ_k a[m, k] · w[n, k]` by a plain triple loop over unpacked row-major inputs.
pub fn gemm_reference(a: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut out = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|kk| i32::from(a[i * k + kk]) * i32::from(w[j * k + kk]))
                .sum();
        }
    }
    out
}
