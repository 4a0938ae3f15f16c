//! Pruning for candle models that pays off in bytes and joules.
//!
//! * [`compute_masks`] / [`prune_tensors`]: magnitude pruning ([`Granularity::Unstructured`]), rows and
//!   conv channels ranked by L1/L2 norm ([`Granularity::Rows`], [`Granularity::Channels`]) and N:M
//!   patterns ([`Granularity::Nm`]), per layer or with one global threshold ([`Scope`]), over the
//!   tensors chosen by a [`Selection`] (include/exclude globs; by default weight matrices and conv
//!   kernels only).
//! * [`Pruner`] + [`Schedule`]: one-shot, iterative and AGP pruning inside your own training loop over a
//!   `candle_nn::VarMap`, keeping pruned weights at exactly zero whatever the optimizer does.
//! * [`compact`]: structured compaction of a [`Chain`] of layers into physically smaller layers.
//! * [`SparseLinear`]: a CSR linear layer (`candle_core::Module`) with runtime-dispatched SIMD kernels,
//!   and [`CsrMatrix::matmul_reference`] as its oracle.
//! * [`TwoFourMatrix`]: 2:4 weights as kept values and 2-bit positions, with a small-batch kernel
//!   that reads only those.
//! * [`sensitivity_tensors`] / [`sensitivity_varmap`]: per-layer accuracy-vs-sparsity sweeps.
//! * [`prune_layer`] ([`magnitude`], [`wanda`], [`sparsegpt`]): activation-aware pruning of one linear
//!   layer, unstructured or N:M, from the [`InputStats`] of its calibration inputs, reporting the
//!   layer's reconstruction error ([`PruneStats`]).
//!
//! Everything works on plain named tensors ([`F32Tensor`]) so it applies equally to a `VarMap` and to a
//! checkpoint read from disk.
//!
//! ```
//! use std::collections::BTreeMap;
//! use joulecut_prune::{prune_tensors, F32Tensor, PruneSpec, Scope, SparsityReport};
//! let mut model = BTreeMap::new();
//! model.insert("fc1.weight".to_string(), F32Tensor::new(vec![4, 4], (0..16).map(|i| i as f32).collect())?);
//! model.insert("fc1.bias".to_string(), F32Tensor::new(vec![4], vec![1.0; 4])?);
//! let masks = prune_tensors(&mut model, &PruneSpec::new(0.75).scope(Scope::Global))?;
//! assert!(!masks.contains_key("fc1.bias")); // biases are never selected by default
//! assert_eq!(SparsityReport::from_masks(masks.iter().map(|(n, m)| (n.as_str(), m))).zeros, 12);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

mod calibrated;
mod compact;
mod error;
mod mask;
mod pruner;
mod report;
mod schedule;
mod sell;
mod sensitivity;
mod sparse;
mod spmm;
mod tensor;
mod two_four;
mod vocab;

pub use calibrated::{
    CalibratedSpec, InputStats, Method, PruneStats, SparseGptConfig, magnitude, prune_layer,
    sparsegpt, wanda,
};
pub use compact::{Chain, ChainLayer, Compacted, compact};
pub use error::{Error, Result};
/// The tensor selection every compression pass shares (include/exclude globs + default policy).
pub use joulecut_checkpoint::Selection;
pub use mask::{
    Mask, PruneSpec, apply_masks, check_sparsity, companion_bias, compute_masks, mask_tensor,
    prune_tensors,
};
pub use pruner::{PruneStep, Pruner, prune_varmap, varmap_tensors};
pub use report::{SparsityReport, TensorSparsity};
pub use schedule::Schedule;
pub use sensitivity::{
    LayerSensitivity, SensitivityConfig, SensitivityPoint, SensitivityReport, sensitivity_probes,
    sensitivity_tensors, sensitivity_varmap,
};
pub use sparse::{CsrMatrix, SparseLinear, simd_level};
pub use tensor::F32Tensor;
pub use two_four::TwoFourMatrix;
pub use vocab::{Criterion, Granularity, Scope, granularity_name};
