//! Reference forward for DeepSeek-V2/V3 (MLA + MoE). Being written.

use crate::error::{Error, Result};
use crate::weights::Weights;
use faer::Par;
use recast_convert::ModelConfig;

pub fn forward(_cfg: &ModelConfig, _w: &Weights, _batch: &[Vec<u32>], _par: Par) -> Result<Vec<Vec<f32>>> {
    Err(Error::Unsupported("deepseek forward is not written yet".into()))
}
