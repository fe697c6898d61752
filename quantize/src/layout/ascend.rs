//! Huawei msModelSlim's layout as MindIE and vllm-ascend read it (formats.md §7):
//! `quant_model_weights.safetensors` (+ index when sharded), `quant_model_description.json`
//! naming every tensor's type, config.json without `quantization_config`.

use serde_json::{Map, Value as Json};

/// Weights file stem (`quant_model_weights.safetensors`, `quant_model_weights-00001-of-…`).
pub const STEM: &str = "quant_model_weights";
pub const DESCRIPTION_FILE: &str = "quant_model_description.json";

/// msModelSlim's type string of a quantized weight.
pub fn type_name(bits: u8, dynamic_activations: bool) -> &'static str {
    match (bits, dynamic_activations) {
        (8, true) => "W8A8_DYNAMIC",
        (8, false) => "W8A16",
        _ => "W4A16",
    }
}

/// `model_quant_type`: with a mixture, the type of highest priority (msModelSlim's order).
fn priority(t: &str) -> u32 {
    match t {
        "FLOAT" => 0,
        "W16A16S" => 1,
        "W8A16" => 2,
        "W8A8_DYNAMIC" => 3,
        "W4A16" => 4,
        _ => 5,
    }
}

/// The description: every written tensor → its type, plus the global keys.
pub fn description(tensors: &[(String, &'static str)], group_size: u64) -> Json {
    let mut obj = Map::new();
    let overall = tensors.iter().map(|(_, t)| *t).max_by_key(|t| priority(t)).unwrap_or("FLOAT");
    obj.insert("model_quant_type".into(), Json::from(overall));
    obj.insert("version".into(), Json::from("1.0.0"));
    obj.insert("group_size".into(), Json::from(group_size));
    obj.insert("metadata".into(), Json::Object(Map::new()));
    obj.insert("optional".into(), Json::Object(Map::new()));
    for (name, t) in tensors {
        obj.insert(name.clone(), Json::from(*t));
    }
    Json::Object(obj)
}
