//! The `tokenizer.*` GGUF key names and closed value lists llama.cpp reads (gguf-py
//! `constants.py` `Keys.Tokenizer`, `TokenType`; formats.md §3.7). Every key string in this
//! module tree comes from here.

pub const MODEL: &str = "tokenizer.ggml.model";
pub const PRE: &str = "tokenizer.ggml.pre";
pub const TOKENS: &str = "tokenizer.ggml.tokens";
pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const SCORES: &str = "tokenizer.ggml.scores";
pub const MERGES: &str = "tokenizer.ggml.merges";
pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
/// `tokenizer.chat_template.{name}` for named extra templates.
pub const CHAT_TEMPLATE_PREFIX: &str = "tokenizer.chat_template.";
pub const CHAT_TEMPLATES: &str = "tokenizer.chat_templates";
pub const NORMALIZER_LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";
pub const NORMALIZER_STRIP_ACCENTS: &str = "tokenizer.ggml.normalizer.strip_accents";

/// `tokenizer.ggml.model` values this module writes and reads.
pub const MODEL_GPT2: &str = "gpt2";
pub const MODEL_LLAMA: &str = "llama";

/// llama.cpp's token types (`tokenizer.ggml.token_type`, stored as INT32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    pub fn id(self) -> i32 {
        self as i32
    }
}

/// A special-token role: HF `tokenizer_config.json` / `config.json` prefix and the GGUF id key
/// (`None` where gguf-py has no writer, e.g. `cls`: SpecialVocab reads it but never writes it).
pub struct SpecialRole {
    pub name: &'static str,
    pub id_key: Option<&'static str>,
    /// `tokenizer.ggml.add_{name}_token`, where gguf-py has a writer for it.
    pub add_key: Option<&'static str>,
}

/// SpecialVocab's default `special_token_types`, in its order, then the `eot`/`eom` roles it
/// appends when a TemplateProcessing overrides EOS. The key is spelled `seperator` upstream.
pub const ROLES: &[SpecialRole] = &[
    SpecialRole {
        name: "bos",
        id_key: Some("tokenizer.ggml.bos_token_id"),
        add_key: Some("tokenizer.ggml.add_bos_token"),
    },
    SpecialRole {
        name: "eos",
        id_key: Some("tokenizer.ggml.eos_token_id"),
        add_key: Some("tokenizer.ggml.add_eos_token"),
    },
    SpecialRole { name: "unk", id_key: Some("tokenizer.ggml.unknown_token_id"), add_key: None },
    SpecialRole {
        name: "sep",
        id_key: Some("tokenizer.ggml.seperator_token_id"),
        add_key: Some("tokenizer.ggml.add_sep_token"),
    },
    SpecialRole { name: "pad", id_key: Some("tokenizer.ggml.padding_token_id"), add_key: None },
    SpecialRole { name: "cls", id_key: None, add_key: None },
    SpecialRole { name: "mask", id_key: Some("tokenizer.ggml.mask_token_id"), add_key: None },
    SpecialRole { name: "eot", id_key: Some("tokenizer.ggml.eot_token_id"), add_key: None },
    SpecialRole { name: "eom", id_key: Some("tokenizer.ggml.eom_token_id"), add_key: None },
];

/// Number of leading [`ROLES`] SpecialVocab considers by default (`bos` … `mask`).
pub const DEFAULT_ROLE_COUNT: usize = 7;

pub fn role(name: &str) -> &'static SpecialRole {
    ROLES.iter().find(|r| r.name == name).expect("role names are compile-time constants")
}
