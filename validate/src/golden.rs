//! Golden-logit files: what a reference model predicted for a set of token sequences, and the
//! candidates (another model's logits, or another engine's dump) compared against them.
//!
//! A golden file is a single safetensors file (layout in docs/metrics.md):
//!
//! ```text
//! tokens         I64 [n, seq]       prompts right-padded with PAD_ID to the longest
//! lengths        I64 [n]            true length of each prompt (1 ≤ len ≤ seq)
//! full form:
//!   logits       F32 [n, seq, vocab]  (zeros at padding positions)
//! compact form (--compact topk=K):
//!   topk_ids     I32 [n, seq, K]    most probable ids, descending probability, lower id on ties
//!   topk_logprobs F64 [n, seq, K]  their natural-log probabilities
//!   rest_logprob F64 [n, seq]       log of the probability mass of every other id (−inf if none)
//!   next_logprob F64 [n, seq]       log p(tokens[i+1]) at position i (0 at the last position)
//!   (F64 because these are exactly the values a comparison computes from full F32 logits:
//!   a candidate identical to the golden scores KLD 0 against the compact form too)
//! __metadata__   recast_golden_version, form, vocab_size, pad_id, fingerprints, engine, dtypes,
//!                prompts, and the command that regenerates the file
//! ```
//!
//! Files from other tools with just `tokens` and `logits` are read too (no fingerprints, every
//! row as long as `seq`). Everything read is checked before use: tensor dtypes and shapes,
//! lengths, token ids against the vocabulary, and every golden value finite (a NaN in a golden
//! is an error, not a failure of the candidate).
//!
//! Submodules: `fingerprint` (model shape and tokenizer fingerprints), `candidate` (the logits
//! compared with a golden, and their shape checks).

mod candidate;
mod fingerprint;

pub use candidate::Candidate;
pub use fingerprint::{model_fingerprint, tokenizer_fingerprint, weights_dtype, TOKENIZER_PROBES};

use crate::metrics::{self, GoldenRows, Reference};
use recast_convert::atomic::Sink;
use recast_convert::safetensors::writer::write_shard;
use recast_convert::safetensors::SafetensorsPlan;
use recast_convert::{float, Checkpoint, DType, Format, ModelConfig, TensorInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The Hugging Face tokenizer type fingerprints are computed with (re-exported for the binary).
pub use tokenizers::Tokenizer;

/// The version this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The token id written at padding positions (always a valid id; `lengths` says where it is).
pub const PAD_ID: u32 = 0;

/// `__metadata__` keys, written once.
pub mod key {
    pub const VERSION: &str = "recast_golden_version";
    pub const FORM: &str = "form";
    pub const TOPK: &str = "topk";
    pub const VOCAB: &str = "vocab_size";
    pub const PAD_ID: &str = "pad_id";
    pub const MODEL_FINGERPRINT: &str = "model_fingerprint";
    pub const MODEL_SHAPE: &str = "model_shape";
    pub const MODEL_SOURCE: &str = "model_source";
    pub const TOKENIZER_FINGERPRINT: &str = "tokenizer_fingerprint";
    pub const TOKENIZER_SOURCE: &str = "tokenizer_source";
    pub const ENGINE: &str = "engine";
    pub const WEIGHTS_DTYPE: &str = "weights_dtype";
    pub const LOGITS_DTYPE: &str = "logits_dtype";
    pub const PROMPTS: &str = "prompts";
    pub const REGENERATE: &str = "regenerate";
}

/// Tensor names, written once.
pub mod tensor {
    pub const TOKENS: &str = "tokens";
    pub const LENGTHS: &str = "lengths";
    pub const LOGITS: &str = "logits";
    pub const TOPK_IDS: &str = "topk_ids";
    pub const TOPK_LOGPROBS: &str = "topk_logprobs";
    pub const REST_LOGPROB: &str = "rest_logprob";
    pub const NEXT_LOGPROB: &str = "next_logprob";
}

/// What is wrong with a golden file, a candidate, or the pair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoldenError {
    #[error(transparent)]
    Convert(#[from] recast_convert::Error),
    #[error("{path}: not a golden file: {detail}")]
    NotGolden { path: PathBuf, detail: String },
    #[error("{path}: golden format version {found}, this recast reads up to {FORMAT_VERSION}")]
    Version { path: PathBuf, found: String },
    #[error("{path}: metadata '{key}': {detail}")]
    Metadata { path: PathBuf, key: &'static str, detail: String },
    #[error("{path}: tensor '{tensor}': expected {expected}, found {found}")]
    Tensor { path: PathBuf, tensor: String, expected: String, found: String },
    #[error("{path}: tensor '{tensor}', prompt {prompt}, position {position}: {detail}")]
    Value { path: PathBuf, tensor: &'static str, prompt: usize, position: usize, detail: String },
    #[error("{what} differs: golden {golden}, candidate {candidate}{hint}")]
    Mismatch { what: &'static str, golden: String, candidate: String, hint: String },
    #[error("cannot write a golden file: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

type Result<T, E = GoldenError> = std::result::Result<T, E>;

/// Which form of the logits a golden file stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Full,
    /// The `k` most probable tokens per position, plus the rest's mass.
    TopK(usize),
}

impl Form {
    /// Parses the `--compact` value: `topk=K` (K ≥ 1).
    pub fn parse_compact(s: &str) -> Option<Form> {
        let k: usize = s.strip_prefix("topk=")?.parse().ok()?;
        (k >= 1).then_some(Form::TopK(k))
    }
    fn name(self) -> &'static str {
        match self {
            Form::Full => "full",
            Form::TopK(_) => "topk",
        }
    }
}

/// Provenance recorded in (and read back from) `__metadata__`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Meta {
    /// `None` for a file from another tool without recast's metadata.
    pub version: Option<u32>,
    pub model_fingerprint: Option<String>,
    pub model_shape: Option<String>,
    pub model_source: Option<String>,
    pub tokenizer_fingerprint: Option<String>,
    pub tokenizer_source: Option<String>,
    pub engine: Option<String>,
    pub weights_dtype: Option<String>,
    /// The prompt texts (`None` for a prompt given as token ids).
    pub prompts: Vec<Option<String>>,
    pub regenerate: Option<String>,
}

impl Meta {
    fn to_map(&self, form: Form, vocab: usize) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(key::VERSION, FORMAT_VERSION.to_string());
        put(key::FORM, form.name().into());
        if let Form::TopK(k) = form {
            put(key::TOPK, k.to_string());
        }
        put(key::VOCAB, vocab.to_string());
        put(key::PAD_ID, PAD_ID.to_string());
        put(key::LOGITS_DTYPE, "F32".into());
        put(key::PROMPTS, serde_json::to_string(&self.prompts).expect("strings serialize"));
        let optional = [
            (key::MODEL_FINGERPRINT, &self.model_fingerprint),
            (key::MODEL_SHAPE, &self.model_shape),
            (key::MODEL_SOURCE, &self.model_source),
            (key::TOKENIZER_FINGERPRINT, &self.tokenizer_fingerprint),
            (key::TOKENIZER_SOURCE, &self.tokenizer_source),
            (key::ENGINE, &self.engine),
            (key::WEIGHTS_DTYPE, &self.weights_dtype),
            (key::REGENERATE, &self.regenerate),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                put(k, v.clone());
            }
        }
        m
    }

    fn from_map(path: &Path, m: &BTreeMap<String, String>) -> Result<Meta> {
        let version = match m.get(key::VERSION) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=FORMAT_VERSION).contains(&n) => Some(n),
                _ => return Err(GoldenError::Version { path: path.into(), found: v.clone() }),
            },
        };
        let prompts = match m.get(key::PROMPTS) {
            None => Vec::new(),
            Some(s) => serde_json::from_str(s).map_err(|e| GoldenError::Metadata {
                path: path.into(),
                key: key::PROMPTS,
                detail: format!("expected a JSON array of strings or nulls: {e}"),
            })?,
        };
        let get = |k: &str| m.get(k).cloned();
        Ok(Meta {
            version,
            model_fingerprint: get(key::MODEL_FINGERPRINT),
            model_shape: get(key::MODEL_SHAPE),
            model_source: get(key::MODEL_SOURCE),
            tokenizer_fingerprint: get(key::TOKENIZER_FINGERPRINT),
            tokenizer_source: get(key::TOKENIZER_SOURCE),
            engine: get(key::ENGINE),
            weights_dtype: get(key::WEIGHTS_DTYPE),
            prompts,
            regenerate: get(key::REGENERATE),
        })
    }
}

// ---- writing ---------------------------------------------------------------------------------

/// Writes a golden file atomically. `logits[p]` is `[tokens[p].len() · vocab]` row-major.
/// Returns the file size.
pub fn write(
    path: &Path,
    meta: &Meta,
    tokens: &[Vec<u32>],
    logits: &[Vec<f32>],
    vocab: usize,
    form: Form,
) -> Result<u64> {
    check_input(tokens, logits, vocab)?;
    let n = tokens.len();
    let seq = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let dims = |extra: &[usize]| -> Vec<u64> { [n, seq].iter().chain(extra).map(|&d| d as u64).collect() };
    let mut planned = vec![
        (tensor::TOKENS.to_string(), DType::I64, dims(&[])),
        (tensor::LENGTHS.to_string(), DType::I64, vec![n as u64]),
    ];
    let topk = match form {
        Form::Full => {
            planned.push((tensor::LOGITS.to_string(), DType::F32, dims(&[vocab])));
            None
        }
        Form::TopK(k) => {
            let k = k.min(vocab);
            planned.push((tensor::TOPK_IDS.to_string(), DType::I32, dims(&[k])));
            planned.push((tensor::TOPK_LOGPROBS.to_string(), DType::F64, dims(&[k])));
            planned.push((tensor::REST_LOGPROB.to_string(), DType::F64, dims(&[])));
            planned.push((tensor::NEXT_LOGPROB.to_string(), DType::F64, dims(&[])));
            Some(TopK::from_logits(tokens, logits, vocab, seq, k))
        }
    };
    let plan = SafetensorsPlan::new(planned, None, &meta.to_map(form, vocab))?;
    let shard = &plan.shards[0];
    write_shard(path, shard, |t, sink| match t.name.as_str() {
        tensor::TOKENS => {
            let padded = tokens.iter().flat_map(|s| s.iter().copied().chain(std::iter::repeat(PAD_ID)).take(seq));
            sink.write(&padded.flat_map(|id| (id as i64).to_le_bytes()).collect::<Vec<u8>>())
        }
        tensor::LENGTHS => sink.write(&tokens.iter().flat_map(|s| (s.len() as i64).to_le_bytes()).collect::<Vec<u8>>()),
        tensor::LOGITS => {
            for (s, l) in tokens.iter().zip(logits) {
                sink.write(&l.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
                sink.write(&vec![0; (seq - s.len()) * vocab * 4])?;
            }
            Ok(())
        }
        name => topk.as_ref().expect("top-k tensors only in the top-k form").write_tensor(name, sink),
    })?;
    Ok(shard.file_size())
}

fn check_input(tokens: &[Vec<u32>], logits: &[Vec<f32>], vocab: usize) -> Result<()> {
    let bad = |s: String| Err(GoldenError::Input(s));
    if tokens.is_empty() || vocab == 0 || tokens.len() != logits.len() {
        return bad(format!("{} prompts, {} logit rows, vocabulary {vocab}", tokens.len(), logits.len()));
    }
    for (p, (s, l)) in tokens.iter().zip(logits).enumerate() {
        if s.is_empty() {
            return bad(format!("prompt {p} has no tokens"));
        }
        if l.len() != s.len() * vocab {
            return bad(format!("prompt {p}: {} logits for {} tokens × vocabulary {vocab}", l.len(), s.len()));
        }
        if let Some(i) = l.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "prompt {p}, position {}: logit {} of token {} is {}",
                i / vocab,
                i % vocab,
                i % vocab,
                l[i]
            ));
        }
        if let Some((i, &id)) = s.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return bad(format!("prompt {p}, position {i}: token id {id} is outside the vocabulary ({vocab})"));
        }
    }
    Ok(())
}

/// The compact form in memory, all arrays `[n, seq, …]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub k: usize,
    pub ids: Vec<u32>,
    pub logprobs: Vec<f64>,
    pub rest_logprob: Vec<f64>,
    pub next_logprob: Vec<f64>,
}

impl TopK {
    /// Computes the top-k form of full logits (padding rows stay zero).
    pub fn from_logits(tokens: &[Vec<u32>], logits: &[Vec<f32>], vocab: usize, seq: usize, k: usize) -> TopK {
        let rows = tokens.len() * seq;
        let mut t = TopK {
            k,
            ids: vec![0; rows * k],
            logprobs: vec![0.0; rows * k],
            rest_logprob: vec![0.0; rows],
            next_logprob: vec![0.0; rows],
        };
        for (p, (s, l)) in tokens.iter().zip(logits).enumerate() {
            for (i, row) in l.chunks_exact(vocab).enumerate() {
                let r = p * seq + i;
                let lse = metrics::log_sum_exp(row);
                let ids = metrics::top_k(row, k);
                for (j, &id) in ids.iter().enumerate() {
                    t.ids[r * k + j] = id;
                    t.logprobs[r * k + j] = row[id as usize] as f64 - lse;
                }
                t.rest_logprob[r] = metrics::log_sum_exp_except(row, &ids) - lse;
                if let Some(&next) = s.get(i + 1) {
                    t.next_logprob[r] = row[next as usize] as f64 - lse;
                }
            }
        }
        t
    }

    fn write_tensor(&self, name: &str, sink: &mut Sink) -> recast_convert::Result<()> {
        let bytes: Vec<u8> = match name {
            tensor::TOPK_IDS => self.ids.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect(),
            tensor::TOPK_LOGPROBS => self.logprobs.iter().flat_map(|v| v.to_le_bytes()).collect(),
            tensor::REST_LOGPROB => self.rest_logprob.iter().flat_map(|v| v.to_le_bytes()).collect(),
            tensor::NEXT_LOGPROB => self.next_logprob.iter().flat_map(|v| v.to_le_bytes()).collect(),
            other => unreachable!("no tensor {other} in the top-k form"),
        };
        sink.write(&bytes)
    }

    fn reference(&self, row: usize) -> Reference<'_> {
        let r = row * self.k..(row + 1) * self.k;
        Reference::TopK {
            ids: &self.ids[r.clone()],
            logprobs: &self.logprobs[r],
            rest_logprob: self.rest_logprob[row],
            next_logprob: self.next_logprob[row],
        }
    }
}

// ---- reading ---------------------------------------------------------------------------------

/// The logits a golden file holds.
pub enum Body {
    /// Full logits: the index of the `logits` tensor in the checkpoint, and its dtype.
    Full {
        tensor: usize,
        dtype: DType,
    },
    TopK(TopK),
}

/// An opened, checked golden file.
pub struct Golden {
    pub path: PathBuf,
    pub meta: Meta,
    /// The sequences, each at its true length.
    pub tokens: Vec<Vec<u32>>,
    /// Padded sequence length (the `seq` of every tensor).
    pub seq: usize,
    pub vocab: usize,
    pub body: Body,
    ck: Checkpoint,
}

impl Golden {
    /// Opens and checks a golden file (see the module docs for what is checked).
    pub fn open(path: &Path) -> Result<Golden> {
        let ck = Checkpoint::open(path)?;
        let not = |d: &str| GoldenError::NotGolden { path: path.into(), detail: d.into() };
        if ck.format != Format::Safetensors || ck.model_dir.as_deref() == Some(path) {
            return Err(not("expected a single safetensors file"));
        }
        let meta = Meta::from_map(path, &ck.st_metadata)?;
        let tok = ck.get(tensor::TOKENS).ok_or_else(|| not("no 'tokens' tensor"))?;
        let (n, seq) = match tok.shape[..] {
            [n, s] if n > 0 && s > 0 => (n as usize, s as usize),
            _ => return Err(tensor_err(path, tok, "shape [n ≥ 1, seq ≥ 1]")),
        };
        let ids = read_ints(path, &ck, tok, &[DType::I64, DType::I32])?;
        let lengths = match ck.get(tensor::LENGTHS) {
            None => vec![seq as i64; n],
            Some(t) if t.shape == [n as u64] => read_ints(path, &ck, t, &[DType::I64, DType::I32])?,
            Some(t) => return Err(tensor_err(path, t, &format!("shape [{n}]"))),
        };
        let (body, vocab) = if let Some(t) = ck.get(tensor::LOGITS) {
            let (dtype, vocab) = full_layout(path, t, n, seq)?;
            (Body::Full { tensor: ck.tensors.iter().position(|x| x.name == t.name).unwrap(), dtype }, vocab)
        } else if ck.get(tensor::TOPK_IDS).is_some() {
            let vocab = meta_usize(path, &ck.st_metadata, key::VOCAB)?;
            (Body::TopK(read_topk(path, &ck, n, seq, vocab)?), vocab)
        } else {
            return Err(not("neither a 'logits' nor a 'topk_ids' tensor"));
        };
        let tokens = split_tokens(path, &ids, &lengths, seq, vocab)?;
        let g = Golden { path: path.into(), meta, tokens, seq, vocab, body, ck };
        g.check_values()?;
        Ok(g)
    }

    pub fn form(&self) -> Form {
        match &self.body {
            Body::Full { .. } => Form::Full,
            Body::TopK(t) => Form::TopK(t.k),
        }
    }

    /// Every golden value a comparison reads must be finite (a top-k row must also be sorted,
    /// with distinct in-range ids).
    fn check_values(&self) -> Result<()> {
        let mut buf = Vec::new();
        for (p, s) in self.tokens.iter().enumerate() {
            for i in 0..s.len() {
                let bad = |tensor, detail: String| GoldenError::Value {
                    path: self.path.clone(),
                    tensor,
                    prompt: p,
                    position: i,
                    detail,
                };
                match self.reference(p, i, &mut buf) {
                    Reference::Logits(row) => {
                        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                            return Err(bad(tensor::LOGITS, format!("logit of token {j} is {}", row[j])));
                        }
                    }
                    Reference::TopK { ids, logprobs, rest_logprob, next_logprob } => {
                        if let Some(d) = topk_row_problem(ids, logprobs, rest_logprob, self.vocab) {
                            return Err(bad(tensor::TOPK_IDS, d));
                        }
                        if i + 1 < s.len() && !(next_logprob.is_finite() && next_logprob <= 0.0) {
                            return Err(bad(tensor::NEXT_LOGPROB, format!("{next_logprob} is not a log-probability")));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that `cfg` is the model (shape) the golden was made with.
    pub fn check_model(&self, cfg: &ModelConfig) -> Result<()> {
        let (fp, shape) = model_fingerprint(cfg);
        match (&self.meta.model_fingerprint, &self.meta.model_shape) {
            (Some(g), gs) if *g != fp => Err(GoldenError::Mismatch {
                what: "model",
                golden: gs.clone().unwrap_or_else(|| g.clone()),
                candidate: shape,
                hint: " — the golden was made from another model".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks a candidate tokenizer's fingerprint against the golden's.
    pub fn check_tokenizer(&self, fingerprint: &str, source: &str) -> Result<()> {
        match &self.meta.tokenizer_fingerprint {
            Some(g) if g != fingerprint => Err(GoldenError::Mismatch {
                what: "tokenizer",
                golden: format!("{g} ({})", self.meta.tokenizer_source.as_deref().unwrap_or("?")),
                candidate: format!("{fingerprint} ({source})"),
                hint: " — the golden tokens would mean different text to this model".into(),
            }),
            _ => Ok(()),
        }
    }
}

impl GoldenRows for Golden {
    fn reference<'a>(&'a self, prompt: usize, pos: usize, buf: &'a mut Vec<f32>) -> Reference<'a> {
        let row = prompt * self.seq + pos;
        match &self.body {
            Body::Full { tensor, dtype } => {
                let t = &self.ck.tensors[*tensor];
                let size = dtype.size().expect("byte-sized");
                let bytes = &self.ck.bytes(t)[row * self.vocab * size..(row + 1) * self.vocab * size];
                buf.resize(self.vocab, 0.0);
                float::decode_to_f32(*dtype, bytes, buf);
                Reference::Logits(buf)
            }
            Body::TopK(t) => t.reference(row),
        }
    }
}

fn tensor_err(path: &Path, t: &TensorInfo, expected: &str) -> GoldenError {
    GoldenError::Tensor {
        path: path.into(),
        tensor: t.name.clone(),
        expected: expected.into(),
        found: format!("{} {:?}", t.storage, t.shape),
    }
}

fn meta_usize(path: &Path, m: &BTreeMap<String, String>, k: &'static str) -> Result<usize> {
    let v = m.get(k).ok_or_else(|| GoldenError::Metadata { path: path.into(), key: k, detail: "missing".into() })?;
    v.parse().ok().filter(|&x| x > 0).ok_or_else(|| GoldenError::Metadata {
        path: path.into(),
        key: k,
        detail: format!("expected a positive integer, found '{v}'"),
    })
}

/// The dtype and vocabulary of a full `logits` tensor `[n, seq, vocab]`.
fn full_layout(path: &Path, t: &TensorInfo, n: usize, seq: usize) -> Result<(DType, usize)> {
    let dtype = match t.storage {
        recast_convert::Storage::Dense(d @ (DType::F32 | DType::F16 | DType::BF16)) => d,
        _ => return Err(tensor_err(path, t, "dtype F32, F16 or BF16")),
    };
    match t.shape[..] {
        [a, b, v] if (a as usize, b as usize) == (n, seq) && v > 0 => Ok((dtype, v as usize)),
        _ => Err(tensor_err(path, t, &format!("shape [{n}, {seq}, vocab]"))),
    }
}

/// Integer tensor values (I64 or I32) as i64.
fn read_ints(path: &Path, ck: &Checkpoint, t: &TensorInfo, allowed: &[DType]) -> Result<Vec<i64>> {
    match t.storage {
        recast_convert::Storage::Dense(DType::I64) if allowed.contains(&DType::I64) => {
            Ok(ck.bytes(t).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
        }
        recast_convert::Storage::Dense(DType::I32) if allowed.contains(&DType::I32) => {
            Ok(ck.bytes(t).chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect())
        }
        _ => Err(tensor_err(
            path,
            t,
            &format!("dtype {}", allowed.iter().map(|d| d.name()).collect::<Vec<_>>().join(" or ")),
        )),
    }
}

fn read_f64s(path: &Path, ck: &Checkpoint, name: &str, shape: &[u64]) -> Result<Vec<f64>> {
    let t = ck
        .get(name)
        .ok_or_else(|| GoldenError::NotGolden { path: path.into(), detail: format!("no '{name}' tensor") })?;
    if t.storage != recast_convert::Storage::Dense(DType::F64) || t.shape != shape {
        return Err(tensor_err(path, t, &format!("F64 {shape:?}")));
    }
    Ok(ck.bytes(t).chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
}

fn read_topk(path: &Path, ck: &Checkpoint, n: usize, seq: usize, vocab: usize) -> Result<TopK> {
    let t = ck.get(tensor::TOPK_IDS).expect("caller checked");
    let k = match t.shape[..] {
        [a, b, k] if (a as usize, b as usize) == (n, seq) && k > 0 && k as usize <= vocab => k as usize,
        _ => return Err(tensor_err(path, t, &format!("shape [{n}, {seq}, k] with 1 ≤ k ≤ {vocab}"))),
    };
    let ids = read_ints(path, ck, t, &[DType::I32])?;
    let (n, seq, k64) = (n as u64, seq as u64, k as u64);
    Ok(TopK {
        k,
        // Range-checked with the values; a negative id becomes u32::MAX and fails there.
        ids: ids.iter().map(|&v| u32::try_from(v).unwrap_or(u32::MAX)).collect(),
        logprobs: read_f64s(path, ck, tensor::TOPK_LOGPROBS, &[n, seq, k64])?,
        rest_logprob: read_f64s(path, ck, tensor::REST_LOGPROB, &[n, seq])?,
        next_logprob: read_f64s(path, ck, tensor::NEXT_LOGPROB, &[n, seq])?,
    })
}

/// What is wrong with one top-k row, if anything.
fn topk_row_problem(ids: &[u32], logprobs: &[f64], rest: f64, vocab: usize) -> Option<String> {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Some(format!("id {id} is outside the vocabulary ({vocab})"));
    }
    if let Some(v) = logprobs.iter().find(|v| !(v.is_finite() && **v <= 0.0)) {
        return Some(format!("log-probability {v} is not finite and ≤ 0"));
    }
    if logprobs.windows(2).any(|w| w[1] > w[0]) {
        return Some("log-probabilities are not in descending order".into());
    }
    let distinct: BTreeSet<u32> = ids.iter().copied().collect();
    if distinct.len() != ids.len() {
        return Some("an id appears twice".into());
    }
    if rest.is_nan() || rest > 0.0 {
        return Some(format!("rest_logprob {rest} is not a log-probability"));
    }
    None
}

fn split_tokens(path: &Path, ids: &[i64], lengths: &[i64], seq: usize, vocab: usize) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(lengths.len());
    for (p, &len) in lengths.iter().enumerate() {
        if len < 1 || len as usize > seq {
            return Err(GoldenError::Value {
                path: path.into(),
                tensor: tensor::LENGTHS,
                prompt: p,
                position: 0,
                detail: format!("length {len} is outside 1..={seq}"),
            });
        }
        let row = &ids[p * seq..p * seq + len as usize];
        if let Some(i) = row.iter().position(|&id| id < 0 || id as usize >= vocab) {
            return Err(GoldenError::Value {
                path: path.into(),
                tensor: tensor::TOKENS,
                prompt: p,
                position: i,
                detail: format!("token id {} is outside the vocabulary ({vocab})", row[i]),
            });
        }
        out.push(row.iter().map(|&id| id as u32).collect());
    }
    Ok(out)
}
