//! Any checkpoint recast reads, behind one type: format sniffed from magic bytes, tensors
//! listed with their storage, data borrowed from the mapped files and decoded on demand.

use crate::error::{Error, Result};
use crate::float;
use crate::ggml_dequant;
use crate::gguf::{self, Metadata};
use crate::safetensors;
use crate::source::ByteSource;
use crate::tensor::{Storage, TensorInfo};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The container format of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One safetensors file, or a directory of them (HF layout).
    Safetensors,
    Gguf,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
        }
    }
}

/// GGUF-specific header facts.
#[derive(Debug)]
pub struct GgufInfo {
    pub version: u32,
    pub metadata: Metadata,
    pub alignment: u64,
}

/// An opened checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The path as given.
    pub path: PathBuf,
    pub format: Format,
    /// Directory holding `config.json` and tokenizer files, when there is one.
    pub model_dir: Option<PathBuf>,
    pub sources: Vec<ByteSource>,
    pub tensors: Vec<TensorInfo>,
    /// GGUF header (GGUF only).
    pub gguf: Option<GgufInfo>,
    /// safetensors `__metadata__` of the first file (safetensors only).
    pub st_metadata: BTreeMap<String, String>,
    by_name: HashMap<String, usize>,
}

/// Sniffs the format of a file from its first bytes.
pub fn sniff_file(path: &Path) -> Result<Format> {
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    if n >= 4 && &head[..4] == gguf::reader::GGUF_MAGIC {
        return Ok(Format::Gguf);
    }
    // safetensors: u64 header length, then a JSON object starting with '{' (the format's
    // README requires it; recast does not guess at whitespace-prefixed headers).
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    Err(Error::UnknownFormat { path: path.to_path_buf() })
}

impl Checkpoint {
    /// Opens a safetensors file, a GGUF file, or an HF model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            let st = safetensors::open_dir(path)?;
            return Ok(Self::from_st(path, Some(path.to_path_buf()), st));
        }
        let parent = path.parent().filter(|p| p.join("config.json").is_file()).map(Path::to_path_buf);
        match sniff_file(path)? {
            Format::Safetensors => Ok(Self::from_st(path, parent, safetensors::open_file(path)?)),
            Format::Gguf => {
                let src = ByteSource::open(path)?;
                let h = gguf::read_header(&src, 0)?;
                let gguf = GgufInfo { version: h.version, metadata: h.metadata, alignment: h.alignment };
                Ok(Self::build(path, Format::Gguf, None, vec![src], h.tensors, Some(gguf), BTreeMap::new()))
            }
        }
    }

    fn from_st(path: &Path, model_dir: Option<PathBuf>, st: safetensors::StFiles) -> Checkpoint {
        Self::build(path, Format::Safetensors, model_dir, st.sources, st.tensors, None, st.metadata)
    }

    fn build(
        path: &Path,
        format: Format,
        model_dir: Option<PathBuf>,
        sources: Vec<ByteSource>,
        tensors: Vec<TensorInfo>,
        gguf: Option<GgufInfo>,
        st_metadata: BTreeMap<String, String>,
    ) -> Checkpoint {
        let by_name = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Checkpoint { path: path.to_path_buf(), format, model_dir, sources, tensors, gguf, st_metadata, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Index of the tensor called `name` in [`Checkpoint::tensors`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The tensor, or [`Error::MissingTensor`] saying what it was needed for.
    pub fn require(&self, name: &str, why: &str) -> Result<&TensorInfo> {
        self.get(name).ok_or_else(|| Error::MissingTensor { tensor: name.into(), why: why.into() })
    }

    /// The stored bytes of `t` (bounds were checked when the header was read).
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.sources[t.source].bytes()[t.offset as usize..(t.offset + t.nbytes) as usize]
    }

    /// The `config.json` beside the weights, if any.
    /// The model config of a GGUF checkpoint, from its metadata (the vocabulary size from
    /// `token_embd.weight`, tied embeddings when there is no `output.weight`).
    pub fn gguf_config(&self) -> Result<crate::config::ModelConfig> {
        let info = self.gguf.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("{}: a model config from GGUF metadata needs a GGUF file", self.path.display()))
        })?;
        let embd = self.require("token_embd.weight", "the vocabulary size")?;
        crate::config::ModelConfig::from_gguf(
            &self.path,
            &info.metadata,
            embd.shape[0],
            self.get("output.weight").is_some(),
        )
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        self.model_dir.as_ref().map(|d| d.join("config.json")).filter(|p| p.is_file())
    }

    /// Decodes `t` to f32 into `out` (resized to the element count).
    pub fn read_f32(&self, t: &TensorInfo, out: &mut Vec<f32>) -> Result<()> {
        let n = usize::try_from(t.numel())
            .map_err(|_| Error::TensorData { tensor: t.name.clone(), detail: "too large for this platform".into() })?;
        out.clear();
        out.resize(n, 0.0);
        decode(t, self.bytes(t), out)
    }

    /// Advises the OS that `t`'s pages are no longer needed (streaming passes).
    pub fn release(&self, t: &TensorInfo) {
        self.sources[t.source].release(t.offset, t.nbytes);
    }

    /// Sum of tensor data bytes.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.nbytes).sum()
    }
}

/// Decodes raw tensor bytes of `t`'s storage into `out` (one f32 per element).
pub fn decode(t: &TensorInfo, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    decode_storage(t.storage, &t.name, bytes, out)
}

/// Decodes bytes of `storage` (whole rows or blocks) into `out`; `name` is for errors.
pub fn decode_storage(storage: Storage, name: &str, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    match storage {
        Storage::Dense(d) if float::is_decodable(d) => float::decode_to_f32(d, bytes, out),
        Storage::Ggml(g) if ggml_dequant::can_dequantize(g) => ggml_dequant::dequantize(g, bytes, out),
        s => return Err(Error::NotDecodable { tensor: name.into(), from: s.name().into() }),
    }
    Ok(())
}
