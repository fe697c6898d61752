//! compressed-tensors (vLLM, llm-compressor): the `quantization_config` written into
//! config.json (formats.md §5.1). `QuantizationArgs` forbids unknown keys, so every object
//! below carries exactly the library's fields.

use super::Encoding;
use crate::codec::fp8::Granularity;
use crate::codec::int::Group;
use crate::recipe::{Activations, KvCache};
use serde_json::{json, Map, Value as Json};

/// The compressed-tensors release the layout was checked against (written as `version`).
pub const VERSION: &str = "0.20.0";

/// Model- and group-level `format` of an encoding.
pub fn format(enc: &Encoding) -> &'static str {
    match enc {
        Encoding::Fp8 { .. } => "float-quantized",
        Encoding::Int { spec, activations } if super::ct_packed(spec, *activations) => "pack-quantized",
        Encoding::Int { .. } => "int-quantized",
        _ => "dense",
    }
}

fn args(
    num_bits: u8,
    ty: &str,
    symmetric: bool,
    strategy: &str,
    group: Option<usize>,
    block: Option<[usize; 2]>,
    dynamic: bool,
) -> Json {
    json!({
        "num_bits": num_bits,
        "type": ty,
        "symmetric": symmetric,
        "group_size": group,
        "strategy": strategy,
        "block_structure": block,
        "dynamic": dynamic,
        "actorder": null,
        "observer": if dynamic { Json::Null } else { Json::from("minmax") },
        "observer_kwargs": {},
    })
}

/// `weights` and `input_activations` of an encoding.
fn scheme_args(enc: &Encoding) -> (Json, Json) {
    match enc {
        Encoding::Fp8 { granularity, activations, .. } => {
            let (strategy, block) = match granularity {
                Granularity::Tensor => ("tensor", None),
                Granularity::Channel => ("channel", None),
                Granularity::Block { rows, cols } => ("block", Some([*rows, *cols])),
            };
            let w = args(8, "float", true, strategy, None, block, false);
            let a = match (activations, granularity) {
                (Activations::None, _) => Json::Null,
                (_, Granularity::Block { cols, .. }) => args(8, "float", true, "group", Some(*cols), None, true),
                _ => args(8, "float", true, "token", None, None, true),
            };
            (w, a)
        }
        Encoding::Int { spec, activations } => {
            let (strategy, group) = match spec.group {
                Group::Channel => ("channel", None),
                Group::Size(g) => ("group", Some(g)),
            };
            let w = args(spec.bits, "int", spec.symmetric, strategy, group, None, false);
            let a = match activations {
                Activations::None => Json::Null,
                _ => args(8, "int", true, "token", None, None, true),
            };
            (w, a)
        }
        _ => (Json::Null, Json::Null),
    }
}

/// The `quantization_config` object. `groups` are (encoding, module names it applies to);
/// `unquantized_linear` are Linear modules left dense (the `ignore` list).
pub fn quantization_config(
    groups: &[(Encoding, Vec<String>)],
    unquantized_linear: &[String],
    kv: Option<&KvCache>,
) -> Json {
    let single = groups.len() == 1;
    let mut config_groups = Map::new();
    for (i, (enc, modules)) in groups.iter().enumerate() {
        let (w, a) = scheme_args(enc);
        let targets: Vec<String> = if single { vec!["Linear".to_string()] } else { modules.clone() };
        config_groups.insert(
            format!("group_{i}"),
            json!({
                "targets": targets,
                "weights": w,
                "input_activations": a,
                "output_activations": null,
                "format": format(enc),
            }),
        );
    }
    let formats: Vec<&str> = groups.iter().map(|(e, _)| format(e)).collect();
    let model_format = match formats.first() {
        Some(f) if formats.iter().all(|g| g == f) => *f,
        Some(_) => "mixed-precision",
        None => "dense",
    };
    let ignore: Vec<String> = if single { unquantized_linear.to_vec() } else { Vec::new() };
    json!({
        "config_groups": config_groups,
        "format": model_format,
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": kv.map(|_| args(8, "float", true, "tensor", None, None, false)),
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": VERSION,
    })
}
