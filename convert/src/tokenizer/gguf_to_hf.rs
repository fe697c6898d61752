//! GGUF `tokenizer.*` metadata → HF `tokenizer.json` + `tokenizer_config.json`.
//!
//! Mirrors transformers' own GGUF loader (`integrations/gguf/gguf_tokenizer_mapping.py`,
//! transformers 5.24: `byte_level_tokenizer`, `sentencepiece_tokenizer`,
//! `add_gguf_special_tokens`, `set_split_regex`) with two differences that keep the rebuilt
//! tokenizer equal to the one the GGUF was made from:
//!
//! * the byte-level pre-tokenizer comes from the `pre` row in [`super::pre::PRE_TYPES`] for
//!   every name llama.cpp knows (transformers only overrides a few and otherwise splits like
//!   GPT-2), and an unknown `pre` is an error rather than GPT-2's split;
//! * control tokens are kept whatever characters they use (transformers drops those outside
//!   the byte alphabet, e.g. DeepSeek's `<｜begin▁of▁sentence｜>`), with the GGUF spelling as
//!   both vocab key and added-token content so the id is the GGUF id.

use super::keys::{self, TokenType, MODEL_GPT2, MODEL_LLAMA};
use super::pre::{self, PreType};
use super::spm::split_merge;
use crate::error::{Error, Result};
use crate::gguf::{Array, Metadata, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

/// HF tokenizer files rebuilt from GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTokenizer {
    /// The `tokenizer.json` document.
    pub tokenizer_json: Json,
    /// The `tokenizer_config.json` document.
    pub tokenizer_config: Json,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

/// What every tokenizer model needs from the metadata.
struct Vocab<'m> {
    tokens: &'m [String],
    types: Vec<i32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_eos: bool,
}

pub fn hf_tokenizer_from_gguf(meta: &Metadata) -> Result<HfTokenizer> {
    let model = get_str(meta, keys::MODEL)?.ok_or_else(|| missing(keys::MODEL))?;
    let tokens = match meta.get(keys::TOKENS) {
        Some(Value::Array(Array::String(t))) => t.as_slice(),
        Some(v) => return Err(wrong_type(keys::TOKENS, "ARRAY[STRING]", v)),
        None => return Err(missing(keys::TOKENS)),
    };
    let v = Vocab {
        tokens,
        types: token_types(meta, tokens.len())?,
        bos: token_id(meta, "bos", tokens.len())?,
        eos: token_id(meta, "eos", tokens.len())?,
        unk: token_id(meta, "unk", tokens.len())?,
        pad: token_id(meta, "pad", tokens.len())?,
        add_eos: get_bool(meta, keys::role("eos").add_key.expect("eos add key"))?.unwrap_or(false),
    };
    let add_bos = get_bool(meta, keys::role("bos").add_key.expect("bos add key"))?;
    let (body, add_bos) = match model {
        MODEL_GPT2 => {
            let pre = byte_level_pre(meta)?;
            (byte_level_body(meta, &v, pre)?, add_bos.unwrap_or(pre.add_bos_default))
        }
        // transformers and llama.cpp both add BOS to a SentencePiece vocabulary by default.
        MODEL_LLAMA => (sentencepiece_body(meta, &v)?, add_bos.unwrap_or(true)),
        other => {
            return Err(Error::Tokenizer {
                detail: format!("{}: tokenizer model '{other}' is not supported (supported: gpt2, llama)", keys::MODEL),
            })
        }
    };
    let tokenizer_json = assemble(&v, body, add_bos)?;
    Ok(HfTokenizer {
        tokenizer_json,
        tokenizer_config: tokenizer_config(meta, &v, add_bos)?,
        bos_token_id: v.bos,
        eos_token_id: v.eos,
        pad_token_id: v.pad,
    })
}

/// The parts of tokenizer.json that depend on the tokenizer model.
struct Body {
    normalizer: Json,
    pre_tokenizer: Json,
    decoder: Json,
    model: Json,
}

fn byte_level_pre(meta: &Metadata) -> Result<&'static PreType> {
    let name = get_str(meta, keys::PRE)?.ok_or_else(|| missing(keys::PRE))?;
    pre::find(name).ok_or_else(|| Error::Tokenizer {
        detail: format!(
            "{}: pre-tokenizer '{name}' has no HF equivalent here (known: {})",
            keys::PRE,
            pre::known_names().join(", ")
        ),
    })
}

/// `byte_level_tokenizer` + `set_split_regex`.
fn byte_level_body(meta: &Metadata, v: &Vocab, pre: &PreType) -> Result<Body> {
    let merges = match meta.get(keys::MERGES) {
        Some(Value::Array(Array::String(m))) => merge_pairs(m)?,
        Some(other) => return Err(wrong_type(keys::MERGES, "ARRAY[STRING]", other)),
        None => return Err(missing(keys::MERGES)),
    };
    Ok(Body {
        normalizer: pre.hf_normalizer(),
        pre_tokenizer: pre.hf_pre_tokenizer(),
        decoder: json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true }),
        model: json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": pre.ignore_merges,
            "vocab": vocab_map(v.tokens),
            "merges": merges,
        }),
    })
}

/// `sentencepiece_tokenizer` (transformers' `LlamaTokenizer`): Metaspace, byte fallback, and the
/// file's merges or ones recovered from the scores.
fn sentencepiece_body(meta: &Metadata, v: &Vocab) -> Result<Body> {
    let prefix = get_bool(meta, keys::ADD_SPACE_PREFIX)?.unwrap_or(true);
    let merges = match meta.get(keys::MERGES) {
        Some(Value::Array(Array::String(m))) => merge_pairs(m)?,
        Some(other) => return Err(wrong_type(keys::MERGES, "ARRAY[STRING]", other)),
        None => {
            let scores = match meta.get(keys::SCORES) {
                Some(Value::Array(Array::F32(s))) if s.len() == v.tokens.len() => s,
                Some(other) => return Err(wrong_type(keys::SCORES, "ARRAY[FLOAT32] with one score per token", other)),
                None => return Err(missing(keys::SCORES)),
            };
            generate_merges(v.tokens, scores).into_iter().map(|(l, r)| json!([l, r])).collect()
        }
    };
    let mut decoders = vec![
        json!({ "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " }),
        json!({ "type": "ByteFallback" }),
        json!({ "type": "Fuse" }),
    ];
    if prefix {
        decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
    }
    Ok(Body {
        normalizer: Json::Null,
        pre_tokenizer: json!({
            "type": "Metaspace",
            "replacement": "\u{2581}",
            "prepend_scheme": if prefix { "first" } else { "never" },
            "split": false,
        }),
        decoder: json!({ "type": "Sequence", "decoders": decoders }),
        model: json!({
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab_map(v.tokens),
            "merges": merges,
        }),
    })
}

fn assemble(v: &Vocab, body: Body, add_bos: bool) -> Result<Json> {
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(v),
        "normalizer": body.normalizer,
        "pre_tokenizer": body.pre_tokenizer,
        "post_processor": post_processor(v, add_bos)?,
        "decoder": body.decoder,
        "model": body.model,
    }))
}

/// token → id, ids ascending; a repeated token keeps its last id (as a Python dict and
/// llama.cpp's `token_to_id` do).
fn vocab_map(tokens: &[String]) -> Json {
    let mut m = Map::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        m.insert(t.clone(), json!(id));
    }
    Json::Object(m)
}

/// `"left right"` → `["left", "right"]`, split where llama.cpp splits.
fn merge_pairs(merges: &[String]) -> Result<Vec<Json>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (l, r) = split_merge(m).ok_or_else(|| Error::Tokenizer {
                detail: format!("{}: merge {i} {m:?} has no separating space", keys::MERGES),
            })?;
            Ok(json!([l, r]))
        })
        .collect()
}

/// `add_gguf_special_tokens`: CONTROL (and SentencePiece's UNKNOWN) as special added tokens,
/// USER_DEFINED as plain added tokens; all matched verbatim (`normalized: false`).
fn added_tokens(v: &Vocab) -> Vec<Json> {
    let control = [TokenType::Control.id(), TokenType::Unknown.id()];
    v.tokens
        .iter()
        .zip(&v.types)
        .enumerate()
        .filter_map(|(id, (t, ty))| {
            let special = control.contains(ty);
            (special || *ty == TokenType::UserDefined.id()).then(|| {
                json!({
                    "id": id,
                    "content": t,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": special,
                })
            })
        })
        .collect()
}

/// transformers' `update_post_processor` template: `[bos] $A [eos]`, pair `… [bos]:1 $B:1 [eos]:1`.
fn post_processor(v: &Vocab, add_bos: bool) -> Result<Json> {
    let role = |flag: bool, id: Option<u32>, name: &str| -> Result<Option<(String, u32)>> {
        if !flag {
            return Ok(None);
        }
        let id = id.ok_or_else(|| Error::Tokenizer {
            detail: format!("tokenizer.ggml.add_{name}_token is true but there is no {name} token id"),
        })?;
        Ok(Some((v.tokens[id as usize].clone(), id)))
    };
    let bos = role(add_bos, v.bos, "bos")?;
    let eos = role(v.add_eos, v.eos, "eos")?;
    let special = |t: &(String, u32), type_id: u32| json!({ "SpecialToken": { "id": t.0, "type_id": type_id } });
    let seq = |id: &str, type_id: u32| json!({ "Sequence": { "id": id, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, type_id, out) in [("A", 0, &mut single), ("B", 1, &mut pair)] {
        out.extend(bos.iter().map(|b| special(b, type_id)));
        out.push(seq(part, type_id));
        out.extend(eos.iter().map(|e| special(e, type_id)));
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    let mut specials = Map::new();
    for (tok, id) in bos.iter().chain(eos.iter()) {
        specials.insert(tok.clone(), json!({ "id": tok, "ids": [id], "tokens": [tok] }));
    }
    Ok(json!({ "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials }))
}

fn tokenizer_config(meta: &Metadata, v: &Vocab, add_bos: bool) -> Result<Json> {
    let name = |id: Option<u32>| id.map_or(Json::Null, |i| json!(v.tokens[i as usize]));
    let mut c = Map::new();
    c.insert("add_bos_token".into(), json!(add_bos));
    c.insert("add_eos_token".into(), json!(v.add_eos));
    c.insert("bos_token".into(), name(v.bos));
    c.insert("eos_token".into(), name(v.eos));
    c.insert("unk_token".into(), name(v.unk));
    c.insert("pad_token".into(), name(v.pad));
    c.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(n) = context_length(meta)? {
        c.insert("model_max_length".into(), json!(n));
    }
    c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    if let Some(t) = chat_template(meta)? {
        c.insert("chat_template".into(), t);
    }
    Ok(Json::Object(c))
}

/// `{general.architecture}.context_length`, when both are present.
fn context_length(meta: &Metadata) -> Result<Option<u64>> {
    let Some(arch) = get_str(meta, "general.architecture")? else { return Ok(None) };
    Ok(meta.get(&format!("{arch}.context_length")).and_then(Value::as_u64))
}

/// `tokenizer.chat_template`, or with named ones the list form
/// `[{"name": "default", "template": …}, {"name": n, "template": …}]`.
fn chat_template(meta: &Metadata) -> Result<Option<Json>> {
    let default = get_str(meta, keys::CHAT_TEMPLATE)?;
    let names = match meta.get(keys::CHAT_TEMPLATES) {
        Some(Value::Array(Array::String(n))) => n.as_slice(),
        Some(other) => return Err(wrong_type(keys::CHAT_TEMPLATES, "ARRAY[STRING]", other)),
        None => &[],
    };
    if names.is_empty() {
        return Ok(default.map(|d| json!(d)));
    }
    let mut list: Vec<Json> = default.map(|d| json!({ "name": "default", "template": d })).into_iter().collect();
    for n in names {
        let key = format!("{}{n}", keys::CHAT_TEMPLATE_PREFIX);
        let t = get_str(meta, &key)?.ok_or_else(|| missing(&key))?;
        list.push(json!({ "name": n, "template": t }));
    }
    Ok(Some(Json::Array(list)))
}

/// transformers' `generate_merges(vocab, vocab_scores)`: every split of a token into two
/// vocab tokens, ordered by the token's score (best first), then longer left, longer right
/// parts; ties keep vocab order (Python's stable `sorted(..., reverse=True)`).
pub(crate) fn generate_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let mut vocab: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut scored: Vec<(&str, f32)> = Vec::with_capacity(tokens.len());
    let mut slot: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, (t, s)) in tokens.iter().zip(scores).enumerate() {
        vocab.insert(t, id);
        match slot.get(t.as_str()) {
            Some(&i) => scored[i].1 = *s,
            None => {
                slot.insert(t, scored.len());
                scored.push((t, *s));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for (token, score) in scored {
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(i, _)| token.split_at(i))
            .filter(|(l, r)| vocab.contains_key(l) && vocab.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
        merges.extend(local);
    }
    let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1)).then(kb.2.cmp(&ka.2))
    });
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

fn token_types(meta: &Metadata, n: usize) -> Result<Vec<i32>> {
    match meta.get(keys::TOKEN_TYPE) {
        Some(Value::Array(Array::I32(t))) if t.len() == n => Ok(t.clone()),
        Some(other) => Err(wrong_type(keys::TOKEN_TYPE, &format!("ARRAY[INT32] of {n} entries"), other)),
        None => Ok(vec![TokenType::Normal.id(); n]),
    }
}

/// A special token id; one outside the vocabulary is an error (transformers would index out of
/// range).
fn token_id(meta: &Metadata, role: &str, n: usize) -> Result<Option<u32>> {
    let key = keys::role(role).id_key.expect("roles read here have id keys");
    let Some(v) = meta.get(key) else { return Ok(None) };
    let id = v.as_u64().ok_or_else(|| wrong_type(key, "UINT32", v))?;
    match u32::try_from(id) {
        Ok(id) if (id as usize) < n => Ok(Some(id)),
        _ => Err(Error::Tokenizer { detail: format!("{key}: id {id} is outside the {n}-token vocabulary") }),
    }
}

fn get_str<'m>(meta: &'m Metadata, key: &str) -> Result<Option<&'m str>> {
    match meta.get(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(key, "STRING", other)),
        None => Ok(None),
    }
}

fn get_bool(meta: &Metadata, key: &str) -> Result<Option<bool>> {
    match meta.get(key) {
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "BOOL", other)),
        None => Ok(None),
    }
}

fn missing(key: &str) -> Error {
    Error::Tokenizer { detail: format!("metadata key '{key}' is missing") }
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> Error {
    Error::Tokenizer { detail: format!("metadata key '{key}': expected {expected}, found {}", found.type_label()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn generate_merges_orders_by_score_then_lengths() {
        let tokens = s(&["a", "b", "c", "ab", "abc", "bc"]);
        let scores = [0.0, 0.0, 0.0, -1.0, -3.0, -2.0];
        let got = generate_merges(&tokens, &scores);
        let want = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
        assert_eq!(got, want.iter().map(|(l, r)| (l.to_string(), r.to_string())).collect::<Vec<_>>());
    }

    #[test]
    fn merge_split_is_at_first_space_after_index_zero() {
        let pairs = merge_pairs(&s(&["a b", "  b", "Ġ t"])).unwrap();
        assert_eq!(pairs, vec![json!(["a", "b"]), json!([" ", "b"]), json!(["Ġ", "t"])]);
        assert!(matches!(merge_pairs(&s(&["ab"])), Err(Error::Tokenizer { .. })));
    }
}
