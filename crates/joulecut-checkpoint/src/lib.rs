//! Read and write joulecut checkpoints: plain safetensors files whose `__metadata__` describes the
//! model and how each tensor is compressed (format: `docs/FORMAT.md`). Sharded checkpoints and model
//! directories open as a [`Source`]; [`stream`](mod@stream) rewrites one tensor by tensor in bounded memory.
//!
//! ```no_run
//! use joulecut_checkpoint::{Checkpoint, CheckpointWriter, DenseTensor, TensorData};
//! # fn main() -> joulecut_checkpoint::Result<()> {
//! let ck = Checkpoint::open("model.safetensors")?;
//! let mut out = CheckpointWriter::derived_from(&ck)?;
//! for name in ck.names() {
//!     let (shape, values) = ck.get_f32(name)?;
//!     out.insert(name.clone(), TensorData::Dense(DenseTensor::from_f32(shape, &values)));
//! }
//! out.write("dense.safetensors", &[ck.path()])?;
//! # Ok(()) }
//! ```

pub mod atomic;
mod encoding;
mod error;
pub mod input;
pub mod meta;
mod precomputed;
mod read;
mod select;
pub mod sniff;
mod source;
pub mod stream;
mod tensor;
mod view;
mod write;

pub use atomic::temp_path;
pub use encoding::{Encodings, TensorEncoding};
pub use error::{Error, Result};
pub use meta::HistoryEntry;
pub use precomputed::Precomputed;
pub use read::{Checkpoint, StoredInfo, dtype_size};
pub use select::{Selection, SelectionError};
pub use source::{CARD_FILES, DEFAULT_INDEX, Index, Shard, Source};
pub use stream::{
    Decode, EntrySpec, Plan, Produced, StreamOptions, TensorRef, Transform, Written, check_output,
    stream,
};
pub use tensor::{
    DenseTensor, FloatType, Int8Tensor, SparseTensor, SparseValues, TensorData, numel,
};
pub use view::{BLOCK, Values, decode_into};
pub use write::{CheckpointWriter, atomic_write, encode_tensor, refuse_input};
