//! Reference forward for llama-family decoders: llama, mistral, SmolLM, qwen2, qwen3.
//!
//! One readable pass per layer, mirroring transformers `modeling_llama.py` (and the qwen2/qwen3
//! and mistral variants): pre-norm residual blocks, GQA attention with RoPE, SwiGLU MLP.
//! Conventions that differ between families are read from the config:
//! - q/k/v biases (`attention_bias`; always on for qwen2 — `Qwen2Attention` bias=True),
//! - per-head q/k RMSNorm before RoPE (qwen3 — `Qwen3Attention.q_norm/k_norm`),
//! - `head_dim` independent of hidden/heads (qwen3),
//! - sliding-window masking (mistral `sliding_window`),
//! - tied embeddings (SmolLM, qwen2 small models: no `lm_head.weight`).

use crate::error::{Error, Result};
use crate::kernels::{add_bias, linear, multi_head_attention, rms_norm, swiglu, HeadSpec};
use crate::rope::{inv_freq, RopeTable};
use crate::weights::Weights;
use faer::Par;
use recast_convert::ModelConfig;

/// Activations of one sequence: `[seq, hidden]`.
pub type Hidden = Vec<f32>;

/// Token embeddings for each sequence (`model.embed_tokens`).
pub fn embed(cfg: &ModelConfig, w: &Weights, batch: &[Vec<u32>]) -> Result<Vec<Hidden>> {
    let (vocab, d) = (cfg.vocab_size as usize, cfg.hidden_size as usize);
    let e = w.get_shaped("model.embed_tokens.weight", &[vocab, d])?;
    batch
        .iter()
        .map(|toks| {
            let mut x = Vec::with_capacity(toks.len() * d);
            for (pos, &t) in toks.iter().enumerate() {
                let row = e.data.get(t as usize * d..(t as usize + 1) * d).ok_or(Error::TokenOutOfRange {
                    id: t,
                    pos,
                    vocab,
                })?;
                x.extend_from_slice(row);
            }
            Ok(x)
        })
        .collect()
}

/// Final norm and LM head (`model.norm`, `lm_head` or the tied embedding): `[seq, vocab]`.
pub fn head(cfg: &ModelConfig, w: &Weights, xs: Vec<Hidden>, par: Par) -> Result<Vec<Vec<f32>>> {
    let (vocab, d) = (cfg.vocab_size as usize, cfg.hidden_size as usize);
    let norm = w.get_shaped("model.norm.weight", &[d])?;
    let name = if w.has("lm_head.weight") { "lm_head.weight" } else { "model.embed_tokens.weight" };
    let out = w.get_shaped(name, &[vocab, d])?;
    Ok(xs
        .into_iter()
        .map(|x| {
            let h = rms_norm(&x, &norm.data, cfg.rms_norm_eps as f32);
            linear(&h, x.len() / d, d, &out.data, vocab, par)
        })
        .collect())
}

/// SwiGLU MLP `down(silu(gate(x)) · up(x))` with weights under `prefix` (`…mlp`).
pub fn dense_mlp(w: &Weights, prefix: &str, h: &[f32], d: usize, par: Par) -> Result<Vec<f32>> {
    let gate = w.get(&format!("{prefix}.gate_proj.weight"))?;
    let up = w.get(&format!("{prefix}.up_proj.weight"))?;
    let down = w.get(&format!("{prefix}.down_proj.weight"))?;
    let (ff, n) = (gate.shape[0], h.len() / d);
    let act = swiglu(&linear(h, n, d, &gate.data, ff, par), &linear(h, n, d, &up.data, ff, par));
    Ok(linear(&act, n, ff, &down.data, d, par))
}

/// Adds `delta` into the residual stream.
pub fn residual(x: &mut [f32], delta: &[f32]) {
    x.iter_mut().zip(delta).for_each(|(a, b)| *a += b);
}

/// One attention projection with optional bias: `[n, out]`.
fn proj(w: &Weights, name: &str, h: &[f32], n: usize, d: usize, par: Par) -> Result<(Vec<f32>, usize)> {
    let t = w.get(&format!("{name}.weight"))?;
    let m = t.shape[0];
    let mut y = linear(h, n, d, &t.data, m, par);
    if let Some(b) = w.get_opt(&format!("{name}.bias"))? {
        add_bias(&mut y, &b.data);
    }
    Ok((y, m))
}

/// Low-rank KV layout (docs/low-rank-kv.md): the per-token cache is the latent
/// `c = kv_a_proj · h` (`[n, r]`); keys and values are reconstructed as `kv_b_proj · c (+ bias)`,
/// rows `0..kv` keys and `kv..2·kv` values, before the k-norm and RoPE are applied as usual.
fn latent_kv(w: &Weights, p: &str, h: &[f32], n: usize, d: usize, kv: usize, par: Par) -> Result<(Vec<f32>, Vec<f32>)> {
    let (c, r) = proj(w, &format!("{p}.kv_a_proj"), h, n, d, par)?;
    let (joint, m) = proj(w, &format!("{p}.kv_b_proj"), &c, n, r, par)?;
    if m != 2 * kv {
        return Err(crate::error::Error::Shape {
            tensor: format!("{p}.kv_b_proj.weight"),
            found: vec![m, r],
            expected: vec![2 * kv, r],
        });
    }
    let mut k = Vec::with_capacity(n * kv);
    let mut v = Vec::with_capacity(n * kv);
    for row in joint.chunks(m) {
        k.extend_from_slice(&row[..kv]);
        v.extend_from_slice(&row[kv..]);
    }
    Ok((k, v))
}

/// Self-attention of layer `l` for one sequence; returns the `o_proj` output `[n, hidden]`.
fn attention(cfg: &ModelConfig, w: &Weights, l: usize, h: &[f32], rope: &RopeTable, par: Par) -> Result<Vec<f32>> {
    let p = format!("model.layers.{l}.self_attn");
    let (d, hd) = (cfg.hidden_size as usize, cfg.head_dim as usize);
    let (nh, nkv) = (cfg.num_attention_heads as usize, cfg.num_key_value_heads as usize);
    let n = h.len() / d;
    let (mut q, _) = proj(w, &format!("{p}.q_proj"), h, n, d, par)?;
    let (mut k, v) = if w.has(&format!("{p}.kv_a_proj.weight")) {
        latent_kv(w, &p, h, n, d, nkv * hd, par)?
    } else {
        (proj(w, &format!("{p}.k_proj"), h, n, d, par)?.0, proj(w, &format!("{p}.v_proj"), h, n, d, par)?.0)
    };
    // qwen3: RMSNorm over each head before RoPE (Qwen3Attention.forward).
    for (x, name) in [(&mut q, "q_norm"), (&mut k, "k_norm")] {
        if let Some(g) = w.get_opt(&format!("{p}.{name}.weight"))? {
            *x = rms_norm(x, &g.data, cfg.rms_norm_eps as f32);
        }
    }
    for (x, heads) in [(&mut q, nh), (&mut k, nkv)] {
        for (i, row) in x.chunks_mut(heads * hd).enumerate() {
            row.chunks_mut(hd).for_each(|head| rope.apply(head, i, false));
        }
    }
    let scale = (hd as f32).powf(-0.5);
    let window = cfg.sliding_window.map(|s| s as usize);
    let out = multi_head_attention(&q, &k, &v, n, (nh, nkv), HeadSpec { d: hd, dv: hd, scale, window });
    let o = w.get(&format!("{p}.o_proj.weight"))?;
    Ok(linear(&out, n, nh * hd, &o.data, d, par))
}

/// Called with `(layer, attention input)` for each sequence at each layer: the
/// post-`input_layernorm` hidden states `[n, hidden]` the k/v projections read (what
/// `recast calibrate` collects statistics of).
pub type Observer<'o> = &'o mut dyn FnMut(usize, &[f32]);

/// Logits `[seq, vocab]` for each sequence, loading one layer's weights at a time.
pub fn forward(
    cfg: &ModelConfig,
    w: &Weights,
    batch: &[Vec<u32>],
    par: Par,
    mut observe: Option<Observer>,
) -> Result<Vec<Vec<f32>>> {
    if cfg.num_key_value_heads == 0 || !cfg.num_attention_heads.is_multiple_of(cfg.num_key_value_heads) {
        return Err(Error::Unsupported(format!(
            "{} attention heads do not divide into {} KV heads",
            cfg.num_attention_heads, cfg.num_key_value_heads
        )));
    }
    let max_seq = batch.iter().map(Vec::len).max().unwrap_or(0);
    let (freqs, attn_factor) =
        inv_freq(cfg.head_dim as usize, cfg.rope_theta, &cfg.rope_scaling, cfg.max_position_embeddings);
    let rope = RopeTable::new(&freqs, attn_factor, max_seq);
    let d = cfg.hidden_size as usize;
    let eps = cfg.rms_norm_eps as f32;
    let mut xs = embed(cfg, w, batch)?;
    w.evict();
    for l in 0..cfg.num_hidden_layers as usize {
        recast_convert::failpoint::hit("engine-layer");
        let p = format!("model.layers.{l}");
        let (ln1, ln2) = (
            w.get_shaped(&format!("{p}.input_layernorm.weight"), &[d])?,
            w.get_shaped(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
        );
        for x in xs.iter_mut() {
            let h = rms_norm(x, &ln1.data, eps);
            if let Some(f) = observe.as_mut() {
                f(l, &h);
            }
            let a = attention(cfg, w, l, &h, &rope, par)?;
            residual(x, &a);
            let m = dense_mlp(w, &format!("{p}.mlp"), &rms_norm(x, &ln2.data, eps), d, par)?;
            residual(x, &m);
        }
        w.evict();
    }
    head(cfg, w, xs, par)
}
