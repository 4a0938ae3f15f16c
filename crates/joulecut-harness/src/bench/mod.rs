//! The experiment runner behind `joulecut bench`: baselines and compressed variants of the
//! reference models, each evaluated through its real inference path with its energy metered, and
//! the reports (JSON, CSV, Markdown, a Pareto chart in SVG). Transformer suites (a BERT-family
//! model directory and its compressed variants, judged by embedding cosine) run through
//! [`run_transformer_suite`].

mod baseline;
mod break_even;
mod columns;
mod config;
mod files;
mod report;
mod result;
mod runner;
mod svg;
mod transformer;

pub use crate::host::{Host, RunStamp};
pub use baseline::RunOptions;
pub use columns::EnergyColumns;
pub use config::{BaselineConfig, EvalConfig, SuiteConfig, VariantConfig};
pub use report::{Recommendation, Report, Row, SCHEMA_VERSION, Summary};
pub use result::{LayerRoute, RunResult, Saving, StepRecord};
pub use runner::run_suite;
pub use svg::{pareto, pareto_front};
pub use transformer::{
    DeviceWarmup, EmbedEvalConfig, GridChoice, LayerKernel, StepCost, SuiteKind,
    TRANSFORMER_SCHEMA_VERSION, TextConfig, TextSummary, TransformerOptions,
    TransformerRecommendation, TransformerReport, TransformerResult, TransformerRow,
    TransformerRun, TransformerStep, TransformerSuite, TransformerVariant, run_transformer_suite,
};
