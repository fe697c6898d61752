//! `recast convert IN -o OUT [--to safetensors|gguf] [--dtype f32|f16|bf16] [--max-shard-size SIZE] [--dry-run]`.

use crate::size::{human, parse_size};
use anyhow::{Context, Result};
use recast_convert::job::{self, Layout, OutFormat, Plan};
use recast_convert::{Checkpoint, DType};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Clone, Copy, clap::ValueEnum)]
enum To {
    Safetensors,
    Gguf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args)]
pub struct Args {
    /// Input: HF model directory, .safetensors file, or .gguf file (format sniffed from bytes).
    input: PathBuf,
    /// Output: a .gguf file, or a directory for safetensors.
    #[arg(short, long)]
    output: PathBuf,
    /// Output format [default: gguf if OUTPUT ends in .gguf, else safetensors].
    #[arg(long, value_enum)]
    to: Option<To>,
    /// Float type of the weights [default: the source's; f16 from quantized GGUF].
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Split safetensors output into shards of at most this much tensor data (e.g. 5GB, 500MB, 2GiB).
    #[arg(long, value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// Print the plan (tensor names, types, shapes, files) and write nothing.
    #[arg(long)]
    dry_run: bool,
}

fn render_plan(ck: &Checkpoint, plan: &Plan) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let c = &plan.config;
    writeln!(o, "output        {}", plan.out.display()).unwrap();
    writeln!(
        o,
        "architecture  {} ({} layers, hidden {}, vocab {})",
        c.arch.info().model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size
    )
    .unwrap();
    match &plan.layout {
        Layout::Gguf(g) => writeln!(
            o,
            "layout        GGUF v3, {} tensors, {} metadata keys, alignment {}",
            g.tensors.len(),
            g.metadata.len(),
            g.alignment
        )
        .unwrap(),
        Layout::Safetensors(s) => {
            writeln!(
                o,
                "layout        safetensors, {} shard(s), {} bytes of tensor data",
                s.shards.len(),
                s.total_size
            )
            .unwrap();
            for sh in &s.shards {
                writeln!(o, "  {}  {} tensors  {} bytes", sh.file_name, sh.tensors.len(), sh.file_size()).unwrap();
            }
        }
    }
    for (name, bytes) in &plan.side_files {
        writeln!(o, "  {name}  {} bytes", bytes.len()).unwrap();
    }
    writeln!(o, "total         {} ({} bytes)", human(plan.output_bytes()), plan.output_bytes()).unwrap();
    let nw = plan.outputs.iter().map(|t| t.name.len()).max().unwrap_or(4);
    writeln!(o, "\n{:<nw$}  {:<5} {:<20} op", "tensor", "dtype", "shape").unwrap();
    for t in &plan.outputs {
        let from = t.op.inputs().first().map_or("F32", |&i| ck.tensors[i].storage.name());
        let cast = if from == t.dtype.name() { String::new() } else { format!(", {from}→{}", t.dtype.name()) };
        let shape = format!("{:?}", t.shape);
        writeln!(o, "{:<nw$}  {:<5} {:<20} {}{cast}", t.name, t.dtype.name(), shape, op_label(&t.op)).unwrap();
    }
    o
}

fn op_label(op: &recast_convert::transform::Op) -> String {
    use recast_convert::transform::Op;
    match op {
        Op::Copy(_) => "copy".into(),
        Op::PermuteRows { n_head, rows: None, .. } => format!("permute q/k rows ({n_head} heads)"),
        Op::PermuteRows { n_head, rows: Some(r), .. } => format!("permute the first {r} (key) rows ({n_head} heads)"),
        Op::UnpermuteRows { n_head, rows: None, .. } => format!("unpermute q/k rows ({n_head} heads)"),
        Op::UnpermuteRows { n_head, rows: Some(r), .. } => {
            format!("unpermute the first {r} (key) rows ({n_head} heads)")
        }
        Op::Stack(v) => format!("stack {} experts", v.len()),
        Op::Unstack { index, .. } => format!("expert {index} of stack"),
        Op::SplitKvB { part, .. } => format!("kv_b_proj {:?} part", part),
        Op::MergeKvB { .. } => "merge attn_k_b + attn_v_b".into(),
        Op::Fp8Block { block, .. } => format!("fp8 dequant ({}x{} blocks)", block.0, block.1),
        Op::Generated(_) => "generated (llama3 rope factors)".into(),
        Op::Dequant(d) => d.label(),
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let ck = Checkpoint::open(&a.input)?;
    let to = match a.to {
        Some(To::Gguf) => OutFormat::Gguf,
        Some(To::Safetensors) => OutFormat::Safetensors,
        None if a.output.extension().is_some_and(|e| e == "gguf") => OutFormat::Gguf,
        None => OutFormat::Safetensors,
    };
    if a.max_shard_size.is_some() && to == OutFormat::Gguf {
        anyhow::bail!("--max-shard-size applies to safetensors output only");
    }
    let dtype = a.dtype.map(|d| match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
    });
    let opts = job::Options { to, dtype, max_shard_size: a.max_shard_size };
    let plan =
        job::plan(&ck, &a.output, &opts).with_context(|| format!("planning conversion of {}", a.input.display()))?;
    if a.dry_run {
        print!("{}", render_plan(&ck, &plan));
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    let total = plan.output_bytes();
    let tty = std::io::stderr().is_terminal();
    let mut done = 0u64;
    let mut progress = |name: &str, bytes: u64| {
        done += bytes;
        if tty {
            eprint!("\r\x1b[K{:>5.1}%  {name}", 100.0 * done as f64 / total.max(1) as f64);
        }
    };
    job::execute(&ck, &plan, &mut progress)?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({}) in {secs:.2}s, {}/s",
        plan.out.display(),
        human(total),
        human((total as f64 / secs.max(1e-9)) as u64)
    );
    Ok(ExitCode::SUCCESS)
}
