//! The experiment runner behind `joulecut bench`: baselines and compressed variants of the
//! reference models, each evaluated through its real inference path with its energy metered, and
//! the reports (JSON, CSV, Markdown, a Pareto chart in SVG).

mod config;
mod report;
mod runner;
mod svg;

pub use config::{BaselineConfig, EvalConfig, Step, SuiteConfig, VariantConfig, parse_granularity};
pub use report::{Host, Recommendation, Report, Row, SCHEMA_VERSION, Summary};
pub use runner::{RunOptions, RunResult, run_suite};
pub use svg::{pareto, pareto_front};
