//! Weights by Hugging Face name, decoded to f32 on demand from any checkpoint convert reads.
//!
//! The map from HF names to stored tensors is convert's own conversion plan (`gguf_to_hf` or
//! `hf_to_hf`), so GGUF names, llama.cpp's Q/K permutation, stacked experts, MLA `kv_b` halves,
//! ggml dequantization and DeepSeek FP8 all resolve exactly as `recast convert` resolves them.
//! Nothing is decoded until asked for: the engine loads one layer at a time.

use crate::error::{Error, Result};
use recast_convert::mapping::{self, OutTensor};
use recast_convert::{transform, Checkpoint, Format, ModelConfig};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A dense f32 tensor, row-major.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// Rows and columns of a 2-D tensor.
    pub fn dims2(&self) -> (usize, usize) {
        (self.shape[0], self.shape[1])
    }
}

/// Where every HF-named weight of a model comes from, with a cache of what has been decoded
/// since the last [`Weights::evict`] (the forward evicts at every layer boundary, so peak
/// memory is one layer's weights and each weight is decoded once per batch).
pub struct Weights<'a> {
    ck: &'a Checkpoint,
    plan: HashMap<String, OutTensor>,
    cache: RefCell<HashMap<String, Rc<Tensor>>>,
    /// Keep every decoded weight for the engine's lifetime (no layer streaming).
    resident: bool,
}

/// Reads the model config of a checkpoint (config.json beside safetensors, or GGUF metadata).
pub fn model_config(ck: &Checkpoint) -> Result<ModelConfig> {
    Ok(match ck.format {
        Format::Gguf => ck.gguf_config()?,
        Format::Safetensors => {
            let p = ck.config_path().ok_or_else(|| recast_convert::Error::MissingTensor {
                tensor: "config.json".into(),
                why: format!("running {}", ck.path.display()),
            })?;
            ModelConfig::from_hf_file(&p)?
        }
    })
}

impl<'a> Weights<'a> {
    pub fn new(ck: &'a Checkpoint, cfg: &ModelConfig) -> Result<Self> {
        let outs = mapping::hf_view(ck, cfg)?;
        Ok(Weights {
            ck,
            plan: outs.into_iter().map(|o| (o.name.clone(), o)).collect(),
            cache: RefCell::default(),
            resident: false,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.plan.contains_key(name)
    }

    /// A weight's shape, without decoding it.
    pub fn shape(&self, name: &str) -> Option<&[u64]> {
        self.plan.get(name).map(|o| o.shape.as_slice())
    }

    /// Decodes one weight to f32 (or returns it from the cache).
    pub fn get(&self, name: &str) -> Result<Rc<Tensor>> {
        if let Some(t) = self.cache.borrow().get(name) {
            return Ok(t.clone());
        }
        let o = self.plan.get(name).ok_or_else(|| recast_convert::Error::MissingTensor {
            tensor: name.into(),
            why: "the reference forward pass".into(),
        })?;
        let data = transform::materialize_f32(self.ck, &o.op)?;
        let t = Rc::new(Tensor { shape: o.shape.iter().map(|&d| d as usize).collect(), data });
        self.cache.borrow_mut().insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// Drops every decoded weight (call between layers); a no-op for resident weights.
    pub fn evict(&self) {
        if !self.resident {
            self.cache.borrow_mut().clear();
        }
    }

    /// Resident mode: decode each weight once and keep it (fast repeated forwards, memory ≈
    /// the f32 model). Streaming mode (the default) holds one layer at a time.
    pub fn set_resident(&mut self, resident: bool) {
        self.resident = resident;
    }

    /// Decodes a weight and checks its shape.
    pub fn get_shaped(&self, name: &str, expected: &[usize]) -> Result<Rc<Tensor>> {
        let t = self.get(name)?;
        if t.shape != expected {
            return Err(Error::Shape { tensor: name.into(), found: t.shape.clone(), expected: expected.to_vec() });
        }
        Ok(t)
    }

    /// An optional weight (biases, norms some variants lack).
    pub fn get_opt(&self, name: &str) -> Result<Option<Rc<Tensor>>> {
        if self.has(name) {
            self.get(name).map(Some)
        } else {
            Ok(None)
        }
    }
}
