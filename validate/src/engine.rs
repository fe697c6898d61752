//! The reference engine: open any checkpoint, run the forward pass of its architecture.

use crate::error::{Error, Result};
use crate::weights::{model_config, Weights};
use crate::{deepseek, llama};
use faer::Par;
use recast_convert::{Checkpoint, ModelConfig};

/// A model ready to run: config plus lazily decoded weights.
pub struct Engine<'a> {
    pub config: ModelConfig,
    weights: Weights<'a>,
    par: Par,
}

impl<'a> Engine<'a> {
    /// `threads`: 0 uses rayon's global pool size.
    pub fn new(ck: &'a Checkpoint, threads: usize) -> Result<Self> {
        let config = model_config(ck)?;
        let weights = Weights::new(ck, &config)?;
        let par = if threads == 1 { Par::Seq } else { Par::rayon(threads) };
        Ok(Engine { config, weights, par })
    }

    /// Keep decoded weights between forwards (memory ≈ the model in f32) instead of streaming
    /// one layer at a time.
    pub fn resident(mut self, resident: bool) -> Self {
        self.weights.set_resident(resident);
        self
    }

    /// Values each layer caches per token: keys and values (2·n_kv·head_dim), the latent of a
    /// low-rank KV layer (`kv_a_proj` rows), or MLA's latent plus its RoPE key
    /// (kv_lora_rank + qk_rope_head_dim). Multiply by the cache dtype's bytes and the context
    /// length for the KV cache's memory.
    pub fn kv_values_per_token(&self) -> Vec<u64> {
        let c = &self.config;
        (0..c.num_hidden_layers)
            .map(|l| match (&c.mla, self.weights.shape(&format!("model.layers.{l}.self_attn.kv_a_proj.weight"))) {
                (Some(m), _) => m.kv_lora_rank + m.qk_rope_head_dim,
                (None, Some(s)) => s[0],
                (None, None) => 2 * c.num_key_value_heads * c.head_dim,
            })
            .collect()
    }

    /// Logits `[seq, vocab]` (row-major) for each token sequence. Each layer's weights are
    /// decoded once for the whole batch and dropped before the next layer.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.forward_observed(batch, None)
    }

    /// [`Engine::forward`], calling `observe` with each layer's attention input (llama-family
    /// models; DeepSeek's MLA attention is not observed and is an error with an observer).
    pub fn forward_observed(&self, batch: &[Vec<u32>], observe: Option<llama::Observer>) -> Result<Vec<Vec<f32>>> {
        if batch.iter().any(|s| s.len() as u64 > self.config.max_position_embeddings) {
            return Err(Error::Unsupported(format!(
                "a sequence is longer than max_position_embeddings {}",
                self.config.max_position_embeddings
            )));
        }
        match (&self.config.mla, observe) {
            (None, observe) => llama::forward(&self.config, &self.weights, batch, self.par, observe),
            (Some(_), None) => deepseek::forward(&self.config, &self.weights, batch, self.par),
            (Some(_), Some(_)) => Err(Error::Unsupported(
                "observing attention inputs of multi-head latent attention (DeepSeek) models".into(),
            )),
        }
    }
}
