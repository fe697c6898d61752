//! Differential tests of the ggml encoders against golden fixtures, plus round-trip properties.
//!
//! `tests/fixtures/ggml_quant/` (made by `gen.py` there; versions in `manifest.json` and its
//! README) holds seeded f32 cases with one importance vector each, and for every case, type and
//! path ("ref": no imatrix; "imatrix") the bytes of ggml's own quantizers compiled with
//! `-ffp-contract=off`. Every output must match byte for byte. The manifest also records how
//! gguf-py (legacy types, ref path) and llama-cpp-python's default-build libggml compared with
//! those bytes; where they differed, their bytes are stored too and compared with ours here.

use proptest::prelude::*;
use recast_convert::ggml_dequant::dequantize;
use recast_convert::GgmlType;
use recast_quantize::codec::ggml::{can_encode, quantize, quantize_serial};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

const REGENERATE: &str = "python tests/fixtures/ggml_quant/gen.py --llamacpp <sdist>/vendor/llama.cpp \
                          (see tests/fixtures/ggml_quant/README.md)";

const TYPES: [GgmlType; 10] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ggml_quant")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; regenerate: {REGENERATE}", path.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

struct Case {
    nrows: usize,
    n_per_row: usize,
    x: Vec<f32>,
    imatrix: Vec<f32>,
}

struct Fixtures {
    manifest: Value,
    cases: BTreeMap<String, Case>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Fixtures {
    fn load() -> Fixtures {
        let manifest: Value = serde_json::from_slice(&read("manifest.json")).expect("manifest JSON");
        let (inputs, imatrix) = (read("inputs.f32"), read("imatrix.f32"));
        let mut cases = BTreeMap::new();
        for c in manifest["cases"].as_array().expect("cases") {
            let (nrows, n) = (c["nrows"].as_u64().unwrap() as usize, c["n_per_row"].as_u64().unwrap() as usize);
            let (xo, wo) =
                (c["input_offset"].as_u64().unwrap() as usize, c["imatrix_offset"].as_u64().unwrap() as usize);
            let case = Case {
                nrows,
                n_per_row: n,
                x: f32s(&inputs[xo..xo + 4 * nrows * n]),
                imatrix: f32s(&imatrix[wo..wo + 4 * n]),
            };
            cases.insert(c["name"].as_str().unwrap().to_owned(), case);
        }
        Fixtures { manifest, cases, files: BTreeMap::new() }
    }

    /// The bytes a manifest record (`{file, offset, len}`) points at.
    fn bytes(&mut self, rec: &Value) -> Vec<u8> {
        let file = rec["file"].as_str().expect("file").to_owned();
        let blob = self.files.entry(file.clone()).or_insert_with(|| read(&file));
        let (off, len) = (rec["offset"].as_u64().unwrap() as usize, rec["len"].as_u64().unwrap() as usize);
        blob[off..off + len].to_vec()
    }

    fn outputs(&self) -> Vec<Value> {
        self.manifest["outputs"].as_array().expect("outputs").clone()
    }
}

fn encode(ty: GgmlType, case: &Case, path: &str) -> Vec<u8> {
    let imatrix = match path {
        "ref" => None,
        "imatrix" => Some(case.imatrix.as_slice()),
        p => panic!("unknown path {p}"),
    };
    let bytes = ty.nbytes(case.n_per_row as u64, case.nrows as u64).unwrap() as usize;
    let (mut out, mut baseline) = (vec![0u8; bytes], vec![0u8; bytes]);
    quantize(ty, &case.x, case.n_per_row, imatrix, &mut out);
    // The baseline build (no SIMD dispatch, serial) must give the same bytes.
    quantize_serial(ty, &case.x, case.n_per_row, imatrix, &mut baseline);
    assert!(out == baseline, "{ty} {path}: baseline and dispatched builds differ");
    out
}

fn differing_blocks(a: &[u8], b: &[u8], size: usize) -> usize {
    assert_eq!(a.len(), b.len());
    a.chunks(size).zip(b.chunks(size)).filter(|(x, y)| x != y).count()
}

/// Every fixture output, every type, both paths: byte-identical to the no-contraction harness.
#[test]
fn matches_ggml_no_contraction_build_byte_for_byte() {
    let mut fx = Fixtures::load();
    let mut failures = Vec::new();
    let mut seen: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for rec in fx.outputs() {
        let ty = GgmlType::from_name(rec["type"].as_str().unwrap()).unwrap();
        let (case_name, path) = (rec["case"].as_str().unwrap(), rec["path"].as_str().unwrap());
        let expected = fx.bytes(&rec);
        assert_eq!(hex(&Sha256::digest(&expected)), rec["sha256"].as_str().unwrap(), "fixture corrupt; {REGENERATE}");
        let got = encode(ty, &fx.cases[case_name], path);
        let bad = differing_blocks(&got, &expected, ty.type_size() as usize);
        let e = seen.entry((ty.name().to_owned(), path.to_owned())).or_default();
        e.0 += 1;
        e.1 += got.len() / ty.type_size() as usize;
        if bad > 0 {
            let first = got.iter().zip(&expected).position(|(a, b)| a != b).unwrap();
            failures.push(format!("{ty} {path} {case_name}: {bad} blocks differ (first byte {first})"));
        }
    }
    for ty in TYPES {
        for path in ["ref", "imatrix"] {
            let (cases, blocks) = seen.get(&(ty.name().to_owned(), path.to_owned())).copied().unwrap_or_default();
            assert!(cases >= 10 && blocks > 0, "{ty} {path}: only {cases} fixture cases");
            println!("{ty:5} {path:8} {cases:3} cases {blocks:4} blocks identical");
        }
    }
    assert!(failures.is_empty(), "{} outputs differ:\n{}", failures.len(), failures.join("\n"));
}

/// Legacy types also equal gguf-py's numpy quantizers (recorded per output by gen.py; bytes
/// stored where gguf-py differed, which then must not equal ours either way silently).
#[test]
fn legacy_types_match_gguf_py() {
    let mut fx = Fixtures::load();
    let mut total = 0;
    for rec in fx.outputs() {
        let Some(g) = rec.get("gguf_py") else { continue };
        let ty = GgmlType::from_name(rec["type"].as_str().unwrap()).unwrap();
        let got = encode(ty, &fx.cases[rec["case"].as_str().unwrap()], "ref");
        let reference = if g["differing_blocks"].as_u64().unwrap() == 0 { fx.bytes(&rec) } else { fx.bytes(g) };
        let bad = differing_blocks(&got, &reference, ty.type_size() as usize);
        assert_eq!(bad, 0, "{ty} {}: {bad} blocks differ from gguf-py", rec["case"]);
        total += got.len() / ty.type_size() as usize;
    }
    assert!(total > 0, "no gguf-py records in the manifest");
    println!("{total} legacy blocks identical to gguf-py 0.17.1");
}

/// Counts how many blocks of llama-cpp-python's default build (prebuilt libggml-base, default
/// flags) equal ours. Informational: never fails on a default-build mismatch.
#[test]
fn default_build_agreement_report() {
    let mut fx = Fixtures::load();
    let mut per_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for rec in fx.outputs() {
        let Some(d) = rec.get("default_build") else { continue };
        let ty = GgmlType::from_name(rec["type"].as_str().unwrap()).unwrap();
        let got = encode(ty, &fx.cases[rec["case"].as_str().unwrap()], rec["path"].as_str().unwrap());
        let reference = if d["differing_blocks"].as_u64().unwrap() == 0 { fx.bytes(&rec) } else { fx.bytes(d) };
        let size = ty.type_size() as usize;
        let blocks = got.len() / size;
        let e = per_type.entry(format!("{ty} {}", rec["path"].as_str().unwrap())).or_default();
        e.0 += blocks - differing_blocks(&got, &reference, size);
        e.1 += blocks;
    }
    for (k, (same, all)) in &per_type {
        println!("default build {k:13}: {same}/{all} blocks identical");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn encodes_exactly_the_ten_types() {
    for ty in TYPES {
        assert!(can_encode(ty), "{ty}");
    }
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::IQ4_NL, GgmlType::MXFP4, GgmlType(15)] {
        assert!(!can_encode(ty), "{ty}");
    }
}

#[test]
fn all_zero_input_gives_zero_blocks_on_both_paths() {
    for ty in TYPES {
        let n = 512;
        let x = vec![0.0f32; 2 * n];
        let w = vec![1.0f32; n];
        for imatrix in [None, Some(w.as_slice())] {
            let mut out = vec![0xAAu8; ty.nbytes(n as u64, 2).unwrap() as usize];
            quantize(ty, &x, n, imatrix, &mut out);
            let mut back = vec![1.0f32; 2 * n];
            dequantize(ty, &out, &mut back);
            assert!(back.iter().all(|&v| v == 0.0), "{ty}");
        }
    }
}

#[test]
#[should_panic(expected = "not whole blocks")]
fn rejects_partial_blocks() {
    let mut out = vec![0u8; 144];
    quantize(GgmlType::Q4_K, &[0.0; 128], 128, None, &mut out);
}

#[test]
#[should_panic(expected = "dst must hold")]
fn rejects_wrong_dst_length() {
    let mut out = vec![0u8; 33];
    quantize(GgmlType::Q8_0, &[0.0; 32], 32, None, &mut out);
}

/// Worst-case round-trip error bound of `ty` for a block whose values lie in [−amax, amax],
/// relative to amax (generous: the searches may trade range for fit, and scales are fp16/6-bit).
/// The property test keeps amax ≥ ~0.01 so fp16 scales stay (nearly) normal; tiny and subnormal
/// values are covered exactly by the fixtures instead.
fn error_bound(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::Q8_0 => 1.0 / 127.0,
        GgmlType::Q5_0 | GgmlType::Q5_1 => 1.0 / 15.0,
        GgmlType::Q4_0 | GgmlType::Q4_1 => 1.0 / 7.0,
        GgmlType::Q6_K => 1.0 / 15.0,
        GgmlType::Q5_K => 1.0 / 7.0,
        GgmlType::Q4_K => 1.0 / 3.5,
        GgmlType::Q3_K => 1.0 / 1.5,
        GgmlType::Q2_K => 1.1,
        _ => unreachable!(),
    }
}

fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<f32>, f32)> {
    (0usize..10, 1usize..4, 1usize..3, -2i32..4).prop_flat_map(|(ti, nrows, nblk, exp)| {
        let ty = TYPES[ti];
        let n = nblk * if ty.block_size() == 32 { 64 } else { 256 };
        let scale = 10f32.powi(exp);
        (
            Just(ti),
            Just(n),
            prop::collection::vec(-1.0f32..1.0, nrows * n),
            prop::collection::vec(0.1f32..4.0, n),
            Just(scale),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// decode(encode(x)) stays within the type's error bound, per block, on both paths; and the
    /// parallel encoder writes the serial encoder's bytes.
    #[test]
    fn round_trip_and_parallel_equals_serial((ti, n, x, w, scale) in matrix()) {
        let ty = TYPES[ti];
        let x: Vec<f32> = x.iter().map(|v| v * scale).collect();
        let nrows = x.len() / n;
        let bytes = ty.nbytes(n as u64, nrows as u64).unwrap() as usize;
        for imatrix in [None, Some(w.as_slice())] {
            let (mut par, mut ser) = (vec![0u8; bytes], vec![0u8; bytes]);
            quantize(ty, &x, n, imatrix, &mut par);
            quantize_serial(ty, &x, n, imatrix, &mut ser);
            prop_assert_eq!(&par, &ser);
            let mut back = vec![0.0f32; x.len()];
            dequantize(ty, &par, &mut back);
            let qk = ty.block_size() as usize;
            // Weighted fits may clip a low-weight extreme: allow twice the bound there.
            let bound = error_bound(ty) * if imatrix.is_some() { 2.0 } else { 1.0 };
            for (xb, bb) in x.chunks(qk).zip(back.chunks(qk)) {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = xb.iter().zip(bb).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                prop_assert!(err <= bound * amax,
                    "{} imatrix={}: err {} > bound {} (amax {})", ty, imatrix.is_some(), err, bound * amax, amax);
            }
        }
    }
}

/// Many rows through rayon vs serial (enough rows for several tasks).
#[test]
fn parallel_equals_serial_on_many_rows() {
    let n = 4096;
    let nrows = 48;
    let mut s = 0x9E3779B97F4A7C15u64;
    let x: Vec<f32> = (0..n * nrows)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32).collect();
    for ty in TYPES {
        for imatrix in [None, Some(w.as_slice())] {
            let bytes = ty.nbytes(n as u64, nrows as u64).unwrap() as usize;
            let (mut par, mut ser) = (vec![0u8; bytes], vec![0u8; bytes]);
            quantize(ty, &x, n, imatrix, &mut par);
            quantize_serial(ty, &x, n, imatrix, &mut ser);
            assert!(par == ser, "{ty}");
        }
    }
}

/// Throughput of the serial and parallel encoders (run with `--release -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let (n, nrows) = (4096, 256);
    let mut s = 0x2545F4914F6CDD1Du64;
    let x: Vec<f32> = (0..n * nrows)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05
        })
        .collect();
    let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32).collect();
    for ty in TYPES {
        for imatrix in [None, Some(w.as_slice())] {
            let mut out = vec![0u8; ty.nbytes(n as u64, nrows as u64).unwrap() as usize];
            let t = std::time::Instant::now();
            quantize_serial(ty, &x, n, imatrix, &mut out);
            let serial = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            quantize(ty, &x, n, imatrix, &mut out);
            let par = t.elapsed().as_secs_f64();
            let melems = (n * nrows) as f64 / 1e6;
            println!(
                "{ty:5} imatrix={:5}: serial {:7.1} Melem/s, parallel {:7.1} Melem/s",
                imatrix.is_some(),
                melems / serial,
                melems / par
            );
        }
    }
}

/// The fused encoder gives `quantize`'s bytes, its per-task results in order, and refuses
/// non-finite input with the first bad index across tasks.
#[test]
fn quantize_then_matches_quantize_and_finds_the_first_non_finite() {
    use recast_quantize::codec::ggml::quantize_then;
    let (n, rows) = (256usize, 600usize); // 256 rows per task: 3 tasks
    let x: Vec<f32> = (0..n * rows).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 300.0).collect();
    for ty in [GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::Q4_K] {
        let bytes = ty.nbytes(n as u64, rows as u64).unwrap() as usize;
        let (mut a, mut b) = (vec![0u8; bytes], vec![0u8; bytes]);
        quantize(ty, &x, n, None, &mut a);
        let lens = quantize_then(ty, &x, n, &mut b, |s, d| (s.len(), d.len())).unwrap();
        assert!(a == b, "{ty}");
        assert_eq!(lens.iter().map(|l| l.0).collect::<Vec<_>>(), [65536, 65536, 22528]);
        let mut bad = x.clone();
        bad[150_000] = f32::INFINITY;
        bad[70_000] = f32::NAN;
        bad[140_000] = f32::NEG_INFINITY;
        let (i, v) = quantize_then(ty, &bad, n, &mut b, |_, _| ()).unwrap_err();
        assert!(i == 70_000 && v.is_nan(), "{ty}: {i} {v}");
    }
}
