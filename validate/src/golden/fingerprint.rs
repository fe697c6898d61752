//! Fingerprints recorded in a golden file: the model's shape and the tokenizer's behaviour, each
//! invariant under conversion (HF ↔ GGUF) and quantization, and different for another model or
//! tokenizer.

use super::{GoldenError, Result};
use recast_convert::{Checkpoint, ModelConfig};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use tokenizers::Tokenizer;

/// The shape fields that identify a model across formats and quantizations (HF ↔ GGUF,
/// f32 ↔ bf16 ↔ Q4_K keep them), as canonical JSON, and its `sha256:` fingerprint.
pub fn model_fingerprint(cfg: &ModelConfig) -> (String, String) {
    let mut shape = serde_json::json!({
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
    });
    if let Some(moe) = &cfg.moe {
        shape["n_routed_experts"] = moe.n_routed_experts.into();
    }
    if let Some(mla) = &cfg.mla {
        shape["kv_lora_rank"] = mla.kv_lora_rank.into();
    }
    let text = shape.to_string();
    (sha256(text.as_bytes()), text)
}

/// Texts whose encodings identify a tokenizer: scripts, digits, whitespace runs, byte
/// fallback, and the special-token behaviour of `add_special_tokens=true`. Changing this list
/// changes every tokenizer fingerprint (bump [`super::FORMAT_VERSION`]).
pub const TOKENIZER_PROBES: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\nand\n\nnewlines   ",
    "Numbers: 0 7 42 1234567 3.14159 -12,000",
    "naïve café façade — “quotes” ‘single’ …",
    "भारत एक विशाल देश है। বাংলা ভাষা সুন্দর।",
    "你好，世界！こんにちは。안녕하세요",
    "emoji 🙂🚀 and symbols ∑∫√ ≤ ≥",
    "def f(x):\n    return x**2  # code",
];

/// `sha256:` of the ids the tokenizer gives [`TOKENIZER_PROBES`] (with special tokens), so a
/// tokenizer.json and its GGUF rebuild — which encode identically — fingerprint the same.
pub fn tokenizer_fingerprint(tok: &Tokenizer) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"recast-tokenizer-probes-v1");
    for text in TOKENIZER_PROBES {
        let enc = tok.encode(*text, true).map_err(|e| GoldenError::Tokenizer(e.to_string()))?;
        h.update((enc.get_ids().len() as u64).to_le_bytes());
        for id in enc.get_ids() {
            h.update(id.to_le_bytes());
        }
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The storage types of a checkpoint's tensors, e.g. `"F32"` or `"F32+Q4_1+Q6_K"`.
pub fn weights_dtype(ck: &Checkpoint) -> String {
    let names: BTreeSet<&str> = ck.tensors.iter().map(|t| t.storage.name()).collect();
    names.into_iter().collect::<Vec<_>>().join("+")
}
