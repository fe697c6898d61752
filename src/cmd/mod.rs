//! One module per subcommand: parse arguments, call the libraries, format output.

pub mod calibrate;
pub mod convert;
pub mod golden;
pub mod inspect;
pub mod quantize;
pub mod recipes;
pub mod run;
pub mod validate;
