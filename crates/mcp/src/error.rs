//! The CLI's errors and exit codes (SPEC §10): 0 done; 1 the operation failed; 2 bad
//! usage or an invalid definition; 3 the master could not be reached, or refused the
//! credentials or the permission.
//!
//! Every error carries its [`Class`], and the exit code is the class's. A gRPC status
//! gets its class from its code alone, never from its text: the master maps what its
//! agents say into codes that mean the same to the CLI (an agent that does not answer
//! is FailedPrecondition, an operation failure, since the master itself answered).

use mcp_proto::tonic::{Code, Status};

/// What kind of failure, and so the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The operation was tried and failed (exit 1).
    Failed,
    /// Bad usage: flags, arguments, the CLI config (exit 2).
    Usage,
    /// An invalid service definition (exit 2).
    Invalid,
    /// The master could not be reached (exit 3).
    Unreachable,
    /// The master refused the credentials or the permission (exit 3).
    Refused,
}

impl Class {
    pub fn code(self) -> u8 {
        match self {
            Class::Failed => 1,
            Class::Usage | Class::Invalid => 2,
            Class::Unreachable | Class::Refused => 3,
        }
    }

    /// The name in `--json` errors (`"class"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Failed => "failed",
            Class::Usage => "usage",
            Class::Invalid => "invalid",
            Class::Unreachable => "unreachable",
            Class::Refused => "refused",
        }
    }

    /// The class of a gRPC status code the master sent.
    pub fn of_code(code: Code) -> Class {
        match code {
            Code::Unavailable => Class::Unreachable,
            Code::Unauthenticated | Code::PermissionDenied => Class::Refused,
            Code::InvalidArgument => Class::Invalid,
            _ => Class::Failed,
        }
    }
}

/// A failure with its class.
#[derive(Debug)]
pub struct CliError {
    pub class: Class,
    pub message: String,
}

impl CliError {
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        CliError {
            class,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        CliError::new(Class::Failed, message)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(Class::Usage, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        CliError::new(Class::Invalid, message)
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError::new(Class::Unreachable, message)
    }
    pub fn refused(message: impl Into<String>) -> Self {
        CliError::new(Class::Refused, message)
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.class.code()
    }

    /// The `--json` error object (SPEC §10: `{"error", "code"}`; `class` added).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.message,
            "code": self.code(),
            "class": self.class.as_str(),
        })
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        let message = status.message().to_string();
        // A status made here, by the CLI's own transport (the connection broke, the
        // master went away mid-call), carries the error it came from; one the master
        // sent never does.
        let local = std::error::Error::source(&status).is_some();
        let class = if local {
            Class::Unreachable
        } else {
            Class::of_code(status.code())
        };
        match class {
            Class::Unreachable => {
                CliError::unreachable(format!("the master could not be reached: {message}"))
            }
            class => CliError::new(class, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_class_not_text() {
        let of = |status: Status| CliError::from(status).code();
        assert_eq!(of(Status::unavailable("x")), 3);
        assert_eq!(of(Status::unauthenticated("x")), 3);
        assert_eq!(of(Status::permission_denied("x")), 3);
        assert_eq!(of(Status::invalid_argument("x")), 2);
        assert_eq!(
            of(Status::failed_precondition("node orion did not answer")),
            1
        );
        assert_eq!(of(Status::not_found("x")), 1);
        // Text that once decided the class no longer does.
        assert_eq!(of(Status::unknown("transport error")), 1);
        assert_eq!(of(Status::cancelled("connection reset")), 1);
        // A status the CLI's transport made carries its source: unreachable.
        let local = Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert_eq!(of(local), 3);
    }
}
