//! The same ops in plain candle tensor ops, for tensors off the CPU.
//!
//! This crate's kernels read host memory, so every public entry point sends tensors on any other
//! device (CUDA) here instead: same maths and semantics, computed by candle's own ops, which run on
//! the tensor's device. They are public so that tests can check them against the fused kernels on
//! the CPU. [`fused_kernels_on`] is the one routing decision.

use candle_core::{Device, Result, Tensor};

/// Whether this crate's hand-written kernels run for tensors on `device` (only the CPU); other
/// devices go through the candle ops in this module.
pub fn fused_kernels_on(device: &Device) -> bool {
    device.is_cpu()
}

/// [`crate::conv2d`] (+ ReLU when `relu`) in candle ops.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    padding: usize,
    relu: bool,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, 1, 1, 1)?;
    let y = match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
        None => y,
    };
    if relu { y.relu() } else { Ok(y) }
}

/// [`crate::linear`] (+ ReLU when `relu`) in candle ops: `x·wᵀ + b`.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
    if relu { y.relu() } else { Ok(y) }
}

/// [`crate::max_pool2d`] in candle ops (stride `k`, partial windows dropped), as a max over each
/// window's elements.
///
/// Not `Tensor::max_pool2d`: candle 0.11.1's backward of it scales the gradient of a window's
/// maximum by (number of maxima) / k² (a quarter for 2x2 windows) instead of passing it through,
/// and misplaces it when a side is not a multiple of `k`. The reduction's backward passes the
/// gradient to the maximum unchanged (to every maximum on exact ties, where the fused kernel picks
/// the first; after a ReLU the common tie is at 0, whose gradient the ReLU zeroes anyway).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / k, w / k);
    x.narrow(2, 0, ho * k)?
        .narrow(3, 0, wo * k)?
        .reshape((n, c, ho, k, wo, k))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, k * k))?
        .max(4)
}

/// [`crate::cross_entropy`] in candle ops (u32 targets, mean over the batch).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// [`crate::layer_norm`] in candle ops: LayerNorm over the last dimension (biased variance).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let d = candle_core::D::Minus1;
    let mean = x.mean_keepdim(d)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(d)?;
    xc.broadcast_div(&(var + f64::from(eps))?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}
