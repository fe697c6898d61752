//! recast-convert: checkpoint readers and streaming writers.
//!
//! Boundaries: this crate owns dtypes, byte sources (the only mmap), the safetensors and GGUF
//! formats, DeepSeek's FP8 release layout, compressed-tensors and msModelSlim quantized layouts
//! (read back as float), typed model configs, HF ↔ GGUF name maps and
//! permutations, and tokenizer metadata. It never prints and never exits the process; every
//! failure is an [`Error`] naming the file, tensor or key.

pub mod alloc;
pub mod atomic;
pub mod checkpoint;
pub mod config;
pub mod dtype;
pub mod error;
pub mod failpoint;
pub mod float;
pub mod ggml_dequant;
pub mod ggml_type;
pub mod gguf;
pub mod job;
pub mod mapping;
pub mod quantized;
pub mod safetensors;
pub mod source;
pub mod tensor;
pub mod tokenizer;
pub mod transform;

pub use checkpoint::{Checkpoint, Format};
pub use config::{Arch, ModelConfig};
pub use dtype::DType;
pub use error::{Error, Result};
pub use ggml_type::GgmlType;
pub use source::ByteSource;
pub use tensor::{Storage, TensorInfo};
