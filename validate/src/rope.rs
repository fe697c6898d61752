//! Rotary position embeddings: inverse frequencies for each RoPE variant, cos/sin tables, and
//! the rotation in HF's half-split (`rotate_half`) or DeepSeek's interleaved layout.
//!
//! Mirrors transformers `modeling_rope_utils.py` (`_compute_default_rope_parameters`,
//! `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`,
//! `_compute_yarn_parameters`) and `LlamaRotaryEmbedding.forward`: inverse frequencies in f32,
//! `freqs = inv_freq · pos` in f32, `cos/sin(freqs) · attention_factor`.

use recast_convert::config::RopeScaling;
use std::f64::consts::PI;

/// Inverse frequencies and the cos/sin scaling for a rotary dimension `dim`.
pub fn inv_freq(dim: usize, theta: f64, scaling: &RopeScaling, max_pos: u64) -> (Vec<f32>, f32) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), in f32
    let base: Vec<f32> = (0..dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32)).collect();
    match scaling {
        RopeScaling::None | RopeScaling::Dynamic { .. } => (base, 1.0),
        RopeScaling::Linear { factor } => (base.iter().map(|f| f / *factor as f32).collect(), 1.0),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
            let (factor, lo, hi, old) =
                (*factor as f32, *low_freq_factor as f32, *high_freq_factor as f32, *old as f32);
            let (low_wavelen, high_wavelen) = (old / lo, old / hi);
            let out = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * PI as f32 / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let smooth = (old / wavelen - lo) / (hi - lo);
                    let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                    if medium {
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect();
            (out, 1.0)
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
            let _ = max_pos;
            yarn(
                dim,
                theta,
                *factor,
                *original_max_position_embeddings,
                beta_fast.unwrap_or(32.0),
                beta_slow.unwrap_or(1.0),
                *mscale,
                *mscale_all_dim,
                *attention_factor,
            )
        }
    }
}

/// YaRN's attention magnitude correction (`get_mscale` / DeepSeek `yarn_get_mscale`).
pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

#[allow(clippy::too_many_arguments)]
fn yarn(
    dim: usize,
    theta: f64,
    factor: f64,
    orig: u64,
    beta_fast: f64,
    beta_slow: f64,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    attn: Option<f64>,
) -> (Vec<f32>, f32) {
    let attention = attn.unwrap_or_else(|| match (mscale, mscale_all_dim) {
        (Some(m), Some(a)) if m != 0.0 && a != 0.0 => yarn_mscale(factor, m) / yarn_mscale(factor, a),
        _ => yarn_mscale(factor, 1.0),
    });
    let corr = |rot: f64| (dim as f64 * (orig as f64 / (rot * 2.0 * PI)).ln()) / (2.0 * theta.ln());
    let (mut low, mut high) = (corr(beta_fast).floor(), corr(beta_slow).ceil());
    low = low.max(0.0);
    high = high.min(dim as f64 - 1.0);
    if low == high {
        high += 0.001;
    }
    let out = (0..dim / 2)
        .map(|i| {
            let pos_freq = (theta as f32).powf((2 * i) as f32 / dim as f32);
            let (extra, inter) = (1.0 / pos_freq, 1.0 / (factor as f32 * pos_freq));
            let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
            let extra_factor = 1.0 - ramp;
            inter * (1.0 - extra_factor) + extra * extra_factor
        })
        .collect();
    (out, attention as f32)
}

/// cos/sin for positions `0..seq`: rows of `dim` values (`cat(freqs, freqs)` as HF builds them).
pub struct RopeTable {
    pub dim: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(inv_freq: &[f32], attention_factor: f32, seq: usize) -> Self {
        let dim = inv_freq.len() * 2;
        let (mut cos, mut sin) = (vec![0f32; seq * dim], vec![0f32; seq * dim]);
        for p in 0..seq {
            for (i, f) in inv_freq.iter().enumerate() {
                let a = f * p as f32;
                let (c, s) = (a.cos() * attention_factor, a.sin() * attention_factor);
                for j in [i, i + dim / 2] {
                    cos[p * dim + j] = c;
                    sin[p * dim + j] = s;
                }
            }
        }
        RopeTable { dim, cos, sin }
    }

    /// Rotates one head vector at position `pos` (HF `x·cos + rotate_half(x)·sin`). With
    /// `interleaved`, pairs are first de-interleaved (`(x0,x1,x2,x3…)` → `(x0,x2…, x1,x3…)`), as
    /// transformers' `apply_rotary_pos_emb_interleave` does for DeepSeek checkpoints.
    pub fn apply(&self, x: &mut [f32], pos: usize, interleaved: bool) {
        let (d, h) = (self.dim, self.dim / 2);
        if interleaved {
            let tmp: Vec<f32> = (0..d).map(|j| if j < h { x[2 * j] } else { x[2 * (j - h) + 1] }).collect();
            x.copy_from_slice(&tmp);
        }
        let (c, s) = (&self.cos[pos * d..(pos + 1) * d], &self.sin[pos * d..(pos + 1) * d]);
        for i in 0..h {
            let (a, b) = (x[i], x[i + h]);
            x[i] = a * c[i] - b * s[i];
            x[i + h] = b * c[i + h] + a * s[i + h];
        }
    }

    /// Rotates the adjacent pairs `(x0, x1), (x2, x3), …` of one head vector at position `pos`
    /// as complex numbers and keeps them interleaved: `(x0 + i·x1) · (cos + i·sin)` (DeepSeek-V2's
    /// `apply_rotary_emb`: `view_as_real(view_as_complex(x) * freqs_cis)`).
    pub fn apply_pairs(&self, x: &mut [f32], pos: usize) {
        let (d, h) = (self.dim, self.dim / 2);
        let (c, s) = (&self.cos[pos * d..(pos + 1) * d], &self.sin[pos * d..(pos + 1) * d]);
        for (i, pair) in x[..d].chunks_exact_mut(2).enumerate().take(h) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c[i] - b * s[i];
            pair[1] = a * s[i] + b * c[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_rotation_is_the_interleaved_rotation_left_interleaved() {
        let table = RopeTable::new(&[1.0, 0.1, 0.01], 1.3, 4);
        let x: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let (mut pairs, mut halves) = (x.clone(), x);
        table.apply_pairs(&mut pairs, 3);
        table.apply(&mut halves, 3, true);
        let deinterleaved: Vec<f32> =
            (0..6).map(|j| if j < 3 { pairs[2 * j] } else { pairs[2 * (j - 3) + 1] }).collect();
        assert_eq!(deinterleaved, halves);
    }
}
