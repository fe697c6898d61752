//! Quantized HF layouts read back as float, compared bit for bit with the reference
//! decompression: compressed-tensors' own (`decompress` of the saved tensors, compressed-tensors
//! 0.20.0) and, for msModelSlim, numpy following formats.md §7. Fixtures and the script that
//! made them: tests/fixtures/quantized_layouts/.

use recast_convert::job::{self, Options, OutFormat};
use recast_convert::mapping::{self, OutTensor};
use recast_convert::transform::{self, Op};
use recast_convert::{Checkpoint, DType, Error, Storage};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quantized_layouts")
}

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny").join(name)
}

fn f32s(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let mut v = Vec::new();
    ck.read_f32(ck.get(name).unwrap(), &mut v).unwrap();
    v
}

fn materialize(ck: &Checkpoint, o: &OutTensor, dtype: DType) -> Vec<u8> {
    let mut b = Vec::new();
    transform::materialize(ck, &o.op, dtype, &mut b).unwrap();
    b
}

const QUANT_PARAMS: &[&str] = &[
    "weight_scale",
    "weight_zero_point",
    "weight_packed",
    "weight_shape",
    "weight_offset",
    "input_scale",
    "input_offset",
    "deq_scale",
    "quant_bias",
    "kv_cache_scale",
    "kv_cache_offset",
];

/// Checks a plan of `dir` against its `expected.safetensors`: every expected weight bit-exact
/// as f32 (and, for 16-bit models, as bytes of the model dtype); no quantization parameter is
/// an output; unquantized tensors are copied. Returns the number of weights compared.
fn check_dir(dir: &Path, expected: &Path) -> usize {
    let ck = Checkpoint::open(dir).unwrap();
    let want = Checkpoint::open(expected).unwrap();
    let plan = mapping::hf_to_hf(&ck, DType::F32, (128, 128)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for o in &plan {
        let suffix = o.name.rsplit('.').next().unwrap();
        assert!(!QUANT_PARAMS.contains(&suffix), "{}: {} is a quantization parameter", dir.display(), o.name);
        if want.get(&o.name).is_none() {
            assert!(matches!(o.op, Op::Copy(_)), "{}: {} should be copied", dir.display(), o.name);
        }
    }
    for w in &want.tensors {
        let o = plan.iter().find(|o| o.name == w.name).unwrap_or_else(|| panic!("{}: no {}", dir.display(), w.name));
        assert!(matches!(o.op, Op::Dequant(_)), "{}", w.name);
        assert_eq!(o.shape, w.shape, "{}: {}", dir.display(), w.name);
        assert_eq!(o.dtype, DType::F32);
        let got: Vec<u32> = materialize(&ck, o, DType::F32)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let exp: Vec<u32> = f32s(&want, &w.name).iter().map(|v| v.to_bits()).collect();
        let bad = got.iter().zip(&exp).position(|(a, b)| a != b);
        assert!(bad.is_none(), "{}: {} differs at {bad:?} (f32)", dir.display(), w.name);
        if let Storage::Dense(d @ (DType::BF16 | DType::F16)) = w.storage {
            assert!(materialize(&ck, o, d) == want.bytes(w), "{}: {} differs ({d})", dir.display(), w.name);
        }
    }
    want.tensors.len()
}

/// FP8 tensor/channel/block (float-quantized), int8 channel sym/asym (int-quantized), int4
/// groups of 32 sym/asym, int4 channel asym, int3 channel asym and int8 W8A16
/// (pack-quantized), in BF16, F32 and some F16 models.
#[test]
fn compressed_tensors_matches_the_library() {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures().join("ct")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    assert_eq!(dirs.len(), 22);
    let compared: usize = dirs.iter().map(|d| check_dir(d, &d.join("expected.safetensors"))).sum();
    assert_eq!(compared, 44);
}

/// W8A8_DYNAMIC (per channel, symmetric), W8A16 (groups of 32, asymmetric), W4A16 per channel
/// (packed along k) and per group (packed along n), W8A8 static with weight_scale/offset; the
/// activation parameters and C8 KV-cache scales are not outputs.
#[test]
fn modelslim_matches_its_formula() {
    // Beside the directory: msModelSlim directories are read as every *.safetensors in them.
    assert_eq!(check_dir(&fixtures().join("ms/full"), &fixtures().join("ms/full_expected.safetensors")), 5);
}

#[test]
fn modelslim_static_w8a8_without_weight_scale_is_an_error() {
    let ck = Checkpoint::open(fixtures().join("ms/w8a8_no_weight_scale")).unwrap();
    let err = mapping::hf_to_hf(&ck, DType::F32, (128, 128)).unwrap_err();
    assert!(matches!(&err, Error::Unsupported(m) if m.contains("model.layers.0.mlp.down_proj.weight")), "{err}");
}

/// A model directory in a tempdir: `config` and a safetensors file of (name, dtype, shape).
fn model_dir(config: &str, tensors: &[(&str, &str, &[u64])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let mut header = serde_json::Map::new();
    let mut off = 0u64;
    for (name, dtype, shape) in tensors {
        let size = DType::from_name(dtype).unwrap().size().unwrap() as u64;
        let n = shape.iter().product::<u64>() * size;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let h = serde_json::to_string(&header).unwrap();
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h.as_bytes());
    b.extend(std::iter::repeat_n(0u8, off as usize));
    std::fs::write(dir.path().join("model.safetensors"), b).unwrap();
    dir
}

#[test]
fn unrecognized_integer_and_fp8_weights_are_an_error() {
    for (name, dtype, shape) in [
        ("model.layers.0.mlp.up_proj.weight", "I8", &[4u64, 8][..]),
        ("model.layers.0.mlp.up_proj.qweight", "I32", &[1, 8]),
        ("model.layers.0.mlp.up_proj.weight", "F8_E4M3", &[4, 8]),
        ("model.layers.0.mlp.up_proj.weight", "I64", &[4, 8]),
    ] {
        let dir = model_dir("{}", &[("model.norm.weight", "F32", &[8]), (name, dtype, shape)]);
        let ck = Checkpoint::open(dir.path()).unwrap();
        match mapping::hf_to_hf(&ck, DType::F32, (128, 128)) {
            Err(Error::UnrecognizedQuantized { tensor, .. }) => assert_eq!(tensor, name),
            other => panic!("{name} {dtype}: {other:?}"),
        }
        let e = mapping::hf_to_hf(&ck, DType::F32, (128, 128)).unwrap_err().to_string();
        assert!(e.contains("compressed-tensors") && e.contains("msModelSlim"), "{e}");
    }
    // 2-D I64 buffers that are not weights (position_ids) and 1-D integers still pass.
    let dir =
        model_dir("{}", &[("position_ids", "I64", &[1, 8]), ("model.layers.0.mlp.up_proj.weight_shape", "I64", &[2])]);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(mapping::hf_to_hf(&ck, DType::F32, (128, 128)).unwrap().len(), 2);
}

#[test]
fn compressed_tensors_layout_errors_name_the_tensor() {
    let cfg = |w: &str, fmt: &str| {
        format!(
            r#"{{"quantization_config": {{"quant_method": "compressed-tensors", "format": "{fmt}",
            "config_groups": {{"group_0": {{"targets": ["Linear"], "weights": {w}}}}}}}}}"#
        )
    };
    let int4 = r#"{"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", "group_size": 32}"#;
    // Scale with the wrong number of groups.
    let dir = model_dir(
        &cfg(int4, "pack-quantized"),
        &[("l.weight_packed", "I32", &[4, 8]), ("l.weight_scale", "BF16", &[4, 3]), ("l.weight_shape", "I64", &[2])],
    );
    std::fs::write(dir.path().join("model.safetensors"), {
        let mut b = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let n = b.len();
        b[n - 16..n - 8].copy_from_slice(&4i64.to_le_bytes());
        b[n - 8..].copy_from_slice(&64i64.to_le_bytes());
        b
    })
    .unwrap();
    let ck = Checkpoint::open(dir.path()).unwrap();
    match mapping::hf_to_hf(&ck, DType::F32, (128, 128)) {
        Err(Error::QuantLayout { tensor, detail }) => {
            assert_eq!(tensor, "l.weight_packed");
            assert!(detail.contains("group_0"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Packed codes without weight_shape.
    let dir = model_dir(
        &cfg(int4, "pack-quantized"),
        &[("l.weight_packed", "I32", &[4, 8]), ("l.weight_scale", "BF16", &[4, 2])],
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert!(matches!(mapping::hf_to_hf(&ck, DType::F32, (128, 128)),
        Err(Error::MissingTensor { tensor, .. }) if tensor == "l.weight_shape"));
    // Formats recast does not read.
    let dir = model_dir(&cfg(int4, "nvfp4-pack-quantized"), &[("l.weight_packed", "U8", &[4, 8])]);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert!(matches!(mapping::hf_to_hf(&ck, DType::F32, (128, 128)),
        Err(Error::ConfigKey { key, .. }) if key == "quantization_config.format"));
    // Negative weight_shape, and a weight_shape larger than the packed codes can hold.
    for (r, c) in [(-1i64, 64i64), (4, 65)] {
        let dir = model_dir(
            &cfg(int4, "pack-quantized"),
            &[
                ("l.weight_packed", "I32", &[4, 8]),
                ("l.weight_scale", "BF16", &[4, 2]),
                ("l.weight_shape", "I64", &[2]),
            ],
        );
        let p = dir.path().join("model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 16..n - 8].copy_from_slice(&r.to_le_bytes());
        b[n - 8..].copy_from_slice(&c.to_le_bytes());
        std::fs::write(&p, b).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert!(matches!(mapping::hf_to_hf(&ck, DType::F32, (128, 128)), Err(Error::QuantLayout { .. })), "{r} {c}");
    }
}

const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"];

/// The quantized SmolLM fixture with the tiny model's tokenizer files, in a tempdir.
fn smollm_ct() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("smollm_ct");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    for f in TOKENIZER_FILES {
        std::fs::copy(tiny("smollm").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn convert(src: &Path, out: &Path, to: OutFormat, dtype: DType) {
    let ck = Checkpoint::open(src).unwrap();
    let plan = job::plan(&ck, out, &Options { to, dtype: Some(dtype), max_shard_size: None }).unwrap();
    job::execute(&ck, &plan, &mut |_, _| {}).unwrap();
}

/// `recast convert` of a complete compressed-tensors model (SmolLM: attention FP8 per channel,
/// MLP int4 groups of 32 asymmetric, mixed-precision): safetensors equal to the library's
/// decompression in f32 and bf16; GGUF identical to converting that dense model.
#[test]
fn smollm_compressed_tensors_converts_end_to_end() {
    let src = smollm_ct();
    let want = Checkpoint::open(fixtures().join("smollm_ct/expected.safetensors")).unwrap();
    assert_eq!(want.tensors.len(), 14);
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let out = tmp.path().join(dtype.name());
        convert(src.path(), &out, OutFormat::Safetensors, dtype);
        let got = Checkpoint::open(&out).unwrap();
        assert_eq!(got.tensors.len(), 2 * 9 + 2);
        for w in &want.tensors {
            let g = got.get(&w.name).unwrap();
            assert_eq!((&g.shape, g.storage), (&w.shape, Storage::Dense(dtype)));
            let same = if dtype == DType::BF16 {
                got.bytes(g) == want.bytes(w)
            } else {
                f32s(&got, &w.name).iter().map(|v| v.to_bits()).eq(f32s(&want, &w.name).iter().map(|v| v.to_bits()))
            };
            assert!(same, "{dtype}: {} differs from compressed-tensors' decompression", w.name);
        }
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert!(cfg.get("quantization_config").is_none());
    }
    // GGUF straight from the quantized model (Q/K rows permuted while dequantizing) equals
    // GGUF from the dense bf16 model.
    let dense = tmp.path().join("BF16");
    for f in TOKENIZER_FILES {
        std::fs::copy(tiny("smollm").join(f), dense.join(f)).ok();
    }
    let (a, b) = (tmp.path().join("q.gguf"), tmp.path().join("dense.gguf"));
    convert(src.path(), &a, OutFormat::Gguf, DType::BF16);
    convert(&dense, &b, OutFormat::Gguf, DType::BF16);
    assert_eq!(same_tensors(&a, &b, |_| true), 2 * 9 + 2);
}

/// Both files hold the same tensors (names, storage, shapes, and bytes of those `compare`
/// selects); returns how many were compared.
fn same_tensors(a: &Path, b: &Path, compare: impl Fn(&str) -> bool) -> usize {
    let (a, b) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    let mut n = 0;
    for t in b.tensors.iter().filter(|t| compare(&t.name)) {
        n += 1;
        let u = a.get(&t.name).unwrap_or_else(|| panic!("no {}", t.name));
        assert_eq!((u.storage, &u.shape), (t.storage, &t.shape), "{}", t.name);
        assert!(a.bytes(u) == b.bytes(t), "{}", t.name);
    }
    n
}

/// DeepSeek FP8 → GGUF equals FP8 → dense bf16 → GGUF: the `kv_b_proj` split (attn_k_b /
/// attn_v_b) reads dequantized values, not raw FP8 codes.
#[test]
fn deepseek_fp8_kv_b_split_is_dequantized() {
    let src = tiny("deepseek_v3_fp8");
    let tmp = tempfile::tempdir().unwrap();
    let dense = tmp.path().join("dense");
    convert(&src, &dense, OutFormat::Safetensors, DType::BF16);
    let (a, b) = (tmp.path().join("fp8.gguf"), tmp.path().join("dense.gguf"));
    convert(&src, &a, OutFormat::Gguf, DType::BF16);
    convert(&dense, &b, OutFormat::Gguf, DType::BF16);
    // (F32 tensors such as exp_probs_b.bias went through bf16 in the dense copy.)
    assert_eq!(same_tensors(&a, &b, |n| n.contains("attn_k_b") || n.contains("attn_v_b")), 6);
}
