//! One module per subcommand: parse arguments, call the libraries, format output.

pub mod convert;
pub mod inspect;
