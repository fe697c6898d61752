//! recast-quantize: numeric codecs as pure functions over slices, recipes and output layouts.
//!
//! `codec` holds the number formats (ggml blocks and k-quants, FP8, integer), each a pure
//! function over slices with a scalar reference twin. `recipe` turns YAML into a checked
//! per-tensor plan; `hardware` is the capability table it is checked against; `layout` names,
//! shapes and encodes the tensors each runtime loads; `job` plans and runs `recast quantize`,
//! reading and writing through recast-convert's readers and atomic writers (this crate opens
//! no file of its own except to hash what it wrote).
#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod hardware;
pub mod job;
pub mod layout;
pub mod lowrank;
pub mod lowrank_kv;
pub mod recipe;

pub use error::{Error, Result};
pub use recipe::Recipe;
