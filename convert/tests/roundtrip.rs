//! Property tests: what the writers write, the readers read back unchanged.

use proptest::prelude::*;
use recast_convert::gguf::{self, Array, GgufPlan, Metadata, Value};
use recast_convert::safetensors::SafetensorsPlan;
use recast_convert::{Checkpoint, DType, GgmlType};
use std::collections::BTreeMap;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        prop::collection::vec(".{0,6}", 0..5).prop_map(|v| Value::Array(Array::String(v))),
        prop::collection::vec(any::<i32>(), 0..5).prop_map(|v| Value::Array(Array::I32(v))),
        prop::collection::vec(any::<bool>(), 0..5).prop_map(|v| Value::Array(Array::Bool(v))),
    ]
}

/// (ggml type, row-major shape) pairs whose rows are whole blocks.
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>)> {
    let ty = prop::sample::select(vec![
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType(24),
    ]);
    (ty, prop::collection::vec(1u64..4, 0..3), 1u64..3).prop_map(|(t, mut outer, blocks)| {
        outer.push(blocks * t.block_size() as u64);
        (t, outer)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gguf_write_read(kvs in prop::collection::btree_map("[a-z.]{1,10}", value(), 0..6),
                       tensors in prop::collection::vec(tensor(), 0..5), seed in any::<u8>()) {
        let mut meta = Metadata::new();
        for (k, v) in &kvs { meta.set(k.clone(), v.clone()); }
        let specs: Vec<_> = tensors.iter().enumerate().map(|(i, (t, s))| (format!("t{i}"), s.clone(), *t)).collect();
        let plan = GgufPlan::new(meta.clone(), specs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let fill = |i: usize, n: u64| -> Vec<u8> { (0..n).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)).collect() };
        gguf::writer::write(&path, &plan, |i, t, sink| sink.write(&fill(i, t.nbytes))).unwrap();
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), plan.file_size());
        let ck = Checkpoint::open(&path).unwrap();
        prop_assert_eq!(&ck.gguf.as_ref().unwrap().metadata, &meta);
        prop_assert_eq!(ck.tensors.len(), tensors.len());
        for (i, t) in ck.tensors.iter().enumerate() {
            prop_assert_eq!(&t.shape, &tensors[i].1);
            prop_assert_eq!(t.storage.ggml_type(), Some(tensors[i].0));
            prop_assert_eq!(ck.bytes(t), &fill(i, t.nbytes)[..]);
            prop_assert_eq!(t.offset % 32, 0);
        }
    }

    #[test]
    fn safetensors_write_read(shapes in prop::collection::vec((prop::sample::select(vec![DType::F32, DType::BF16, DType::I64, DType::U8, DType::F8E4M3]), prop::collection::vec(0u64..5, 0..3)), 1..8),
                              shard in prop::option::of(1u64..200)) {
        let specs: Vec<_> = shapes.iter().enumerate().map(|(i, (d, s))| (format!("w.{i}"), *d, s.clone())).collect();
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let plan = SafetensorsPlan::new(specs.clone(), shard, &meta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fill = |i: usize, n: u64| -> Vec<u8> { (0..n).map(|j| (j as u8) ^ (i as u8)).collect() };
        recast_convert::safetensors::writer::write_all(dir.path(), &plan, |t, sink| sink.write(&fill(t.index, t.nbytes))).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        prop_assert_eq!(ck.tensors.len(), specs.len());
        prop_assert_eq!(ck.sources.len(), plan.shards.len());
        prop_assert_eq!(plan.shards.len() > 1, dir.path().join("model.safetensors.index.json").exists());
        for (i, (name, d, s)) in specs.iter().enumerate() {
            let t = ck.get(name).unwrap();
            prop_assert_eq!(&t.shape, s);
            prop_assert_eq!(t.storage, recast_convert::Storage::Dense(*d));
            prop_assert_eq!(ck.bytes(t), &fill(i, t.nbytes)[..]);
        }
        // the header is 8-byte aligned and the file ends exactly after the last tensor
        for s in &plan.shards {
            let len = std::fs::metadata(dir.path().join(&s.file_name)).unwrap().len();
            prop_assert_eq!(len, s.file_size());
        }
    }
}

#[test]
fn safetensors_sharding_follows_hf_rule() {
    // 3 tensors of 40 bytes with a 100-byte limit: [a, b] then [c].
    let specs = ["a", "b", "c"].iter().map(|n| (n.to_string(), DType::F32, vec![10])).collect();
    let plan = SafetensorsPlan::new(specs, Some(100), &BTreeMap::new()).unwrap();
    let names: Vec<Vec<&str>> =
        plan.shards.iter().map(|s| s.tensors.iter().map(|t| t.name.as_str()).collect()).collect();
    assert_eq!(names, vec![vec!["a", "b"], vec!["c"]]);
    assert_eq!(plan.shards[0].file_name, "model-00001-of-00002.safetensors");
    let idx = plan.index_json();
    assert_eq!(idx["metadata"]["total_size"], 120);
    assert_eq!(idx["weight_map"]["c"], "model-00002-of-00002.safetensors");
}

#[test]
fn gguf_reads_like_gguf_py_layout() {
    // gguf-py lists a torch [3, 64] F32 tensor as dims [64, 3]; data starts 32-aligned and the
    // file ends padded (formats.md §2.1). Our writer must produce the same layout rules.
    let plan = GgufPlan::new(
        Metadata::new(),
        vec![("a".into(), vec![3, 64], GgmlType::F32), ("b".into(), vec![5], GgmlType::F32)],
    )
    .unwrap();
    assert_eq!(plan.tensors[1].offset, 768);
    assert_eq!(plan.file_size() % 32, 0);
}

/// A small valid GGUF and safetensors file to mutate.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut meta = Metadata::new();
    meta.set("general.architecture", Value::String("llama".into()));
    meta.set("tokenizer.ggml.tokens", Value::Array(Array::String(vec!["a".into(), "b".into()])));
    let plan =
        GgufPlan::new(meta, vec![("t".into(), vec![2, 32], GgmlType::Q8_0), ("u".into(), vec![3], GgmlType::F32)])
            .unwrap();
    let g = dir.path().join("m.gguf");
    gguf::writer::write(&g, &plan, |_, t, sink| sink.write(&vec![1; t.nbytes as usize])).unwrap();
    let st = SafetensorsPlan::new(
        vec![("w".into(), DType::BF16, vec![2, 3]), ("b".into(), DType::F32, vec![3])],
        None,
        &BTreeMap::new(),
    )
    .unwrap();
    recast_convert::safetensors::writer::write_all(dir.path(), &st, |t, sink| sink.write(&vec![2; t.nbytes as usize]))
        .unwrap();
    vec![
        ("m.gguf", std::fs::read(g).unwrap()),
        ("m.safetensors", std::fs::read(dir.path().join("model.safetensors")).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Untrusted bytes never panic a reader: every mutation of a valid file opens or errors,
    /// and whatever opens can be decoded without panicking.
    #[test]
    fn mutated_files_never_panic(which in 0usize..2, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in prop::option::of(any::<prop::sample::Index>())) {
        let (name, mut bytes) = seeds().swap_remove(which);
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(ck) = Checkpoint::open(&p) {
            let mut out = Vec::new();
            for t in &ck.tensors {
                let _ = ck.read_f32(t, &mut out);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(prefix in prop::sample::select(vec![&b"GGUF"[..], &b""[..]]), body in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let mut bytes = prefix.to_vec();
        bytes.extend(body);
        std::fs::write(&p, &bytes).unwrap();
        let _ = Checkpoint::open(&p);
    }
}
