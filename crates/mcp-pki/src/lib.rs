//! MCP's security: the fleet CA and the certificates it issues (nodes, the master,
//! services), join tokens, operator tokens and password hashes, a secret type that
//! never prints, and the rustls configurations the transport uses. One crypto
//! backend: ring.

pub mod ca;
pub mod introspect;
pub mod join;
pub mod password;
pub mod secret;
pub mod tls;
pub mod token;

pub use rustls;
pub use secret::Secret;

/// The DNS name in the master's certificate; agents and the CLI verify it.
pub const MASTER_NAME: &str = "mcp-master";
