//! [`F32Tensor`]: a named-parameter value as plain data (shape + row-major `f32`), so that pruning,
//! compaction and packing work the same on a candle `VarMap` and on a checkpoint read from disk.
//!
//! ```
//! use joulecut_prune::F32Tensor;
//! let t = F32Tensor::new(vec![2, 3], vec![0.0, 1.0, 0.0, 2.0, 0.0, 0.0])?;
//! assert_eq!(t.nnz(), 2);
//! assert_eq!(t.rows(), 2);
//! # Ok::<(), joulecut_prune::Error>(())
//! ```

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// A dense `f32` tensor: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    /// Shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub values: Vec<f32>,
}

impl F32Tensor {
    /// A tensor from its shape and values; fails when their sizes disagree.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(Error::ShapeMismatch {
                name: "<values>".into(),
                expected: shape,
                actual: vec![values.len()],
            });
        }
        Ok(F32Tensor { shape, values })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let numel = shape.iter().product();
        F32Tensor {
            shape,
            values: vec![0.0; numel],
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.values.len()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Size of dimension 0 (output units of a weight); 1 for a scalar.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per dimension-0 slice (`numel / rows`; 0 for an empty tensor).
    pub fn row_len(&self) -> usize {
        if self.rows() == 0 {
            0
        } else {
            self.numel() / self.rows()
        }
    }

    /// Number of non-zero values.
    pub fn nnz(&self) -> usize {
        self.values.iter().filter(|v| **v != 0.0).count()
    }

    /// Fraction of zero values (0 for an empty tensor).
    pub fn sparsity(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            1.0 - self.nnz() as f64 / self.numel() as f64
        }
    }

    /// Copies a candle tensor of any float dtype (converted to f32) to the host.
    pub fn from_candle(name: &str, t: &Tensor) -> Result<Self> {
        if !t.dtype().is_float() {
            return Err(Error::UnsupportedDtype {
                name: name.into(),
                dtype: format!("{:?}", t.dtype()),
                operation: "pruning",
            });
        }
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(Error::candle("reading", name))?;
        Ok(F32Tensor {
            shape: t.dims().to_vec(),
            values,
        })
    }

    /// A candle `f32` tensor on `device` with these values.
    pub fn to_candle(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.values, self.shape.as_slice(), device)
    }
}
