//! GGUF v2/v3 reader: header, metadata and tensor infos, bounds-checked before allocation.
//!
//! ```text
//! "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//! n_kv × (string key | u32 value_type | value)
//! n_tensors × (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset)
//! zero padding to ALIGNMENT | tensor data (offsets relative to here)
//! ```
//! Every count and length read from the file is checked against the bytes that remain before
//! anything is allocated for it. Caps follow ggml's `gguf.cpp` (strings and arrays ≤ 2^30).

use super::value::{Array, Metadata, Value, ValueType};
use crate::error::{Error, Result};
use crate::ggml_type::{GgmlType, GGML_TYPES};
use crate::source::ByteSource;
use crate::tensor::{numel, Storage, TensorInfo};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGUF_MAX_STRING_LENGTH` and array cap.
const MAX_LEN: u64 = 1 << 30;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// A parsed GGUF header.
#[derive(Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Metadata,
    /// Tensors in file (info) order; shapes row-major; offsets absolute.
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset where the tensor data section starts.
    pub data_start: u64,
}

/// A bounds-checked little-endian cursor over the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                needed: self.pos as u64 + n,
                len: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().unwrap())
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that will drive an allocation of at least `min_each` bytes per item.
    fn count(&mut self, what: &str, min_each: u64, cap: u64, why: &'static str) -> Result<u64> {
        let n = self.u64(what)?;
        if n > cap {
            return Err(self.limit(what, n, cap, why));
        }
        let need = n.saturating_mul(min_each);
        if need > self.remaining() {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{what} ({n} entries)"),
                needed: (self.pos as u64).saturating_add(need),
                len: self.bytes.len() as u64,
            });
        }
        Ok(n)
    }

    fn limit(&self, what: &str, value: u64, limit: u64, why: &'static str) -> Error {
        Error::LimitExceeded { path: self.path.to_path_buf(), what: what.to_string(), value, limit, why }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1, MAX_LEN, "ggml GGUF_MAX_STRING_LENGTH")?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::GgufUtf8 { path: self.path.to_path_buf(), key: what.to_string() })
    }
}

fn path_buf(p: &Path) -> PathBuf {
    p.to_path_buf()
}

/// Reads one scalar of type `t`.
fn read_scalar(c: &mut Cursor, t: ValueType, key: &str) -> Result<Value> {
    Ok(match t {
        ValueType::U8 => Value::U8(c.array::<1>(key)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(key)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(key)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(key)?)),
        ValueType::U32 => Value::U32(c.u32(key)?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(key)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(key)?)),
        ValueType::Bool => Value::Bool(c.array::<1>(key)?[0] != 0),
        ValueType::String => Value::String(c.string(key)?),
        ValueType::U64 => Value::U64(c.u64(key)?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(key)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(key)?)),
        ValueType::Array => unreachable!("arrays are read by read_value"),
    })
}

macro_rules! read_vec {
    ($c:expr, $n:expr, $key:expr, $variant:ident) => {{
        let mut v = Vec::with_capacity($n as usize);
        for _ in 0..$n {
            match read_scalar($c, ValueType::$variant, $key)? {
                Value::$variant(x) => v.push(x),
                _ => unreachable!(),
            }
        }
        Array::$variant(v)
    }};
}

fn read_value(c: &mut Cursor, key: &str) -> Result<Value> {
    let id = c.u32(key)?;
    let t = ValueType::from_id(id).ok_or_else(|| Error::GgufValueType {
        path: path_buf(c.path),
        key: key.into(),
        type_id: id,
    })?;
    if t != ValueType::Array {
        return read_scalar(c, t, key);
    }
    let eid = c.u32(key)?;
    let et = ValueType::from_id(eid).ok_or_else(|| Error::GgufValueType {
        path: path_buf(c.path),
        key: key.into(),
        type_id: eid,
    })?;
    if et == ValueType::Array {
        return Err(Error::GgufNestedArray { path: path_buf(c.path), key: key.into() });
    }
    let n = c.count(key, et.min_size(), MAX_LEN, "ggml caps arrays at 2^30 elements")?;
    Ok(Value::Array(match et {
        ValueType::U8 => read_vec!(c, n, key, U8),
        ValueType::I8 => read_vec!(c, n, key, I8),
        ValueType::U16 => read_vec!(c, n, key, U16),
        ValueType::I16 => read_vec!(c, n, key, I16),
        ValueType::U32 => read_vec!(c, n, key, U32),
        ValueType::I32 => read_vec!(c, n, key, I32),
        ValueType::F32 => read_vec!(c, n, key, F32),
        ValueType::Bool => read_vec!(c, n, key, Bool),
        ValueType::String => read_vec!(c, n, key, String),
        ValueType::U64 => read_vec!(c, n, key, U64),
        ValueType::I64 => read_vec!(c, n, key, I64),
        ValueType::F64 => read_vec!(c, n, key, F64),
        ValueType::Array => unreachable!(),
    }))
}

/// Smallest possible tensor info: empty name (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
const MIN_TENSOR_INFO: u64 = 32;
/// Smallest possible key/value: empty key (8) + type (4) + one byte.
const MIN_KV: u64 = 13;

/// Parses the header of the GGUF file in `src`. `source_index` is recorded in each tensor.
pub fn read_header(src: &ByteSource, source_index: usize) -> Result<GgufHeader> {
    let path = src.path();
    let mut c = Cursor { bytes: src.bytes(), pos: 0, path };
    let magic: [u8; 4] = c.array("GGUF magic")?;
    if &magic != GGUF_MAGIC {
        return Err(Error::GgufMagic { path: path_buf(path), found: magic });
    }
    let version = c.u32("GGUF version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::GgufVersion { path: path_buf(path), version });
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    let mut metadata = Metadata::new();
    let mut seen_keys = HashSet::new();
    check_count(&c, "metadata count", n_kv, MIN_KV)?;
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let value = read_value(&mut c, &key)?;
        if !seen_keys.insert(key.clone()) {
            return Err(Error::DuplicateKey { path: path_buf(path), key });
        }
        metadata.push_unchecked(key, value);
    }
    let alignment = alignment_of(&metadata, path)?;
    check_count(&c, "tensor count", n_tensors, MIN_TENSOR_INFO)?;
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        raw.push(read_tensor_info(&mut c)?);
    }
    let data_start = align(c.pos as u64, alignment);
    let tensors = place_tensors(raw, data_start, alignment, src, source_index)?;
    Ok(GgufHeader { version, metadata, tensors, alignment, data_start })
}

fn check_count(c: &Cursor, what: &str, n: u64, min_each: u64) -> Result<()> {
    if n.saturating_mul(min_each) > c.remaining() {
        return Err(Error::Truncated {
            path: path_buf(c.path),
            what: format!("{what} {n}"),
            needed: (c.pos as u64).saturating_add(n.saturating_mul(min_each)),
            len: c.bytes.len() as u64,
        });
    }
    Ok(())
}

fn alignment_of(metadata: &Metadata, path: &Path) -> Result<u64> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(*a as u64),
        Some(v) => Err(Error::BadAlignment { path: path_buf(path), found: format!("{} {}", v.type_label(), v) }),
    }
}

pub fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

struct RawInfo {
    name: String,
    ne: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn read_tensor_info(c: &mut Cursor) -> Result<RawInfo> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32(&name)?;
    if n_dims > MAX_DIMS {
        return Err(Error::BadTensorInfo {
            path: path_buf(c.path),
            tensor: name,
            detail: format!("{n_dims} dimensions (ggml supports at most {MAX_DIMS})"),
        });
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64(&name)?);
    }
    let type_id = c.u32(&name)?;
    let offset = c.u64(&name)?;
    Ok(RawInfo { name, ne, type_id, offset })
}

/// Validates types, sizes and offsets, and turns ggml dims into row-major shapes.
fn place_tensors(
    raw: Vec<RawInfo>,
    data_start: u64,
    alignment: u64,
    src: &ByteSource,
    index: usize,
) -> Result<Vec<TensorInfo>> {
    let path = src.path();
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        if !names.insert(r.name.clone()) {
            return Err(Error::DuplicateTensor { path: path_buf(path), tensor: r.name });
        }
        let ty = GgmlType::from_id(r.type_id).ok_or_else(|| Error::UnknownGgmlType {
            path: path_buf(path),
            tensor: r.name.clone(),
            type_id: r.type_id,
            known: GGML_TYPES.len(),
        })?;
        if !ty.is_storable() {
            return Err(Error::RemovedGgmlType { path: path_buf(path), tensor: r.name, ggml_type: ty.name().into() });
        }
        let shape: Vec<u64> = r.ne.iter().rev().copied().collect();
        if numel(&shape).is_none_or(|n| n > i64::MAX as u64) {
            return Err(Error::ShapeOverflow { path: path_buf(path), tensor: r.name, shape });
        }
        let storage = Storage::from_ggml(ty);
        let nbytes = storage.nbytes(&shape).ok_or_else(|| Error::BadTensorInfo {
            path: path_buf(path),
            tensor: r.name.clone(),
            detail: format!(
                "row length {} is not a multiple of the {} block size {}",
                shape.last().copied().unwrap_or(1),
                ty,
                ty.block_size()
            ),
        })?;
        if r.offset % alignment != 0 {
            return Err(Error::BadOffsets {
                path: path_buf(path),
                tensor: r.name,
                begin: r.offset,
                end: r.offset.saturating_add(nbytes),
                problem: format!("offset is not a multiple of the alignment {alignment}"),
            });
        }
        let begin = data_start.checked_add(r.offset);
        let end = begin.and_then(|b| b.checked_add(nbytes));
        if end.is_none_or(|e| e > src.len()) {
            return Err(Error::BadOffsets {
                path: path_buf(path),
                tensor: r.name,
                begin: r.offset,
                end: r.offset.saturating_add(nbytes),
                problem: format!("runs past the end of the file ({} bytes, data section at {data_start})", src.len()),
            });
        }
        out.push(TensorInfo { name: r.name, shape, storage, source: index, offset: begin.unwrap(), nbytes });
    }
    check_no_overlap(&out, path)?;
    Ok(out)
}

fn check_no_overlap(tensors: &[TensorInfo], path: &Path) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.nbytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for w in order.windows(2) {
        if w[0].offset + w[0].nbytes > w[1].offset {
            return Err(Error::BadOffsets {
                path: path_buf(path),
                tensor: w[1].name.clone(),
                begin: w[1].offset,
                end: w[1].offset + w[1].nbytes,
                problem: format!("overlaps tensor '{}'", w[0].name),
            });
        }
    }
    Ok(())
}
