//! Argument parsing and dispatch. clap structs here are plain data; each command resolves them into
//! validated settings in its own file.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod energy;
pub mod error;
mod eval;
mod inspect;
mod output;
mod prune;
mod train;

/// joulecut: compress neural networks and prove the savings in joules.
#[derive(Debug, Parser)]
#[command(name = "joulecut", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model on Fashion-MNIST (or continue from a checkpoint) and save it as safetensors.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the test set: accuracy, throughput, latency, energy.
    Eval(eval::EvalArgs),
    /// List a checkpoint's tensors: dtype, shape, encoding, bytes, non-zero fraction.
    Inspect(inspect::InspectArgs),
    /// Prune a checkpoint: unstructured, rows, channels or N:M; compact, pack, sensitivity sweep.
    Prune(prune::PruneArgs),
    /// Run a command and meter its energy: wall time, joules by domain with provenance, power.
    Energy(energy::EnergyArgs),
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Energy(a) => energy::run(a),
        Command::Prune(a) => prune::run(a),
    }
}
