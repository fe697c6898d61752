//! `recast run PIPELINE.yaml [--source PATH] [--out DIR] [--resume] [--shard K/N] [--finalize]`.

use crate::pipeline::{self, spec::Pipeline, Options, Shard};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file (YAML; see docs/pipelines.md).
    pipeline: PathBuf,
    /// Source checkpoint (overrides the file's `source`).
    #[arg(long)]
    source: Option<PathBuf>,
    /// Output root (overrides the file's `output`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted run (a plain rerun does the same; this fails if there is no journal).
    #[arg(long)]
    resume: bool,
    /// Write only share K (0-based) of N of the output files, e.g. --shard $JOB_COMPLETION_INDEX/4.
    #[arg(long, value_name = "K/N", value_parser = pipeline::parse_shard)]
    shard: Option<Shard>,
    /// After every --shard K/N run: write indexes, golden, validation, manifests and promote.
    #[arg(long)]
    finalize: bool,
    /// Print the plan (targets, files, shares, sizes, peak memory) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// JSON events on stdout, one per line.
    #[arg(long)]
    json: bool,
    /// Worker threads for the engine (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.finalize && a.shard.is_some_and(|s| s.n > 1) && a.dry_run {
        bail!("--finalize and --dry-run do not go together");
    }
    let p = Pipeline::load(&a.pipeline, a.source, a.out)?;
    let opts = Options {
        resume: a.resume,
        shard: a.shard.filter(|s| s.n > 1),
        finalize: a.finalize,
        dry_run: a.dry_run,
        json: a.json,
        threads: a.threads,
    };
    let code = pipeline::run(&p, &opts)?;
    Ok(ExitCode::from(code))
}
