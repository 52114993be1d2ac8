//! The one error type of mcp-pki's certificate code (CA, PEM, TLS configs), so that
//! `ca` and `tls` share it without depending on each other.

use std::path::{Path, PathBuf};

/// What can go wrong with the CA, a certificate or a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{dir} holds no fleet CA: run `mcp-master init --data-dir {dir}` first")]
    NotInitialised { dir: String },
    #[error("{dir} already holds a fleet CA; `mcp-master join-token --data-dir {dir}` prints the join token")]
    AlreadyInitialised { dir: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Maps an I/O error to `PkiError::Io` naming the step and the file.
pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
