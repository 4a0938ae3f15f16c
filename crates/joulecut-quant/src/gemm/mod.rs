//! int8 GEMM with i32 accumulation: `y[m, n] = Σ_k a[m, k] · w[n, k]`.
//!
//! * `a`: int8 activations, row-major `[m, k]` (any value in `[-128, 127]`);
//! * `w`: int8 weights `[n, k]` (PyTorch Linear layout), packed once by [`PackedWeights::pack`] into
//!   panels of 16 output columns × 4 consecutive `k` (64 bytes), the layout of one AVX-512 VNNI
//!   `vpdpbusd` operand and of two AVX2 vectors; `k` and `n` are zero-padded to multiples of 4 and 16.
//!
//! Kernels, chosen at run time ([`Int8Kernel::detect`]):
//! * [`Int8Kernel::Avx512Vnni`]: `vpdpbusd` (u8 × i8). The activations are flipped to `a + 128` (a bit
//!   flip) and the accumulators start at `-128 · Σ_k w[n, k]`, so the result is exact.
//! * [`Int8Kernel::Avx2`]: `vpmaddubsw(|a|, sign(w, a))` + `vpmaddwd(·, 1)`. The pairwise i16 sums stay
//!   below 2·128·127 = 32512, so nothing saturates — exact, provided no weight is -128 (packing
//!   records that; such weights run on [`Int8Kernel::Portable`]). Non-negative activations take a
//!   paired loop that adds two pair sums in 16 bits; the rare weights that could overflow it sit in
//!   a sparse residual whose products are added to each tile (residual.rs).
//! * [`Int8Kernel::Portable`]: plain Rust over the packed layout (the compiler vectorises it).
//! * [`Int8Kernel::Reference`]: the scalar triple loop, the tests' oracle ([`gemm_reference`]).
//!
//! Rows and columns are split over rayon tasks when the product is large enough to pay for it.
//! The requantisation epilogue (`i32 → f32` with per-row activation scale × per-column weight scale,
//! zero-point corrections, bias, optional ReLU) is fused into the tile write-back ([`Requant`]).
//!
//! ```
//! use joulecut_quant::gemm::{gemm_i32, gemm_reference, Int8Kernel, PackedWeights};
//! let (m, n, k) = (3, 10, 7);
//! let a: Vec<i8> = (0..m * k).map(|i| (i as i32 * 37 % 255 - 127) as i8).collect();
//! let w: Vec<i8> = (0..n * k).map(|i| (i as i32 * 91 % 255 - 127) as i8).collect();
//! let packed = PackedWeights::pack(&w, n, k).unwrap();
//! let mut y = vec![0i32; m * n];
//! gemm_i32(Int8Kernel::detect(), &a, m, &packed, &mut y);
//! assert_eq!(y, gemm_reference(&a, &w, m, n, k));
//! ```
//!
//! Layout of this module: [`Int8Kernel`] (kernel.rs), [`PackedWeights`] (pack.rs), [`Requant`]
//! (requant.rs) and the tile sinks that apply it (sink.rs), activation quantization (act.rs), task
//! planning (plan.rs), the entry points (driver.rs), and the kernels themselves (portable.rs,
//! x86.rs).

mod act;
mod driver;
mod kernel;
mod pack;
mod plan;
mod portable;
mod requant;
mod residual;
mod sink;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use act::{ActivationQuant, QuantizedRows, quantize_rows};
pub use driver::{F32Out, gemm_i32, gemm_reference, gemm_requant, quantize_gemm_requant};
pub use kernel::Int8Kernel;
pub use pack::{GROUP_K, MAX_K, PANEL_N, PackedWeights};
pub use requant::Requant;

// The kernels (portable.rs, x86.rs) and the tests reach these through `super::`.
use kernel::Signs;
use pack::BLOCK;
use plan::Task;
use sink::TileSink;
