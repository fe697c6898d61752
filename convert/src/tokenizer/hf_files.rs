//! The HF model-directory files the tokenizer metadata is built from, read once.
//!
//! `tokenizer.json`, `tokenizer_config.json` and `config.json` are each optional here; the
//! callers decide which absence is an error, as llama.cpp's converter does.

use crate::error::{Error, Result};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

pub(crate) struct HfFiles {
    pub dir: PathBuf,
    pub tokenizer_json: Option<Json>,
    pub tokenizer_config: Option<Json>,
    pub config: Option<Json>,
}

impl HfFiles {
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(HfFiles {
            dir: dir.to_path_buf(),
            tokenizer_json: read_json_opt(&dir.join("tokenizer.json"))?,
            tokenizer_config: read_json_opt(&dir.join("tokenizer_config.json"))?,
            config: read_json_opt(&dir.join("config.json"))?,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `config.json` `architectures[0]`.
    pub fn architecture(&self) -> Option<&str> {
        self.config.as_ref()?.get("architectures")?.as_array()?.first()?.as_str()
    }

    /// A `tokenizer_config.json` entry.
    pub fn config_entry(&self, key: &str) -> Option<&Json> {
        self.tokenizer_config.as_ref()?.get(key)
    }
}

/// Parses a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    let Some(text) = read_text_opt(path)? else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Json { path: path.to_path_buf(), detail: e.to_string() })
}

/// Reads a UTF-8 text file; `Ok(None)` when it does not exist.
pub(crate) fn read_text_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Python truthiness of a JSON value (`if not x:` in the code this mirrors).
pub(crate) fn truthy(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64() != Some(0.0),
        Some(Json::String(s)) => !s.is_empty(),
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(o)) => !o.is_empty(),
    }
}
