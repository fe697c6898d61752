//! `recast calibrate MODEL --prompts FILE -o STATS [--max-tokens N]`: run the reference engine
//! on calibration text and store, per layer, the second moment `E[x xᵀ]` of the attention input
//! (the post-`input_layernorm` hidden state the key and value projections read). Low-rank KV
//! recipes whiten with it (docs/low-rank-kv.md); one file serves every recipe of the model.

use super::golden::{file_name, load_tokenizer, read_prompts, tokenize};
use anyhow::{Context, Result};
use recast_convert::Checkpoint;
use recast_quantize::lowrank_kv::{write_stats, Fingerprinter, KvSource, Moments, StatsMeta};
use recast_validate::Engine;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The model to calibrate (HF directory, .safetensors or .gguf): the one the recipe factors.
    model: PathBuf,
    /// Statistics file to write (safetensors, one F64 hidden×hidden matrix per layer).
    #[arg(short, long)]
    output: PathBuf,
    /// JSONL calibration text, one prompt per line: {"text": "…"} or {"tokens": [ids]}. Keep it
    /// disjoint from the text you validate on.
    #[arg(long, value_name = "FILE")]
    prompts: PathBuf,
    /// Keep the first N tokens of each prompt.
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Worker threads for the engine (0: all cores). The statistics do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let ck = Checkpoint::open(&a.model)?;
    let engine = Engine::new(&ck, a.threads).with_context(|| format!("loading {}", a.model.display()))?;
    let cfg = engine.config.clone();
    let source = KvSource::new(&ck, &cfg).with_context(|| format!("calibrating {}", a.model.display()))?;
    let mut fp = Fingerprinter::default();
    for l in 0..source.n_layers() {
        fp.layer(&source.read(&ck, l)?);
    }
    let tok = load_tokenizer(&ck)?;
    let prompts = read_prompts(&a.prompts)?;
    let tokens = tokenize(&prompts, tok.as_ref(), a.max_tokens, cfg.vocab_size as usize)?;
    let d = cfg.hidden_size as usize;
    let mut moments = Moments::new(source.n_layers(), d);
    engine
        .forward_observed(&tokens, Some(&mut |l, h| moments.add(l, h)))
        .with_context(|| format!("running {}", a.model.display()))?;
    let n_tokens = moments.tokens();
    let moments = moments.finish();
    let mut regenerate =
        format!("recast calibrate {} -o {} --prompts {}", a.model.display(), a.output.display(), a.prompts.display());
    if let Some(n) = a.max_tokens {
        regenerate += &format!(" --max-tokens {n}");
    }
    let meta = StatsMeta {
        model_fingerprint: fp.finish(),
        layers: source.n_layers(),
        hidden_size: d,
        tokens: n_tokens,
        regenerate,
        model_source: file_name(&a.model),
    };
    let bytes = write_stats(&a.output, &meta, &moments).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "wrote {}: {} layers × {d}×{d} second moments over {n_tokens} tokens from {} prompt(s), {bytes} bytes in {:.2}s",
        a.output.display(),
        meta.layers,
        tokens.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
