//! `recast golden MODEL -o GOLDEN --prompts FILE [--max-tokens N] [--compact topk=K]`: run the
//! reference engine on a set of prompts and store the logits (format: docs/metrics.md).

use anyhow::{bail, Context, Result};
use recast_convert::{Checkpoint, Format};
use recast_validate::golden::{self, Form, Meta, Tokenizer};
use recast_validate::Engine;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Reference model: HF directory, .safetensors or .gguf (format sniffed from bytes).
    model: PathBuf,
    /// Golden file to write (safetensors).
    #[arg(short, long)]
    output: PathBuf,
    /// JSONL, one prompt per line: {"text": "…"} (encoded with the model's tokenizer,
    /// add_special_tokens=true as transformers does) or {"tokens": [ids]}.
    #[arg(long, alias = "tokens", value_name = "FILE")]
    prompts: PathBuf,
    /// Keep the first N tokens of each prompt (shorter prompts are padded, see docs/metrics.md).
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Store a compact form instead of full logits: topk=K (the K most probable tokens'
    /// log-probabilities per position, plus the rest's mass).
    #[arg(long, value_name = "topk=K", value_parser = parse_compact)]
    compact: Option<Form>,
    /// Worker threads for the engine (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_compact(s: &str) -> Result<Form, String> {
    Form::parse_compact(s).ok_or_else(|| format!("expected topk=K with K ≥ 1, found '{s}'"))
}

/// A model's tokenizer, from tokenizer.json beside the weights or rebuilt from GGUF metadata.
pub struct ModelTokenizer {
    pub tokenizer: Tokenizer,
    /// Where it came from, e.g. "tokenizer.json" or "GGUF metadata".
    pub source: &'static str,
}

impl ModelTokenizer {
    /// `id` as text (for reports).
    pub fn text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_else(|_| format!("#{id}"))
    }
}

/// Loads the tokenizer of `ck`, if it has one.
pub fn load_tokenizer(ck: &Checkpoint) -> Result<Option<ModelTokenizer>> {
    let (bytes, source) = match ck.format {
        Format::Gguf => {
            let meta = &ck.gguf.as_ref().expect("GGUF header").metadata;
            if meta.get(recast_convert::tokenizer::keys::MODEL).is_none() {
                return Ok(None);
            }
            let hf = recast_convert::tokenizer::hf_tokenizer_from_gguf(meta)
                .with_context(|| format!("rebuilding the tokenizer of {}", ck.path.display()))?;
            (serde_json::to_vec(&hf.tokenizer_json)?, "GGUF metadata")
        }
        Format::Safetensors => {
            let Some(p) = ck.model_dir.as_ref().map(|d| d.join("tokenizer.json")).filter(|p| p.is_file()) else {
                return Ok(None);
            };
            (std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?, "tokenizer.json")
        }
    };
    let tokenizer = Tokenizer::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("loading the tokenizer of {} ({source}): {e}", ck.path.display()))?;
    Ok(Some(ModelTokenizer { tokenizer, source }))
}

pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// Reads the JSONL prompt file; blank lines are skipped.
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let prompt = match (v.get("text"), v.get("tokens")) {
            (Some(t), None) => {
                Prompt::Text(t.as_str().with_context(|| format!("{}: \"text\" must be a string", at()))?.into())
            }
            (None, Some(t)) => {
                let ids = t.as_array().with_context(|| format!("{}: \"tokens\" must be an array", at()))?;
                let ids = ids.iter().map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()));
                Prompt::Tokens(
                    ids.collect::<Option<_>>()
                        .with_context(|| format!("{}: token ids must be integers in 0..2^32", at()))?,
                )
            }
            _ => bail!("{}: expected an object with exactly one of \"text\" or \"tokens\"", at()),
        };
        out.push(prompt);
    }
    if out.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(out)
}

pub fn tokenize(
    prompts: &[Prompt],
    tok: Option<&ModelTokenizer>,
    max: Option<usize>,
    vocab: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    for (p, prompt) in prompts.iter().enumerate() {
        let mut ids = match prompt {
            Prompt::Tokens(ids) => ids.clone(),
            Prompt::Text(t) => {
                let tok = tok.context("text prompts need the model's tokenizer (tokenizer.json or GGUF tokenizer metadata); give {\"tokens\": [...]} instead")?;
                tok.tokenizer
                    .encode(t.as_str(), true)
                    .map_err(|e| anyhow::anyhow!("prompt {p}: {e}"))?
                    .get_ids()
                    .to_vec()
            }
        };
        ids.truncate(max.unwrap_or(usize::MAX));
        if ids.is_empty() {
            bail!("prompt {p} has no tokens");
        }
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            bail!("prompt {p}, position {i}: token id {id} is outside the model's vocabulary ({vocab})");
        }
        out.push(ids);
    }
    Ok(out)
}

pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// What to make a golden file from.
pub struct Params<'a> {
    pub model: &'a Path,
    pub output: &'a Path,
    /// The output path as the golden's `regenerate` command shows it (default: `output`).
    pub output_label: Option<&'a Path>,
    pub prompts: &'a Path,
    pub max_tokens: Option<usize>,
    pub form: Form,
    pub threads: usize,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let line = make(&Params {
        model: &a.model,
        output: &a.output,
        output_label: None,
        prompts: &a.prompts,
        max_tokens: a.max_tokens,
        form: a.compact.unwrap_or(Form::Full),
        threads: a.threads,
    })?;
    eprintln!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Runs the reference engine on the prompts and writes the golden file; returns a one-line
/// description of what was written.
pub fn make(a: &Params) -> Result<String> {
    let start = Instant::now();
    let ck = Checkpoint::open(a.model)?;
    let engine = Engine::new(&ck, a.threads).with_context(|| format!("loading {}", a.model.display()))?;
    let vocab = engine.config.vocab_size as usize;
    let tok = load_tokenizer(&ck)?;
    let prompts = read_prompts(a.prompts)?;
    let tokens = tokenize(&prompts, tok.as_ref(), a.max_tokens, vocab)?;
    let logits = engine.forward(&tokens).with_context(|| format!("running {}", a.model.display()))?;
    let (model_fingerprint, model_shape) = golden::model_fingerprint(&engine.config);
    let form = a.form;
    let mut regenerate = format!(
        "recast golden {} -o {} --prompts {}",
        a.model.display(),
        a.output_label.unwrap_or(a.output).display(),
        a.prompts.display()
    );
    if let Some(n) = a.max_tokens {
        regenerate += &format!(" --max-tokens {n}");
    }
    if let Form::TopK(k) = form {
        regenerate += &format!(" --compact topk={k}");
    }
    let meta = Meta {
        version: Some(golden::FORMAT_VERSION),
        model_fingerprint: Some(model_fingerprint),
        model_shape: Some(model_shape),
        model_source: Some(file_name(a.model)),
        tokenizer_fingerprint: tok.as_ref().map(|t| golden::tokenizer_fingerprint(&t.tokenizer)).transpose()?,
        tokenizer_source: tok.as_ref().map(|t| t.source.to_string()),
        engine: Some(format!("recast-validate {} reference forward (f32)", env!("CARGO_PKG_VERSION"))),
        weights_dtype: Some(golden::weights_dtype(&ck)),
        prompts: prompts
            .iter()
            .map(|p| match p {
                Prompt::Text(t) => Some(t.clone()),
                Prompt::Tokens(_) => None,
            })
            .collect(),
        regenerate: Some(regenerate),
    };
    let bytes = golden::write(a.output, &meta, &tokens, &logits, vocab, form)
        .with_context(|| format!("writing {}", a.output.display()))?;
    let positions: usize = tokens.iter().map(Vec::len).sum();
    let seq = tokens.iter().map(Vec::len).max().unwrap_or(0);
    Ok(format!(
        "wrote {}: {} prompt(s), {positions} positions (padded to {seq}), vocabulary {vocab}, {} form, {bytes} bytes in {:.2}s",
        a.output.display(),
        tokens.len(),
        match form {
            Form::Full => "full".to_string(),
            Form::TopK(k) => format!("top-{k}"),
        },
        start.elapsed().as_secs_f64()
    ))
}
