//! `recast validate MODEL_OR_LOGITS --golden GOLDEN [--max-kld X] [--min-top1 Y] [--report FILE] [--json]`:
//! compare a candidate with a golden file; exit 0 pass, 1 fail, 2 bad input.

use super::golden::{load_tokenizer, ModelTokenizer};
use anyhow::{bail, Context, Result};
use recast_convert::{ByteSource, Checkpoint, Format};
use recast_validate::golden::{self, Candidate, Golden, Tokenizer};
use recast_validate::metrics::{self, Thresholds};
use recast_validate::report::Report;
use recast_validate::{npy, Engine};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Candidate: a model (HF directory, .safetensors, .gguf) run on the golden's tokens, or a
    /// logits dump from another engine — .npy (f32, f16, bf16) or safetensors with a `logits`
    /// tensor, shaped [seq, vocab] or [n, seq, vocab].
    candidate: PathBuf,
    /// Golden file written by `recast golden` (or any safetensors with `tokens` and `logits`).
    #[arg(long)]
    golden: PathBuf,
    /// Fail if the mean KL divergence (nats) exceeds X.
    #[arg(long, value_name = "X", value_parser = parse_nats)]
    max_kld: Option<f64>,
    /// Fail if the top-1 agreement is below Y, a fraction in [0, 1].
    #[arg(long, value_name = "Y", value_parser = parse_fraction)]
    min_top1: Option<f64>,
    /// Write the Markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the JSON report on stdout (instead of the summary).
    #[arg(long)]
    json: bool,
    /// Tokenizer for decoding tokens in the report when the candidate is a dump: a model
    /// directory, a .gguf, or a tokenizer.json. Its fingerprint is checked against the golden.
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Positions listed in the report's "worst positions" table.
    #[arg(long, default_value_t = 10, value_name = "N")]
    worst: usize,
    /// Worker threads for the engine (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a fraction in [0, 1] (e.g. 0.99), found '{s}'")),
    }
}

fn parse_nats(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a non-negative number of nats (e.g. 0.01), found '{s}'")),
    }
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// The opened candidate, keeping what its logits borrow alive.
enum Source {
    Npy(ByteSource),
    Checkpoint(Checkpoint),
}

fn is_npy(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 6];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == NPY_MAGIC
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Loads a tokenizer for the report from a model or a tokenizer.json.
fn tokenizer_at(path: &Path) -> Result<Option<ModelTokenizer>> {
    if path.is_file() && path.extension().is_some_and(|e| e == "json") {
        let t = Tokenizer::from_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(Some(ModelTokenizer { tokenizer: t, source: "tokenizer.json" }));
    }
    load_tokenizer(&Checkpoint::open(path)?)
}

/// Checks `tok` against the golden's fingerprint; returns the line for the report.
fn check_tokenizer(g: &Golden, tok: &Option<ModelTokenizer>, whose: &str) -> Result<String> {
    Ok(match (tok, &g.meta.tokenizer_fingerprint) {
        (Some(t), Some(_)) => {
            let fp = golden::tokenizer_fingerprint(&t.tokenizer)?;
            g.check_tokenizer(&fp, t.source)?;
            format!("tokenizer fingerprint matches ({whose}, {})", t.source)
        }
        (Some(_), None) => "tokenizer not checked: the golden records no tokenizer fingerprint".into(),
        (None, _) => format!("tokenizer not checked: {whose} has none"),
    })
}

/// The candidate's logits, how to describe it, what was checked, and its tokenizer if it has one.
type Prepared<'s> = (Candidate<'s>, String, Vec<String>, Option<ModelTokenizer>);

/// Opens the candidate behind `source` and checks it fits the golden (exit 2 otherwise).
fn prepare<'s>(candidate_path: &Path, threads: usize, g: &Golden, source: &'s Source) -> Result<Prepared<'s>> {
    let mut checks = Vec::new();
    let (candidate, description, tok) = match source {
        Source::Npy(src) => {
            let arr = npy::parse(src.bytes())?;
            let d = format!("`{}` (logits dump, npy {} {:?})", file_name(candidate_path), arr.dtype, arr.shape);
            (Candidate::dense(candidate_path, arr.data, arr.dtype, &arr.shape)?, d, None)
        }
        Source::Checkpoint(ck) if ck.format == Format::Safetensors && ck.get(golden::tensor::LOGITS).is_some() => {
            let (c, tokens) = Candidate::from_safetensors(ck)?;
            g.check_candidate(&c)?;
            if let Some(t) = tokens {
                g.check_tokens(&t)?;
                checks.push("token ids in the dump match the golden's".to_string());
            }
            (c, format!("`{}` (logits dump, safetensors)", file_name(candidate_path)), None)
        }
        Source::Checkpoint(ck) if ck.get(golden::tensor::TOPK_IDS).is_some() => {
            bail!("it is a compact golden file; a candidate needs full logits")
        }
        Source::Checkpoint(ck) => run_model(g, ck, threads, &mut checks)?,
    };
    g.check_candidate(&candidate)?;
    Ok((candidate, description, checks, tok))
}

/// What comparing a candidate with a golden file found.
pub struct Outcome {
    pub pass: bool,
    /// The JSON report (`--json`).
    pub json: serde_json::Value,
    pub markdown: String,
    /// The short text printed by default.
    pub summary: String,
}

/// How to compare: the candidate and golden paths and the verdict's thresholds.
pub struct Params<'a> {
    pub candidate: &'a Path,
    pub golden: &'a Path,
    pub thresholds: Thresholds,
    /// A tokenizer for the report when the candidate is a dump (checked against the golden).
    pub tokenizer: Option<&'a Path>,
    pub worst: usize,
    pub threads: usize,
}

/// Compares `p.candidate` with the golden file `g` (opened from `p.golden`).
pub fn evaluate(p: &Params, g: &Golden) -> Result<Outcome> {
    let source = if is_npy(p.candidate) {
        Source::Npy(ByteSource::open(p.candidate)?)
    } else {
        Source::Checkpoint(Checkpoint::open(p.candidate)?)
    };
    let (candidate, description, mut checks, mut tok) = prepare(p.candidate, p.threads, g, &source)
        .with_context(|| format!("candidate {} against golden {}", p.candidate.display(), p.golden.display()))?;
    if let Some(path) = p.tokenizer {
        tok = tokenizer_at(path)?;
        let line = check_tokenizer(g, &tok, &format!("`{}`", file_name(path)))
            .with_context(|| format!("tokenizer {} against golden {}", path.display(), p.golden.display()))?;
        checks.push(line);
    }
    let comparison = metrics::compare(&g.tokens, g, &candidate);
    let verdict = metrics::verdict(&comparison, &p.thresholds);
    let text = |id: u32| tok.as_ref().map_or_else(|| format!("#{id}"), |t| t.text(id));
    let report = Report {
        candidate: description,
        golden_name: file_name(p.golden),
        golden_meta: &g.meta,
        golden_form: g.form(),
        vocab: g.vocab,
        tokens: &g.tokens,
        comparison: &comparison,
        thresholds: p.thresholds,
        verdict: &verdict,
        checks,
        token_text: tok.as_ref().map(|_| &text as &dyn Fn(u32) -> String),
        worst: p.worst,
    };
    Ok(Outcome { pass: verdict.pass, json: report.json(), markdown: report.markdown(), summary: report.summary() })
}

pub fn run(a: Args) -> Result<ExitCode> {
    let g = Golden::open(&a.golden).with_context(|| format!("reading golden {}", a.golden.display()))?;
    let params = Params {
        candidate: &a.candidate,
        golden: &a.golden,
        thresholds: Thresholds { max_kld: a.max_kld, min_top1: a.min_top1 },
        tokenizer: a.tokenizer.as_deref(),
        worst: a.worst,
        threads: a.threads,
    };
    let out = evaluate(&params, &g)?;
    if let Some(path) = &a.report {
        recast_convert::atomic::write_file(path, out.markdown.as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out.json)?);
    } else {
        print!("{}", out.summary);
    }
    Ok(if out.pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What the candidate's KV cache takes per token (at 2 bytes per cached value), and how that
/// compares with full keys and values (low-rank KV and MLA layers cache less).
fn kv_cache_line(engine: &Engine) -> String {
    let c = &engine.config;
    let values: u64 = engine.kv_values_per_token().iter().sum();
    let full = 2 * c.num_key_value_heads * c.head_dim * c.num_hidden_layers;
    let what = if c.mla.is_some() {
        "MLA latent + RoPE key".to_string()
    } else if values != full {
        format!("low-rank KV latent, {:.1} % of full keys and values", 100.0 * values as f64 / full.max(1) as f64)
    } else {
        "full keys and values".to_string()
    };
    format!(
        "KV cache: {values} values per token over {} layers ({} bytes per token at 2 bytes per value; {what})",
        c.num_hidden_layers,
        2 * values
    )
}

/// Runs a candidate model on the golden tokens after checking it is the same model and tokenizer.
fn run_model<'c>(
    g: &Golden,
    ck: &'c Checkpoint,
    threads: usize,
    checks: &mut Vec<String>,
) -> Result<(Candidate<'c>, String, Option<ModelTokenizer>)> {
    let engine = Engine::new(ck, threads).with_context(|| format!("loading {}", ck.path.display()))?;
    g.check_model(&engine.config)?;
    let vocab = engine.config.vocab_size as usize;
    if vocab != g.vocab {
        bail!("vocabulary size differs: golden {}, candidate model {vocab}", g.vocab);
    }
    checks.push(match &g.meta.model_fingerprint {
        Some(_) => "model shape fingerprint matches".to_string(),
        None => "model not checked: the golden records no model fingerprint".to_string(),
    });
    checks.push(kv_cache_line(&engine));
    let tok = load_tokenizer(ck)?;
    checks.push(check_tokenizer(g, &tok, "the candidate model")?);
    let rows = engine.forward(&g.tokens).with_context(|| format!("running {}", ck.path.display()))?;
    let d = format!("`{}` (model, {}, {})", file_name(&ck.path), ck.format.name(), golden::weights_dtype(ck));
    Ok((Candidate::Rows { rows, vocab }, d, tok))
}
