//! Typed errors for everything the convert crate reads and writes.
//!
//! Each variant names the file, tensor or key involved and what was expected, so the binary
//! can print it as is. Tests match variants, never message text.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The I/O error is in the message, not chained as a `source` (else `{:#}` prints it twice).
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },

    // ---- format detection -------------------------------------------------------------
    #[error("{path}: not a recognised checkpoint (expected a safetensors file, a GGUF file, or a directory with config.json and *.safetensors)")]
    UnknownFormat { path: PathBuf },

    // ---- bounds and structure checks shared by the parsers -----------------------------
    #[error("{path}: file is {len} bytes, too short for {what} (needs {needed} bytes)")]
    Truncated { path: PathBuf, what: String, needed: u64, len: u64 },
    #[error("{path}: {what} is {value}, larger than the limit {limit} ({why})")]
    LimitExceeded { path: PathBuf, what: String, value: u64, limit: u64, why: &'static str },
    #[error("{path}: tensor '{tensor}': shape {shape:?} overflows 64-bit element or byte count")]
    ShapeOverflow { path: PathBuf, tensor: String, shape: Vec<u64> },
    #[error("{path}: duplicate tensor name '{tensor}'")]
    DuplicateTensor { path: PathBuf, tensor: String },
    #[error("{path}: duplicate metadata key '{key}'")]
    DuplicateKey { path: PathBuf, key: String },
    #[error("{path}: tensor '{tensor}': data [{begin}, {end}) {problem}")]
    BadOffsets { path: PathBuf, tensor: String, begin: u64, end: u64, problem: String },

    // ---- safetensors ------------------------------------------------------------------
    #[error("{path}: invalid safetensors header JSON: {detail}")]
    SafetensorsHeader { path: PathBuf, detail: String },
    #[error("{path}: tensor '{tensor}': unknown dtype '{dtype}' (expected one of {expected})")]
    UnknownDType { path: PathBuf, tensor: String, dtype: String, expected: String },
    #[error(
        "{path}: tensor '{tensor}': {nbytes} data bytes do not match shape {shape:?} of {dtype} (expected {expected})"
    )]
    SizeMismatch { path: PathBuf, tensor: String, shape: Vec<u64>, dtype: String, nbytes: u64, expected: u64 },
    #[error("{path}: invalid shard index: {detail}")]
    ShardIndex { path: PathBuf, detail: String },
    #[error("{path}: shard '{shard}' named in the index for tensor '{tensor}' {problem}")]
    BadShard { path: PathBuf, shard: String, tensor: String, problem: &'static str },
    #[error("{path}: tensor '{tensor}' is listed in the index for shard '{shard}' but that shard does not contain it")]
    MissingFromShard { path: PathBuf, tensor: String, shard: String },

    // ---- GGUF -------------------------------------------------------------------------
    #[error("{path}: bad GGUF magic {found:?} (expected \"GGUF\")")]
    GgufMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    GgufVersion { path: PathBuf, version: u32 },
    #[error("{path}: metadata key '{key}': unknown value type id {type_id}")]
    GgufValueType { path: PathBuf, key: String, type_id: u32 },
    #[error("{path}: metadata key '{key}': nested arrays are not allowed")]
    GgufNestedArray { path: PathBuf, key: String },
    #[error("{path}: metadata key '{key}' is not valid UTF-8")]
    GgufUtf8 { path: PathBuf, key: String },
    #[error("{path}: tensor '{tensor}': unknown ggml type id {type_id} (this build knows ids 0..{known})")]
    UnknownGgmlType { path: PathBuf, tensor: String, type_id: u32, known: usize },
    #[error("{path}: tensor '{tensor}': ggml type {ggml_type} cannot be stored in a file (removed from ggml)")]
    RemovedGgmlType { path: PathBuf, tensor: String, ggml_type: String },
    #[error("{path}: tensor '{tensor}': {detail}")]
    BadTensorInfo { path: PathBuf, tensor: String, detail: String },
    #[error("{path}: general.alignment must be a non-zero power of two of type UINT32, found {found}")]
    BadAlignment { path: PathBuf, found: String },

    // ---- tensor data ------------------------------------------------------------------
    #[error("tensor '{tensor}': cannot decode {from} to float (not a floating or supported quantized type)")]
    NotDecodable { tensor: String, from: String },
    #[error("tensor '{tensor}': {detail}")]
    TensorData { tensor: String, detail: String },

    // ---- model configs and conversion ---------------------------------------------------
    #[error("{path}: invalid JSON: {detail}")]
    Json { path: PathBuf, detail: String },
    #[error("{path}: key '{key}': {expected}")]
    ConfigKey { path: PathBuf, key: String, expected: String },
    #[error("{path}: unsupported architecture '{found}' (supported: {supported})")]
    UnsupportedArch { path: PathBuf, found: String, supported: String },
    #[error("tensor '{tensor}': {detail}")]
    UnmappedTensor { tensor: String, detail: String },
    #[error("tensor '{tensor}': {detail}")]
    QuantLayout { tensor: String, detail: String },
    #[error(
        "tensor '{tensor}': {dtype} {shape:?} is not part of a quantized layout recast understands ({understood}); \
         refusing to read raw integer/FP8 codes as weights"
    )]
    UnrecognizedQuantized { tensor: String, dtype: String, shape: Vec<u64>, understood: &'static str },
    #[error("missing tensor '{tensor}' (needed for {why})")]
    MissingTensor { tensor: String, why: String },
    #[error("tokenizer: {detail}")]
    Tokenizer { detail: String },
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
}
