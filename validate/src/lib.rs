//! recast-validate: the CPU reference inference engine, golden-logit files and accuracy metrics.
//!
//! The engine runs in f32, one readable forward per architecture family (`llama`, `deepseek`),
//! with kernels as free functions (`kernels`, `rope`) and weights decoded lazily from any
//! checkpoint the convert crate reads (`weights`).
#![forbid(unsafe_code)]

pub mod deepseek;
pub mod engine;
pub mod error;
pub mod kernels;
pub mod llama;
pub mod rope;
pub mod weights;

pub use engine::Engine;
pub use error::{Error, Result};
