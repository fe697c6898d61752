//! recast-validate: the CPU reference inference engine, golden-logit files and accuracy metrics.
//!
//! Work on this crate is tracked in the validate issue.
#![forbid(unsafe_code)]
