//! The CLI's errors and exit codes (SPEC §10): 0 done; 1 the operation failed; 2 bad
//! usage or an invalid definition; 3 the master could not be reached, or refused the
//! credentials or the permission.

use mcp_proto::tonic::{Code, Status};

/// A failure with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: message.into(),
        }
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::Unavailable => {
                CliError::unreachable(format!("the master could not be reached: {message}"))
            }
            Code::Unauthenticated | Code::PermissionDenied => CliError::unreachable(message),
            Code::InvalidArgument => CliError::usage(message),
            Code::Cancelled | Code::Unknown
                if message.contains("transport") || message.contains("connection") =>
            {
                CliError::unreachable(format!("the master could not be reached: {message}"))
            }
            _ => CliError::failed(message),
        }
    }
}
