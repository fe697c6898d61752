//! Recipes: parsing, `extends`, defaults, and the errors a user sees for bad ones.

use recast_quantize::recipe::{LayoutKind, Recipe, Scheme, BUILTIN};
use recast_quantize::Error;

fn err(yaml: &str) -> String {
    match Recipe::from_yaml("test.yaml", yaml) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = "
target: {hardware: nvidia-h100, runtime: vLLM}
layout: compressed-tensors
";

#[test]
fn every_shipped_recipe_loads_and_hashes_stably() {
    for (name, _) in BUILTIN {
        let r = Recipe::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&r.name, name);
        assert_eq!(r.hash(), Recipe::load(name).unwrap().hash());
        assert!(!r.description.is_empty(), "{name} has a description");
    }
}

#[test]
fn unknown_key_names_the_line() {
    let e = err(&format!("{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: fp8, format: e4m3fn, strategy: channel}}\n    colour: blue\n"));
    assert!(e.contains("unknown field `colour`"), "{e}");
    assert!(e.contains("line 7"), "{e}");
}

#[test]
fn unknown_scheme_and_values_are_errors_with_lines() {
    let e = err(&format!("{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: fp6}}\n"));
    assert!(e.contains("unknown variant `fp6`") && e.contains("line 6"), "{e}");
    let e = err(&format!(
        "{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: fp8, format: e4m3, strategy: channel}}\n"
    ));
    assert!(e.contains("unknown variant `e4m3`"), "{e}");
    let e = err(&format!("{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: int, bits: 4, group: 100}}\n"));
    assert!(e.contains("group 100"), "{e}");
    let e = err("target: {hardware: cpu, runtime: llama.cpp}\nlayout: gguf\nrules:\n  - targets: ['*']\n    scheme: {type: ggml, format: Q7_K}\n");
    assert!(e.contains("ggml type `Q7_K`") && e.contains("line 4"), "{e}");
    let e = err(&format!("{BASE}rules:\n  - targets: ['re:(unclosed']\n    scheme: {{type: keep}}\n"));
    assert!(e.contains("re:(unclosed"), "{e}");
}

#[test]
fn missing_target_or_layout() {
    assert!(err("layout: gguf\npreset: Q8_0\n").contains("missing `target`"));
    assert!(err("target: {hardware: cpu, runtime: x}\n").contains("missing `layout`"));
    assert!(err("target: {hardware: tpu-v5, runtime: x}\nlayout: gguf\npreset: Q8_0\n")
        .contains("unknown target hardware `tpu-v5`"));
}

#[test]
fn hardware_capabilities_are_enforced() {
    // FP8 on Ascend 910B.
    let e = err("target: {hardware: ascend-910b, runtime: MindIE}\nlayout: ascend\nrules:\n  - targets: [Linear]\n    scheme: {type: fp8, format: e4m3fn, strategy: channel}\n");
    assert!(e.contains("Ascend 910B has no FP8 units"), "{e}");
    // OCP e4m3fn on MI300.
    let e = err("target: {hardware: amd-mi300, runtime: vLLM}\nlayout: compressed-tensors\nrules:\n  - targets: [Linear]\n    scheme: {type: fp8, format: e4m3fn, strategy: channel}\n");
    assert!(e.contains("e4m3fnuz"), "{e}");
    // A layout the target's runtimes do not load.
    let e = err("target: {hardware: cpu, runtime: llama.cpp}\nlayout: compressed-tensors\nrules:\n  - targets: [Linear]\n    scheme: {type: int, bits: 8, group: channel}\n");
    assert!(e.contains("layout compressed-tensors"), "{e}");
    // Static activations need calibration.
    let e = err(&format!("{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: int, bits: 8, group: channel, activations: static}}\n"));
    assert!(e.contains("calibration"), "{e}");
    // A scheme the layout cannot store.
    let e = err(&format!("{BASE}rules:\n  - targets: [Linear]\n    scheme: {{type: ggml, format: Q4_K}}\n"));
    assert!(e.contains("GGUF type"), "{e}");
    let e = err("target: {hardware: nvidia-h100, runtime: x}\nlayout: deepseek-fp8\nrules:\n  - targets: [Linear]\n    scheme: {type: fp8, format: e4m3fn, strategy: channel}\n");
    assert!(e.contains("block"), "{e}");
}

#[test]
fn extends_overrides_fields_and_puts_child_rules_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("child.yaml"),
        "extends: nvidia-h100-fp8-block\nname: mine\nrules:\n  - targets: ['re:.*down_proj']\n    scheme: {type: keep}\nignore: ['re:.*layers\\.0\\..*']\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("grandchild.yaml"), "extends: child.yaml\nvalidation: {max_kld: 0.5}\n").unwrap();
    let r = Recipe::load(dir.path().join("grandchild.yaml").to_str().unwrap()).unwrap();
    assert_eq!(r.name, "grandchild");
    assert_eq!(r.layout, LayoutKind::CompressedTensors);
    assert_eq!(r.rules.len(), 2);
    assert_eq!(r.rules[0].scheme, Scheme::Keep);
    assert_eq!(r.validation.as_ref().unwrap().max_kld, Some(0.5));
    assert_eq!(r.ignore.len(), 2, "lm_head from the parent and the child's pattern");
    // First match wins: the child's keep rule shadows the parent's FP8 rule for down_proj.
    assert_eq!(r.rule_for("model.layers.3.mlp.down_proj.weight", true).unwrap().0, 0);
    assert_eq!(r.rule_for("model.layers.3.mlp.up_proj.weight", true).unwrap().0, 1);
    assert!(r.rule_for("model.layers.0.mlp.up_proj.weight", true).is_none(), "ignored");
    assert!(r.rule_for("lm_head.weight", true).is_none(), "ignored by the parent");

    std::fs::write(dir.path().join("a.yaml"), "extends: b.yaml\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), "extends: a.yaml\n").unwrap();
    let e = Recipe::load(dir.path().join("a.yaml").to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn unknown_recipe_name_lists_the_shipped_ones() {
    let e = Recipe::load("nvidia-h200-fp4").unwrap_err();
    assert!(matches!(e, Error::Recipe { .. }));
    assert!(e.to_string().contains("cpu-gguf-q4_k_m"), "{e}");
}

#[test]
fn patterns_regex_glob_and_linear() {
    let r = Recipe::from_yaml(
        "t",
        &format!("{BASE}rules:\n  - targets: ['model.layers.*.self_attn.q_proj']\n    scheme: {{type: keep}}\n  - targets: [Linear]\n    scheme: {{type: fp8, format: e4m3fn, strategy: tensor}}\n"),
    )
    .unwrap();
    assert_eq!(r.rule_for("model.layers.12.self_attn.q_proj.weight", true).unwrap().0, 0);
    assert_eq!(r.rule_for("model.layers.12.self_attn.k_proj.weight", true).unwrap().0, 1);
    assert!(r.rule_for("model.norm.weight", false).is_none());
}
