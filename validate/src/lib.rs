//! recast-validate: the CPU reference inference engine, golden-logit files and accuracy metrics.
//!
//! The engine runs in f32, one readable forward per architecture family (`llama`, `deepseek`),
//! with kernels as free functions (`kernels`, `rope`) and weights decoded lazily from any
//! checkpoint the convert crate reads (`weights`). Golden-logit files (`golden`), logit dumps
//! from other engines (`npy`), accuracy metrics (`metrics`) and reports (`report`) compare a
//! candidate with a reference.
#![forbid(unsafe_code)]

pub mod deepseek;
pub mod engine;
pub mod error;
pub mod golden;
pub mod kernels;
pub mod llama;
pub mod metrics;
pub mod npy;
pub mod report;
pub mod rope;
pub mod weights;

pub use engine::Engine;
pub use error::{Error, Result};
