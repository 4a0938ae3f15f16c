//! Reference architectures — LeNet-300-100, LeNet-5, a wide teacher MLP and any ReLU MLP — with
//! PyTorch parameter names and layouts (`fc1.weight` is `[out, in]`), so a PyTorch state dict of the
//! same model loads. A model rebuilds from a checkpoint's `joulecut.model` metadata alone.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use joulecut_models::{Model, ModelConfig, init_varmap};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ModelConfig::parse("mlp:784-32-10")?;
//! let vm = init_varmap(&cfg, 0, &Device::Cpu)?;
//! let model = Model::from_varmap(&cfg, &vm)?;
//! let logits = model.forward(&Tensor::zeros((4, 784), candle_core::DType::F32, &Device::Cpu)?)?;
//! assert_eq!(logits.dims(), &[4, 10]);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod bert;
mod config;
mod distill;
mod error;
mod init;
pub mod kernels;
mod model;

pub use config::{ARCH_NAMES, CONV_POOL, MAX_PARAMS, MAX_WIDTH, ModelConfig};
pub use error::{Error, Result};
pub use init::{Rng, init_varmap, load_into_varmap};
pub use kernels::{Fallback, Kernel, RealKernels, Route, device_name};
pub use model::{DenseFactory, Layer, LayerFactory, LayerPath, Model};
