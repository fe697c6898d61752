//! Differential test of the ggml block dequantizers against golden fixtures.
//!
//! The fixtures in `tests/fixtures/ggml/` were produced by `gen_dequant_fixtures.py` with
//! gguf-py's independent numpy dequantizers (versions in `manifest.json`): for each type,
//! `<stem>.bin` holds whole blocks (random and edge cases) and `<stem>.f32` the expected
//! little-endian f32 elements. Equality is bit-for-bit (so +0.0 ≠ −0.0), except that any NaN
//! equals any NaN: NaN payloads are not part of ggml's contract.

use recast_convert::ggml_dequant::{can_dequantize, dequantize};
use recast_convert::ggml_type::{GgmlType, GGML_TYPES};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

const REGENERATE: &str = "python tests/fixtures/ggml/gen_dequant_fixtures.py (pinned versions in \
                          its header and in manifest.json)";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ggml")
}

/// One type's fixture: raw blocks and the reference's elements.
struct Fixture {
    ty: GgmlType,
    blocks: Vec<u8>,
    expected: Vec<f32>,
    labels: Vec<String>,
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; regenerate: {REGENERATE}", path.display()))
}

fn load(entry: &Value) -> Fixture {
    let name = entry["type"].as_str().expect("manifest type");
    let stem = entry["stem"].as_str().expect("manifest stem");
    let ty = GgmlType::from_name(name).unwrap_or_else(|| panic!("unknown ggml type {name}"));
    let expected =
        read(&format!("{stem}.f32")).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let labels = match entry["block_labels"].as_array() {
        Some(l) => l.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        None => Vec::new(),
    };
    Fixture { ty, blocks: read(&format!("{stem}.bin")), expected, labels }
}

fn fixtures() -> Vec<Fixture> {
    let manifest: Value = serde_json::from_slice(&read("manifest.json")).expect("manifest JSON");
    manifest["types"].as_array().expect("manifest types").iter().map(load).collect()
}

/// Bit equality, with every NaN equal to every NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn every_type_matches_the_reference_bit_for_bit() {
    for f in fixtures() {
        let mut got = vec![f32::from_bits(0x7FC0_DEAD); f.expected.len()];
        dequantize(f.ty, &f.blocks, &mut got);
        let bad: Vec<usize> = (0..got.len()).filter(|&i| !same(got[i], f.expected[i])).collect();
        if let Some(&i) = bad.first() {
            let block = i / f.ty.block_size() as usize;
            let label = f.labels.get(block).map_or("", String::as_str);
            panic!(
                "{}: {} of {} elements differ; first is element {i} (block {block} {label}): \
                 got {:e} ({:#010x}), want {:e} ({:#010x}). If the reference changed, \
                 regenerate: {REGENERATE}",
                f.ty,
                bad.len(),
                got.len(),
                got[i],
                got[i].to_bits(),
                f.expected[i],
                f.expected[i].to_bits(),
            );
        }
    }
}

#[test]
fn fixtures_cover_exactly_the_supported_types() {
    let fixture_ids: BTreeSet<u32> = fixtures().iter().map(|f| f.ty.0).collect();
    let supported: BTreeSet<u32> = GGML_TYPES.iter().map(|t| t.id).filter(|&id| can_dequantize(GgmlType(id))).collect();
    assert_eq!(fixture_ids, supported, "type ids with fixtures vs. supported type ids");
}

#[test]
fn quantized_fixtures_hold_the_edge_blocks() {
    let edges = ["all_zero", "max_codes", "min_codes", "subnormal_scales", "inf_nan_scales"];
    for f in fixtures().iter().filter(|f| f.ty.is_quantized()) {
        for edge in edges {
            assert!(f.labels.iter().any(|l| l == edge), "{}: no {edge} block", f.ty);
        }
        assert_eq!(f.labels.len() * f.ty.type_size() as usize, f.blocks.len(), "{}", f.ty);
    }
}
