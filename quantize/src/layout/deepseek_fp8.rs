//! DeepSeek-V3's FP8 release layout (formats.md §4): `X.weight` F8_E4M3 with an F32
//! `X.weight_scale_inv` per `[block_n, block_k]` block (multiplied at load, despite the name),
//! and `quantization_config` in config.json as vLLM's and SGLang's `Fp8Config` read it.

use serde_json::{json, Value as Json};

/// The `quantization_config` object.
pub fn quantization_config(block: [usize; 2]) -> Json {
    json!({
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": block,
    })
}
