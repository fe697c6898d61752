//! Tensor descriptions shared by every reader and writer.
//!
//! Shapes are always in row-major (PyTorch/NumPy) order, outermost dimension first. GGUF
//! stores dimensions reversed (`ne[0]` innermost); the GGUF reader and writer convert at the
//! boundary so nothing else has to think about it.

use crate::dtype::DType;
use crate::ggml_type::GgmlType;
use std::fmt;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// One element after another, little-endian.
    Dense(DType),
    /// ggml blocks along the innermost dimension (block size > 1).
    Ggml(GgmlType),
}

impl Storage {
    /// The storage for a ggml type id: dense ggml types map to their dtype.
    pub fn from_ggml(t: GgmlType) -> Storage {
        match t.dense() {
            Some(d) => Storage::Dense(d),
            None => Storage::Ggml(t),
        }
    }

    /// The ggml type id that stores this, if any.
    pub fn ggml_type(self) -> Option<GgmlType> {
        match self {
            Storage::Dense(d) => GgmlType::from_dtype(d),
            Storage::Ggml(t) => Some(t),
        }
    }

    /// Bytes of a tensor of this storage and shape; `None` on overflow or a shape that does
    /// not fit the storage (innermost dimension not a whole number of blocks).
    pub fn nbytes(self, shape: &[u64]) -> Option<u64> {
        let numel = numel(shape)?;
        match self {
            Storage::Dense(d) => d.nbytes(numel),
            Storage::Ggml(t) => {
                let ne0 = shape.last().copied().unwrap_or(1);
                let rows = numel.checked_div(ne0).unwrap_or(0);
                t.nbytes(ne0, rows)
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Storage::Dense(d) => d.name(),
            Storage::Ggml(t) => t.name(),
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Product of dimensions with overflow check (1 for a scalar).
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// One tensor in an opened checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<u64>,
    pub storage: Storage,
    /// Index of the byte source (shard) holding the data.
    pub source: usize,
    /// Absolute byte offset of the data in that source.
    pub offset: u64,
    pub nbytes: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        numel(&self.shape).unwrap_or(0)
    }
}
