//! HF ↔ GGUF tensor-name maps and conversion plans.
//!
//! The name table is llama.cpp's (gguf-py `TENSOR_NAMES` / `tensor_mapping.py`, formats.md
//! §3.2), written once and used in both directions. A plan is the ordered list of output
//! tensors, each an [`Op`] over input tensors; it is complete (names, shapes, dtypes) before
//! any data moves, so writers can lay out files and `--dry-run` can print it.

use crate::checkpoint::{Checkpoint, Format};
use crate::config::{ModelConfig, RopeScaling};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quantized;
use crate::tensor::{Storage, TensorInfo};
use crate::transform::{KvPart, Op};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Whole-model tensors: (HF name, GGUF name).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer tensors: (HF suffix after `model.layers.{N}.`, GGUF suffix after `blk.{N}.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("self_attn.q_a_proj.weight", "attn_q_a.weight"),
    ("self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"),
    ("self_attn.q_b_proj.weight", "attn_q_b.weight"),
    ("self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"),
    ("self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"),
    ("self_attn.kv_b_proj.weight", "attn_kv_b.weight"),
    // Low-rank KV (docs/low-rank-kv.md): the latent's down-projection and the bias of the
    // joint key/value up-projection (`kv_b_proj.weight` shares MLA's name).
    ("self_attn.kv_a_proj.weight", "attn_kv_a.weight"),
    ("self_attn.kv_b_proj.bias", "attn_kv_b.bias"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("mlp.gate.weight", "ffn_gate_inp.weight"),
    ("mlp.gate.e_score_correction_bias", "exp_probs_b.bias"),
    ("mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"),
    ("mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"),
    ("mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"),
];

/// Routed experts: (HF projection, stacked GGUF suffix).
const EXPERT_NAMES: &[(&str, &str)] =
    &[("gate_proj", "ffn_gate_exps.weight"), ("up_proj", "ffn_up_exps.weight"), ("down_proj", "ffn_down_exps.weight")];

/// One tensor of a planned output.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub op: Op,
}

/// Splits `prefix{N}.rest` into `(N, rest)`.
fn layer_of<'a>(name: &'a str, prefix: &str) -> Option<(u64, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (n, tail) = rest.split_once('.')?;
    Some((n.parse().ok()?, tail))
}

/// llama.cpp keeps these F32 whatever the output type (`prepare_tensors`, formats.md §3.6).
fn gguf_keeps_f32(gguf_name: &str, shape: &[u64]) -> bool {
    shape.len() <= 1
        || gguf_name.ends_with("_norm.weight")
        || !gguf_name.ends_with(".weight")
        || gguf_name.contains("ffn_gate_inp")
}

/// Orders outputs as model files usually are: embeddings, layers by index, then the head.
fn order_key(name: &str) -> (u8, u64, String) {
    if let Some((n, rest)) = layer_of(name, "blk.").or_else(|| layer_of(name, "model.layers.")) {
        return (1, n, rest.to_string());
    }
    let rank = match name {
        "token_embd.weight" | "model.embed_tokens.weight" | "rope_freqs.weight" => 0,
        _ => 2,
    };
    (rank, 0, name.to_string())
}

pub fn sort_outputs(outs: &mut [OutTensor]) {
    outs.sort_by_cached_key(|o| order_key(&o.name));
}

/// Inputs consumed by a DeepSeek FP8 weight: `X.weight` (F8_E4M3) with `X.weight_scale_inv`.
fn fp8_pairs(ck: &Checkpoint) -> HashMap<usize, usize> {
    let mut out = HashMap::new();
    for (i, t) in ck.tensors.iter().enumerate() {
        if let Some(base) = t.name.strip_suffix("_scale_inv") {
            if let Some(w) = ck.index_of(base) {
                out.insert(w, i);
            }
        }
    }
    out
}

/// `weight_block_size` from `quantization_config` (DeepSeek FP8), default 128×128.
pub fn fp8_block_size(raw_config: Option<&serde_json::Value>) -> (u64, u64) {
    let b = raw_config.and_then(|c| c.pointer("/quantization_config/weight_block_size")).and_then(|v| v.as_array());
    match b.map(|a| a.iter().filter_map(|x| x.as_u64()).collect::<Vec<_>>()).as_deref() {
        Some([r, c]) if *r > 0 && *c > 0 => (*r, *c),
        _ => (128, 128),
    }
}

fn float_out(t: &TensorInfo, target: DType) -> DType {
    match t.storage {
        Storage::Dense(d) if d.is_float() => target,
        Storage::Dense(d) => d,
        Storage::Ggml(_) => target,
    }
}

/// One HF-named tensor as the checkpoint provides it: a stored tensor (`Copy`), or a weight
/// rebuilt from a quantized layout (DeepSeek FP8, compressed-tensors, msModelSlim).
#[derive(Clone, Debug)]
pub struct HfTensor {
    pub name: String,
    /// Logical row-major shape (of the float weight for quantized ones).
    pub shape: Vec<u64>,
    /// The op producing its values.
    pub op: Op,
    /// The stored tensor it is read from (the codes for quantized weights).
    pub index: usize,
    pub quantized: bool,
}

/// Integer or FP8 tensors that a plan must not read as values: every tensor of rank ≥ 2 in
/// an integer or FP8 dtype (64-bit integers only when named `*.weight`: index buffers such
/// as `position_ids` are 2-D I64).
fn raw_codes(t: &TensorInfo) -> bool {
    match t.storage {
        Storage::Dense(d) if quantized::is_code_dtype(d) && t.shape.len() >= 2 => {
            !matches!(d, DType::I64 | DType::U64) || t.name.ends_with(".weight")
        }
        _ => false,
    }
}

/// The HF tensors of a safetensors checkpoint, quantized layouts resolved: DeepSeek FP8
/// (`weight_scale_inv`, blocks `block`), compressed-tensors and msModelSlim
/// ([`quantized::detect`]). Scales, zero points and other quantization parameters are not
/// listed. Integer or FP8 matrices outside a recognized layout are an
/// [`Error::UnrecognizedQuantized`].
pub fn hf_tensors(ck: &Checkpoint, block: (u64, u64)) -> Result<Vec<HfTensor>> {
    let raw = match ck.config_path() {
        Some(p) => {
            let text = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            Some(
                serde_json::from_slice::<serde_json::Value>(&text)
                    .map_err(|e| Error::Json { path: p.clone(), detail: e.to_string() })?,
            )
        }
        None => None,
    };
    let layouts = quantized::detect(ck, raw.as_ref())?;
    let fp8 = fp8_pairs(ck);
    let consumed: HashSet<usize> = fp8.values().copied().chain(layouts.consumed.iter().copied()).collect();
    let mut out = Vec::with_capacity(ck.tensors.len());
    for (i, t) in ck.tensors.iter().enumerate() {
        if consumed.contains(&i) {
            continue;
        }
        let (op, quantized) = match fp8.get(&i) {
            Some(&s) => (Op::Fp8Block { src: i, scale_inv: s, block }, true),
            None if raw_codes(t) => {
                return Err(Error::UnrecognizedQuantized {
                    tensor: t.name.clone(),
                    dtype: t.storage.name().into(),
                    shape: t.shape.clone(),
                    understood: quantized::UNDERSTOOD,
                })
            }
            None => (Op::Copy(i), false),
        };
        out.push(HfTensor { name: t.name.clone(), shape: t.shape.clone(), op, index: i, quantized });
    }
    for w in layouts.weights {
        let index = w.dequant.codes;
        out.push(HfTensor {
            name: w.name,
            shape: w.shape,
            op: Op::Dequant(Box::new(w.dequant)),
            index,
            quantized: true,
        });
    }
    Ok(out)
}

/// `op` with llama.cpp's Q/K row permutation applied.
fn permuted(t: &HfTensor, n_head: u64) -> Result<Op> {
    match &t.op {
        Op::Copy(i) => Ok(Op::PermuteRows { src: *i, n_head, rows: None }),
        Op::Dequant(d) => Ok(Op::Dequant(Box::new(quantized::Dequant { permute: Some(n_head), ..(**d).clone() }))),
        _ => Err(Error::Unsupported(format!(
            "tensor '{}': FP8 block-quantized Q/K weights of a llama-arch model",
            t.name
        ))),
    }
}

/// Plans HF → GGUF. `target` is the type of 2-D+ weights (F32, F16 or BF16).
pub fn hf_to_gguf(ck: &Checkpoint, cfg: &ModelConfig, target: DType, block: (u64, u64)) -> Result<Vec<OutTensor>> {
    let sources = hf_tensors(ck, block)?;
    let mut outs = Vec::new();
    // (layer, projection) -> expert index -> index into `sources`
    let mut experts: BTreeMap<(u64, &str), BTreeMap<u64, usize>> = BTreeMap::new();
    for (si, t) in sources.iter().enumerate() {
        let i = t.index;
        if t.name.ends_with("rotary_emb.inv_freq") {
            continue;
        }
        let mut push = |name: String, shape: Vec<u64>, op: Op| {
            let dtype = if gguf_keeps_f32(&name, &shape) { DType::F32 } else { target };
            outs.push(OutTensor { name, shape, dtype, op });
        };
        if let Some(&(_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == t.name) {
            if g == "output.weight" && cfg.tie_word_embeddings {
                continue;
            }
            push(g.to_string(), t.shape.clone(), t.op.clone());
            continue;
        }
        let Some((n, rest)) = layer_of(&t.name, "model.layers.") else {
            return Err(Error::UnmappedTensor {
                tensor: t.name.clone(),
                detail: format!("no GGUF name for this tensor in a {} model", cfg.arch.info().model_type),
            });
        };
        if n >= cfg.num_hidden_layers {
            continue; // MTP / NextN layers: llama.cpp skips them (formats.md §3.4)
        }
        if let Some((e, proj)) = parse_expert(rest) {
            let (p, _) = EXPERT_NAMES.iter().find(|(p, _)| *p == proj).unwrap();
            experts.entry((n, p)).or_default().insert(e, si);
            continue;
        }
        let Some(&(_, g)) = LAYER_NAMES.iter().find(|(h, _)| *h == rest) else {
            return Err(Error::UnmappedTensor {
                tensor: t.name.clone(),
                detail: format!("no GGUF name for this tensor in a {} model", cfg.arch.info().model_type),
            });
        };
        let name = format!("blk.{n}.{g}");
        match g {
            "attn_kv_b.weight" if cfg.mla.is_some() => {
                let m = cfg.mla.as_ref().unwrap();
                let (h, nope, v) = (cfg.num_attention_heads, m.qk_nope_head_dim, m.v_head_dim);
                let lora = t.shape.get(1).copied().unwrap_or(0);
                let values = t.quantized.then(|| Box::new(t.op.clone()));
                let mk = |part| Op::SplitKvB { src: i, n_head: h, nope, v_head: v, part, values: values.clone() };
                push(format!("blk.{n}.attn_k_b.weight"), vec![h, lora, nope], mk(KvPart::K));
                push(format!("blk.{n}.attn_v_b.weight"), vec![h, v, lora], mk(KvPart::V));
            }
            "attn_q.weight" | "attn_q.bias" | "attn_k.weight" | "attn_k.bias" if cfg.arch.permutes_qk() => {
                let n_head = if g.starts_with("attn_q") { cfg.num_attention_heads } else { cfg.num_key_value_heads };
                push(name, t.shape.clone(), permuted(t, n_head)?);
            }
            // Low-rank KV: the key rows of the joint up-projection get attn_k's permutation.
            "attn_kv_b.weight" | "attn_kv_b.bias" if cfg.arch.permutes_qk() => {
                let Op::Copy(src) = t.op else {
                    return Err(Error::Unsupported(format!(
                        "tensor '{}': a quantized low-rank KV up-projection cannot be permuted for GGUF; convert from a float checkpoint",
                        t.name
                    )));
                };
                let rows = Some(cfg.num_key_value_heads * cfg.head_dim);
                push(name, t.shape.clone(), Op::PermuteRows { src, n_head: cfg.num_key_value_heads, rows });
            }
            _ => push(name, t.shape.clone(), t.op.clone()),
        }
    }
    stack_experts(ck, cfg, &sources, experts, target, &mut outs)?;
    if let Some(factors) = llama3_rope_factors(cfg) {
        outs.push(OutTensor {
            name: "rope_freqs.weight".into(),
            shape: vec![factors.len() as u64],
            dtype: DType::F32,
            op: Op::Generated(factors),
        });
    }
    sort_outputs(&mut outs);
    Ok(outs)
}

/// llama.cpp's `rope_freqs.weight` for llama3 RoPE scaling: one divisor per frequency
/// (`LlamaModel.generate_extra_tensors`, computed in f32 like its torch code).
pub fn llama3_rope_factors(cfg: &ModelConfig) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor: lo,
        high_freq_factor: hi,
        original_max_position_embeddings: old,
    } = cfg.rope_scaling
    else {
        return None;
    };
    let dim = cfg.head_dim as usize;
    let (low_wavelen, high_wavelen) = ((old as f64 / lo) as f32, (old as f64 / hi) as f32);
    let factors = (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / dim as f32);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (old as f32 / wavelen - lo as f32) / ((hi - lo) as f32);
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect();
    Some(factors)
}

/// `mlp.experts.{e}.{proj}.weight` → `(e, proj)`.
fn parse_expert(rest: &str) -> Option<(u64, &str)> {
    let tail = rest.strip_prefix("mlp.experts.")?;
    let (e, proj) = tail.split_once('.')?;
    let proj = proj.strip_suffix(".weight")?;
    EXPERT_NAMES.iter().any(|(p, _)| *p == proj).then_some(())?;
    Some((e.parse().ok()?, proj))
}

fn stack_experts(
    ck: &Checkpoint,
    cfg: &ModelConfig,
    sources: &[HfTensor],
    experts: BTreeMap<(u64, &str), BTreeMap<u64, usize>>,
    target: DType,
    outs: &mut Vec<OutTensor>,
) -> Result<()> {
    let n_exp = cfg.moe.as_ref().map_or(0, |m| m.n_routed_experts);
    for ((n, proj), by_e) in experts {
        let first = &sources[*by_e.values().next().unwrap()];
        let missing: Vec<u64> = (0..n_exp).filter(|e| !by_e.contains_key(e)).collect();
        if !missing.is_empty() || by_e.len() as u64 != n_exp {
            return Err(Error::MissingTensor {
                tensor: format!(
                    "model.layers.{n}.mlp.experts.{}.{proj}.weight",
                    missing.first().copied().unwrap_or(n_exp)
                ),
                why: format!("stacking {n_exp} routed experts (n_routed_experts) of layer {n}"),
            });
        }
        let idx: Vec<usize> = by_e.values().copied().collect();
        let storage = |t: &HfTensor| (ck.tensors[t.index].storage, t.quantized);
        if idx.iter().any(|&i| sources[i].shape != first.shape || storage(&sources[i]) != storage(first)) {
            return Err(Error::UnmappedTensor {
                tensor: first.name.clone(),
                detail: format!("experts of layer {n} differ in shape or dtype"),
            });
        }
        let g = EXPERT_NAMES.iter().find(|(p, _)| *p == proj).unwrap().1;
        let mut shape = vec![n_exp];
        shape.extend_from_slice(&first.shape);
        let parts = idx.iter().map(|&i| sources[i].op.clone()).collect();
        outs.push(OutTensor { name: format!("blk.{n}.{g}"), shape, dtype: target, op: Op::Stack(parts) });
    }
    Ok(())
}

/// Plans GGUF → HF with every float tensor in `target`.
pub fn gguf_to_hf(ck: &Checkpoint, cfg: &ModelConfig, target: DType) -> Result<Vec<OutTensor>> {
    let by_name: HashMap<&str, usize> = ck.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
    let mut outs = Vec::new();
    for (i, t) in ck.tensors.iter().enumerate() {
        let dtype = float_out(t, target);
        if t.name == "rope_freqs.weight" {
            return Err(Error::Unsupported(
                "rope_freqs.weight (llama3-style RoPE scaling) cannot be turned back into an HF rope_scaling config"
                    .into(),
            ));
        }
        if let Some(&(h, _)) = GLOBAL_NAMES.iter().find(|(_, g)| *g == t.name) {
            outs.push(OutTensor { name: h.into(), shape: t.shape.clone(), dtype, op: Op::Copy(i) });
            continue;
        }
        let unmapped = || Error::UnmappedTensor {
            tensor: t.name.clone(),
            detail: format!("no HF name for this tensor in a {} model", cfg.arch.info().gguf_arch),
        };
        let (n, rest) = layer_of(&t.name, "blk.").ok_or_else(unmapped)?;
        let hf = |s: &str| format!("model.layers.{n}.{s}");
        if let Some(&(proj, _)) = EXPERT_NAMES.iter().find(|(_, g)| *g == rest) {
            let e_count = t.shape.first().copied().unwrap_or(0);
            for e in 0..e_count {
                outs.push(OutTensor {
                    name: hf(&format!("mlp.experts.{e}.{proj}.weight")),
                    shape: t.shape[1..].to_vec(),
                    dtype,
                    op: Op::Unstack { src: i, index: e },
                });
            }
            continue;
        }
        match rest {
            "attn_v_b.weight" => continue, // consumed with attn_k_b
            "attn_k_b.weight" => {
                let m = cfg.mla.as_ref().ok_or_else(unmapped)?;
                let v =
                    *by_name.get(format!("blk.{n}.attn_v_b.weight").as_str()).ok_or_else(|| Error::MissingTensor {
                        tensor: format!("blk.{n}.attn_v_b.weight"),
                        why: format!(
                            "rebuilding model.layers.{n}.self_attn.kv_b_proj.weight with blk.{n}.attn_k_b.weight"
                        ),
                    })?;
                let lora = t.shape.get(1).copied().unwrap_or(0);
                let h = cfg.num_attention_heads;
                let op = Op::MergeKvB { k: i, v, n_head: h, nope: m.qk_nope_head_dim, v_head: m.v_head_dim };
                outs.push(OutTensor {
                    name: hf("self_attn.kv_b_proj.weight"),
                    shape: vec![h * (m.qk_nope_head_dim + m.v_head_dim), lora],
                    dtype,
                    op,
                });
                continue;
            }
            _ => {}
        }
        let &(h, g) = LAYER_NAMES.iter().find(|(_, g)| *g == rest).ok_or_else(unmapped)?;
        let op = match g {
            "attn_q.weight" | "attn_q.bias" if cfg.arch.permutes_qk() => {
                Op::UnpermuteRows { src: i, n_head: cfg.num_attention_heads, rows: None }
            }
            "attn_k.weight" | "attn_k.bias" if cfg.arch.permutes_qk() => {
                Op::UnpermuteRows { src: i, n_head: cfg.num_key_value_heads, rows: None }
            }
            "attn_kv_b.weight" | "attn_kv_b.bias" if cfg.arch.permutes_qk() && cfg.mla.is_none() => Op::UnpermuteRows {
                src: i,
                n_head: cfg.num_key_value_heads,
                rows: Some(cfg.num_key_value_heads * cfg.head_dim),
            },
            _ => Op::Copy(i),
        };
        outs.push(OutTensor { name: hf(h), shape: t.shape.clone(), dtype, op });
    }
    sort_outputs(&mut outs);
    Ok(outs)
}

/// Every tensor of `ck` under its Hugging Face name, as f32, whatever the format: GGUF through
/// [`gguf_to_hf`] (names, Q/K unpermutation, dequantization), safetensors through [`hf_to_hf`]
/// (quantized layouts resolved, DeepSeek FP8 block size from config.json).
pub fn hf_view(ck: &Checkpoint, cfg: &ModelConfig) -> Result<Vec<OutTensor>> {
    match ck.format {
        Format::Gguf => gguf_to_hf(ck, cfg, DType::F32),
        Format::Safetensors => {
            let raw =
                ck.config_path().and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice(&b).ok());
            hf_to_hf(ck, DType::F32, fp8_block_size(raw.as_ref()))
        }
    }
}

/// Plans HF → HF: dtype cast (float tensors only) and dequantization of DeepSeek FP8,
/// compressed-tensors and msModelSlim weights ([`hf_tensors`]).
pub fn hf_to_hf(ck: &Checkpoint, target: DType, block: (u64, u64)) -> Result<Vec<OutTensor>> {
    let mut outs: Vec<OutTensor> = hf_tensors(ck, block)?
        .into_iter()
        .map(|t| OutTensor {
            dtype: if t.quantized { target } else { float_out(&ck.tensors[t.index], target) },
            name: t.name,
            shape: t.shape,
            op: t.op,
        })
        .collect();
    sort_outputs(&mut outs);
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

    /// Bits from running llama.cpp's `LlamaModel.generate_extra_tensors` (llama-cpp-python 0.3.36
    /// sdist) in torch 2.15 for theta 500000, head_dim 64, factor 8, low 1, high 4, context 8192.
    #[test]
    fn llama3_rope_factors_match_llama_cpp() {
        let json = serde_json::json!({
            "model_type": "llama", "vocab_size": 16, "hidden_size": 128, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 131072,
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        });
        let cfg = ModelConfig::from_hf_json(std::path::Path::new("config.json"), &json).unwrap();
        assert_eq!(cfg.arch, Arch::Llama);
        let bits: Vec<u32> = llama3_rope_factors(&cfg).unwrap().iter().map(|f| f.to_bits()).collect();
        let mut want = vec![0x3f800000u32; 15];
        want.extend([0x3fc6d64a, 0x402c732e, 0x40a83c06]);
        want.extend(vec![0x41000000u32; 14]);
        assert_eq!(bits, want);
    }
}
