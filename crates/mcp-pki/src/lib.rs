//! MCP's security: the fleet CA and the certificates it issues (nodes, the master,
//! services), join tokens, operator tokens and password hashes, a secret type that
//! never prints, and the rustls configurations the transport uses. One crypto
//! backend: ring. No sockets of its own: listening and dialling are
//! `mcp_proto::transport`'s (the introspection client is the master's).
//!
//! Module layering, with no cycles: `error` ← `cert` ← (`ca`, `tls`) ← `renew`; `tls` also
//! uses `join` for the CA fingerprint.

pub mod ca;
pub mod cert;
pub mod digest;
pub mod error;
pub mod join;
pub mod password;
pub mod renew;
pub mod secret;
pub mod tls;
pub mod token;

pub use error::PkiError;
pub use rustls;
pub use secret::Secret;

/// The DNS name in the master's certificate; agents and the CLI verify it.
pub const MASTER_NAME: &str = "mcp-master";
