//! safetensors header parsing with the reference parser's checks.
//!
//! ```text
//! [0, 8)       u64 LE  N = header length
//! [8, 8+N)     JSON    {"__metadata__": {str: str}?, name: {"dtype", "shape", "data_offsets": [b, e]}, …}
//! [8+N, EOF)   data    tensors back to back, offsets relative to 8+N
//! ```
//! Checks (safetensors `tensor.rs` `read_metadata`/`validate`, formats.md §1.3): N ≤ 100 MB and
//! inside the file; no duplicate keys; every dtype known; element and byte counts computed with
//! overflow checks; tensors sorted by offset start at 0, leave no gaps or overlaps, and end
//! exactly at the end of the file.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::source::ByteSource;
use crate::tensor::{numel, Storage, TensorInfo};
use serde::de::{Deserializer, MapAccess, Visitor};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

/// safetensors' `MAX_HEADER_SIZE`.
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// A parsed single-file header.
#[derive(Debug)]
pub struct StHeader {
    pub metadata: BTreeMap<String, String>,
    /// Tensors in offset order, offsets absolute.
    pub tensors: Vec<TensorInfo>,
}

/// The JSON object as an ordered list of entries, so duplicate keys can be detected
/// (a map would silently keep the last).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

fn header_err(path: &Path, detail: impl Into<String>) -> Error {
    Error::SafetensorsHeader { path: path.to_path_buf(), detail: detail.into() }
}

/// Parses and validates the header of the safetensors file in `src`.
pub fn read_header(src: &ByteSource, source_index: usize) -> Result<StHeader> {
    let path = src.path();
    let n = u64::from_le_bytes(src.slice(0, 8, "safetensors header length")?.try_into().unwrap());
    if n > MAX_HEADER_SIZE {
        return Err(Error::LimitExceeded {
            path: path.to_path_buf(),
            what: "header length".into(),
            value: n,
            limit: MAX_HEADER_SIZE,
            why: "safetensors MAX_HEADER_SIZE",
        });
    }
    let json = src.slice(8, n, "safetensors header")?;
    let entries: Entries = serde_json::from_slice(json).map_err(|e| header_err(path, e.to_string()))?;
    let data_start = 8 + n;
    let mut seen = HashSet::new();
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(if name == "__metadata__" {
                Error::DuplicateKey { path: path.to_path_buf(), key: name }
            } else {
                Error::DuplicateTensor { path: path.to_path_buf(), tensor: name }
            });
        }
        if name == "__metadata__" {
            metadata = serde_json::from_value(value)
                .map_err(|e| header_err(path, format!("__metadata__ must map strings to strings: {e}")))?;
            continue;
        }
        tensors.push(parse_tensor(path, name, value, data_start, source_index)?);
    }
    check_layout(path, &mut tensors, data_start, src.len())?;
    Ok(StHeader { metadata, tensors })
}

fn parse_tensor(
    path: &Path,
    name: String,
    value: serde_json::Value,
    data_start: u64,
    source: usize,
) -> Result<TensorInfo> {
    let raw: RawTensor =
        serde_json::from_value(value).map_err(|e| header_err(path, format!("tensor '{name}': {e}")))?;
    let dtype = DType::from_name(&raw.dtype).ok_or_else(|| Error::UnknownDType {
        path: path.to_path_buf(),
        tensor: name.clone(),
        dtype: raw.dtype.clone(),
        expected: DType::ALL.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
    })?;
    let count = numel(&raw.shape).ok_or_else(|| Error::ShapeOverflow {
        path: path.to_path_buf(),
        tensor: name.clone(),
        shape: raw.shape.clone(),
    })?;
    let expected = dtype.nbytes(count).ok_or_else(|| Error::ShapeOverflow {
        path: path.to_path_buf(),
        tensor: name.clone(),
        shape: raw.shape.clone(),
    })?;
    let (begin, end) = raw.data_offsets;
    if end < begin {
        return Err(Error::BadOffsets {
            path: path.to_path_buf(),
            tensor: name,
            begin,
            end,
            problem: "ends before it begins".into(),
        });
    }
    if end - begin != expected {
        return Err(Error::SizeMismatch {
            path: path.to_path_buf(),
            tensor: name,
            shape: raw.shape,
            dtype: dtype.name().into(),
            nbytes: end - begin,
            expected,
        });
    }
    let offset = data_start.checked_add(begin).ok_or_else(|| Error::BadOffsets {
        path: path.to_path_buf(),
        tensor: name.clone(),
        begin,
        end,
        problem: "overflows the file offset".into(),
    })?;
    Ok(TensorInfo { name, shape: raw.shape, storage: Storage::Dense(dtype), source, offset, nbytes: expected })
}

/// Tensors sorted by offset must tile `[data_start, file_len)` exactly.
fn check_layout(path: &Path, tensors: &mut [TensorInfo], data_start: u64, file_len: u64) -> Result<()> {
    tensors.sort_by(|a, b| a.offset.cmp(&b.offset).then(a.nbytes.cmp(&b.nbytes)));
    let mut cursor = data_start;
    for t in tensors.iter() {
        let (begin, end) = (t.offset - data_start, t.offset - data_start + t.nbytes);
        if t.offset != cursor {
            let problem = if t.offset < cursor {
                "overlaps the previous tensor"
            } else {
                "leaves a gap after the previous tensor"
            };
            return Err(Error::BadOffsets {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                begin,
                end,
                problem: problem.into(),
            });
        }
        cursor = t.offset.checked_add(t.nbytes).ok_or_else(|| Error::BadOffsets {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            begin,
            end,
            problem: "overflows".into(),
        })?;
        if cursor > file_len {
            return Err(Error::BadOffsets {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                begin,
                end,
                problem: format!("runs past the end of the file ({file_len} bytes)"),
            });
        }
    }
    if cursor != file_len {
        return Err(Error::BadOffsets {
            path: path.to_path_buf(),
            tensor: tensors.last().map(|t| t.name.clone()).unwrap_or_default(),
            begin: cursor - data_start,
            end: file_len - data_start,
            problem: "trailing bytes after the last tensor are not covered by the header".into(),
        });
    }
    Ok(())
}
