//! Reference forward for DeepSeek-V2/V3: multi-head latent attention (MLA) and a routed
//! mixture of experts with shared experts.
//!
//! Mirrors transformers 5.24 `modeling_deepseek_v3.py` and `modeling_deepseek_v2.py` (pinned in
//! tests/fixtures/requirements.txt). Per layer, as `DeepseekV3DecoderLayer.forward`:
//! `x += o_proj(MLA(rms_norm(x)))`, then `x += FFN(rms_norm(x))`, where FFN is the dense SwiGLU
//! MLP for the first `first_k_dense_replace` layers and the MoE after (transformers ignores
//! `moe_layer_freq`). The conventions that differ from llama, each at the line it mirrors:
//! - q is `q_proj(h)`, or `q_b_proj(rms_norm(q_a_proj(h)))` with a q LoRA; k/v come from one
//!   latent `kv_a_proj_with_mqa(h) = [c_kv | k_rot]`, `[k_nope | v] = kv_b_proj(rms_norm(c_kv))`
//!   per head, and the single `k_rot` head is shared by every head;
//! - RoPE covers only the `qk_rope_head_dim` tail of each q/k head, with DeepSeek's interleaved
//!   pairs: V3 de-interleaves (`apply_rotary_pos_emb_interleave`), V2 rotates the pairs in place
//!   as complex numbers (`apply_rotary_emb`);
//! - the softmax scale is `qk_head_dim^-0.5 · mscale²` under YaRN (`yarn_apply_mscale`);
//! - the router is sigmoid + `e_score_correction_bias` + group-limited top-k (V3) or softmax +
//!   greedy / group-limited greedy (V2).

use crate::error::{Error, Result};
use crate::kernels::{add_bias, causal_attention, gather_head, linear, rms_norm, sigmoid, softmax, top_k, HeadSpec};
use crate::llama::{dense_mlp, embed, head, residual};
use crate::rope::{inv_freq, yarn_mscale, RopeTable};
use crate::weights::{Tensor, Weights};
use faer::Par;
use recast_convert::config::{Arch, Moe, RopeScaling, Scoring};
use recast_convert::ModelConfig;
use std::rc::Rc;

/// `q_a_layernorm` and `kv_a_layernorm` are built without `eps=`, so they keep RMSNorm's default
/// (`DeepseekV3Attention.__init__`: `DeepseekV3RMSNorm(self.q_lora_rank)`), whatever
/// `rms_norm_eps` says.
const LATENT_NORM_EPS: f32 = 1e-6;

/// MLA geometry of every layer.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    hidden: usize,
    heads: usize,
    q_lora: Option<usize>,
    kv_lora: usize,
    /// Per-head widths: q/k without and with position, and v.
    nope: usize,
    rope: usize,
    v: usize,
}

impl Geometry {
    fn of(cfg: &ModelConfig) -> Result<Self> {
        let m = cfg.mla.as_ref().ok_or_else(|| Error::Unsupported("DeepSeek forward without MLA dimensions".into()))?;
        // repeat_kv(key, num_heads / num_key_value_heads) runs on keys that already have
        // num_heads heads, so anything but equal counts fails in transformers too.
        if cfg.num_key_value_heads != cfg.num_attention_heads {
            return Err(Error::Unsupported(format!(
                "MLA with {} KV heads for {} attention heads",
                cfg.num_key_value_heads, cfg.num_attention_heads
            )));
        }
        Ok(Geometry {
            hidden: cfg.hidden_size as usize,
            heads: cfg.num_attention_heads as usize,
            q_lora: m.q_lora_rank.map(|r| r as usize),
            kv_lora: m.kv_lora_rank as usize,
            nope: m.qk_nope_head_dim as usize,
            rope: m.qk_rope_head_dim as usize,
            v: m.v_head_dim as usize,
        })
    }

    /// `qk_head_dim`: width of one query/key head.
    fn qk(&self) -> usize {
        self.nope + self.rope
    }
}

/// How the rotary part of each head is laid out and rotated.
#[derive(Clone, Copy, Debug)]
enum Rotary {
    /// V3 `rope_interleave=True` (the config default; released checkpoints omit the key):
    /// `apply_rotary_pos_emb_interleave` — output de-interleaved, `[x0', x2', …, x1', x3', …]`.
    /// `ModelConfig` does not carry `rope_interleave`, so a V3 config that sets it to false
    /// (half-split `apply_rotary_pos_emb`) is not distinguished.
    Deinterleave,
    /// V2 `apply_rotary_emb`: `view_as_complex(x) * freqs_cis` — output stays interleaved.
    Complex,
}

/// Softmax scale: `qk_head_dim ** -0.5`, times `mscale²` with `mscale = yarn_get_mscale(factor,
/// mscale_all_dim)` when YaRN sets a non-zero `mscale_all_dim` (`yarn_apply_mscale`, in f64 as
/// Python computes it; torch rounds the scalar to f32 when it multiplies the scores).
fn softmax_scale(cfg: &ModelConfig, g: &Geometry) -> f32 {
    let mut scale = (g.qk() as f64).powf(-0.5);
    if let RopeScaling::Yarn { factor, mscale_all_dim: Some(all), .. } = cfg.rope_scaling {
        if all != 0.0 {
            let m = yarn_mscale(factor, all);
            scale = scale * m * m;
        }
    }
    scale as f32
}

/// An `nn.Linear` with an optional bias (`attention_bias` puts one on q_a, kv_a and o).
struct Dense {
    w: Rc<Tensor>,
    b: Option<Rc<Tensor>>,
}

impl Dense {
    /// `name` without `.weight`; the weight must be `[out, inp]`.
    fn load(w: &Weights, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Dense { w: w.get_shaped(&format!("{name}.weight"), &[out, inp])?, b: w.get_opt(&format!("{name}.bias"))? })
    }

    /// `x[n, in] → [n, out]`.
    fn apply(&self, x: &[f32], par: Par) -> Vec<f32> {
        let (out, inp) = self.w.dims2();
        let mut y = linear(x, x.len() / inp, inp, &self.w.data, out, par);
        if let Some(b) = &self.b {
            add_bias(&mut y, &b.data);
        }
        y
    }
}

/// The query path: one projection, or a LoRA pair with an RMSNorm between.
enum Query {
    Full(Dense),
    LowRank { a: Dense, norm: Rc<Tensor>, b: Dense },
}

/// MLA weights of one layer.
struct MlaWeights {
    q: Query,
    kv_a: Dense,
    kv_a_norm: Rc<Tensor>,
    kv_b: Dense,
    o: Dense,
}

impl MlaWeights {
    fn load(w: &Weights, l: usize, g: &Geometry) -> Result<Self> {
        let p = format!("model.layers.{l}.self_attn");
        let (d, qs) = (g.hidden, g.heads * g.qk());
        let q = match g.q_lora {
            None => Query::Full(Dense::load(w, &format!("{p}.q_proj"), qs, d)?),
            Some(r) => Query::LowRank {
                a: Dense::load(w, &format!("{p}.q_a_proj"), r, d)?,
                norm: w.get_shaped(&format!("{p}.q_a_layernorm.weight"), &[r])?,
                b: Dense::load(w, &format!("{p}.q_b_proj"), qs, r)?,
            },
        };
        Ok(MlaWeights {
            q,
            kv_a: Dense::load(w, &format!("{p}.kv_a_proj_with_mqa"), g.kv_lora + g.rope, d)?,
            kv_a_norm: w.get_shaped(&format!("{p}.kv_a_layernorm.weight"), &[g.kv_lora])?,
            kv_b: Dense::load(w, &format!("{p}.kv_b_proj"), g.heads * (g.nope + g.v), g.kv_lora)?,
            o: Dense::load(w, &format!("{p}.o_proj"), d, g.heads * g.v)?,
        })
    }
}

/// Rotates one rotary slice (`qk_rope_head_dim` wide) at position `pos`.
fn rotate(rope: &RopeTable, style: Rotary, x: &mut [f32], pos: usize) {
    match style {
        Rotary::Deinterleave => rope.apply(x, pos, true),
        Rotary::Complex => rope.apply_pairs(x, pos),
    }
}

/// Settings shared by every layer's attention.
struct AttnSpec<'a> {
    g: Geometry,
    rope: &'a RopeTable,
    style: Rotary,
    scale: f32,
}

/// MLA over one sequence `h[n, hidden]`; returns the `o_proj` output `[n, hidden]`
/// (`DeepseekV3Attention.forward`, eager attention, no cache).
fn attention(s: &AttnSpec, mw: &MlaWeights, h: &[f32], par: Par) -> Vec<f32> {
    let (g, qk) = (s.g, s.g.qk());
    let n = h.len() / g.hidden;
    // q: [n, heads, nope | rope]
    let mut q = match &mw.q {
        Query::Full(p) => p.apply(h, par),
        Query::LowRank { a, norm, b } => b.apply(&rms_norm(&a.apply(h, par), &norm.data, LATENT_NORM_EPS), par),
    };
    // kv_a_proj_with_mqa: [n, kv_lora | rope]; the latent is normed, the rope part is one shared key head.
    let ckv = mw.kv_a.apply(h, par);
    let width = g.kv_lora + g.rope;
    let latent: Vec<f32> = ckv.chunks(width).flat_map(|r| r[..g.kv_lora].iter().copied()).collect();
    let mut k_rot: Vec<f32> = ckv.chunks(width).flat_map(|r| r[g.kv_lora..].iter().copied()).collect();
    // kv_b_proj: [n, heads, nope | v]
    let kv = mw.kv_b.apply(&rms_norm(&latent, &mw.kv_a_norm.data, LATENT_NORM_EPS), par);
    for (i, row) in q.chunks_mut(g.heads * qk).enumerate() {
        row.chunks_mut(qk).for_each(|hd| rotate(s.rope, s.style, &mut hd[g.nope..], i));
    }
    k_rot.chunks_mut(g.rope).enumerate().for_each(|(i, k)| rotate(s.rope, s.style, k, i));
    let spec = HeadSpec { d: qk, dv: g.v, scale: s.scale, window: None };
    let kv_width = g.heads * (g.nope + g.v);
    let mut out = vec![0f32; n * g.heads * g.v];
    for head in 0..g.heads {
        // query = cat(q_pass, q_rot); key = cat(k_nope, k_rot) (`expand_kv`)
        let qh = gather_head(&q, n, g.heads * qk, head, qk);
        let kvh = gather_head(&kv, n, kv_width, head, g.nope + g.v);
        let kh: Vec<f32> = (0..n)
            .flat_map(|i| kvh[i * (g.nope + g.v)..][..g.nope].iter().chain(&k_rot[i * g.rope..][..g.rope]).copied())
            .collect();
        let vh: Vec<f32> = kvh.chunks(g.nope + g.v).flat_map(|r| r[g.nope..].iter().copied()).collect();
        let mut oh = vec![0f32; n * g.v];
        causal_attention(&qh, &kh, &vh, spec, &mut oh);
        for (i, o) in oh.chunks(g.v).enumerate() {
            out[(i * g.heads + head) * g.v..][..g.v].copy_from_slice(o);
        }
    }
    mw.o.apply(&out, par)
}

/// Keeps the scores of the best `topk_group` of `n_group` equal expert groups (ranked by
/// `group_score`) and sets the rest to `fill`.
fn limit_to_groups(
    scores: &[f32],
    n_group: usize,
    topk_group: usize,
    group_score: fn(&[f32]) -> f32,
    fill: f32,
) -> Result<Vec<f32>> {
    if n_group == 0 || !scores.len().is_multiple_of(n_group) {
        return Err(Error::Unsupported(format!("{} experts do not split into {n_group} groups", scores.len())));
    }
    let per = scores.len() / n_group;
    let ranked: Vec<f32> = scores.chunks(per).map(group_score).collect();
    let keep = top_k(&ranked, topk_group);
    Ok(scores.iter().enumerate().map(|(e, &s)| if keep.contains(&(e / per)) { s } else { fill }).collect())
}

/// V3 group score: the sum of the group's two best scores (`.topk(2, dim=-1)[0].sum(dim=-1)`).
fn top2_sum(group: &[f32]) -> f32 {
    top_k(group, 2).iter().map(|&e| group[e]).sum()
}

/// V2 group score: the group's best score (`.max(dim=-1).values`).
fn group_max(group: &[f32]) -> f32 {
    group.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Experts chosen for one token and their weights, from its router logits `[n_routed_experts]`.
///
/// transformers picks the router by model class (`DeepseekV3TopkRouter` is always sigmoid +
/// noaux_tc; `DeepseekV2TopkRouter` always softmax). GGUF's `deepseek2` does not record the
/// class, so this keys on the scoring function, which agrees with the class in every released
/// config.
fn route(moe: &Moe, logits: &[f32], bias: Option<&[f32]>) -> Result<Vec<(usize, f32)>> {
    let k = moe.num_experts_per_tok as usize;
    let n_group = moe.n_group.unwrap_or(1) as usize;
    let topk_group = moe.topk_group.map_or(n_group, |t| t as usize);
    let scaling = moe.routed_scaling_factor as f32;
    match moe.scoring {
        // DeepseekV3TopkRouter.forward: the bias only steers the choice; the weights are the
        // plain sigmoid scores of the chosen experts.
        Scoring::Sigmoid => {
            let scores: Vec<f32> = logits.iter().map(|&x| sigmoid(x)).collect();
            let choice: Vec<f32> = match bias {
                Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                None => scores.clone(),
            };
            let choice = limit_to_groups(&choice, n_group, topk_group, top2_sum, f32::NEG_INFINITY)?;
            let chosen = top_k(&choice, k);
            let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
            if moe.norm_topk_prob {
                let denominator = weights.iter().sum::<f32>() + 1e-20;
                weights.iter_mut().for_each(|w| *w /= denominator);
            }
            Ok(chosen.into_iter().zip(weights).map(|(e, w)| (e, w * scaling)).collect())
        }
        // DeepseekV2TopkRouter.forward: softmax in f32; masked groups are zeroed, not -inf; no
        // renormalisation (transformers' V2 router never reads norm_topk_prob).
        Scoring::Softmax => {
            let mut scores = logits.to_vec();
            softmax(&mut scores);
            let scores = match moe.topk_method.as_deref().unwrap_or("greedy") {
                "greedy" => scores,
                "group_limited_greedy" => limit_to_groups(&scores, n_group, topk_group, group_max, 0.0)?,
                other => {
                    return Err(Error::Unsupported(format!(
                        "DeepSeek-V2 topk_method '{other}' (supported: greedy, group_limited_greedy)"
                    )))
                }
            };
            Ok(top_k(&scores, k).into_iter().map(|e| (e, scores[e] * scaling)).collect())
        }
    }
}

/// The MoE block of layer `l` over all tokens of the batch `h[n, hidden]` (`DeepseekV3MoE.forward`):
/// routed experts, then `+ shared_experts(h)`.
fn moe_block(moe: &Moe, w: &Weights, l: usize, h: &[f32], d: usize, par: Par) -> Result<Vec<f32>> {
    let p = format!("model.layers.{l}.mlp");
    let e = moe.n_routed_experts as usize;
    if e == 0 || moe.num_experts_per_tok as usize > e {
        return Err(Error::Unsupported(format!("{} of {e} routed experts per token", moe.num_experts_per_tok)));
    }
    let n = h.len() / d;
    // The router runs in f32 (`F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))`).
    let gate = w.get_shaped(&format!("{p}.gate.weight"), &[e, d])?;
    let bias = w.get_opt(&format!("{p}.gate.e_score_correction_bias"))?;
    let logits = linear(h, n, d, &gate.data, e, par);
    let routes: Vec<Vec<(usize, f32)>> =
        logits.chunks(e).map(|r| route(moe, r, bias.as_ref().map(|b| b.data.as_slice()))).collect::<Result<_>>()?;
    // DeepseekV3Experts.forward: experts in ascending order, each on the tokens routed to it;
    // `final += down(act) * weight` per token, starting from zeros.
    let mut out = vec![0f32; n * d];
    for expert in 0..e {
        let hits: Vec<(usize, f32)> = routes
            .iter()
            .enumerate()
            .filter_map(|(t, r)| r.iter().find(|(x, _)| *x == expert).map(|&(_, wt)| (t, wt)))
            .collect();
        if hits.is_empty() {
            continue;
        }
        let rows: Vec<f32> = hits.iter().flat_map(|&(t, _)| h[t * d..(t + 1) * d].iter().copied()).collect();
        let y = dense_mlp(w, &format!("{p}.experts.{expert}"), &rows, d, par)?;
        // Each expert runs once per layer (for the whole batch), so it is dropped at once:
        // peak memory is one expert, not all of a layer's experts (what is still needed is
        // held by `Rc`).
        w.evict();
        for (&(t, wt), yr) in hits.iter().zip(y.chunks(d)) {
            out[t * d..(t + 1) * d].iter_mut().zip(yr).for_each(|(o, v)| *o += v * wt);
        }
    }
    if moe.n_shared_experts > 0 {
        residual(&mut out, &dense_mlp(w, &format!("{p}.shared_experts"), h, d, par)?);
    }
    Ok(out)
}

/// Feed-forward of layer `l` over all tokens of the batch: dense below `first_k_dense_replace`
/// (`DeepseekV3DecoderLayer.__init__`), MoE from there on.
fn feed_forward(cfg: &ModelConfig, w: &Weights, l: usize, h: &[f32], par: Par) -> Result<Vec<f32>> {
    let d = cfg.hidden_size as usize;
    let p = format!("model.layers.{l}.mlp");
    match &cfg.moe {
        Some(moe) if l as u64 >= moe.first_k_dense_replace => moe_block(moe, w, l, h, d, par),
        _ => dense_mlp(w, &p, h, d, par),
    }
}

/// Logits `[seq, vocab]` for each sequence, loading one layer's weights at a time.
pub fn forward(cfg: &ModelConfig, w: &Weights, batch: &[Vec<u32>], par: Par) -> Result<Vec<Vec<f32>>> {
    let g = Geometry::of(cfg)?;
    let max_seq = batch.iter().map(Vec::len).max().unwrap_or(0);
    // transformers' rope init reads config.head_dim, which the DeepSeek configs set to
    // qk_rope_head_dim (`DeepseekV3Config.__post_init__`); the YaRN attention factor is in cos/sin.
    let (freqs, attn_factor) = inv_freq(g.rope, cfg.rope_theta, &cfg.rope_scaling, cfg.max_position_embeddings);
    let rope = RopeTable::new(&freqs, attn_factor, max_seq);
    let style = if cfg.arch == Arch::DeepseekV2 { Rotary::Complex } else { Rotary::Deinterleave };
    let spec = AttnSpec { g, rope: &rope, style, scale: softmax_scale(cfg, &g) };
    let (d, eps) = (g.hidden, cfg.rms_norm_eps as f32);
    let mut xs = embed(cfg, w, batch)?;
    w.evict();
    for l in 0..cfg.num_hidden_layers as usize {
        recast_convert::failpoint::hit("engine-layer");
        let p = format!("model.layers.{l}");
        let ln1 = w.get_shaped(&format!("{p}.input_layernorm.weight"), &[d])?;
        let ln2 = w.get_shaped(&format!("{p}.post_attention_layernorm.weight"), &[d])?;
        let mla = MlaWeights::load(w, l, &g)?;
        for x in xs.iter_mut() {
            let a = attention(&spec, &mla, &rms_norm(x, &ln1.data, eps), par);
            residual(x, &a);
        }
        // The feed-forward is row-wise, so the whole batch goes through it at once and each
        // expert is decoded once per layer.
        let h: Vec<f32> = xs.iter().flat_map(|x| rms_norm(x, &ln2.data, eps)).collect();
        let mut m = feed_forward(cfg, w, l, &h, par)?.into_iter();
        for x in xs.iter_mut() {
            x.iter_mut().zip(m.by_ref()).for_each(|(a, b)| *a += b);
        }
        w.evict();
    }
    head(cfg, w, xs, par)
}
