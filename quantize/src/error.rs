//! The crate's error type: every variant names the file, recipe line or tensor involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Convert(#[from] recast_convert::Error),
    /// A recipe that does not parse or does not validate. `detail` carries serde's line/column.
    #[error("recipe {recipe}: {detail}")]
    Recipe { recipe: String, detail: String },
    /// The recipe asks for something the target hardware or runtime cannot run.
    #[error("recipe {recipe}: target {target} cannot run {what}: {why}")]
    Capability { recipe: String, target: String, what: String, why: String },
    /// A tensor the recipe cannot be applied to as written.
    #[error("tensor {tensor}: {detail}")]
    Tensor { tensor: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn recipe(recipe: &str, detail: impl Into<String>) -> Self {
        Error::Recipe { recipe: recipe.to_string(), detail: detail.into() }
    }
    pub fn tensor(tensor: &str, detail: impl Into<String>) -> Self {
        Error::Tensor { tensor: tensor.to_string(), detail: detail.into() }
    }
}
