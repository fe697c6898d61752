//! Errors of the validate crate.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Convert(#[from] recast_convert::Error),
    #[error("tensor '{tensor}': shape {found:?}, expected {expected:?}")]
    Shape { tensor: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("token id {id} at position {pos} is outside the vocabulary ({vocab} entries)")]
    TokenOutOfRange { id: u32, pos: usize, vocab: usize },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
