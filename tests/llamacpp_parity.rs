//! Differential test: `recast convert HF → GGUF` against llama.cpp's own `convert_hf_to_gguf.py`
//! on the same tiny checkpoints. The reference manifests (every metadata key with its GGUF type
//! and value, every tensor with its type, dims and a sha256 of its bytes) were produced by
//! tests/fixtures/llamacpp/gen_llamacpp_manifests.py from the llama-cpp-python 0.3.36 sdist.

use recast_convert::gguf::{writer::encode_value, Value};
use recast_convert::Checkpoint;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Keys llama.cpp fills from model-card heuristics (a prettified directory name, a parameter
/// count label); recast writes the directory name and no size label. Nothing else may differ.
const HEURISTIC_KEYS: &[&str] = &["general.name", "general.size_label", "general.basename", "general.finetune"];

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn convert(arch: &str, outtype: &str, out: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(arch);
    let st = Command::new(env!("CARGO_BIN_EXE_recast"))
        .args(["convert", fixture.to_str().unwrap(), "-o", out.to_str().unwrap(), "--dtype", outtype])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

/// Compares one scalar or array value with the manifest's record of it.
fn same_value(ours: &Value, theirs: &Json) -> bool {
    match ours {
        Value::Array(_) => theirs["raw_sha256"].as_str() == Some(&hex(&encode_value(ours)[12..])),
        Value::String(s) => theirs.as_str() == Some(s),
        Value::Bool(b) => theirs.as_bool() == Some(*b),
        Value::F32(x) => theirs.as_f64().map(|t| t as f32) == Some(*x),
        Value::F64(x) => theirs.as_f64() == Some(*x),
        v => v.as_int().map(|i| i as i64) == theirs.as_i64(),
    }
}

fn check(arch: &str, outtype: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llamacpp");
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{arch}.{outtype}.json"))).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    convert(arch, outtype, &out);
    let ck = Checkpoint::open(&out).unwrap();
    let meta = &ck.gguf.as_ref().unwrap().metadata;
    let mut diffs = Vec::new();

    // metadata: same keys (but the heuristic ones), same types, same values
    let mut theirs: BTreeMap<&str, &Json> = BTreeMap::new();
    for m in manifest["metadata"].as_array().unwrap() {
        theirs.insert(m["key"].as_str().unwrap(), m); // later duplicates win, as in llama.cpp
    }
    for (key, m) in &theirs {
        if HEURISTIC_KEYS.contains(key) {
            continue;
        }
        match meta.get(key) {
            None => diffs.push(format!("{arch}.{outtype}: missing key {key} ({} {})", m["type"], m["value"])),
            Some(v) if v.type_label() != m["type"].as_str().unwrap() => {
                diffs.push(format!("{arch}.{outtype}: {key} is {} (llama.cpp: {})", v.type_label(), m["type"]))
            }
            Some(v) if !same_value(v, &m["value"]) => {
                diffs.push(format!("{arch}.{outtype}: {key} = {v} (llama.cpp: {})", m["value"]))
            }
            _ => {}
        }
    }
    for (key, v) in meta.iter() {
        if !theirs.contains_key(key) && !HEURISTIC_KEYS.contains(&key) {
            diffs.push(format!("{arch}.{outtype}: extra key {key} = {v}"));
        }
    }

    // tensors: same names, types, ggml dims and bytes
    let tensors = manifest["tensors"].as_array().unwrap();
    if tensors.len() != ck.tensors.len() {
        diffs.push(format!("{arch}.{outtype}: {} tensors (llama.cpp: {})", ck.tensors.len(), tensors.len()));
    }
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let Some(ours) = ck.get(name) else {
            diffs.push(format!("{arch}.{outtype}: missing tensor {name}"));
            continue;
        };
        let ne: Vec<u64> = ours.shape.iter().rev().copied().collect();
        let want_ne: Vec<u64> = t["ne"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        if ours.storage.name() != t["ggml_type"].as_str().unwrap() || ne != want_ne {
            diffs.push(format!(
                "{arch}.{outtype}: {name} is {} {ne:?} (llama.cpp: {} {want_ne:?})",
                ours.storage, t["ggml_type"]
            ));
        } else if hex(ck.bytes(ours)) != t["sha256"].as_str().unwrap() {
            diffs.push(format!("{arch}.{outtype}: {name} bytes differ"));
        }
    }
    diffs
}

#[test]
fn gguf_matches_llama_cpp_converter() {
    let mut diffs = Vec::new();
    for arch in ["llama", "mistral", "qwen2", "qwen3", "smollm", "deepseek_v3", "deepseek_v2"] {
        for outtype in ["f32", "f16"] {
            diffs.extend(check(arch, outtype));
        }
    }
    assert!(diffs.is_empty(), "{} differences from llama.cpp's converter:\n{}", diffs.len(), diffs.join("\n"));
}
