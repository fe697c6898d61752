//! safetensors: single files and sharded directories (`model.safetensors.index.json`).

pub mod header;
pub mod writer;

use crate::error::{Error, Result};
use crate::source::ByteSource;
use crate::tensor::TensorInfo;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

pub use header::{read_header, StHeader};
pub use writer::{SafetensorsPlan, INDEX_FILE, SINGLE_FILE};

/// Tensors of one or more safetensors files.
#[derive(Debug)]
pub struct StFiles {
    pub sources: Vec<ByteSource>,
    pub tensors: Vec<TensorInfo>,
    /// `__metadata__` of the first file.
    pub metadata: BTreeMap<String, String>,
}

/// Opens one safetensors file.
pub fn open_file(path: &Path) -> Result<StFiles> {
    let src = ByteSource::open(path)?;
    let h = read_header(&src, 0)?;
    Ok(StFiles { sources: vec![src], tensors: h.tensors, metadata: h.metadata })
}

/// Opens a model directory: through its index if present; else `model.safetensors` if present
/// (directories often hold other safetensors files beside it, e.g. Mistral's
/// `consolidated.safetensors`); else every `*.safetensors` file, sorted by name (a tensor in two
/// files is an error).
pub fn open_dir(dir: &Path) -> Result<StFiles> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        return open_indexed(dir, &index);
    }
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return open_file(&single);
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::UnknownFormat { path: dir.to_path_buf() });
    }
    let mut out = StFiles { sources: Vec::new(), tensors: Vec::new(), metadata: BTreeMap::new() };
    let mut seen = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let src = ByteSource::open(f)?;
        let h = read_header(&src, i)?;
        if i == 0 {
            out.metadata = h.metadata;
        }
        for t in h.tensors {
            if seen.insert(t.name.clone(), i).is_some() {
                return Err(Error::DuplicateTensor { path: f.clone(), tensor: t.name });
            }
            out.tensors.push(t);
        }
        out.sources.push(src);
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct IndexFile {
    #[serde(default)]
    weight_map: Option<BTreeMap<String, String>>,
}

/// A shard name must be a plain file name inside the model directory.
fn is_plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    let mut comps = p.components();
    matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None))
}

fn open_indexed(dir: &Path, index: &Path) -> Result<StFiles> {
    let text = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let parsed: IndexFile = serde_json::from_slice(&text)
        .map_err(|e| Error::ShardIndex { path: index.to_path_buf(), detail: e.to_string() })?;
    let weight_map = parsed
        .weight_map
        .ok_or_else(|| Error::ShardIndex { path: index.to_path_buf(), detail: "no \"weight_map\" object".into() })?;
    // shard file name -> tensors the index places there
    let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in &weight_map {
        if !is_plain_file_name(shard) {
            return Err(Error::BadShard {
                path: index.to_path_buf(),
                shard: shard.clone(),
                tensor: tensor.clone(),
                problem: "is not a plain file name inside the model directory",
            });
        }
        by_shard.entry(shard).or_default().push(tensor);
    }
    let mut out = StFiles { sources: Vec::new(), tensors: Vec::new(), metadata: BTreeMap::new() };
    for (i, (shard, wanted)) in by_shard.into_iter().enumerate() {
        let path = dir.join(shard);
        if !path.is_file() {
            return Err(Error::BadShard {
                path: index.to_path_buf(),
                shard: shard.into(),
                tensor: wanted[0].into(),
                problem: "does not exist",
            });
        }
        let src = ByteSource::open(&path)?;
        let h = read_header(&src, i)?;
        if i == 0 {
            out.metadata = h.metadata;
        }
        let mut present: HashMap<String, TensorInfo> = h.tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut shard_tensors = Vec::with_capacity(wanted.len());
        for name in wanted {
            let t = present.remove(name).ok_or_else(|| Error::MissingFromShard {
                path: index.to_path_buf(),
                tensor: name.into(),
                shard: shard.into(),
            })?;
            shard_tensors.push(t);
        }
        shard_tensors.sort_by_key(|t| t.offset);
        out.tensors.extend(shard_tensors);
        out.sources.push(src);
    }
    Ok(out)
}
