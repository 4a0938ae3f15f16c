//! Fast CPU kernels for training and running small networks on candle.
//!
//! Every op here is a candle custom op: it plugs into candle's autograd, so
//! `loss.backward()` and any `candle_nn::Optimizer` work as usual, but the
//! forward and backward passes run hand-written kernels (im2col into reused
//! per-thread buffers + the `gemm` crate, parallel over the batch with rayon).
//! Each kernel has a plain implementation in [`mod@reference`] that the tests use
//! as oracle.
//!
//! Devices: the kernels are CPU-only. Every public op and optimizer routes
//! tensors on other devices (CUDA) to the same maths in candle's own ops
//! ([`portable`]), so code written against this crate runs anywhere.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let x = Tensor::randn(0f32, 1., (2, 1, 28, 28), &dev)?;
//! let w = Tensor::randn(0f32, 0.1, (6, 1, 5, 5), &dev)?;
//! let b = Tensor::zeros(6, candle_core::DType::F32, &dev)?;
//! let y = joulecut_ops::conv2d(&x, &w, Some(&b), 2)?; // (2, 6, 28, 28)
//! let y = joulecut_ops::max_pool2d(&y.relu()?, 2)?; // (2, 6, 14, 14)
//! assert_eq!(y.dims(), &[2, 6, 14, 14]);
//! # Ok(())
//! }
//! ```
//!
//! CPU paths: every SIMD kernel picks its instruction set from one detected [`Isa`], and every
//! `gemm` product goes through [`matmul_f32`].
//!
//! Threading: all parallel work (ours and `gemm`'s) runs on rayon's global
//! pool, whose size follows `RAYON_NUM_THREADS` (default: one thread per CPU),
//! so nothing oversubscribes the machine.

mod alloc;
mod conv;
mod conv_pool;
mod dot;
mod grad_rows;
mod isa;
mod linear;
mod loss;
mod matmul;
pub mod optim;
mod pool;
pub mod portable;
pub mod reference;
mod rng;
mod storage;

pub mod rows;
pub use alloc::tune_allocator;
pub use conv::{conv2d, conv2d_relu};
pub use conv_pool::conv2d_relu_pool2d;
pub use grad_rows::{gelu, layer_norm, softmax_last_dim};
pub use isa::{ISA_ENV, Isa, IsaLevel};
pub use linear::{linear, linear_relu};
pub use loss::cross_entropy;
pub use matmul::{MatRef, matmul_f32};
pub use pool::max_pool2d;
pub use rng::Rng;
pub use storage::{F32View, threads as pool_threads, view};
