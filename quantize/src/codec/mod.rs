//! Number formats: pure functions over slices. Every fast (parallel) path has a scalar twin and
//! a test that both give identical bytes.

pub mod fp8;
pub mod ggml;
pub mod int;
pub mod pack;
pub mod stats;
