//! llama-quantize's per-tensor type choice for an `--ftype` mixture, reproduced exactly
//! (llama.cpp `src/llama-quant.cpp`: `tensor_allows_quantization`, `tensor_get_category`,
//! `llama_tensor_get_type_impl`, `tensor_type_fallback`; formats.md §2.9).
//!
//! Tensors must be visited in llama-quantize's order (its loader sorts names by layer index,
//! then by name): the attn_v counter depends on it. [`Mixer::sorted`] gives that order.

use crate::recipe::Preset;
use recast_convert::GgmlType;

/// The model facts the mixture depends on.
#[derive(Clone, Debug)]
pub struct ModelFacts {
    /// `general.architecture` (only `falcon` changes choices here).
    pub arch: String,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_expert: u32,
}

impl ModelFacts {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(1)
    }
    /// llama.cpp's `LLM_TYPE_70B` for the llama family (80 layers).
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80
    }
    fn falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    for (needle, c) in [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ] {
        if name.contains(needle) {
            return c;
        }
    }
    Other
}

fn is_attn_v(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// `tensor_allows_quantization` for the architectures recast writes.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const NEVER: &[&str] = &["_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "ssm_conv1d"];
    !NEVER.iter().any(|n| name.contains(n)) && name != "position_embd.weight" && name != "token_types.weight"
}

impl Preset {
    /// `llama_ftype` value written as `general.file_type`.
    pub fn file_type(self) -> u32 {
        use Preset::*;
        match self {
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q2_K => 10,
            Q3_K_S => 11,
            Q3_K_M => 12,
            Q3_K_L => 13,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
        }
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> GgmlType {
        use Preset::*;
        match self {
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q2_K => GgmlType::Q2_K,
            Q3_K_S | Q3_K_M | Q3_K_L => GgmlType::Q3_K,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }
}

/// Walks tensors in llama-quantize's order, choosing each one's type.
pub struct Mixer {
    facts: ModelFacts,
    preset: Preset,
    has_imatrix: bool,
    tied: bool,
    n_attention_wv: u32,
    i_attention_wv: u32,
    /// Fallbacks taken: (tensor, wanted, used).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
}

/// llama.cpp's loader order: by `blk.N.` index (non-layer tensors first), then by name.
pub fn loader_order(a: &str, b: &str) -> std::cmp::Ordering {
    let layer = |s: &str| -> i64 {
        s.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(-1)
    };
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

impl Mixer {
    /// `names` are every tensor of the file (for the attn_v count and tied-embedding test).
    pub fn new<'a>(facts: ModelFacts, preset: Preset, has_imatrix: bool, names: impl Iterator<Item = &'a str>) -> Self {
        let mut n_attention_wv = 0;
        let mut tied = true;
        for n in names {
            let c = category(n);
            if is_attn_v(c) {
                n_attention_wv += 1;
            }
            if c == Category::Output {
                tied = false;
            }
        }
        Mixer { facts, preset, has_imatrix, tied, n_attention_wv, i_attention_wv: 0, fallbacks: Vec::new() }
    }

    /// The type of one tensor (`ne0` = row length), or `None` when llama-quantize leaves the
    /// tensor in its input type. Call in [`loader_order`].
    pub fn choose(&mut self, name: &str, shape: &[u64]) -> Option<GgmlType> {
        if !allows_quantization(name, shape.len()) {
            return None;
        }
        let ne0 = *shape.last().unwrap_or(&0);
        let t = self.impl_type(name, ne0);
        Some(self.fallback(name, ne0, t))
    }

    fn layer_of(&self, name: &str) -> u32 {
        name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    fn impl_type(&mut self, name: &str, ne0: u64) -> GgmlType {
        use Category::*;
        use Preset as F;
        let f = self.preset;
        let mut t = f.default_type();
        let cat = category(name);
        let facts = self.facts.clone();
        let more_bits =
            |i: u32, n: u32| -> bool { i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2 };
        if cat == Output || (self.tied && cat == TokenEmbd) {
            if facts.falcon() || !ne0.is_multiple_of(t.block_size() as u64) {
                t = GgmlType::Q8_0;
            } else if t != GgmlType::Q8_0 {
                t = GgmlType::Q6_K;
            }
        } else if cat == TokenEmbd {
            // Only IQ/TQ ftypes change the token embedding.
        } else if is_attn_v(cat) {
            let i = self.i_attention_wv;
            let n = self.n_attention_wv;
            if f == F::Q2_K {
                t = if facts.n_gqa() >= 4 { GgmlType::Q4_K } else { GgmlType::Q3_K };
            } else if f == F::Q3_K_M {
                t = if i < 2 { GgmlType::Q5_K } else { GgmlType::Q4_K };
            } else if f == F::Q3_K_L {
                t = GgmlType::Q5_K;
            } else if (f == F::Q4_K_M || f == F::Q5_K_M) && more_bits(i, n) {
                t = GgmlType::Q6_K;
            } else if f == F::Q4_K_S && i < 4 {
                t = GgmlType::Q5_K;
            }
            if facts.is_70b() && (t == GgmlType::Q3_K || t == GgmlType::Q4_K) {
                t = GgmlType::Q5_K;
            }
            if facts.n_expert == 8 {
                t = GgmlType::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == AttnK {
            if facts.n_expert == 8 {
                t = GgmlType::Q8_0;
            }
        } else if cat == AttnQ {
            // Only IQ3 ftypes change attn_q.
        } else if cat == FfnDown {
            let (i, n) = (self.layer_of(name), facts.n_layer);
            match f {
                F::Q2_K => t = GgmlType::Q3_K,
                F::Q3_K_M => {
                    t = if i < n / 16 {
                        GgmlType::Q5_K
                    } else if !facts.falcon() || more_bits(i, n) {
                        GgmlType::Q4_K
                    } else {
                        GgmlType::Q3_K
                    }
                }
                F::Q3_K_L => t = if facts.falcon() { GgmlType::Q4_K } else { GgmlType::Q5_K },
                F::Q4_K_M => {
                    if facts.falcon() {
                        t = if i < n / 16 {
                            GgmlType::Q6_K
                        } else if more_bits(i, n) {
                            GgmlType::Q5_K
                        } else {
                            GgmlType::Q4_K
                        };
                    } else if more_bits(i, n) {
                        t = GgmlType::Q6_K;
                    }
                }
                F::Q5_K_M if more_bits(i, n) => t = GgmlType::Q6_K,
                F::Q4_K_S if !facts.falcon() && i < n / 8 => t = GgmlType::Q5_K,
                F::Q4_0 | F::Q5_0 if self.has_imatrix && i < n / 8 => {
                    t = if f == F::Q4_0 { GgmlType::Q4_1 } else { GgmlType::Q5_1 };
                }
                _ => {}
            }
        } else if cat == AttnOutput {
            if !facts.falcon() {
                if facts.n_expert == 8 {
                    if matches!(f, F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M) {
                        t = GgmlType::Q5_K;
                    }
                } else {
                    match f {
                        F::Q2_K => t = GgmlType::Q3_K,
                        F::Q3_K_M => t = GgmlType::Q4_K,
                        F::Q3_K_L => t = GgmlType::Q5_K,
                        _ => {}
                    }
                }
            } else if f == F::Q3_K_L {
                t = GgmlType::Q4_K;
            }
        }
        // ATTENTION_QKV's own branch is unreachable (attn_v-like is tested first), as in llama.cpp.
        t
    }

    /// `tensor_type_fallback`: a type whose block does not divide the row length.
    fn fallback(&mut self, name: &str, ne0: u64, t: GgmlType) -> GgmlType {
        if ne0.is_multiple_of(t.block_size() as u64) {
            return t;
        }
        let mut r = match t {
            GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
            GgmlType::Q4_K => GgmlType::Q5_0,
            GgmlType::Q5_K => GgmlType::Q5_1,
            GgmlType::Q6_K => GgmlType::Q8_0,
            other => other,
        };
        if !ne0.is_multiple_of(r.block_size() as u64) {
            r = GgmlType::F16;
        }
        self.fallbacks.push((name.to_string(), t, r));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(n_layer: u32) -> ModelFacts {
        ModelFacts { arch: "llama".into(), n_layer, n_head: 9, n_head_kv: 3, n_expert: 0 }
    }

    fn names(n_layer: u32, tied: bool) -> Vec<String> {
        let mut v = vec!["token_embd.weight".to_string(), "output_norm.weight".to_string()];
        if !tied {
            v.push("output.weight".into());
        }
        for i in 0..n_layer {
            for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
                v.push(format!("blk.{i}.{t}.weight"));
            }
            v.push(format!("blk.{i}.attn_norm.weight"));
        }
        v.sort_by(|a, b| loader_order(a, b));
        v
    }

    fn mix(preset: Preset, n_layer: u32, ne0: u64) -> Vec<(String, Option<GgmlType>)> {
        let ns = names(n_layer, true);
        let mut m = Mixer::new(facts(n_layer), preset, false, ns.iter().map(String::as_str));
        ns.iter()
            .map(|n| {
                let shape: Vec<u64> = if n.contains("norm") { vec![ne0] } else { vec![ne0, ne0] };
                (n.clone(), m.choose(n, &shape))
            })
            .collect()
    }

    #[test]
    fn q4_k_m_bumps_attn_v_and_ffn_down_by_use_more_bits() {
        let m = mix(Preset::Q4_K_M, 32, 4096);
        let get = |n: &str| m.iter().find(|(x, _)| x == n).unwrap().1;
        // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2.
        for i in 0..32u32 {
            let more = !(4..28).contains(&i) || (i as i64 - 4) % 3 == 2;
            let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(get(&format!("blk.{i}.attn_v.weight")), Some(want), "attn_v {i}");
            assert_eq!(get(&format!("blk.{i}.ffn_down.weight")), Some(want), "ffn_down {i}");
            assert_eq!(get(&format!("blk.{i}.attn_q.weight")), Some(GgmlType::Q4_K));
            assert_eq!(get(&format!("blk.{i}.attn_norm.weight")), None);
        }
        // Tied embeddings take the output tensor's type.
        assert_eq!(get("token_embd.weight"), Some(GgmlType::Q6_K));
    }

    #[test]
    fn widths_not_multiple_of_256_fall_back_like_llama_quantize() {
        // SmolLM2-135M: 576 columns → Q4_K→Q5_0, Q6_K→Q8_0.
        let m = mix(Preset::Q4_K_M, 30, 576);
        let get = |n: &str| m.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(get("blk.5.attn_q.weight"), Some(GgmlType::Q5_0));
        assert_eq!(get("blk.0.attn_v.weight"), Some(GgmlType::Q8_0));
        // Output/tied embedding: ne0 % 256 != 0 → Q8_0 directly.
        assert_eq!(get("token_embd.weight"), Some(GgmlType::Q8_0));
        let m = mix(Preset::Q2_K, 30, 576);
        let get = |n: &str| m.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(get("blk.5.attn_q.weight"), Some(GgmlType::Q4_0));
        let m = mix(Preset::Q8_0, 2, 40);
        assert_eq!(m.iter().find(|(x, _)| x == "blk.0.attn_q.weight").unwrap().1, Some(GgmlType::F16));
    }
}
