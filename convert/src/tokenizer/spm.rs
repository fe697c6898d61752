//! SentencePiece vocabularies for `tokenizer.ggml.model = "llama"`: from `tokenizer.model`
//! (`_create_vocab_sentencepiece` in llama.cpp's `conversion/base.py`) or, without it, from a
//! tokenizer.json BPE model with byte fallback (gguf-py `LlamaHfVocab`).
//!
//! One deliberate difference from `LlamaHfVocab`: it writes the placeholder score −1000 for
//! every token, which leaves llama.cpp's SPM tokenizer (it merges the pair whose result has the
//! best score) and transformers' merge recovery (ordered by score) without an order. Here a
//! token a BPE merge produces scores −rank of its first such merge, so both recover the HF
//! merge order; every other token keeps −1000.

use super::bpe::looks_special;
use super::hf_files::{read_json_opt, HfFiles};
use super::keys::TokenType;
use super::spm_model::{parse_pieces, PieceType};
use crate::error::{Error, Result};
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};

/// Score llama.cpp gives padding inside `vocab_size` and added tokens.
const PAD_SCORE: f32 = -10000.0;
const ADDED_SCORE: f32 = -1000.0;

#[derive(Debug)]
pub(crate) struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

/// From `tokenizer.model`; `Ok(None)` when the file does not exist.
pub(crate) fn from_sentencepiece(files: &HfFiles, vocab_size: usize) -> Result<Option<SpmVocab>> {
    let path = files.path("tokenizer.model");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let pieces = parse_pieces(&bytes, &path)?;
    let n = if vocab_size == 0 { pieces.len() } else { vocab_size };
    let mut v = SpmVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![PAD_SCORE; n],
        types: vec![TokenType::Unused.id(); n],
    };
    for (id, p) in pieces.iter().enumerate().take(n) {
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        v.types[id] = match p.kind {
            PieceType::Unknown => TokenType::Unknown,
            PieceType::Control => TokenType::Control,
            PieceType::Unused => TokenType::Unused,
            PieceType::Byte => TokenType::Byte,
            PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
        }
        .id();
    }
    apply_added_tokens_json(files, &mut v)?;
    apply_added_tokens_decoder(files, &mut v)?;
    Ok(Some(v))
}

/// `added_tokens.json` `{content: id}`: USER_DEFINED, score −1000.
fn apply_added_tokens_json(files: &HfFiles, v: &mut SpmVocab) -> Result<()> {
    let path = files.path("added_tokens.json");
    let Some(Json::Object(added)) = read_json_opt(&path)? else { return Ok(()) };
    for (content, id) in &added {
        let id = id.as_u64().ok_or_else(|| Error::Tokenizer {
            detail: format!("{}: id of '{content}' is not a non-negative integer", path.display()),
        })? as usize;
        if id < v.tokens.len() {
            set(v, id, content.clone(), ADDED_SCORE, TokenType::UserDefined);
        }
    }
    Ok(())
}

/// `tokenizer_config.json` `added_tokens_decoder`: CONTROL when special (or looking special),
/// else USER_DEFINED with "▁" pre-normalised to a space; score −1000.
fn apply_added_tokens_decoder(files: &HfFiles, v: &mut SpmVocab) -> Result<()> {
    let Some(Json::Object(decoder)) = files.config_entry("added_tokens_decoder") else { return Ok(()) };
    for (id, data) in decoder {
        let bad =
            || Error::Tokenizer { detail: format!("tokenizer_config.json: bad added_tokens_decoder entry '{id}'") };
        let id: usize = id.parse().map_err(|_| bad())?;
        let content = data.get("content").and_then(Json::as_str).ok_or_else(bad)?;
        if id >= v.tokens.len() {
            continue;
        }
        let special = data.get("special").and_then(Json::as_bool).unwrap_or(false);
        if special || looks_special(content) {
            set(v, id, content.to_string(), ADDED_SCORE, TokenType::Control);
        } else {
            set(v, id, content.replace('\u{2581}', " "), ADDED_SCORE, TokenType::UserDefined);
        }
    }
    Ok(())
}

fn set(v: &mut SpmVocab, id: usize, token: String, score: f32, kind: TokenType) {
    v.tokens[id] = token;
    v.scores[id] = score;
    v.types[id] = kind.id();
}

/// Why tokenizer.json cannot be read as a Llama SPM vocabulary; llama.cpp then tries the
/// byte-level BPE path (Llama 3 and friends).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotLlamaHf {
    Missing,
    Llama3,
    NotByteFallbackBpe,
}

/// `LlamaHfVocab`: base vocab by id, then added tokens beyond it by id. Does not pad to the
/// config's vocab size (neither does upstream).
pub(crate) fn from_llama_hf(files: &HfFiles) -> Result<std::result::Result<SpmVocab, NotLlamaHf>> {
    let Some(tok) = &files.tokenizer_json else { return Ok(Err(NotLlamaHf::Missing)) };
    let model = &tok["model"];
    let is_bpe = model["type"] == "BPE";
    let flag = |k: &str, default: bool| model.get(k).and_then(Json::as_bool).unwrap_or(default);
    if is_bpe && flag("ignore_merges", false) && !flag("byte_fallback", true) {
        return Ok(Err(NotLlamaHf::Llama3));
    }
    if !is_bpe || !flag("byte_fallback", false) || tok["decoder"]["type"] != "Sequence" {
        return Ok(Err(NotLlamaHf::NotByteFallbackBpe));
    }
    let base = model_vocab(tok)?;
    let specials = special_contents(files);
    let scores = merge_scores(tok, files)?;
    let mut v = SpmVocab { tokens: Vec::new(), scores: Vec::new(), types: Vec::new() };
    for (id, token) in base.iter().enumerate() {
        let token = token.clone().ok_or_else(|| Error::Tokenizer {
            detail: format!("tokenizer.json: model vocab has no token with id {id} (ids must be contiguous)"),
        })?;
        let kind = if is_byte_token(&token) {
            TokenType::Byte
        } else if specials.contains(token.as_str()) {
            TokenType::Control
        } else {
            TokenType::Normal
        };
        v.scores.push(scores.get(token.as_str()).copied().unwrap_or(ADDED_SCORE));
        v.tokens.push(token);
        v.types.push(kind.id());
    }
    for (id, content) in added_beyond(tok, base.len()) {
        let kind = if specials.contains(content.as_str()) { TokenType::Control } else { TokenType::UserDefined };
        debug_assert!(id >= base.len());
        v.tokens.push(content);
        v.scores.push(ADDED_SCORE);
        v.types.push(kind.id());
    }
    Ok(Ok(v))
}

/// `model.vocab` as a dense id → token table (`None` for holes).
fn model_vocab(tok: &Json) -> Result<Vec<Option<String>>> {
    let vocab = tok["model"]["vocab"]
        .as_object()
        .ok_or_else(|| Error::Tokenizer { detail: "tokenizer.json: model.vocab is not an object".into() })?;
    let mut base: Vec<Option<String>> = vec![None; vocab.len()];
    for (token, id) in vocab {
        let id = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab.len()).ok_or_else(|| Error::Tokenizer {
            detail: format!("tokenizer.json: id of '{token}' is not in 0..{}", vocab.len()),
        })?;
        base[id] = Some(token.clone());
    }
    Ok(base)
}

/// Added tokens whose id is past the base vocab, sorted by id (`get_added_vocab` ∖ base).
fn added_beyond(tok: &Json, base_len: usize) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = tok["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_u64()? as usize, a["content"].as_str()?.to_string())))
        .filter(|(id, _)| *id >= base_len)
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// transformers' `all_special_tokens`: the `tokenizer_config.json` role tokens plus the extra
/// special tokens it lists.
fn special_contents(files: &HfFiles) -> HashSet<String> {
    let mut out = HashSet::new();
    let content = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    };
    for role in ["bos", "eos", "unk", "sep", "pad", "cls", "mask"] {
        if let Some(c) = files.config_entry(&format!("{role}_token")).and_then(content) {
            out.insert(c);
        }
    }
    for key in ["additional_special_tokens", "extra_special_tokens"] {
        if let Some(Json::Array(items)) = files.config_entry(key) {
            out.extend(items.iter().filter_map(content));
        }
    }
    out
}

/// −rank of the first merge producing each token (see the module doc).
fn merge_scores(tok: &Json, files: &HfFiles) -> Result<HashMap<String, f32>> {
    let merges = super::special::merges_from_tokenizer_json(tok, &files.path("tokenizer.json"))?;
    let mut scores = HashMap::new();
    for (rank, m) in merges.iter().enumerate() {
        if let Some((l, r)) = split_merge(m) {
            scores.entry(format!("{l}{r}")).or_insert(0.0 - rank as f32);
        }
    }
    Ok(scores)
}

/// llama.cpp splits a merge at the first space at index ≥ 1.
pub(crate) fn split_merge(m: &str) -> Option<(&str, &str)> {
    let at = m.char_indices().skip(1).find(|(_, c)| *c == ' ')?.0;
    Some((&m[..at], &m[at + 1..]))
}

/// `<0xHH>`.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && b[3..5].iter().all(u8::is_ascii_hexdigit)
}
