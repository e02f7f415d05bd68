//! `sluice`: the Sluice command-line tool.
//!
//! - `sluice demo`: builds the sample jobs, generates the demo data if absent, runs both samples
//!   in the sandbox and prints their DP reports.
//! - `sluice run --policy <dir> --operator <id> <job.wasm>`: runs one job locally (no server).
//! - `sluice policy check <dir>`: validates policy files, listing every problem.
//! - `sluice datagen`: writes the synthetic datasets.
//! - `sluice bench`: DP queries against plain DataFusion, and job compile vs cached run.

mod bench;
mod local;
mod print;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sluice: a privacy-preserving data sandbox and compute broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the sample jobs, generate demo data if absent, run both samples and print the reports.
    Demo {
        /// Rows per synthetic dataset, when they must be generated.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_ROWS)]
        rows: usize,
        /// The data root (datasets are read from <root>/data/).
        #[arg(long, default_value = ".")]
        data_root: PathBuf,
    },
    /// Run one job locally against the policy's datasets, printing its report and the ε it spent.
    Run {
        /// A policy file or a directory of them.
        #[arg(long, default_value = "policies/examples")]
        policy: PathBuf,
        /// The operator whose grant applies.
        #[arg(long)]
        operator: String,
        /// Where relative dataset sources are resolved.
        #[arg(long, default_value = ".")]
        data_root: PathBuf,
        /// The parameter string passed to the job.
        #[arg(long, default_value = "")]
        params: String,
        /// Output format of the report.
        #[arg(long, value_enum, default_value_t = local::Format::Text)]
        format: local::Format,
        /// The job: a component, or a core module built with the sluice-guest SDK.
        job: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write the synthetic demo datasets (Parquet).
    Datagen {
        /// Rows per dataset.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_ROWS)]
        rows: usize,
        /// Seed.
        #[arg(long, default_value_t = sluice_datagen::DEFAULT_SEED)]
        seed: u64,
        /// Output directory.
        #[arg(long, default_value = "data")]
        out: PathBuf,
    },
    /// Benchmark DP queries against the same non-private DataFusion SQL, and job compile vs cache.
    Bench {
        /// Rows of the benchmark dataset.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Repetitions per query (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Where the benchmark dataset is kept.
        #[arg(long, default_value = "data/bench")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files; exits non-zero listing every problem.
    Check {
        /// A policy file or a directory of them.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { rows, data_root } => local::demo(rows, &data_root),
        Command::Run {
            policy,
            operator,
            data_root,
            params,
            format,
            job,
        } => local::run(&policy, &operator, &data_root, &params, format, &job),
        Command::Policy {
            command: PolicyCommand::Check { path },
        } => local::policy_check(&path),
        Command::Datagen { rows, seed, out } => local::datagen(rows, seed, &out),
        Command::Bench { rows, reps, dir } => bench::run(rows, reps, &dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
