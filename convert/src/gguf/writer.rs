//! GGUF v3 writer: plan the whole file, then stream tensor data one tensor at a time.
//!
//! The plan fixes tensor order, offsets and the serialized header before a byte is written,
//! so `--dry-run` can show it and the data pass needs only one tensor in memory. Layout rules
//! are ggml's (`gguf.cpp`): tensor offsets sequential in info order, each tensor padded to
//! ALIGNMENT (the last one too), data section starting at align(end of infos).
//!
//! Why not the `gguf-rs` crate's writer: see `docs/gguf-writer.md`.

use super::reader::{align, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::{Array, Metadata, Value};
use crate::atomic::{AtomicFile, Committed, Sink};
use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;
use crate::tensor::Storage;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// ggml's `GGML_MAX_NAME`: names must be shorter than this.
pub const MAX_NAME_LEN: usize = 64;

/// One tensor's place in a planned GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// Row-major shape (the writer reverses it into ggml `ne`).
    pub shape: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the data section.
    pub offset: u64,
    pub nbytes: u64,
}

/// A complete GGUF file layout.
#[derive(Debug)]
pub struct GgufPlan {
    pub metadata: Metadata,
    pub tensors: Vec<PlannedTensor>,
    pub alignment: u64,
    /// Serialized magic, counts, metadata and tensor infos (without padding).
    header: Vec<u8>,
}

impl GgufPlan {
    /// Plans a file holding `tensors` (name, row-major shape, type) in the given order.
    pub fn new(metadata: Metadata, tensors: Vec<(String, Vec<u64>, GgmlType)>) -> Result<Self> {
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as u64,
            Some(v) => return Err(Error::BadAlignment { path: PathBuf::from("<output>"), found: v.to_string() }),
        };
        let mut names = HashSet::new();
        let mut planned = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for (name, shape, ggml_type) in tensors {
            check_tensor(&name, &shape, ggml_type, &mut names)?;
            let nbytes = Storage::from_ggml(ggml_type).nbytes(&shape).ok_or_else(|| Error::UnmappedTensor {
                tensor: name.clone(),
                detail: format!("shape {shape:?} does not fit {ggml_type} blocks of {}", ggml_type.block_size()),
            })?;
            planned.push(PlannedTensor { name, shape, ggml_type, offset, nbytes });
            offset += align(nbytes, alignment);
        }
        let header = serialize_header(&metadata, &planned);
        Ok(GgufPlan { metadata, tensors: planned, alignment, header })
    }

    /// Absolute offset of the data section.
    pub fn data_start(&self) -> u64 {
        align(self.header.len() as u64, self.alignment)
    }

    /// Total file size.
    pub fn file_size(&self) -> u64 {
        self.data_start() + self.tensors.iter().map(|t| align(t.nbytes, self.alignment)).sum::<u64>()
    }
}

fn check_tensor(name: &str, shape: &[u64], t: GgmlType, names: &mut HashSet<String>) -> Result<()> {
    let bad = |detail: String| Err(Error::UnmappedTensor { tensor: name.to_string(), detail });
    if name.len() >= MAX_NAME_LEN {
        return bad(format!("name is {} bytes; GGUF tensor names must be shorter than {MAX_NAME_LEN}", name.len()));
    }
    if shape.is_empty() || shape.len() > 4 {
        return bad(format!("{} dimensions; GGUF tensors have 1 to 4", shape.len()));
    }
    if !t.is_storable() {
        return bad(format!("{t} cannot be stored in a GGUF file"));
    }
    if !names.insert(name.to_string()) {
        return bad("duplicate tensor name".into());
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_scalar(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        _ => (0..a.len()).for_each(|i| put_scalar(out, &a.get(i).unwrap())),
    }
}

/// A value's on-disk encoding (without its type id): for an array, the element type, the
/// count, then the elements.
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_scalar(&mut out, v);
    out
}

fn serialize_header(metadata: &Metadata, tensors: &[PlannedTensor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(GGUF_MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata.iter() {
        put_str(&mut out, key);
        out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        put_scalar(&mut out, value);
    }
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.0.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out
}

/// Writes `plan` to `path` atomically. `produce(i, tensor, sink)` streams tensor `i`'s bytes
/// into `sink` (in as many pieces as it likes); the total is checked against the plan.
pub fn write<F>(path: &Path, plan: &GgufPlan, produce: F) -> Result<()>
where
    F: FnMut(usize, &PlannedTensor, &mut Sink) -> Result<()>,
{
    write_to(AtomicFile::create(path)?, plan, produce).map(|_| ())
}

/// [`write`], also returning the file's size and sha256 (computed while writing).
pub fn write_hashed<F>(path: &Path, plan: &GgufPlan, produce: F) -> Result<Committed>
where
    F: FnMut(usize, &PlannedTensor, &mut Sink) -> Result<()>,
{
    write_to(AtomicFile::create_hashed(path)?, plan, produce)
}

fn write_to<F>(mut file: AtomicFile, plan: &GgufPlan, mut produce: F) -> Result<Committed>
where
    F: FnMut(usize, &PlannedTensor, &mut Sink) -> Result<()>,
{
    file.write_all(&plan.header)?;
    file.write_zeros(plan.data_start() - plan.header.len() as u64)?;
    for (i, t) in plan.tensors.iter().enumerate() {
        let mut sink = Sink::new(&mut file);
        produce(i, t, &mut sink)?;
        sink.check_total(&t.name, t.nbytes, &format!("{} {:?}", t.ggml_type, t.shape))?;
        file.write_zeros(align(t.nbytes, plan.alignment) - t.nbytes)?;
    }
    debug_assert_eq!(file.position(), plan.file_size());
    file.commit()
}
