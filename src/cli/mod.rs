//! Argument parsing and the subcommands.

mod bench;
mod bench_laplace;
mod bench_monitor;
mod bench_optimizers;
mod checkpoint;
mod common;
pub mod guard;
mod laplace;
mod online_marglik;
mod quantities;
mod report;
mod second_order;
mod spectrum;
mod train;

use clap::{Parser, Subcommand};

/// secondo: gradients and what lies beyond them (curvature, per-sample statistics).
#[derive(Debug, Parser)]
#[command(name = "secondo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a network (defaults: an MLP on the embedded digits dataset).
    Train(train::TrainArgs),
    /// Compute BackPACK-style quantities (gradients, per-sample statistics, curvature diagonals, Kronecker factors) on a data file.
    Quantities(quantities::QuantitiesArgs),
    /// Top eigenvalues, trace and spectral density of a curvature matrix over a dataset.
    Spectrum(spectrum::SpectrumArgs),
    /// Benchmark quantities and products against our gradient step, their FLOPs at the GEMM peak, and PyTorch when installed; or optimizers (--optimizers), the monitor (--monitor), Laplace (--laplace).
    Bench(bench::BenchArgs),
    /// Fit a Laplace approximation (posterior over weights, marginal likelihood, calibrated predictive) to trained weights.
    Laplace(laplace::LaplaceArgs),
    /// Apply a saved Laplace posterior (from `laplace`) to new data.
    Predict(laplace::PredictArgs),
    /// Re-render a monitored run's dashboard DIR/report.html from DIR/instruments.jsonl.
    Report(report::ReportArgs),
}

/// Runs the parsed command (`train` with defaults when none is given).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Train(a)) => train::run(a),
        Some(Command::Quantities(a)) => quantities::run(a),
        Some(Command::Spectrum(a)) => spectrum::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Report(a)) => report::run(a),
        Some(Command::Laplace(a)) => laplace::run(a),
        Some(Command::Predict(a)) => laplace::run_predict(a),
        None => run(Cli::parse_from(["secondo", "train"])),
    }
}
