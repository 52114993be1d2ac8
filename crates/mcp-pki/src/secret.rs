//! A string that must never reach a log: passwords, tokens, join secrets and
//! keys. `Debug` and `Display` print `[redacted]`; the value is read only
//! through [`Secret::expose`], so every place that uses it is easy to find.

use std::fmt;

/// A password, token, join secret or key: Debug and Display print `[redacted]`.
///
/// It deserializes from a plain string (so it can sit in a config struct) but
/// deliberately does not serialize: writing a secret out is an explicit
/// `expose()`.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself. Call it only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    [redacted],\n)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserializes_from_a_plain_string_and_redacts_in_containers() {
        #[derive(serde::Deserialize, Debug)]
        struct Config {
            password: Secret,
        }
        let c: Config = serde_json::from_str(r#"{"password":"s3cret"}"#).unwrap();
        assert_eq!(c.password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn empty_and_conversions() {
        assert!(Secret::default().is_empty());
        assert!(!Secret::from("x".to_string()).is_empty());
        assert_eq!(Secret::new("a"), Secret::from("a".to_string()));
    }
}
