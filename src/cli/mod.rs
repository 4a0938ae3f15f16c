//! Argument parsing and dispatch. clap structs here are plain data; each command resolves them into
//! validated settings in its own file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_transformer;
mod card;
mod compare;
mod completions;
mod decompress;
mod distill;
mod distill_encoder;
mod energy;
mod energy_csv;
pub mod error;
mod eval;
mod eval_embeddings;
mod examples;
mod export;
mod import;
mod inspect;
pub mod output;
mod progress;
mod prune;
mod prune_calibrated;
mod prune_structured;
mod qat;
mod quantize;
mod quantize_grids;
mod shard;
mod text;
mod train;

/// joulecut: compress neural networks and prove the savings in joules.
#[derive(Debug, Parser)]
#[command(name = "joulecut", version, about, long_about = None)]
pub struct Cli {
    /// No progress bars, per-epoch lines or notes on stderr (results and errors still print).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model on Fashion-MNIST (or continue from a checkpoint) and save it as safetensors.
    #[command(after_long_help = examples::TRAIN)]
    Train(train::TrainArgs),
    /// Benchmark compression techniques: accuracy vs joules report and Pareto chart.
    #[command(after_long_help = examples::BENCH)]
    Bench(bench::BenchArgs),
    /// Work with bench reports (merge the shards of a sweep).
    #[command(after_long_help = examples::REPORT)]
    Report(bench::ReportArgs),
    /// Evaluate a checkpoint on the test set: accuracy, throughput, latency, energy.
    #[command(after_long_help = examples::EVAL)]
    Eval(eval::EvalArgs),
    /// Compare a BERT-family sentence encoder with its compressed copy: embedding cosine, joules.
    #[command(after_long_help = examples::EVAL_EMBEDDINGS)]
    EvalEmbeddings(eval_embeddings::EvalEmbeddingsArgs),
    /// List a checkpoint's tensors: dtype, shape, encoding, bytes, non-zero fraction.
    #[command(after_long_help = examples::INSPECT)]
    Inspect(inspect::InspectArgs),
    /// Prune a checkpoint: unstructured, rows, channels or N:M; compact, pack, sensitivity sweep.
    #[command(after_long_help = examples::PRUNE)]
    Prune(prune::PruneArgs),
    /// Distil a teacher checkpoint into a smaller student (Hinton KD, cached teacher logits).
    #[command(after_long_help = examples::DISTILL)]
    Distill(Box<distill::DistillArgs>),
    /// Quantize a checkpoint: int8 (per tensor/channel, calibrated) or fp16/bf16 storage.
    #[command(after_long_help = examples::QUANTIZE)]
    Quantize(quantize::QuantizeArgs),
    /// Turn any joulecut checkpoint back into a plain dense safetensors file.
    #[command(after_long_help = examples::DECOMPRESS)]
    Decompress(decompress::DecompressArgs),
    /// Write a checkpoint in a format other runtimes load (compressed-tensors, ONNX).
    #[command(after_long_help = examples::EXPORT)]
    Export(export::ExportArgs),
    /// Read a compressed-tensors model directory into joulecut's encodings.
    #[command(after_long_help = examples::IMPORT)]
    Import(import::ImportArgs),
    /// Per-tensor fidelity of a checkpoint vs another (rel. L2, max abs, cosine, SNR) and totals.
    #[command(after_long_help = examples::COMPARE)]
    Compare(compare::CompareArgs),
    /// Run a command and meter its energy: wall time, joules by domain with provenance, power.
    #[command(after_long_help = examples::ENERGY)]
    Energy(energy::EnergyArgs),
    /// Write text sets for transformers (WordNet glosses: calibration, evaluation, corpus).
    #[command(after_long_help = examples::TEXT)]
    Text(text::TextArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::CompletionsArgs),
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    progress::set_quiet(cli.quiet);
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::EvalEmbeddings(a) => eval_embeddings::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Report(a) => bench::run_report(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Energy(a) => energy::run(a),
        Command::Distill(a) => distill::run(*a),
        Command::Prune(a) => prune::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Decompress(a) => decompress::run(a),
        Command::Export(a) => export::run(a),
        Command::Import(a) => import::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Text(a) => text::run(a),
        Command::Completions(a) => completions::run(a),
    }
}
