//! [compressed-tensors](https://github.com/vllm-project/compressed-tensors): the safetensors layout
//! that vLLM and Hugging Face `transformers` load compressed models from. A model directory whose
//! `config.json` has a `quantization_config` (`quant_method: "compressed-tensors"`):
//!
//! | joulecut encoding | compressed-tensors tensors |
//! |---|---|
//! | dense F32/F16/BF16 | `W` unchanged |
//! | `int8`, per channel (axis 0) / per tensor | `W` I8, `W_scale` F32 `[out, 1]` / `[1]`, `W_zero_point` I8 (asymmetric only) |
//! | `sparse`, bitmask layout | `M.shape` I64 `[2]`, `M.compressed` `[nnz]`, `M.bitmask` U8 `[rows, ceil(cols/8)]`, `M.row_offsets` I64 `[rows]` |
//! | `sparse`, 2:4 layout | `M.shape` I64 `[2, 1]`, `M.compressed` `[rows, cols/2]`, `M.bitmask` U8 `[rows, ceil(cols/8)]` |
//!
//! `W` is the weight's name (`fc1.weight`), `M` its module (`fc1`); sparse int8 values add
//! `W_scale`.
//!
//! ```no_run
//! use joulecut_interop::compressed_tensors::{SparseFormat, export, import};
//! # fn main() -> joulecut_interop::Result<()> {
//! export("mlp-int8.safetensors".as_ref(), "mlp-ct".as_ref(), SparseFormat::Auto)?;
//! import("mlp-ct".as_ref(), "mlp-back.safetensors".as_ref())?;
//! # Ok(()) }
//! ```

mod bitmask;
mod config;
mod export;
mod import;

pub use config::{QUANT_METHOD, SparseLayout};
pub use export::{Exported, SparseFormat, export};
pub use import::{Imported, import};

/// The model config file of a Hugging Face model directory.
const CONFIG: &str = "config.json";
/// The weights file of an export from a single joulecut file.
const WEIGHTS: &str = "model.safetensors";
/// `__metadata__` key of an export: JSON map from weight name to the float type it had before
/// compression (compressed-tensors does not record it), read back by [`import`].
pub const DTYPES_KEY: &str = "joulecut.interop.dtypes";
