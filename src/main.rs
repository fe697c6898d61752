//! `recast`: convert, quantize and validate LLM checkpoints.
//!
//! A thin command line over the library crates: argument parsing, output formatting and exit
//! codes (0 success, 1 validation failed its thresholds, 2 bad input or any other error).

mod cmd;
mod pipeline;
mod size;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "recast", version, about = "Convert, quantize and validate LLM checkpoints for a given accelerator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's format, architecture, tensors, dtypes and metadata.
    Inspect(cmd::inspect::Args),
    /// Convert between Hugging Face safetensors and GGUF, or re-type / re-shard.
    Convert(cmd::convert::Args),
    /// Quantize a checkpoint with a recipe into the layout its target runtime loads.
    Quantize(cmd::quantize::Args),
    /// List shipped recipes and the hardware table, or show one recipe resolved.
    Recipes(cmd::recipes::Args),
    /// Collect attention-input statistics on calibration text for low-rank KV recipes.
    Calibrate(cmd::calibrate::Args),
    /// Run the reference engine on prompts and store golden logits.
    Golden(cmd::golden::Args),
    /// Compare a model or a logits dump with a golden file (exit 0 pass, 1 fail, 2 error).
    Validate(cmd::validate::Args),
    /// Run a release pipeline: golden, quantize for every target, validate, promote what passed.
    Run(cmd::run::Args),
}

fn main() -> ExitCode {
    // `recast inspect big.gguf | head`: end quietly when the reader goes away, as Unix tools do,
    // instead of panicking on a failed println (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    recast_convert::alloc::retain_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Recipes(a) => cmd::recipes::run(a),
        Command::Golden(a) => cmd::golden::run(a),
        Command::Calibrate(a) => cmd::calibrate::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Run(a) => cmd::run::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
