//! Byte-level BPE pre-tokenizers: the `tokenizer.ggml.pre` names llama.cpp knows, and the HF
//! `tokenizer.json` pre-tokenizer equivalent to each.
//!
//! One row of [`PRE_TYPES`] per group of `pre` names that llama.cpp's `llm_tokenizer_bpe`
//! splits with the same regexes (`src/llama-vocab.cpp` in llama.cpp as vendored by
//! llama-cpp-python 0.3.36). The HF steps use the regexes as HF tokenizer files spell them
//! (the form llama.cpp quotes as "original regex from tokenizer.json"; transformers'
//! `gguf_tokenizer_mapping.py` and `tokenization_qwen2.py` use the same strings). The table
//! serves both directions:
//!
//! * GGUF → HF: the row for a file's `pre` gives the pre-tokenizer, normalizer and BPE flags.
//! * HF → GGUF, when the `chktxt` hash is not in llama.cpp's table (small custom tokenizers):
//!   a tokenizer.json whose pre-tokenizer has exactly a row's steps gets that row's first name.

use serde_json::{json, Value as Json};

/// One pre-tokenization step as HF `tokenizers` serialises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `Split { pattern: Regex, behavior: Isolated, invert: false }`.
    Split(&'static str),
    /// `Digits { individual_digits }`.
    Digits { individual: bool },
    /// `ByteLevel { add_prefix_space: false, use_regex }` (always last).
    ByteLevel { use_regex: bool },
}

/// A group of `tokenizer.ggml.pre` names with one HF equivalent.
pub struct PreType {
    /// GGUF `pre` names; the first is what regex recognition reports.
    pub names: &'static [&'static str],
    pub steps: &'static [Step],
    /// The HF tokenizers of this family normalise to NFC (`Qwen2Tokenizer`, `Qwen3_5Tokenizer`).
    pub nfc: bool,
    /// llama.cpp sets `ignore_merges` for these names, as their tokenizer.json BPE models do.
    pub ignore_merges: bool,
    /// llama.cpp adds BOS for these names when `tokenizer.ggml.add_bos_token` is absent.
    pub add_bos_default: bool,
}

// Split regexes as HF tokenizer files spell them. GPT-2's own split is built into HF
// `ByteLevel { use_regex: true }`.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DS3_DIGITS: &str = r"\p{N}{1,3}";
const DS3_CJK: &str = "[一-龥\u{3040}-ゟ゠-ヿ]+";
const DS3_WORDS: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const DSL_NEWLINE: &str = r"[\r\n]";
const DSL_LATIN: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
const DSL_PUNCT: &str = r"\s?[!-/:-~！-／：-～‘-‟　-。]+";
const DSL_TRAILING: &str = r"\s+$";
const DSL_CJK: &str = "[一-龥ࠀ-一가-\u{d7ff}]+";
const DSL_DIGITS: &str = r"\p{N}+";

const BYTE_LEVEL_SPLIT: Step = Step::ByteLevel { use_regex: false };

pub const PRE_TYPES: &[PreType] = &[
    PreType {
        names: &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        steps: &[Step::Split(LLAMA3), BYTE_LEVEL_SPLIT],
        nfc: false,
        ignore_merges: true,
        add_bos_default: true,
    },
    PreType {
        names: &["smaug-bpe", "dbrx"],
        steps: &[Step::Split(LLAMA3), BYTE_LEVEL_SPLIT],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2"],
        steps: &[Step::Split(QWEN2), BYTE_LEVEL_SPLIT],
        nfc: true,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &["qwen35"],
        steps: &[Step::Split(QWEN35), BYTE_LEVEL_SPLIT],
        nfc: true,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        // llama.cpp: `\p{N}` then GPT-2's split = HF `Digits(individual)` + `ByteLevel(use_regex)`.
        names: &["smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b", "mellum2"],
        steps: &[Step::Digits { individual: true }, Step::ByteLevel { use_regex: true }],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &[
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
            "gigachat",
            "a.x-4.0",
            "mellum",
        ],
        steps: &[Step::ByteLevel { use_regex: true }],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"],
        steps: &[Step::Split(DS3_DIGITS), Step::Split(DS3_CJK), Step::Split(DS3_WORDS), BYTE_LEVEL_SPLIT],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &["deepseek-llm"],
        steps: &[
            Step::Split(DSL_NEWLINE),
            Step::Split(DSL_LATIN),
            Step::Split(DSL_PUNCT),
            Step::Split(DSL_TRAILING),
            Step::Split(DSL_CJK),
            Step::Split(DSL_DIGITS),
            BYTE_LEVEL_SPLIT,
        ],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
    PreType {
        names: &["tekken"],
        steps: &[Step::Split(TEKKEN), BYTE_LEVEL_SPLIT],
        nfc: false,
        ignore_merges: true,
        add_bos_default: true,
    },
    PreType {
        names: &["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"],
        steps: &[Step::Split(GPT4O), BYTE_LEVEL_SPLIT],
        nfc: false,
        ignore_merges: false,
        add_bos_default: false,
    },
];

/// The row for a GGUF `pre` name.
pub fn find(name: &str) -> Option<&'static PreType> {
    PRE_TYPES.iter().find(|p| p.names.contains(&name))
}

/// Every name [`find`] accepts, for error messages.
pub fn known_names() -> Vec<&'static str> {
    PRE_TYPES.iter().flat_map(|p| p.names.iter().copied()).collect()
}

impl PreType {
    /// The HF `pre_tokenizer` JSON: the single step, or a `Sequence` of them.
    pub fn hf_pre_tokenizer(&self) -> Json {
        let steps: Vec<Json> = self.steps.iter().map(step_json).collect();
        match steps.as_slice() {
            [one] => one.clone(),
            _ => json!({ "type": "Sequence", "pretokenizers": steps }),
        }
    }

    pub fn hf_normalizer(&self) -> Json {
        if self.nfc {
            json!({ "type": "NFC" })
        } else {
            Json::Null
        }
    }
}

fn step_json(step: &Step) -> Json {
    match *step {
        Step::Split(regex) => json!({
            "type": "Split",
            "pattern": { "Regex": regex },
            "behavior": "Isolated",
            "invert": false,
        }),
        Step::Digits { individual } => json!({ "type": "Digits", "individual_digits": individual }),
        Step::ByteLevel { use_regex } => json!({
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": true,
            "use_regex": use_regex,
        }),
    }
}

/// Recognises a tokenizer.json `pre_tokenizer` by its steps; `None` when no row matches
/// exactly (extra steps, other options, an unknown regex).
pub fn recognise(pre_tokenizer: &Json) -> Option<&'static str> {
    let steps = parse_steps(pre_tokenizer)?;
    PRE_TYPES.iter().find(|p| steps_match(p.steps, &steps)).map(|p| p.names[0])
}

/// A parsed step; regexes owned, with literal CR/LF spelled `\r`/`\n` so that files that embed
/// the characters (DeepSeek-V3's) compare equal to the escaped spelling.
#[derive(Debug, PartialEq)]
enum Parsed {
    Split(String),
    Digits(bool),
    ByteLevel(bool),
}

fn parse_steps(pre: &Json) -> Option<Vec<Parsed>> {
    if pre.get("type")?.as_str()? == "Sequence" {
        let mut out = Vec::new();
        for p in pre.get("pretokenizers")?.as_array()? {
            out.extend(parse_steps(p)?);
        }
        return Some(out);
    }
    parse_step(pre).map(|p| vec![p])
}

fn parse_step(pre: &Json) -> Option<Parsed> {
    match pre.get("type")?.as_str()? {
        "Split" => {
            let regex = pre.get("pattern")?.get("Regex")?.as_str()?;
            let isolated = pre.get("behavior")?.as_str()? == "Isolated";
            let inverted = pre.get("invert").and_then(Json::as_bool).unwrap_or(false);
            (isolated && !inverted).then(|| Parsed::Split(escape_newlines(regex)))
        }
        "Digits" => Some(Parsed::Digits(pre.get("individual_digits")?.as_bool()?)),
        "ByteLevel" => {
            let prefix = pre.get("add_prefix_space").and_then(Json::as_bool).unwrap_or(false);
            let use_regex = pre.get("use_regex").and_then(Json::as_bool).unwrap_or(true);
            (!prefix).then_some(Parsed::ByteLevel(use_regex))
        }
        _ => None,
    }
}

fn escape_newlines(regex: &str) -> String {
    regex.replace('\r', r"\r").replace('\n', r"\n")
}

fn steps_match(row: &[Step], parsed: &[Parsed]) -> bool {
    row.len() == parsed.len()
        && row.iter().zip(parsed).all(|(s, p)| match (s, p) {
            (Step::Split(r), Parsed::Split(q)) => escape_newlines(r) == *q,
            (Step::Digits { individual }, Parsed::Digits(d)) => individual == d,
            (Step::ByteLevel { use_regex }, Parsed::ByteLevel(u)) => use_regex == u,
            _ => false,
        })
}
