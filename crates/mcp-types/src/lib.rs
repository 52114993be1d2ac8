//! The vocabulary of MCP service definitions and their validation: the types
//! every other crate speaks, kept pure (no I/O, no async, no clock) so they can
//! be property-tested and fuzzed alone.

pub mod definition;
pub mod duration;
pub mod limits;
pub mod name;
pub mod node;
mod order;
pub mod service;
pub mod size;
mod validate;

pub use definition::{parse_definition, DefinitionError, Problem};
pub use duration::parse_duration;
pub use limits::Limits;
pub use node::{Health, Role};
pub use service::*;
pub use size::ByteSize;
