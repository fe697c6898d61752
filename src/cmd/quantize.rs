//! `recast quantize IN -o OUT --recipe NAME|FILE [--dry-run] [--json] [--max-shard-size SIZE]`.

use crate::size::{human, parse_size};
use anyhow::{Context, Result};
use recast_convert::Checkpoint;
use recast_quantize::job::{self, FileLayout, QuantPlan, WeightReport};
use recast_quantize::Recipe;
use std::fmt::Write;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Input: HF model directory, .safetensors file, or .gguf file (format sniffed from bytes).
    input: PathBuf,
    /// Output: a .gguf file for the gguf layout, else a directory.
    #[arg(short, long)]
    output: PathBuf,
    /// A shipped recipe (`recast recipes list`) or a recipe YAML file.
    #[arg(long)]
    recipe: String,
    /// Split safetensors output into shards of at most this much tensor data (e.g. 5GB).
    #[arg(long, value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Calibration statistics (`recast calibrate`) for the recipe's low_rank_kv step.
    #[arg(long, value_name = "STATS")]
    calibration: Option<PathBuf>,
    /// Print the per-tensor plan (scheme, output dtypes, bytes, bits per weight) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable output on stdout (the plan with --dry-run, else the manifest).
    #[arg(long)]
    json: bool,
}

/// The human-readable plan (snapshot-tested).
pub fn render_plan(plan: &QuantPlan) -> String {
    let mut o = String::new();
    let r = &plan.recipe;
    writeln!(o, "recipe        {} ({})", r.name, r.description).unwrap();
    writeln!(o, "target        {} / {}", r.target.hardware, r.target.runtime).unwrap();
    writeln!(o, "layout        {}", r.layout.name()).unwrap();
    writeln!(o, "output        {}", plan.out.display()).unwrap();
    match &plan.layout {
        FileLayout::Gguf(g) => writeln!(o, "files         GGUF v3, {} tensors", g.tensors.len()).unwrap(),
        FileLayout::Safetensors(s) => {
            for sh in &s.shards {
                writeln!(o, "files         {}  {} tensors  {} bytes", sh.file_name, sh.tensors.len(), sh.file_size())
                    .unwrap();
            }
        }
    }
    for (name, bytes) in &plan.side_files {
        writeln!(o, "              {name}  {} bytes", bytes.len()).unwrap();
    }
    let nw = plan.weights.iter().map(|w| w.name.len()).max().unwrap_or(6).max(6);
    let sw = plan.weights.iter().map(|w| w.scheme.len()).max().unwrap_or(6).max(6);
    let fw = plan.weights.iter().map(|w| w.origin.len()).max().unwrap_or(4).max(4);
    writeln!(
        o,
        "\n{:<nw$}  {:<sw$}  {:<16} {:>12} {:>7}  {:<fw$}  tensors",
        "tensor", "scheme", "shape", "bytes", "bpw", "from"
    )
    .unwrap();
    for w in &plan.weights {
        let outs: Vec<String> = w.outputs.iter().map(|s| format!("{}:{}", s.storage.name(), dims(&s.shape))).collect();
        writeln!(
            o,
            "{:<nw$}  {:<sw$}  {:<16} {:>12} {:>7.3}  {:<fw$}  {}{}",
            w.name,
            w.scheme,
            dims(&w.shape),
            w.bytes(),
            w.bits_per_weight(),
            w.origin,
            outs.join(" "),
            w.note.as_ref().map_or(String::new(), |n| format!("  [{n}]")),
        )
        .unwrap();
    }
    let wb: u64 = plan.weights.iter().map(|w| w.bytes()).sum();
    let params = plan.total_params();
    writeln!(
        o,
        "\ntotal         {} parameters, {} of tensor data ({:.3} bits per weight), {} on disk",
        params,
        human(wb),
        wb as f64 * 8.0 / params.max(1) as f64,
        human(plan.total_bytes())
    )
    .unwrap();
    let mut by: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for w in &plan.weights {
        let e = by.entry(w.scheme.as_str()).or_default();
        e.0 += w.numel();
        e.1 += w.bytes();
    }
    for (s, (n, b)) in by {
        writeln!(o, "  {s:<sw$}  {n:>12} parameters  {:>10}", human(b)).unwrap();
    }
    if let Some(kv) = &plan.low_rank {
        o.push_str(&render_low_rank(plan, kv));
    }
    for w in &plan.warnings {
        writeln!(o, "warning: {w}").unwrap();
    }
    o
}

/// Bytes one cached key/value element takes in the target runtime: 1 with an FP8 KV cache,
/// else 2 (runtimes cache in f16/bf16).
fn kv_value_bytes(plan: &QuantPlan) -> u64 {
    if plan.recipe.kv_cache.is_some() {
        1
    } else {
        2
    }
}

/// The low-rank KV step: rank and KV-cache bytes per token per layer, before and after.
fn render_low_rank(plan: &QuantPlan, kv: &recast_quantize::lowrank_kv::KvPlan) -> String {
    let mut o = String::new();
    let b = kv_value_bytes(plan);
    let width = kv.source.width() as u64;
    writeln!(o, "\nlow-rank KV   {} ({})", kv.spec.label(), kv.method()).unwrap();
    if let Some(s) = &kv.stats {
        writeln!(
            o,
            "calibration   {} ({} tokens, model fingerprint matches)",
            crate::cmd::golden::file_name(&s.path),
            s.meta.tokens
        )
        .unwrap();
    }
    writeln!(
        o,
        "              KV width 2·n_kv·head_dim = {width}, hidden {}; {b} byte(s) per cached value",
        kv.source.d
    )
    .unwrap();
    writeln!(o, "{:>5}  {:>6}  {:>14}  {:>14}", "layer", "rank", "before B/token", "after B/token").unwrap();
    for (l, &r) in kv.ranks.iter().enumerate() {
        writeln!(o, "{l:>5}  {r:>6}  {:>14}  {:>14}", width * b, r as u64 * b).unwrap();
    }
    let (before, after) = kv.cache_values();
    writeln!(
        o,
        "{:>5}  {after:>6}  {:>14}  {:>14}  ({:.1} % of the KV cache)",
        "total",
        before * b,
        after * b,
        100.0 * after as f64 / before.max(1) as f64
    )
    .unwrap();
    o
}

fn dims(s: &[u64]) -> String {
    s.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

fn plan_json(plan: &QuantPlan) -> serde_json::Value {
    serde_json::json!({
        "recipe": plan.recipe,
        "output": plan.out.display().to_string(),
        "total_bytes": plan.total_bytes(),
        "parameters": plan.total_params(),
        "warnings": plan.warnings,
        "low_rank_kv": plan.low_rank.as_ref().map(|kv| {
            let (before, after) = kv.cache_values();
            let b = kv_value_bytes(plan);
            let mut e = kv.extension();
            e["kv_bytes_per_token"] = serde_json::json!({"before": before * b, "after": after * b, "bytes_per_value": b});
            e
        }),
        "tensors": plan.weights.iter().map(|w| serde_json::json!({
            "name": w.name,
            "scheme": w.scheme,
            "origin": w.origin,
            "note": w.note,
            "shape": w.shape,
            "bytes": w.bytes(),
            "bits_per_weight": w.bits_per_weight(),
            "outputs": w.outputs.iter().map(|s| serde_json::json!({"name": s.name, "dtype": s.storage.name(), "shape": s.shape})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn summary(plan: &QuantPlan, reports: &[WeightReport]) -> String {
    let q: Vec<&WeightReport> =
        plan.weights.iter().zip(reports).filter(|(w, _)| w.quantized()).map(|(_, r)| r).collect();
    if q.is_empty() {
        return String::new();
    }
    let worst = q.iter().min_by(|a, b| a.error.sqnr_db.total_cmp(&b.error.sqnr_db)).unwrap();
    let mean = q.iter().map(|r| r.error.sqnr_db.min(200.0)).sum::<f64>() / q.len() as f64;
    format!(
        "{} tensors quantized; SQNR mean {mean:.1} dB, worst {:.1} dB ({})",
        q.len(),
        worst.error.sqnr_db,
        worst.name
    )
}

pub fn run(a: Args) -> Result<ExitCode> {
    let recipe = Recipe::load(&a.recipe)?;
    let ck = Checkpoint::open(&a.input)?;
    let opts = job::Options { max_shard_size: a.max_shard_size, calibration: a.calibration.clone() };
    let plan = job::plan(&ck, &recipe, &a.output, &opts)
        .with_context(|| format!("planning {} with recipe {}", a.input.display(), recipe.name))?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan_json(&plan))?);
        } else {
            print!("{}", render_plan(&plan));
        }
        return Ok(ExitCode::SUCCESS);
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut progress = |name: &str, i: usize, n: usize| {
        if tty {
            eprint!("\r\x1b[K{:>5.1}%  {name}", 100.0 * (i + 1) as f64 / n.max(1) as f64);
        }
    };
    let (reports, written) = job::execute(&ck, &plan, &mut progress)?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let files = job::output_files(&plan, &written)?;
    let manifest = job::manifest(&ck, &plan, &reports, &files, env!("CARGO_PKG_VERSION"));
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    recast_convert::atomic::write_file(plan.manifest_path(), text.as_bytes())?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        print!("{text}");
    }
    eprintln!(
        "wrote {} ({}) in {secs:.2}s; {}",
        plan.out.display(),
        human(plan.total_bytes()),
        summary(&plan, &reports)
    );
    Ok(ExitCode::SUCCESS)
}
