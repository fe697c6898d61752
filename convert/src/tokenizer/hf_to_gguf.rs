//! HF model directory → the `tokenizer.*` GGUF metadata llama.cpp's `convert_hf_to_gguf.py`
//! writes, keys in its order and with its value types.
//!
//! Which vocabulary reader runs, and in what order they are tried, depends on the model class
//! (`set_vocab` of `LlamaModel`, `Qwen2Model`, `DeepseekV2Model`… in llama.cpp's
//! `conversion/`); [`RECIPES`] is that table.

use super::bpe::gpt2_vocab;
use super::hf_files::HfFiles;
use super::keys::{self, MODEL_GPT2, MODEL_LLAMA};
use super::special::SpecialVocab;
use super::spm::{from_llama_hf, from_sentencepiece, SpmVocab};
use crate::error::{Error, Result};
use crate::gguf::{Array, Metadata, Value};
use std::path::Path;

/// A vocabulary reader, tried in a recipe's order until one applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `tokenizer.model` (applies when the file exists).
    SentencePiece,
    /// tokenizer.json BPE with byte fallback (`LlamaHfVocab`; applies to that shape only).
    LlamaHf,
    /// Byte-level BPE from tokenizer.json (always applies; fails loudly).
    Gpt2,
}

struct Recipe {
    /// HF `architectures[0]` values.
    archs: &'static [&'static str],
    order: &'static [Source],
    /// `LlamaModel.set_vocab` writes `add_space_prefix` from tokenizer_config `add_prefix_space`
    /// first, and forces `add_bos_token = false` for a 49152-token vocab ("granite small").
    llama_extras: bool,
}

const RECIPES: &[Recipe] = &[
    Recipe {
        archs: &["LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "LlamaModel"],
        order: &[Source::SentencePiece, Source::LlamaHf, Source::Gpt2],
        llama_extras: true,
    },
    Recipe {
        archs: &["Qwen2ForCausalLM", "Qwen2Model", "Qwen3ForCausalLM", "Qwen3Model", "DeepseekForCausalLM"],
        order: &[Source::SentencePiece, Source::Gpt2],
        llama_extras: false,
    },
    Recipe { archs: &["DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"], order: &[Source::Gpt2], llama_extras: false },
];

/// For a missing `config.json` or an architecture not in [`RECIPES`]: SentencePiece when
/// `tokenizer.model` exists, else byte-level BPE (as `Qwen2Model` / `DeepseekModel`).
const FALLBACK: Recipe = Recipe { archs: &[], order: &[Source::SentencePiece, Source::Gpt2], llama_extras: false };

const GRANITE_SMALL_VOCAB: usize = 49152;

/// Builds the `tokenizer.*` keys from `model_dir` (see [`super::gguf_metadata_from_hf`]).
pub fn gguf_metadata_from_hf(model_dir: &Path, vocab_size: usize) -> Result<Metadata> {
    let files = HfFiles::load(model_dir)?;
    let recipe = files.architecture().and_then(|a| RECIPES.iter().find(|r| r.archs.contains(&a))).unwrap_or(&FALLBACK);
    let mut meta = Metadata::new();
    if recipe.llama_extras {
        if let Some(add) = files.config_entry("add_prefix_space").and_then(|v| v.as_bool()) {
            meta.set(keys::ADD_SPACE_PREFIX, Value::Bool(add));
        }
    }
    write_vocab(&files, recipe, vocab_size, &mut meta)?;
    if recipe.llama_extras && vocab_size == GRANITE_SMALL_VOCAB {
        meta.set(keys::role("bos").add_key.expect("bos has an add key"), Value::Bool(false));
    }
    Ok(meta)
}

fn write_vocab(files: &HfFiles, recipe: &Recipe, vocab_size: usize, meta: &mut Metadata) -> Result<()> {
    for source in recipe.order {
        match source {
            Source::SentencePiece => {
                if let Some(v) = from_sentencepiece(files, vocab_size)? {
                    return write_spm(files, v, meta);
                }
            }
            Source::LlamaHf => {
                if let Ok(v) = from_llama_hf(files)? {
                    return write_spm(files, v, meta);
                }
            }
            Source::Gpt2 => return write_gpt2(files, vocab_size, meta),
        }
    }
    Err(Error::Tokenizer {
        detail: format!("{}: no tokenizer.model or tokenizer.json this converter can read", files.dir.display()),
    })
}

/// `_set_vocab_sentencepiece` / `_set_vocab_llama_hf`.
fn write_spm(files: &HfFiles, v: SpmVocab, meta: &mut Metadata) -> Result<()> {
    let n = v.tokens.len();
    meta.set(keys::MODEL, Value::String(MODEL_LLAMA.into()));
    meta.set(keys::PRE, Value::String("default".into()));
    meta.set(keys::TOKENS, Value::Array(Array::String(v.tokens)));
    meta.set(keys::SCORES, Value::Array(Array::F32(v.scores)));
    meta.set(keys::TOKEN_TYPE, Value::Array(Array::I32(v.types)));
    SpecialVocab::load(files, false, Some(n))?.write(meta);
    Ok(())
}

/// `_set_vocab_gpt2`.
fn write_gpt2(files: &HfFiles, vocab_size: usize, meta: &mut Metadata) -> Result<()> {
    let v = gpt2_vocab(files, vocab_size)?;
    meta.set(keys::MODEL, Value::String(MODEL_GPT2.into()));
    meta.set(keys::PRE, Value::String(v.pre));
    meta.set(keys::TOKENS, Value::Array(Array::String(v.tokens)));
    meta.set(keys::TOKEN_TYPE, Value::Array(Array::I32(v.types)));
    let special = SpecialVocab::load(files, true, None)?;
    if special.merges.is_empty() {
        return Err(Error::Tokenizer {
            detail: format!("{}: byte-level BPE tokenizer without merges", files.dir.display()),
        });
    }
    special.write(meta);
    Ok(())
}
