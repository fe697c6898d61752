//! Every malformed input the readers reject, one named test each, asserting the error variant.

use recast_convert::gguf::{self, Metadata, Value};
use recast_convert::{ByteSource, Checkpoint, Error, GgmlType};
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A safetensors file from a header JSON string and a data length.
fn st_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data_len));
    b
}

fn open_st(header: &str, data_len: usize) -> Result<Checkpoint, Error> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.safetensors", &st_bytes(header, data_len));
    Checkpoint::open(&p)
}

#[test]
fn st_valid_file_opens() {
    let ck = open_st(r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#, 16)
        .unwrap();
    assert_eq!(ck.tensors.len(), 1);
    assert_eq!(ck.st_metadata["format"], "pt");
}

#[test]
fn st_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.safetensors", &[100, 0, 0, 0, 0, 0, 0, 0, b'{']);
    // Sniffed as safetensors (length + '{'), then the header runs past the end.
    assert!(matches!(Checkpoint::open(&p), Err(Error::Truncated { .. })));
    let src = ByteSource::open(write(dir.path(), "short", &[1, 2, 3])).unwrap();
    assert!(matches!(recast_convert::safetensors::read_header(&src, 0), Err(Error::Truncated { .. })));
}

#[test]
fn st_header_length_past_end_of_file() {
    let mut b = st_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 4);
    b[..8].copy_from_slice(&1000u64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.safetensors", &b);
    assert!(matches!(Checkpoint::open(&p), Err(Error::Truncated { .. })));
}

#[test]
fn st_header_too_large() {
    let mut b = st_bytes("{}", 0);
    b[..8].copy_from_slice(&200_000_000u64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let src = ByteSource::open(write(dir.path(), "m.safetensors", &b)).unwrap();
    assert!(matches!(recast_convert::safetensors::read_header(&src, 0), Err(Error::LimitExceeded { .. })));
}

#[test]
fn st_overlapping_offsets() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert!(matches!(open_st(h, 12), Err(Error::BadOffsets { .. })));
}

#[test]
fn st_gap_between_tensors() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    assert!(matches!(open_st(h, 12), Err(Error::BadOffsets { .. })));
}

#[test]
fn st_offsets_out_of_range() {
    let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert!(matches!(open_st(h, 8), Err(Error::BadOffsets { .. })));
}

#[test]
fn st_trailing_bytes() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(open_st(h, 5), Err(Error::BadOffsets { .. })));
}

#[test]
fn st_end_before_begin() {
    let h = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#;
    assert!(matches!(open_st(h, 4), Err(Error::BadOffsets { .. })));
}

#[test]
fn st_dims_product_overflows() {
    let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#;
    assert!(matches!(open_st(h, 4), Err(Error::ShapeOverflow { .. })));
}

#[test]
fn st_byte_count_overflows() {
    let h = r#"{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}}"#;
    assert!(matches!(open_st(h, 4), Err(Error::ShapeOverflow { .. })));
}

#[test]
fn st_size_does_not_match_shape() {
    let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    assert!(matches!(open_st(h, 8), Err(Error::SizeMismatch { .. })));
}

#[test]
fn st_duplicate_tensor_name() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(matches!(open_st(h, 8), Err(Error::DuplicateTensor { .. })));
}

#[test]
fn st_unknown_dtype() {
    let h = r#"{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(open_st(h, 4), Err(Error::UnknownDType { .. })));
}

#[test]
fn st_invalid_json_and_non_string_metadata() {
    assert!(matches!(open_st(r#"{"a":{"dtype":"F32""#, 0), Err(Error::SafetensorsHeader { .. })));
    assert!(matches!(open_st(r#"{"__metadata__":{"format":1}}"#, 0), Err(Error::SafetensorsHeader { .. })));
    assert!(matches!(
        open_st(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#, 4),
        Err(Error::SafetensorsHeader { .. })
    ));
}

// ---- sharded directories ------------------------------------------------------------

fn sharded_dir(index: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model-00001-of-00001.safetensors",
        &st_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 4),
    );
    write(dir.path(), "model.safetensors.index.json", index.as_bytes());
    dir
}

#[test]
fn index_opens_listed_shards() {
    let dir = sharded_dir(r#"{"metadata":{},"weight_map":{"a":"model-00001-of-00001.safetensors"}}"#);
    assert_eq!(Checkpoint::open(dir.path()).unwrap().tensors.len(), 1);
}

#[test]
fn index_points_outside_model_dir() {
    for shard in ["../model-00001-of-00001.safetensors", "/etc/passwd", "sub/x.safetensors"] {
        let dir = sharded_dir(&format!(r#"{{"metadata":{{}},"weight_map":{{"a":"{shard}"}}}}"#));
        assert!(matches!(Checkpoint::open(dir.path()), Err(Error::BadShard { .. })), "{shard}");
    }
}

#[test]
fn index_names_missing_shard() {
    let dir = sharded_dir(r#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors"}}"#);
    assert!(matches!(Checkpoint::open(dir.path()), Err(Error::BadShard { .. })));
}

#[test]
fn index_tensor_absent_from_its_shard() {
    let dir = sharded_dir(r#"{"metadata":{},"weight_map":{"b":"model-00001-of-00001.safetensors"}}"#);
    assert!(matches!(Checkpoint::open(dir.path()), Err(Error::MissingFromShard { .. })));
}

#[test]
fn index_without_weight_map() {
    let dir = sharded_dir(r#"{"metadata":{}}"#);
    assert!(matches!(Checkpoint::open(dir.path()), Err(Error::ShardIndex { .. })));
}

// ---- GGUF ---------------------------------------------------------------------------

/// Raw GGUF builder for crafting bad files.
#[derive(Default)]
struct Raw(Vec<u8>);
impl Raw {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn s(self, s: &str) -> Self {
        let mut r = self.u64(s.len() as u64);
        r.0.extend_from_slice(s.as_bytes());
        r
    }
    fn head(n_tensors: u64, n_kv: u64) -> Self {
        Raw(b"GGUF".to_vec()).u32(3).u64(n_tensors).u64(n_kv)
    }
    /// Tensor info: name, ggml dims (ne order), type, offset.
    fn tensor(self, name: &str, ne: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.s(name).u32(ne.len() as u32);
        for &d in ne {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> Self {
        let pad = (32 - self.0.len() % 32) % 32;
        self.0.extend(std::iter::repeat_n(0u8, pad + n));
        self
    }
}

fn open_gguf(bytes: &[u8]) -> Result<Checkpoint, Error> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.gguf", bytes);
    Checkpoint::open(&p)
}

#[test]
fn gguf_valid_file_opens() {
    let b = Raw::head(1, 1).s("general.architecture").u32(8).s("llama").tensor("t", &[4], 0, 0).data(16);
    let ck = open_gguf(&b.0).unwrap();
    assert_eq!(ck.tensors[0].shape, vec![4]);
}

#[test]
fn gguf_bad_magic() {
    let mut b = Raw::head(0, 0).0;
    b[..4].copy_from_slice(b"GGUG");
    let dir = tempfile::tempdir().unwrap();
    let src = ByteSource::open(write(dir.path(), "m.gguf", &b)).unwrap();
    assert!(matches!(gguf::read_header(&src, 0), Err(Error::GgufMagic { .. })));
}

#[test]
fn gguf_unsupported_version() {
    for v in [0u32, 1, 4, 0x0300_0000] {
        let b = Raw(b"GGUF".to_vec()).u32(v).u64(0).u64(0);
        assert!(matches!(open_gguf(&b.0), Err(Error::GgufVersion { .. })), "version {v}");
    }
}

#[test]
fn gguf_truncated_header() {
    let b = Raw::head(0, 1).s("general.architecture");
    assert!(matches!(open_gguf(&b.0), Err(Error::Truncated { .. })));
}

#[test]
fn gguf_counts_larger_than_file() {
    assert!(matches!(open_gguf(&Raw::head(u64::MAX, 0).0), Err(Error::Truncated { .. })));
    assert!(matches!(open_gguf(&Raw::head(0, 1 << 40).0), Err(Error::Truncated { .. })));
}

#[test]
fn gguf_string_length_past_end() {
    let b = Raw::head(0, 1).u64(1 << 20).u32(0);
    assert!(matches!(open_gguf(&b.0), Err(Error::Truncated { .. })));
    let b = Raw::head(0, 1).u64(1 << 40).u32(0).u64(0);
    assert!(matches!(open_gguf(&b.0), Err(Error::LimitExceeded { .. })));
}

#[test]
fn gguf_array_count_past_end() {
    let b = Raw::head(0, 1).s("k").u32(9).u32(6).u64(1 << 29);
    assert!(matches!(open_gguf(&b.0), Err(Error::Truncated { .. })));
}

#[test]
fn gguf_unknown_value_type() {
    let b = Raw::head(0, 1).s("k").u32(13).u32(0);
    assert!(matches!(open_gguf(&b.0), Err(Error::GgufValueType { .. })));
}

#[test]
fn gguf_nested_array() {
    let b = Raw::head(0, 1).s("k").u32(9).u32(9).u64(0);
    assert!(matches!(open_gguf(&b.0), Err(Error::GgufNestedArray { .. })));
}

#[test]
fn gguf_duplicate_key() {
    let b = Raw::head(0, 2).s("k").u32(4).u32(1).s("k").u32(4).u32(2);
    assert!(matches!(open_gguf(&b.0), Err(Error::DuplicateKey { .. })));
}

#[test]
fn gguf_bad_alignment() {
    let b = Raw::head(0, 1).s("general.alignment").u32(4).u32(24);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadAlignment { .. })));
    let b = Raw::head(0, 1).s("general.alignment").u32(10).u64(32);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadAlignment { .. })));
}

#[test]
fn gguf_duplicate_tensor() {
    let b = Raw::head(2, 0).tensor("t", &[4], 0, 0).tensor("t", &[4], 0, 32).data(64);
    assert!(matches!(open_gguf(&b.0), Err(Error::DuplicateTensor { .. })));
}

#[test]
fn gguf_unknown_ggml_type() {
    let b = Raw::head(1, 0).tensor("t", &[4], 99, 0).data(16);
    assert!(matches!(open_gguf(&b.0), Err(Error::UnknownGgmlType { type_id: 99, .. })));
}

#[test]
fn gguf_removed_ggml_type() {
    let b = Raw::head(1, 0).tensor("t", &[32], 4, 0).data(32);
    assert!(matches!(open_gguf(&b.0), Err(Error::RemovedGgmlType { .. })));
}

#[test]
fn gguf_too_many_dims() {
    let b = Raw::head(1, 0).tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(4);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadTensorInfo { .. })));
}

#[test]
fn gguf_dims_product_overflows() {
    let b = Raw::head(1, 0).tensor("t", &[1 << 32, 1 << 32, 16], 0, 0).data(4);
    assert!(matches!(open_gguf(&b.0), Err(Error::ShapeOverflow { .. })));
}

#[test]
fn gguf_row_not_whole_blocks() {
    let b = Raw::head(1, 0).tensor("t", &[33], GgmlType::Q8_0.0, 0).data(64);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadTensorInfo { .. })));
}

#[test]
fn gguf_offset_out_of_range() {
    let b = Raw::head(1, 0).tensor("t", &[8], 0, 0).data(16);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadOffsets { .. })));
    let b = Raw::head(1, 0).tensor("t", &[4], 0, u64::MAX - 31).data(16);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadOffsets { .. })));
}

#[test]
fn gguf_overlapping_tensors() {
    let b = Raw::head(2, 0).tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32).data(96);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadOffsets { .. })));
}

#[test]
fn gguf_misaligned_offset() {
    let b = Raw::head(1, 0).tensor("t", &[4], 0, 4).data(32);
    assert!(matches!(open_gguf(&b.0), Err(Error::BadOffsets { .. })));
}

#[test]
fn gguf_invalid_utf8_key() {
    let mut b = Raw::head(0, 1).u64(2);
    b.0.extend_from_slice(&[0xFF, 0xFE]);
    let b = b.u32(4).u32(0);
    assert!(matches!(open_gguf(&b.0), Err(Error::GgufUtf8 { .. })));
}

#[test]
fn unknown_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.bin", b"PK\x03\x04 not a model");
    assert!(matches!(Checkpoint::open(&p), Err(Error::UnknownFormat { .. })));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Checkpoint::open(empty.path()), Err(Error::UnknownFormat { .. })));
}

// ---- configs ------------------------------------------------------------------------

#[test]
fn config_missing_required_field() {
    let v: serde_json::Value = serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4});
    let e = recast_convert::ModelConfig::from_hf_json(Path::new("config.json"), &v).unwrap_err();
    assert!(matches!(e, Error::ConfigKey { ref key, .. } if key == "vocab_size"), "{e}");
}

#[test]
fn config_wrong_type() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("llama/config.json")).unwrap()).unwrap();
    v["num_hidden_layers"] = serde_json::json!("two");
    let e = recast_convert::ModelConfig::from_hf_json(Path::new("config.json"), &v).unwrap_err();
    assert!(matches!(e, Error::ConfigKey { ref key, .. } if key == "num_hidden_layers"));
}

#[test]
fn config_unsupported_architecture() {
    let v = serde_json::json!({"model_type": "gpt_neox"});
    assert!(matches!(
        recast_convert::ModelConfig::from_hf_json(Path::new("config.json"), &v),
        Err(Error::UnsupportedArch { .. })
    ));
}

#[test]
fn gguf_config_missing_key() {
    let mut m = Metadata::new();
    m.set("general.architecture", Value::String("llama".into()));
    m.set("llama.block_count", Value::U32(2));
    let e = recast_convert::ModelConfig::from_gguf(Path::new("m.gguf"), &m, 10, false).unwrap_err();
    assert!(matches!(e, Error::ConfigKey { .. }), "{e}");
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny").join(rel)
}
