//! recast-quantize: numeric codecs as pure functions over slices, recipes and output layouts.
//!
//! No file I/O lives here: the crate takes tensors (and optional calibration statistics) and
//! returns tensors. Work on this crate is tracked in the quantize issue.
#![forbid(unsafe_code)]
