//! Typed model configs: HF `config.json` ↔ [`ModelConfig`] ↔ GGUF architecture metadata.
//!
//! Field names and defaults mirror transformers' configuration classes (5.x, which still
//! accepts the legacy `rope_theta`/`rope_scaling` keys recast writes); GGUF keys and their
//! value types mirror llama.cpp's `convert_hf_to_gguf.py` (`TextModel.set_gguf_parameters`,
//! `LlamaModel`, `DeepseekV2Model`; formats.md §3.5) because llama.cpp reads them type-exactly.

use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};
use serde_json::{json, Map, Value as Json};
use std::path::{Path, PathBuf};

/// A supported architecture family: one row of [`ARCHS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    DeepseekV2,
    DeepseekV3,
}

pub struct ArchInfo {
    pub arch: Arch,
    /// HF `model_type`.
    pub model_type: &'static str,
    /// HF `architectures[0]`.
    pub hf_class: &'static str,
    /// GGUF `general.architecture`.
    pub gguf_arch: &'static str,
}

pub const ARCHS: &[ArchInfo] = &[
    ArchInfo { arch: Arch::Llama, model_type: "llama", hf_class: "LlamaForCausalLM", gguf_arch: "llama" },
    ArchInfo { arch: Arch::Mistral, model_type: "mistral", hf_class: "MistralForCausalLM", gguf_arch: "llama" },
    ArchInfo { arch: Arch::Qwen2, model_type: "qwen2", hf_class: "Qwen2ForCausalLM", gguf_arch: "qwen2" },
    ArchInfo { arch: Arch::Qwen3, model_type: "qwen3", hf_class: "Qwen3ForCausalLM", gguf_arch: "qwen3" },
    ArchInfo {
        arch: Arch::DeepseekV2,
        model_type: "deepseek_v2",
        hf_class: "DeepseekV2ForCausalLM",
        gguf_arch: "deepseek2",
    },
    ArchInfo {
        arch: Arch::DeepseekV3,
        model_type: "deepseek_v3",
        hf_class: "DeepseekV3ForCausalLM",
        gguf_arch: "deepseek2",
    },
];

impl Arch {
    pub fn info(self) -> &'static ArchInfo {
        ARCHS.iter().find(|a| a.arch == self).unwrap()
    }
    pub fn from_model_type(s: &str) -> Option<Arch> {
        ARCHS.iter().find(|a| a.model_type == s).map(|a| a.arch)
    }
    pub fn is_deepseek(self) -> bool {
        matches!(self, Arch::DeepseekV2 | Arch::DeepseekV3)
    }
    /// llama.cpp's converter permutes Q/K rows for these (`LlamaModel.undo_permute`).
    pub fn permutes_qk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral)
    }
    /// Comma-separated list of supported HF model types (for error messages).
    pub fn supported_list() -> String {
        ARCHS.iter().map(|a| a.model_type).collect::<Vec<_>>().join(", ")
    }
}

/// RoPE scaling variants (transformers `rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: u64,
    },
    Yarn {
        factor: f64,
        original_max_position_embeddings: u64,
        beta_fast: Option<f64>,
        beta_slow: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        attention_factor: Option<f64>,
    },
}

/// Multi-head latent attention dimensions (DeepSeek-V2/V3).
#[derive(Clone, Debug, PartialEq)]
pub struct Mla {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

/// Mixture-of-experts routing (DeepSeek-V2/V3).
#[derive(Clone, Debug, PartialEq)]
pub struct Moe {
    pub n_routed_experts: u64,
    pub num_experts_per_tok: u64,
    pub n_shared_experts: u64,
    pub moe_intermediate_size: u64,
    pub first_k_dense_replace: u64,
    pub n_group: Option<u64>,
    pub topk_group: Option<u64>,
    pub routed_scaling_factor: f64,
    pub norm_topk_prob: bool,
    pub scoring: Scoring,
    pub topk_method: Option<String>,
}

/// A model's architecture hyper-parameters, whatever file they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    /// `head_dim` was given explicitly (llama.cpp then writes key/value_length).
    pub explicit_head_dim: bool,
    pub max_position_embeddings: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// q/k/v biases (always on for qwen2).
    pub attention_bias: bool,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    pub pad_token_id: Option<u64>,
    pub sliding_window: Option<u64>,
    pub mla: Option<Mla>,
    pub moe: Option<Moe>,
    /// MTP layers after the main stack (DeepSeek-V3 `num_nextn_predict_layers`).
    pub num_nextn_predict_layers: u64,
}

/// Typed access to `config.json` fields with errors naming the file and key.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Json>,
}

impl Fields<'_> {
    fn err(&self, key: &str, expected: &str) -> Error {
        Error::ConfigKey { path: self.path.to_path_buf(), key: key.into(), expected: expected.into() }
    }
    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(key, &format!("expected a non-negative integer, found {v}"))),
        }
    }
    fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.err(key, "required key is missing"))
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(key, &format!("expected a number, found {v}"))),
        }
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => {
                v.as_bool().map(Some).ok_or_else(|| self.err(key, &format!("expected true or false, found {v}")))
            }
        }
    }
    fn opt_str(&self, key: &str) -> Option<&str> {
        self.obj.get(key).and_then(Json::as_str)
    }
    /// A token id that may be given as an int or a list of ints (first one kept).
    fn token_id(&self, key: &str) -> Result<Option<u64>> {
        match self.obj.get(key) {
            Some(Json::Array(a)) => Ok(a.first().and_then(Json::as_u64)),
            _ => self.opt_u64(key),
        }
    }
}

impl ModelConfig {
    /// Reads and types `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let json: Json = serde_json::from_slice(&text)
            .map_err(|e| Error::Json { path: path.to_path_buf(), detail: e.to_string() })?;
        Self::from_hf_json(path, &json)
    }

    /// Types an HF config object; `path` is used in error messages.
    pub fn from_hf_json(path: &Path, json: &Json) -> Result<ModelConfig> {
        let obj = json
            .as_object()
            .ok_or_else(|| Error::Json { path: path.to_path_buf(), detail: "top level is not an object".into() })?;
        let f = Fields { path, obj };
        let model_type = f.opt_str("model_type").ok_or_else(|| f.err("model_type", "required key is missing"))?;
        let arch = Arch::from_model_type(model_type).ok_or_else(|| Error::UnsupportedArch {
            path: path.to_path_buf(),
            found: model_type.into(),
            supported: Arch::supported_list(),
        })?;
        let heads = f.u64("num_attention_heads")?;
        let hidden = f.u64("hidden_size")?;
        if heads == 0 {
            return Err(f.err("num_attention_heads", "must be at least 1"));
        }
        let mla = if arch.is_deepseek() { Some(read_mla(&f)?) } else { None };
        let explicit_head_dim = f.opt_u64("head_dim")?;
        let head_dim = match &mla {
            Some(m) => m.qk_rope_head_dim,
            None => explicit_head_dim.unwrap_or(hidden / heads),
        };
        Ok(ModelConfig {
            arch,
            vocab_size: f.u64("vocab_size")?,
            hidden_size: hidden,
            intermediate_size: f.u64("intermediate_size")?,
            num_hidden_layers: f.u64("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: f.opt_u64("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            // transformers' Llama/Mistral configs always carry `head_dim`, and llama.cpp reads
            // hparams through `AutoConfig.to_dict()`, so it writes key/value_length for them.
            explicit_head_dim: mla.is_none() && (explicit_head_dim.is_some() || arch.permutes_qk()),
            max_position_embeddings: f.u64("max_position_embeddings")?,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: rope_theta(&f)?,
            rope_scaling: read_rope_scaling(&f)?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: arch == Arch::Qwen2 || f.opt_bool("attention_bias")?.unwrap_or(false),
            bos_token_id: f.token_id("bos_token_id")?,
            eos_token_id: f.token_id("eos_token_id")?,
            pad_token_id: f.token_id("pad_token_id")?,
            sliding_window: f.opt_u64("sliding_window")?,
            moe: if arch.is_deepseek() { read_moe(&f, arch)? } else { None },
            mla,
            num_nextn_predict_layers: f.opt_u64("num_nextn_predict_layers")?.unwrap_or(0),
        })
    }
}

fn rope_params<'a>(f: &Fields<'a>) -> Option<&'a Map<String, Json>> {
    f.obj.get("rope_parameters").or_else(|| f.obj.get("rope_scaling")).and_then(Json::as_object)
}

fn rope_theta(f: &Fields) -> Result<f64> {
    if let Some(t) = f.opt_f64("rope_theta")? {
        return Ok(t);
    }
    Ok(rope_params(f).and_then(|p| p.get("rope_theta")).and_then(Json::as_f64).unwrap_or(10000.0))
}

fn read_rope_scaling(f: &Fields) -> Result<RopeScaling> {
    let Some(p) = rope_params(f) else { return Ok(RopeScaling::None) };
    let sub = Fields { path: f.path, obj: p };
    let kind = sub.opt_str("rope_type").or_else(|| sub.opt_str("type")).unwrap_or("default");
    let factor = || sub.opt_f64("factor")?.ok_or_else(|| sub.err("rope_scaling.factor", "required for this rope_type"));
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: sub.opt_f64("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: sub.opt_f64("high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: sub.u64("original_max_position_embeddings")?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: match sub.opt_u64("original_max_position_embeddings")? {
                Some(v) => v,
                None => f.u64("max_position_embeddings")?,
            },
            beta_fast: sub.opt_f64("beta_fast")?,
            beta_slow: sub.opt_f64("beta_slow")?,
            mscale: sub.opt_f64("mscale")?,
            mscale_all_dim: sub.opt_f64("mscale_all_dim")?,
            attention_factor: sub.opt_f64("attention_factor")?,
        },
        other => {
            return Err(sub.err(
                "rope_scaling.rope_type",
                &format!("unsupported rope type '{other}' (supported: default, linear, dynamic, llama3, yarn)"),
            ))
        }
    })
}

fn read_mla(f: &Fields) -> Result<Mla> {
    Ok(Mla {
        q_lora_rank: f.opt_u64("q_lora_rank")?,
        kv_lora_rank: f.u64("kv_lora_rank")?,
        qk_nope_head_dim: f.u64("qk_nope_head_dim")?,
        qk_rope_head_dim: f.u64("qk_rope_head_dim")?,
        v_head_dim: f.u64("v_head_dim")?,
    })
}

fn read_moe(f: &Fields, arch: Arch) -> Result<Option<Moe>> {
    let Some(n_routed_experts) = f.opt_u64("n_routed_experts")? else { return Ok(None) };
    let default_scoring = if arch == Arch::DeepseekV3 { "sigmoid" } else { "softmax" };
    let scoring = match f.opt_str("scoring_func").unwrap_or(default_scoring) {
        "softmax" => Scoring::Softmax,
        "sigmoid" => Scoring::Sigmoid,
        other => return Err(f.err("scoring_func", &format!("unsupported '{other}' (supported: softmax, sigmoid)"))),
    };
    Ok(Some(Moe {
        n_routed_experts,
        num_experts_per_tok: f.u64("num_experts_per_tok")?,
        n_shared_experts: f.opt_u64("n_shared_experts")?.unwrap_or(0),
        moe_intermediate_size: f.u64("moe_intermediate_size")?,
        first_k_dense_replace: f.opt_u64("first_k_dense_replace")?.unwrap_or(0),
        n_group: f.opt_u64("n_group")?,
        topk_group: f.opt_u64("topk_group")?,
        routed_scaling_factor: f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0),
        norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
        scoring,
        topk_method: f.opt_str("topk_method").map(str::to_string),
    }))
}

// ---- GGUF ---------------------------------------------------------------------------------

/// llama.cpp's `expert_gating_func` values.
const GATING_SOFTMAX: u32 = 1;
const GATING_SIGMOID: u32 = 2;

fn u32_of(v: u64) -> Value {
    Value::U32(v.min(u32::MAX as u64) as u32)
}

impl ModelConfig {
    /// Writes the `{arch}.*` keys llama.cpp's converter writes, with its value types.
    pub fn to_gguf_metadata(&self, m: &mut Metadata) {
        let a = self.arch.info().gguf_arch;
        let k = |s: &str| format!("{a}.{s}");
        m.set(k("block_count"), u32_of(self.num_hidden_layers));
        m.set(k("context_length"), u32_of(self.max_position_embeddings));
        m.set(k("embedding_length"), u32_of(self.hidden_size));
        m.set(k("feed_forward_length"), u32_of(self.intermediate_size));
        m.set(k("attention.head_count"), u32_of(self.num_attention_heads));
        let kv_heads = if self.arch.is_deepseek() { 1 } else { self.num_key_value_heads };
        m.set(k("attention.head_count_kv"), u32_of(kv_heads));
        self.rope_scaling_to_gguf(m, &k);
        m.set(k("rope.freq_base"), Value::F32(self.rope_theta as f32));
        m.set(k("attention.layer_norm_rms_epsilon"), Value::F32(self.rms_norm_eps as f32));
        if let Some(moe) = &self.moe {
            m.set(k("expert_count"), u32_of(moe.n_routed_experts));
            m.set(k("expert_used_count"), u32_of(moe.num_experts_per_tok));
            if let Some(g) = moe.n_group {
                m.set(k("expert_group_count"), u32_of(g));
            }
            if let Some(g) = moe.topk_group {
                m.set(k("expert_group_used_count"), u32_of(g));
            }
            let gating = if moe.scoring == Scoring::Sigmoid { GATING_SIGMOID } else { GATING_SOFTMAX };
            m.set(k("expert_gating_func"), Value::U32(gating));
        }
        if self.explicit_head_dim {
            m.set(k("attention.key_length"), u32_of(self.head_dim));
            m.set(k("attention.value_length"), u32_of(self.head_dim));
        }
        match &self.mla {
            // Only llama.cpp's `LlamaModel` writes these; its Qwen2/Qwen3 classes do not.
            None if self.arch.permutes_qk() => {
                m.set(k("vocab_size"), u32_of(self.vocab_size));
                m.set(k("rope.dimension_count"), u32_of(self.head_dim));
            }
            None => {}
            Some(mla) => self.deepseek_to_gguf(m, mla, &k),
        }
    }

    fn rope_scaling_to_gguf(&self, m: &mut Metadata, k: &dyn Fn(&str) -> String) {
        match &self.rope_scaling {
            RopeScaling::Linear { factor } => {
                m.set(k("rope.scaling.type"), Value::String("linear".into()));
                m.set(k("rope.scaling.factor"), Value::F32(*factor as f32));
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                ..
            } => {
                m.set(k("rope.scaling.type"), Value::String("yarn".into()));
                m.set(k("rope.scaling.factor"), Value::F32(*factor as f32));
                m.set(k("rope.scaling.original_context_length"), u32_of(*original_max_position_embeddings));
                if let Some(v) = attention_factor {
                    m.set(k("rope.scaling.yarn_attn_factor"), Value::F32(*v as f32));
                }
                if let Some(v) = beta_fast {
                    m.set(k("rope.scaling.yarn_beta_fast"), Value::F32(*v as f32));
                }
                if let Some(v) = beta_slow {
                    m.set(k("rope.scaling.yarn_beta_slow"), Value::F32(*v as f32));
                }
            }
            // llama3 is carried by a generated `rope_freqs.weight` tensor; dynamic has no
            // llama.cpp equivalent and is left to the runtime, as llama.cpp's converter does.
            RopeScaling::None | RopeScaling::Dynamic { .. } | RopeScaling::Llama3 { .. } => {}
        }
    }

    fn deepseek_to_gguf(&self, m: &mut Metadata, mla: &Mla, k: &dyn Fn(&str) -> String) {
        let moe = self.moe.as_ref();
        m.set(k("leading_dense_block_count"), u32_of(moe.map_or(self.num_hidden_layers, |x| x.first_k_dense_replace)));
        m.set(k("vocab_size"), u32_of(self.vocab_size));
        if let Some(q) = mla.q_lora_rank {
            m.set(k("attention.q_lora_rank"), u32_of(q));
        }
        m.set(k("attention.kv_lora_rank"), u32_of(mla.kv_lora_rank));
        m.set(k("attention.key_length"), u32_of(mla.kv_lora_rank + mla.qk_rope_head_dim));
        m.set(k("attention.value_length"), u32_of(mla.kv_lora_rank));
        m.set(k("attention.key_length_mla"), u32_of(mla.qk_nope_head_dim + mla.qk_rope_head_dim));
        m.set(k("attention.value_length_mla"), u32_of(mla.v_head_dim));
        m.set(k("expert_feed_forward_length"), u32_of(moe.map_or(self.intermediate_size, |x| x.moe_intermediate_size)));
        m.set(k("expert_shared_count"), u32_of(moe.map_or(0, |x| x.n_shared_experts)));
        if let Some(moe) = moe {
            m.set(k("expert_weights_scale"), Value::F32(moe.routed_scaling_factor as f32));
            if moe.norm_topk_prob {
                m.set(k("expert_weights_norm"), Value::Bool(true));
            }
        }
        m.set(k("rope.dimension_count"), u32_of(mla.qk_rope_head_dim));
        if let RopeScaling::Yarn { mscale_all_dim: Some(d), .. } = &self.rope_scaling {
            // llama.cpp's legacy deepseek2 convention: 0.1 × mscale_all_dim (formats.md §3.5).
            m.set(k("rope.scaling.yarn_log_multiplier"), Value::F32((0.1 * d) as f32));
        }
    }
}

/// The shortest decimal that reads back as the same f32 (so 1e-5 stored as FLOAT32
/// comes back as 1e-5, not 9.999999747378752e-06).
pub fn f32_to_f64_decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Reads GGUF architecture metadata with errors naming the file and key.
struct GgufFields<'a> {
    path: &'a Path,
    meta: &'a Metadata,
    prefix: &'a str,
}

impl GgufFields<'_> {
    fn key(&self, s: &str) -> String {
        format!("{}.{s}", self.prefix)
    }
    fn err(&self, s: &str, expected: &str) -> Error {
        Error::ConfigKey { path: self.path.to_path_buf(), key: self.key(s), expected: expected.into() }
    }
    fn opt_u64(&self, s: &str) -> Result<Option<u64>> {
        match self.meta.get(&self.key(s)) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                Err(self.err(s, &format!("per-layer arrays ({} entries) are not supported", a.len())))
            }
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(s, &format!("expected an unsigned integer, found {}", v.type_label()))),
        }
    }
    fn u64(&self, s: &str) -> Result<u64> {
        self.opt_u64(s)?.ok_or_else(|| self.err(s, "required key is missing"))
    }
    fn opt_f64(&self, s: &str) -> Result<Option<f64>> {
        match self.meta.get(&self.key(s)) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(f32_to_f64_decimal(*v))),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| self.err(s, &format!("expected a float, found {}", v.type_label())))
            }
        }
    }
}

impl ModelConfig {
    /// Types GGUF metadata. `vocab_rows` is the token embedding's row count, used when
    /// `{arch}.vocab_size` is absent; `has_output` says whether `output.weight` exists
    /// (otherwise embeddings are tied, as llama.cpp assumes).
    pub fn from_gguf(path: &Path, meta: &Metadata, vocab_rows: u64, has_output: bool) -> Result<ModelConfig> {
        let arch_name = meta.get("general.architecture").and_then(Value::as_str).ok_or_else(|| Error::ConfigKey {
            path: path.to_path_buf(),
            key: "general.architecture".into(),
            expected: "required STRING key is missing".into(),
        })?;
        let unsupported = || Error::UnsupportedArch {
            path: path.to_path_buf(),
            found: arch_name.into(),
            supported: "llama, qwen2, qwen3, deepseek2".into(),
        };
        let f = GgufFields { path, meta, prefix: arch_name };
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "deepseek2" => {
                if f.opt_u64("attention.q_lora_rank")?.is_some() {
                    Arch::DeepseekV3
                } else {
                    Arch::DeepseekV2
                }
            }
            _ => return Err(unsupported()),
        };
        let heads = f.u64("attention.head_count")?;
        let hidden = f.u64("embedding_length")?;
        if heads == 0 {
            return Err(f.err("attention.head_count", "must be at least 1"));
        }
        let mla = if arch.is_deepseek() { Some(gguf_mla(&f)?) } else { None };
        let key_length = f.opt_u64("attention.key_length")?;
        let rope_dim = f.opt_u64("rope.dimension_count")?;
        let head_dim = match &mla {
            Some(m) => m.qk_rope_head_dim,
            None => key_length.or(rope_dim).unwrap_or(hidden / heads),
        };
        let tok = |k: &str| meta.get(k).and_then(Value::as_u64);
        Ok(ModelConfig {
            arch,
            vocab_size: f.opt_u64("vocab_size")?.unwrap_or(vocab_rows),
            hidden_size: hidden,
            intermediate_size: f.u64("feed_forward_length")?,
            num_hidden_layers: f.u64("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: if arch.is_deepseek() {
                heads
            } else {
                f.opt_u64("attention.head_count_kv")?.unwrap_or(heads)
            },
            head_dim,
            explicit_head_dim: mla.is_none() && (key_length.is_some() || arch.permutes_qk()),
            max_position_embeddings: f.u64("context_length")?,
            rms_norm_eps: f.opt_f64("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
            rope_theta: f.opt_f64("rope.freq_base")?.unwrap_or(10000.0),
            rope_scaling: gguf_rope_scaling(&f, arch)?,
            tie_word_embeddings: !has_output,
            attention_bias: arch == Arch::Qwen2,
            bos_token_id: tok("tokenizer.ggml.bos_token_id"),
            eos_token_id: tok("tokenizer.ggml.eos_token_id"),
            pad_token_id: tok("tokenizer.ggml.padding_token_id"),
            sliding_window: None,
            moe: if arch.is_deepseek() { gguf_moe(&f)? } else { None },
            mla,
            num_nextn_predict_layers: 0,
        })
    }
}

fn gguf_mla(f: &GgufFields) -> Result<Mla> {
    let kv_lora_rank = f.u64("attention.kv_lora_rank")?;
    let rope = f.u64("rope.dimension_count")?;
    let k_mla = f.u64("attention.key_length_mla")?;
    if k_mla < rope {
        return Err(f.err("attention.key_length_mla", &format!("{k_mla} is smaller than rope.dimension_count {rope}")));
    }
    Ok(Mla {
        q_lora_rank: f.opt_u64("attention.q_lora_rank")?,
        kv_lora_rank,
        qk_nope_head_dim: k_mla - rope,
        qk_rope_head_dim: rope,
        v_head_dim: f.u64("attention.value_length_mla")?,
    })
}

fn gguf_moe(f: &GgufFields) -> Result<Option<Moe>> {
    let Some(n) = f.opt_u64("expert_count")? else { return Ok(None) };
    let scoring = match f.opt_u64("expert_gating_func")? {
        Some(2) => Scoring::Sigmoid,
        None | Some(1) => Scoring::Softmax,
        Some(other) => {
            return Err(f.err(
                "expert_gating_func",
                &format!("unsupported gating function {other} (supported: 1 softmax, 2 sigmoid)"),
            ))
        }
    };
    Ok(Some(Moe {
        n_routed_experts: n,
        num_experts_per_tok: f.u64("expert_used_count")?,
        n_shared_experts: f.opt_u64("expert_shared_count")?.unwrap_or(0),
        moe_intermediate_size: f.u64("expert_feed_forward_length")?,
        first_k_dense_replace: f.opt_u64("leading_dense_block_count")?.unwrap_or(0),
        n_group: f.opt_u64("expert_group_count")?,
        topk_group: f.opt_u64("expert_group_used_count")?,
        routed_scaling_factor: f.opt_f64("expert_weights_scale")?.unwrap_or(1.0),
        norm_topk_prob: f.meta.get(&f.key("expert_weights_norm")).and_then(Value::as_bool).unwrap_or(false),
        topk_method: Some(if scoring == Scoring::Sigmoid { "noaux_tc" } else { "greedy" }.to_string())
            .filter(|_| f.opt_u64("expert_group_count").ok().flatten().is_some()),
        scoring,
    }))
}

fn gguf_rope_scaling(f: &GgufFields, arch: Arch) -> Result<RopeScaling> {
    let kind = f.meta.get(&f.key("rope.scaling.type")).and_then(Value::as_str).unwrap_or("none");
    let factor = || {
        f.opt_f64("rope.scaling.factor")?.ok_or_else(|| f.err("rope.scaling.factor", "required for this scaling type"))
    };
    Ok(match kind {
        "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "yarn" => {
            // deepseek2 stores 0.1 × mscale_all_dim (see deepseek_to_gguf).
            let log_mul = f.opt_f64("rope.scaling.yarn_log_multiplier")?;
            let mscale_all_dim = log_mul.filter(|_| arch.is_deepseek()).map(|v| f32_to_f64_decimal((v / 0.1) as f32));
            RopeScaling::Yarn {
                factor: factor()?,
                original_max_position_embeddings: f.u64("rope.scaling.original_context_length")?,
                beta_fast: f.opt_f64("rope.scaling.yarn_beta_fast")?,
                beta_slow: f.opt_f64("rope.scaling.yarn_beta_slow")?,
                mscale: mscale_all_dim,
                mscale_all_dim,
                attention_factor: f.opt_f64("rope.scaling.yarn_attn_factor")?,
            }
        }
        other => {
            return Err(f.err("rope.scaling.type", &format!("unsupported '{other}' (supported: none, linear, yarn)")))
        }
    })
}

// ---- HF config.json -----------------------------------------------------------------------

impl ModelConfig {
    /// An HF `config.json` object transformers loads for this config. `dtype` is the
    /// weights' torch dtype name ("float32", "bfloat16", "float16").
    pub fn to_hf_json(&self, dtype: &str) -> Json {
        let info = self.arch.info();
        let mut c = Map::new();
        c.insert("architectures".into(), json!([info.hf_class]));
        c.insert("model_type".into(), json!(info.model_type));
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            c.insert(k.into(), json!(v));
        }
        if self.explicit_head_dim {
            c.insert("head_dim".into(), json!(self.head_dim));
        }
        c.insert("hidden_act".into(), json!("silu"));
        c.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        c.insert("rope_theta".into(), json!(self.rope_theta));
        if let Some(rs) = self.rope_scaling_json() {
            c.insert("rope_scaling".into(), rs);
        }
        c.insert("tie_word_embeddings".into(), json!(self.tie_word_embeddings));
        if !matches!(self.arch, Arch::Qwen2) {
            c.insert("attention_bias".into(), json!(self.attention_bias));
        }
        for (k, v) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(v) = v {
                c.insert(k.into(), json!(v));
            }
        }
        if let Some(m) = &self.mla {
            self.deepseek_hf_json(&mut c, m);
        }
        c.insert("dtype".into(), json!(dtype));
        c.insert("use_cache".into(), json!(true));
        Json::Object(c)
    }

    fn rope_scaling_json(&self) -> Option<Json> {
        Some(match &self.rope_scaling {
            RopeScaling::None => return None,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Dynamic { factor } => json!({"rope_type": "dynamic", "factor": factor}),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings,
                })
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                attention_factor,
            } => {
                let mut m = Map::new();
                m.insert("rope_type".into(), json!("yarn"));
                m.insert("factor".into(), json!(factor));
                m.insert("original_max_position_embeddings".into(), json!(original_max_position_embeddings));
                for (k, v) in [
                    ("beta_fast", beta_fast),
                    ("beta_slow", beta_slow),
                    ("mscale", mscale),
                    ("mscale_all_dim", mscale_all_dim),
                    ("attention_factor", attention_factor),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), json!(v));
                    }
                }
                Json::Object(m)
            }
        })
    }

    fn deepseek_hf_json(&self, c: &mut Map<String, Json>, m: &Mla) {
        c.insert("q_lora_rank".into(), json!(m.q_lora_rank));
        c.insert("kv_lora_rank".into(), json!(m.kv_lora_rank));
        c.insert("qk_nope_head_dim".into(), json!(m.qk_nope_head_dim));
        c.insert("qk_rope_head_dim".into(), json!(m.qk_rope_head_dim));
        c.insert("v_head_dim".into(), json!(m.v_head_dim));
        if let Some(moe) = &self.moe {
            c.insert("n_routed_experts".into(), json!(moe.n_routed_experts));
            c.insert("num_experts_per_tok".into(), json!(moe.num_experts_per_tok));
            c.insert("n_shared_experts".into(), json!(moe.n_shared_experts));
            c.insert("moe_intermediate_size".into(), json!(moe.moe_intermediate_size));
            c.insert("first_k_dense_replace".into(), json!(moe.first_k_dense_replace));
            c.insert("n_group".into(), json!(moe.n_group));
            c.insert("topk_group".into(), json!(moe.topk_group));
            c.insert("routed_scaling_factor".into(), json!(moe.routed_scaling_factor));
            c.insert("norm_topk_prob".into(), json!(moe.norm_topk_prob));
            c.insert("scoring_func".into(), json!(if moe.scoring == Scoring::Sigmoid { "sigmoid" } else { "softmax" }));
            if let Some(t) = &moe.topk_method {
                c.insert("topk_method".into(), json!(t));
            }
        }
    }
}

/// `config.json` path of a model directory.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}
