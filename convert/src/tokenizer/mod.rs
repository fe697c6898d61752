//! Tokenizer metadata: HF tokenizer files ↔ the `tokenizer.*` GGUF keys (formats.md §3.7).
//!
//! Boundary: this module reads an HF model directory's tokenizer files and produces GGUF
//! [`Metadata`] exactly as llama.cpp's `convert_hf_to_gguf.py` would (keys, order, value
//! types), and rebuilds HF `tokenizer.json` / `tokenizer_config.json` documents from such
//! metadata so that transformers and the HF `tokenizers` library encode as the original did.
//! It writes no files; callers serialise [`HfTokenizer`] and append the metadata to a GGUF plan.
//!
//! | file | concern |
//! |---|---|
//! | `keys` | key names, token types, special-token roles (one table) |
//! | `hf_to_gguf` | which vocabulary reader runs per model class |
//! | `bpe`, `chkhsh`, `pre` | byte-level BPE vocab, llama.cpp's `pre` choice, pre-tokenizer table |
//! | `spm`, `spm_model` | SentencePiece vocab from `tokenizer.model` / tokenizer.json |
//! | `special` | special ids, `add_*` flags, merges, chat templates (gguf-py `SpecialVocab`) |
//! | `gguf_to_hf` | GGUF → HF rebuild |
//!
//! Upstream sources: llama.cpp and gguf-py as vendored by llama-cpp-python 0.3.36
//! (`conversion/base.py`, `conversion/llama.py`, `gguf-py/gguf/vocab.py`, `src/llama-vocab.cpp`);
//! transformers 5.24 `integrations/gguf/gguf_tokenizer_mapping.py`.

mod bpe;
pub mod chkhsh;
mod gguf_to_hf;
mod hf_files;
mod hf_to_gguf;
pub mod keys;
pub mod pre;
mod special;
mod spm;
mod spm_model;

pub use bpe::chkhsh as chkhsh_of;
pub use gguf_to_hf::{hf_tokenizer_from_gguf, HfTokenizer};
pub use keys::TokenType;

use crate::error::Result;
use crate::gguf::Metadata;
use std::path::Path;

/// Builds the `tokenizer.*` GGUF keys llama.cpp reads, from an HF model directory's
/// tokenizer.json, tokenizer_config.json (and tokenizer.model for SentencePiece models if
/// present), and config.json (`architectures`, `*_token_id` fallbacks).
///
/// `vocab_size` is the model's (`config.json` `vocab_size`, the embedding rows): byte-level and
/// `tokenizer.model` vocabularies are padded to it with `[PAD{i}]` tokens.
pub fn gguf_metadata_from_hf(model_dir: &Path, vocab_size: usize) -> Result<Metadata> {
    hf_to_gguf::gguf_metadata_from_hf(model_dir, vocab_size)
}
