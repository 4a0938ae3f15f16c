//! The transformer bench: a BERT-family sentence encoder (Hugging Face layout, by default the
//! installed all-MiniLM-L6-v2) against its compressed variants — f16/bf16 storage, int8 with
//! calibrated or fixed activation grids, Wanda and SparseGPT pruning (unstructured, N:M, packed),
//! structured pruning (attention heads, FFN neurons), recovery by embedding distillation against
//! the baseline (layers dropped or not), and chains of them. Each variant is a chain of the CLI's
//! commands run through the same library code ([`crate::pipeline::transformer`],
//! [`crate::pipeline::quantize_stream`], [`crate::recover`]); each is
//! evaluated as `joulecut eval-embeddings` does — cosine and nearest-neighbour agreement against
//! the f32 baseline's embeddings, sentences/s and joules per 1,000 sentences through joulecut's
//! kernels — and the report recommends the lowest-joule real saving within a cosine budget.
//!
//! ```no_run
//! use joulecut_harness::bench::{TransformerOptions, TransformerSuite, run_transformer_suite};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let suite = TransformerSuite::builtin();
//! let meter = joulecut_energy::Meter::auto(joulecut_energy::MeterConfig::default())?;
//! let opts = TransformerOptions {
//!     model: "all-MiniLM-L6-v2".into(),
//!     out_dir: "bench-transformer".into(),
//!     device: candle_core::Device::Cpu,
//! };
//! let run = run_transformer_suite(&suite, &opts, &meter, &mut |line| eprintln!("{line}"))?;
//! for r in &run.results {
//!     println!("{}: mean cosine {:.5}, {:.2} J/1000 sentences, {}", r.variant, r.cosine_mean, r.joules_per_1000, r.saving);
//! }
//! # Ok(()) }
//! ```

mod build;
mod command;
mod config;
mod evaluate;
mod recover;
mod report;
mod result;
mod runner;

pub use config::{
    EmbedEvalConfig, GridChoice, SuiteKind, TextConfig, TransformerStep, TransformerSuite,
    TransformerVariant,
};
pub use report::{
    TRANSFORMER_SCHEMA_VERSION, TransformerRecommendation, TransformerReport, TransformerRow,
};
pub use result::{LayerKernel, StepCost, TransformerResult};
pub use runner::{
    DeviceWarmup, TextSummary, TransformerOptions, TransformerRun, run_transformer_suite,
};
