//! safetensors writer: plan shards and headers, then stream tensor data one tensor at a time.
//!
//! Conventions follow the reference writer (safetensors `prepare`/`serialize`, formats.md
//! §1.4): `__metadata__` first, tensors laid out by descending dtype rank then ascending name,
//! compact JSON padded with spaces to a multiple of 8, nothing after the last tensor. Sharding
//! follows huggingface_hub (§1.6): tensors in state-dict order, a new shard when the next
//! tensor would push the current one past the limit, `model-00001-of-0000N.safetensors` and a
//! `model.safetensors.index.json` with `metadata.total_size` and every tensor listed.

use crate::atomic::{self, AtomicFile, Committed, Sink};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Storage;
use serde_json::{json, Map, Value as Json};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

/// One tensor in a planned shard.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// Position in the caller's tensor list (passed back to the producer).
    pub index: usize,
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Offset relative to the shard's data section.
    pub offset: u64,
    pub nbytes: u64,
}

/// One output file.
#[derive(Debug)]
pub struct ShardPlan {
    pub file_name: String,
    /// Tensors in on-disk order.
    pub tensors: Vec<PlannedTensor>,
    header: Vec<u8>,
}

impl ShardPlan {
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes).sum()
    }
    pub fn file_size(&self) -> u64 {
        self.header.len() as u64 + self.data_bytes()
    }
}

/// A complete safetensors checkpoint layout (one or more shards, optional index).
#[derive(Debug)]
pub struct SafetensorsPlan {
    pub shards: Vec<ShardPlan>,
    /// Sum of tensor data bytes (the index's `metadata.total_size`).
    pub total_size: u64,
    /// File stem: `model` → `model.safetensors`, `model-00001-of-00002.safetensors`,
    /// `model.safetensors.index.json`.
    pub stem: String,
}

impl SafetensorsPlan {
    /// Plans `tensors` (name, dtype, row-major shape), given in state-dict order.
    /// `max_shard_size` in bytes of tensor data; `None` writes a single file.
    pub fn new(
        tensors: Vec<(String, DType, Vec<u64>)>,
        max_shard_size: Option<u64>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::with_layout(tensors, max_shard_size, metadata, "model", true)
    }

    /// As [`new`](Self::new) with file stem `stem`; `sort` lays tensors out as the reference
    /// writer does (descending dtype rank, then name) — without it they stay in the given order
    /// (readers accept any order), so tensors made together are written together.
    pub fn with_layout(
        tensors: Vec<(String, DType, Vec<u64>)>,
        max_shard_size: Option<u64>,
        metadata: &BTreeMap<String, String>,
        stem: &str,
        sort: bool,
    ) -> Result<Self> {
        let mut names = HashSet::new();
        let mut groups: Vec<Vec<PlannedTensor>> = vec![Vec::new()];
        let mut current = 0u64;
        let mut total_size = 0u64;
        for (index, (name, dtype, shape)) in tensors.into_iter().enumerate() {
            if !names.insert(name.clone()) {
                return Err(Error::UnmappedTensor { tensor: name, detail: "duplicate tensor name in output".into() });
            }
            let nbytes = Storage::Dense(dtype).nbytes(&shape).ok_or_else(|| Error::UnmappedTensor {
                tensor: name.clone(),
                detail: format!("shape {shape:?} of {dtype} overflows"),
            })?;
            if let Some(limit) = max_shard_size {
                let last = groups.last().unwrap();
                if !last.is_empty() && current + nbytes > limit {
                    groups.push(Vec::new());
                    current = 0;
                }
            }
            current += nbytes;
            total_size += nbytes;
            groups.last_mut().unwrap().push(PlannedTensor { index, name, dtype, shape, offset: 0, nbytes });
        }
        let n = groups.len();
        let shards = groups
            .into_iter()
            .enumerate()
            .map(|(i, tensors)| {
                let file_name = if n == 1 {
                    format!("{stem}.safetensors")
                } else {
                    format!("{stem}-{:05}-of-{:05}.safetensors", i + 1, n)
                };
                layout_shard(file_name, tensors, metadata, sort)
            })
            .collect();
        Ok(SafetensorsPlan { shards, total_size, stem: stem.to_string() })
    }

    /// The index file's name (`{stem}.safetensors.index.json`).
    pub fn index_name(&self) -> String {
        format!("{}.safetensors.index.json", self.stem)
    }

    /// The `model.safetensors.index.json` contents (for multi-shard plans).
    pub fn index_json(&self) -> Json {
        let mut weight_map = BTreeMap::new();
        for s in &self.shards {
            for t in &s.tensors {
                weight_map.insert(t.name.clone(), s.file_name.clone());
            }
        }
        json!({"metadata": {"total_size": self.total_size}, "weight_map": weight_map})
    }
}

/// Orders a shard's tensors as the reference writer does and serializes its header.
fn layout_shard(
    file_name: String,
    mut tensors: Vec<PlannedTensor>,
    metadata: &BTreeMap<String, String>,
    sort: bool,
) -> ShardPlan {
    if sort {
        tensors.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));
    }
    let mut offset = 0;
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    for t in &mut tensors {
        t.offset = offset;
        offset += t.nbytes;
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [t.offset, offset]}),
        );
    }
    let mut json = serde_json::to_vec(&Json::Object(header)).expect("header serializes");
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    ShardPlan { file_name, tensors, header: bytes }
}

/// Writes one shard atomically; `produce(tensor, sink)` streams each tensor's bytes.
pub fn write_shard<F>(path: &Path, shard: &ShardPlan, produce: F) -> Result<()>
where
    F: FnMut(&PlannedTensor, &mut Sink) -> Result<()>,
{
    shard_to(AtomicFile::create(path)?, shard, produce).map(|_| ())
}

/// [`write_shard`], also returning the file's size and sha256 (computed while writing).
pub fn write_shard_hashed<F>(path: &Path, shard: &ShardPlan, produce: F) -> Result<Committed>
where
    F: FnMut(&PlannedTensor, &mut Sink) -> Result<()>,
{
    shard_to(AtomicFile::create_hashed(path)?, shard, produce)
}

fn shard_to<F>(mut file: AtomicFile, shard: &ShardPlan, mut produce: F) -> Result<Committed>
where
    F: FnMut(&PlannedTensor, &mut Sink) -> Result<()>,
{
    file.write_all(&shard.header)?;
    for t in &shard.tensors {
        let mut sink = Sink::new(&mut file);
        produce(t, &mut sink)?;
        sink.check_total(&t.name, t.nbytes, &format!("{} {:?}", t.dtype, t.shape))?;
    }
    file.commit()
}

/// Writes every shard of `plan` into `dir`, then the index (multi-shard plans only).
pub fn write_all<F>(dir: &Path, plan: &SafetensorsPlan, mut produce: F) -> Result<()>
where
    F: FnMut(&PlannedTensor, &mut Sink) -> Result<()>,
{
    for shard in &plan.shards {
        write_shard(&dir.join(&shard.file_name), shard, &mut produce)?;
    }
    if plan.shards.len() > 1 {
        let mut text = serde_json::to_string_pretty(&plan.index_json()).expect("index serializes");
        text.push('\n');
        atomic::write_file(dir.join(plan.index_name()), text.as_bytes())?;
    }
    Ok(())
}
