//! GGUF: metadata values, the reader and the planned streaming writer.

pub mod reader;
pub mod value;
pub mod writer;

pub use reader::{read_header, GgufHeader};
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{GgufPlan, PlannedTensor};
