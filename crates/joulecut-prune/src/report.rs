//! Per-tensor and overall sparsity, serialisable to JSON and printable as a table.
//!
//! ```
//! use joulecut_prune::{F32Tensor, SparsityReport};
//! let t = F32Tensor::new(vec![2, 2], vec![0.0, 1.0, 0.0, 0.0])?;
//! let r = SparsityReport::from_tensors([("w", &t)]);
//! assert_eq!(r.zeros, 3);
//! assert!((r.sparsity - 0.75).abs() < 1e-12);
//! println!("{r}");
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mask::Mask;
use crate::tensor::F32Tensor;

/// Sparsity of one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSparsity {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub numel: usize,
    /// Number of zero (or pruned) elements.
    pub zeros: usize,
    /// `zeros / numel`.
    pub sparsity: f64,
}

/// Sparsity of a set of tensors: each one and all together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparsityReport {
    /// Per tensor, in the order given.
    pub tensors: Vec<TensorSparsity>,
    /// Total elements.
    pub numel: usize,
    /// Total zero (or pruned) elements.
    pub zeros: usize,
    /// `zeros / numel` (0 when empty).
    pub sparsity: f64,
}

impl SparsityReport {
    fn from_counts(items: impl IntoIterator<Item = (String, Vec<usize>, usize, usize)>) -> Self {
        let mut r = SparsityReport::default();
        for (name, shape, numel, zeros) in items {
            r.numel += numel;
            r.zeros += zeros;
            let sparsity = if numel == 0 {
                0.0
            } else {
                zeros as f64 / numel as f64
            };
            r.tensors.push(TensorSparsity {
                name,
                shape,
                numel,
                zeros,
                sparsity,
            });
        }
        r.sparsity = if r.numel == 0 {
            0.0
        } else {
            r.zeros as f64 / r.numel as f64
        };
        r
    }

    /// Counts the pruned elements of masks.
    pub fn from_masks<'a>(masks: impl IntoIterator<Item = (&'a str, &'a Mask)>) -> Self {
        Self::from_counts(
            masks
                .into_iter()
                .map(|(n, m)| (n.to_string(), m.shape().to_vec(), m.numel(), m.pruned())),
        )
    }

    /// Counts the zero values of tensors.
    pub fn from_tensors<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a F32Tensor)>) -> Self {
        Self::from_counts(tensors.into_iter().map(|(n, t)| {
            (
                n.to_string(),
                t.shape.clone(),
                t.numel(),
                t.numel() - t.nnz(),
            )
        }))
    }
}

impl fmt::Display for SparsityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0)
            .max(6);
        writeln!(
            f,
            "{:<w$}  {:>16}  {:>10}  {:>10}  {:>8}",
            "tensor", "shape", "params", "zeros", "sparsity"
        )?;
        for t in &self.tensors {
            let shape = format!("{:?}", t.shape);
            writeln!(
                f,
                "{:<w$}  {:>16}  {:>10}  {:>10}  {:>7.2}%",
                t.name,
                shape,
                t.numel,
                t.zeros,
                100.0 * t.sparsity
            )?;
        }
        write!(
            f,
            "{:<w$}  {:>16}  {:>10}  {:>10}  {:>7.2}%",
            "total",
            "",
            self.numel,
            self.zeros,
            100.0 * self.sparsity
        )
    }
}
