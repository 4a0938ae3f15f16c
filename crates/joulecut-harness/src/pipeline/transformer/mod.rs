//! Calibrated compression of BERT-family model directories (Hugging Face layout), shared by the
//! CLI (`joulecut prune --method wanda|sparsegpt`, `joulecut prune --granularity heads|neurons`,
//! `joulecut quantize --dtype int8 --calibration`)
//! and the transformer bench: each step reads a model directory and writes one, so a bench
//! variant is the same chain of commands a user would type.
//!
//! - [`prune_encoder`] loads a directory on joulecut's kernels and prunes every encoder linear
//!   layer on the calibration sentences, layer by layer ([`PrunedEncoder`]); its
//!   [`PrunedEncoder::write`] writes the result dense, or packed where packing pays, with every
//!   other tensor and file of the input copied unchanged. One pruning pass can be written both
//!   ways.
//! - [`prune_units`] removes a fraction of every encoder layer's attention heads or FFN neurons
//!   (ranked by magnitude or on the calibration sentences) and compacts the layers
//!   ([`StructuredEncoder`]); its [`StructuredEncoder::write`] writes the smaller tensors with
//!   `config.json` rewritten to record what is gone.
//! - [`calibrated_grids`] chooses each int8 layer's activation grid (and smoothing) from its
//!   output error on the calibration sentences; [`super::quantize_stream`] records the choice
//!   ([`super::Int8Activations::PerLayer`]).
//!
//! ```no_run
//! use joulecut_harness::pipeline::transformer::{prune_encoder, calibrated_grids};
//! use joulecut_prune::{CalibratedSpec, Method};
//! # fn main() -> joulecut_harness::Result<()> {
//! let calib = joulecut_embed::read_sentences("calib.txt".as_ref())?;
//! let pruned = prune_encoder("minilm".as_ref(), &calib, &CalibratedSpec::new(Method::SparseGpt, 0.5))?;
//! pruned.write("minilm-sparsegpt50".as_ref(), true)?;
//! let grids = calibrated_grids("minilm".as_ref(), &calib, &Default::default(), &Default::default())?;
//! println!("{} layers get their own grid, {} are smoothed", grids.grids.len(), grids.in_scales.len());
//! # Ok(()) }
//! ```

mod grids;
mod prune;
mod structured;

pub use grids::{ChosenGrids, calibrated_grids};
pub(crate) use prune::pack_if_smaller;
pub use prune::{PrunedEncoder, PrunedWritten, prune_encoder, prune_encoder_observed};
pub use structured::{StructuredEncoder, UnitPrune, Units, prune_units};
