//! Byte-level BPE vocabularies for `tokenizer.ggml.model = "gpt2"`: a port of
//! `get_vocab_base` and `get_vocab_base_pre` in llama.cpp's `conversion/base.py` (vendored by
//! llama-cpp-python 0.3.36), with the HF `tokenizers` crate standing in for transformers.
//!
//! `tokenizer.ggml.pre` is llama.cpp's: the sha256 of the `chktxt` ids looked up in its table.
//! Small custom tokenizers hash to nothing there, so an unknown hash falls back to recognising
//! the tokenizer.json pre-tokenizer by its steps ([`super::pre::recognise`]); when that fails
//! too, the result is an error naming both, never a silent "default".

use super::chkhsh::{self, CHKTXT};
use super::hf_files::HfFiles;
use super::keys::TokenType;
use super::pre;
use crate::error::{Error, Result};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokenizers::Tokenizer;

#[derive(Debug)]
pub(crate) struct BpeVocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub pre: String,
}

/// An added token as tokenizer.json lists it.
struct Added {
    content: String,
    special: bool,
    normalized: bool,
}

/// `get_vocab_base`: tokens by id up to `vocab_size` (holes → `[PAD{i}]`, UNUSED), added
/// tokens CONTROL or USER_DEFINED, the rest NORMAL; plus the `pre` name.
pub(crate) fn gpt2_vocab(files: &HfFiles, vocab_size: usize) -> Result<BpeVocab> {
    let path = files.path("tokenizer.json");
    let tok = files.tokenizer_json.as_ref().ok_or_else(|| Error::Tokenizer {
        detail: format!("{}: missing (needed for a byte-level BPE vocabulary)", path.display()),
    })?;
    if tok["model"]["type"] != "BPE" {
        return Err(Error::Tokenizer {
            detail: format!(
                "{}: model type {} is not BPE (no tokenizer.model either)",
                path.display(),
                tok["model"]["type"]
            ),
        });
    }
    let hf = load_tokenizer(&path)?;
    let (by_id, added) = vocab_by_id(tok)?;
    if let Some(max) = by_id.keys().max().filter(|&&m| m as usize >= vocab_size) {
        return Err(Error::Tokenizer {
            detail: format!("{}: token id {max} is not below the model's vocab_size {vocab_size}", path.display()),
        });
    }
    let pre = pre_name(&hf, tok, &path)?;
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size as u32 {
        let Some(token) = by_id.get(&id) else {
            tokens.push(format!("[PAD{id}]"));
            types.push(TokenType::Unused.id());
            continue;
        };
        let (token, kind) = match added.get(&id).filter(|a| a.content == *token) {
            Some(a) => added_token(&hf, a)?,
            None => (token.clone(), TokenType::Normal),
        };
        tokens.push(token);
        types.push(kind.id());
    }
    Ok(BpeVocab { tokens, types, pre })
}

/// The type of an added token and the text llama.cpp stores for it.
fn added_token(hf: &Tokenizer, a: &Added) -> Result<(String, TokenType)> {
    // llama.cpp assumes CONTROL and USER_DEFINED tokens are pre-normalised: a non-normalised
    // one is stored as it encodes and decodes back.
    let text = if a.normalized { a.content.clone() } else { round_trip(hf, &a.content)? };
    if a.special || looks_special(&text) {
        Ok((text, TokenType::Control))
    } else {
        Ok((text.replace('\u{2581}', " "), TokenType::UserDefined))
    }
}

fn round_trip(hf: &Tokenizer, text: &str) -> Result<String> {
    let enc = hf.encode(text, false).map_err(tk_error)?;
    hf.decode(enc.get_ids(), false).map_err(tk_error)
}

/// `tokenizer.vocab` (model vocab plus added tokens; an added token wins its id) and the
/// added tokens by id.
fn vocab_by_id(tok: &Json) -> Result<(HashMap<u32, String>, HashMap<u32, Added>)> {
    let bad = |what: String| Error::Tokenizer { detail: format!("tokenizer.json: {what}") };
    let vocab = tok["model"]["vocab"].as_object().ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut by_id = HashMap::with_capacity(vocab.len());
    for (token, id) in vocab {
        let id = as_id(id).ok_or_else(|| bad(format!("id of '{token}' is not a u32")))?;
        by_id.insert(id, token.clone());
    }
    let mut added = HashMap::new();
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (as_id(&a["id"]), a["content"].as_str()) else {
            return Err(bad(format!("bad added_tokens entry {a}")));
        };
        by_id.insert(id, content.to_string());
        let flag = |k: &str| a[k].as_bool().unwrap_or(false);
        added.insert(
            id,
            Added { content: content.to_string(), special: flag("special"), normalized: flag("normalized") },
        );
    }
    Ok((by_id, added))
}

fn as_id(v: &Json) -> Option<u32> {
    v.as_u64().and_then(|i| u32::try_from(i).ok())
}

/// `does_token_look_special`: tokens some models mark as not special but llama.cpp treats as
/// CONTROL (`<|…|>`, DeepSeek's `<｜…｜>`, Gemma's `<unused…>`, and a few literals).
pub(crate) fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// llama.cpp's `pre` for this tokenizer: by `chkhsh`, else by pre-tokenizer recognition.
fn pre_name(hf: &Tokenizer, tok: &Json, path: &std::path::Path) -> Result<String> {
    let hash = chkhsh(hf)?;
    if let Some(pre) = chkhsh::lookup(&hash) {
        return Ok(pre.to_string());
    }
    if let Some(pre) = pre::recognise(&tok["pre_tokenizer"]) {
        return Ok(pre.to_string());
    }
    Err(Error::Tokenizer {
        detail: format!(
            "{}: BPE pre-tokenizer not recognised: chkhsh {hash} is not in llama.cpp's table and the \
             pre_tokenizer {} matches none of the known ones ({})",
            path.display(),
            tok["pre_tokenizer"],
            pre::known_names().join(", ")
        ),
    })
}

/// `sha256(str(tokenizer.encode(chktxt)))`, special tokens added as the tokenizer's
/// post-processor says; `str` is Python's list spelling `[1, 2, 3]`.
pub fn chkhsh(hf: &Tokenizer) -> Result<String> {
    let enc = hf.encode(CHKTXT, true).map_err(tk_error)?;
    let ids: Vec<String> = enc.get_ids().iter().map(u32::to_string).collect();
    let digest = Sha256::digest(format!("[{}]", ids.join(", ")).as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path)
        .map_err(|e| Error::Tokenizer { detail: format!("{}: cannot load with HF tokenizers: {e}", path.display()) })
}

pub(crate) fn tk_error(e: tokenizers::Error) -> Error {
    Error::Tokenizer { detail: format!("HF tokenizers: {e}") }
}
