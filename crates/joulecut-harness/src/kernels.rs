//! Routes compressed tensors to the kernels that make their savings real: int8 weights to
//! `joulecut-quant`'s integer GEMM, packed sparse weights to `joulecut-prune`'s CSR kernel.
//!
//! ```no_run
//! use candle_core::Device;
//! use joulecut_checkpoint::Checkpoint;
//! use joulecut_models::Model;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ck = Checkpoint::open("mlp-int8.safetensors")?;
//! let cfg = Model::config_of(&ck, None)?;
//! let model = Model::load(&ck, &cfg, &Device::Cpu, &joulecut_harness::RealKernels::default())?;
//! # Ok(()) }
//! ```

use candle_core::Device;
use joulecut_checkpoint::{SparseValues, TensorData};
use joulecut_models::{Layer, LayerFactory, LayerPath, Result};

/// Picks real kernels for compressed layers on CPU; everything else is decoded to dense f32.
#[derive(Debug, Clone, Copy)]
pub struct RealKernels {
    /// Use the sparse kernel only below this density (fraction of non-zeros): above it the dense
    /// GEMM is faster, and the layer is reported as a nominal saving instead.
    pub max_sparse_density: f64,
}

impl Default for RealKernels {
    fn default() -> Self {
        RealKernels {
            max_sparse_density: 0.5,
        }
    }
}

fn layer_err(name: &str, e: impl std::fmt::Display) -> joulecut_models::Error {
    joulecut_models::Error::Layer {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn is_int8(w: &TensorData) -> bool {
    matches!(w, TensorData::Int8(_))
        || matches!(w, TensorData::Sparse(s) if matches!(s.values, SparseValues::Int8(_)))
}

impl LayerFactory for RealKernels {
    fn linear(
        &self,
        name: &str,
        w: &TensorData,
        bias: Option<&[f32]>,
        device: &Device,
    ) -> Result<Option<Layer>> {
        // The integer and CSR kernels run on host memory.
        if !device.is_cpu() {
            return Ok(None);
        }
        if is_int8(w) {
            let l = joulecut_quant::Int8Linear::from_data(name, w, bias)
                .map_err(|e| layer_err(name, e))?;
            // A following ReLU runs in the GEMM's epilogue, not as a separate candle op.
            let relu = Box::new(l.clone().with_relu(true));
            return Ok(Some(
                Layer::new(name, LayerPath::Int8, Box::new(l)).with_fused_relu(relu),
            ));
        }
        if let TensorData::Sparse(s) = w {
            let (rows, cols) = (s.shape[0], s.shape[1..].iter().product::<usize>());
            let density = s.nnz() as f64 / (rows * cols).max(1) as f64;
            if density > self.max_sparse_density {
                return Ok(None);
            }
            let SparseValues::Float { dtype, bytes } = &s.values else {
                return Ok(None);
            };
            let mut values = Vec::new();
            dtype.decode(bytes, &mut values);
            let csr = joulecut_prune::CsrMatrix::from_bitmap(rows, cols, &s.bitmap, &values)
                .map_err(|e| layer_err(name, e))?;
            let l = joulecut_prune::SparseLinear::new(csr, bias.map(|b| b.to_vec()))
                .map_err(|e| layer_err(name, e))?;
            return Ok(Some(Layer::new(name, LayerPath::Sparse, Box::new(l))));
        }
        Ok(None)
    }

    fn conv(
        &self,
        name: &str,
        w: &TensorData,
        bias: Option<&[f32]>,
        padding: usize,
        device: &Device,
    ) -> Result<Option<Layer>> {
        if device.is_cpu() && is_int8(w) {
            let l = joulecut_quant::Int8Conv2d::from_data(name, w, bias, padding, 1)
                .map_err(|e| layer_err(name, e))?;
            return Ok(Some(Layer::new(name, LayerPath::Int8, Box::new(l))));
        }
        Ok(None)
    }
}
