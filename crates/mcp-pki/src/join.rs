//! Join tokens, `MCPJOIN-1-<ca-sha256>-<secret>` (after Swarm's): how a new
//! agent learns which CA to trust before it has any certificate, and proves to
//! the master that an operator let it in. The fingerprint is the SHA-256 of the
//! CA certificate's DER; the secret is 32 random bytes. Both are 64 lowercase
//! hex digits. Parsing is pure and never echoes the secret in an error.

use std::fmt;

use ring::rand::SecureRandom;

use crate::Secret;

const PREFIX: &str = "MCPJOIN-";
const VERSION: &str = "1";
const HEX_LEN: usize = 64;

/// A parsed join token. `Debug` shows the fingerprint, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: [u8; 32],
    pub secret: Secret,
}

/// Why a join token was refused. No variant carries the secret.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JoinTokenError {
    #[error("the join token is empty")]
    Empty,
    #[error("a join token starts with MCPJOIN-1-")]
    MissingPrefix,
    #[error(
        "join token version {0:?} is not supported (this build reads version 1: MCPJOIN-1-...)"
    )]
    UnsupportedVersion(String),
    #[error("the CA fingerprint must be 64 hex digits")]
    BadFingerprint,
    #[error("the join token has no secret after the CA fingerprint")]
    MissingSecret,
    #[error("the secret must be 64 hex digits")]
    BadSecret,
    #[error("unexpected text after the secret")]
    TrailingJunk,
}

impl JoinToken {
    /// A token for the CA whose certificate is `ca_der`. `secret` should come
    /// from [`JoinToken::generate_secret`] so that the token parses back.
    pub fn new(ca_der: &[u8], secret: Secret) -> JoinToken {
        JoinToken {
            ca_fingerprint: fingerprint(ca_der),
            secret,
        }
    }

    /// 32 bytes from the system's secure random source, as 64 lowercase hex digits.
    pub fn generate_secret() -> Result<Secret, ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(Secret::new(hex::encode(bytes)))
    }

    /// Reads `MCPJOIN-1-<64 hex>-<64 hex>`, ignoring surrounding whitespace.
    /// Hex digits may be in either case; the secret is stored lowercase.
    pub fn parse(text: &str) -> Result<JoinToken, JoinTokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(JoinTokenError::Empty);
        }
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(JoinTokenError::MissingPrefix);
        };
        let (version, rest) = rest.split_once('-').unwrap_or((rest, ""));
        if version != VERSION {
            if version.is_empty() {
                return Err(JoinTokenError::MissingPrefix);
            }
            // Echo a short, printable version only: the rest may be a secret.
            let shown: String = version
                .chars()
                .take(8)
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect();
            return Err(JoinTokenError::UnsupportedVersion(shown));
        }
        let mut parts = rest.splitn(3, '-');
        let fp = parts.next().unwrap_or("");
        let ca_fingerprint = decode_hex32(fp).ok_or(JoinTokenError::BadFingerprint)?;
        let secret = match parts.next() {
            None | Some("") => return Err(JoinTokenError::MissingSecret),
            Some(s) => s,
        };
        if decode_hex32(secret).is_none() {
            return Err(JoinTokenError::BadSecret);
        }
        if parts.next().is_some() {
            return Err(JoinTokenError::TrailingJunk);
        }
        Ok(JoinToken {
            ca_fingerprint,
            secret: Secret::new(secret.to_ascii_lowercase()),
        })
    }

    /// The token as an operator pastes it: `MCPJOIN-1-<hex fingerprint>-<secret>`.
    pub fn to_text(&self) -> Secret {
        Secret::new(format!(
            "{PREFIX}{VERSION}-{}-{}",
            self.fingerprint_hex(),
            self.secret.expose()
        ))
    }

    /// The CA fingerprint as 64 lowercase hex digits.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.ca_fingerprint)
    }

    /// Whether this token's secret equals `expected`, in time that does not
    /// depend on where they differ.
    pub fn secret_matches(&self, expected: &Secret) -> bool {
        constant_time_eq(
            self.secret.expose().as_bytes(),
            expected.expose().as_bytes(),
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.fingerprint_hex())
            .field("secret", &self.secret)
            .finish()
    }
}

/// The SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 of a certificate's DER as 64 lowercase hex digits.
pub fn fingerprint_hex(der: &[u8]) -> String {
    hex::encode(fingerprint(der))
}

/// Equal-length byte strings compared by folding XORs, so the time taken does
/// not reveal the first differing byte. Lengths are not secret (both sides of a
/// join secret are 64 hex digits), so a length mismatch returns at once.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != HEX_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn good() -> String {
        format!("MCPJOIN-1-{FP}-{SECRET}")
    }

    #[test]
    fn parses_good_tokens() {
        let upper = format!("MCPJOIN-1-{}-{}", FP.to_uppercase(), SECRET.to_uppercase());
        let cases = [
            good(),
            format!("  {}\n", good()),
            format!("\t{}\r\n", good()),
            upper,
        ];
        for text in cases {
            let t = JoinToken::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(t.fingerprint_hex(), FP, "{text:?}");
            assert_eq!(t.secret.expose(), SECRET, "{text:?}");
            assert_eq!(t.to_text().expose(), good());
        }
    }

    #[test]
    fn refuses_bad_tokens() {
        use JoinTokenError::*;
        let short = &FP[..63];
        let long = format!("{FP}0");
        let nonhex = format!("{}g", &FP[..63]);
        let cases: Vec<(String, JoinTokenError)> = vec![
            (String::new(), Empty),
            ("   \n".into(), Empty),
            ("hello".into(), MissingPrefix),
            (format!("SWMTKN-1-{FP}-{SECRET}"), MissingPrefix),
            (format!("mcpjoin-1-{FP}-{SECRET}"), MissingPrefix),
            ("MCPJOIN-".into(), MissingPrefix),
            ("MCPJOIN--".into(), MissingPrefix),
            (
                format!("MCPJOIN-2-{FP}-{SECRET}"),
                UnsupportedVersion("2".into()),
            ),
            (
                format!("MCPJOIN-{FP}-{SECRET}"),
                UnsupportedVersion(FP[..8].into()),
            ),
            ("MCPJOIN-1".into(), BadFingerprint),
            ("MCPJOIN-1-".into(), BadFingerprint),
            (format!("MCPJOIN-1-{short}-{SECRET}"), BadFingerprint),
            (format!("MCPJOIN-1-{long}-{SECRET}"), BadFingerprint),
            (format!("MCPJOIN-1-{nonhex}-{SECRET}"), BadFingerprint),
            (format!("MCPJOIN-1- {FP}-{SECRET}"), BadFingerprint),
            (format!("MCPJOIN-1-{FP}"), MissingSecret),
            (format!("MCPJOIN-1-{FP}-"), MissingSecret),
            (format!("MCPJOIN-1-{FP}-{short}"), BadSecret),
            (format!("MCPJOIN-1-{FP}-{long}"), BadSecret),
            (format!("MCPJOIN-1-{FP}-{nonhex}"), BadSecret),
            (format!("MCPJOIN-1-{FP}-{SECRET} x"), BadSecret),
            (format!("MCPJOIN-1-{FP}-{SECRET}-"), TrailingJunk),
            (format!("MCPJOIN-1-{FP}-{SECRET}-{SECRET}"), TrailingJunk),
            (format!("MCPJOIN-1-{FP}-é{}", &SECRET[2..]), BadSecret),
        ];
        for (text, want) in cases {
            assert_eq!(JoinToken::parse(&text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let bad = [
            format!("MCPJOIN-{SECRET}{SECRET}"),
            format!("MCPJOIN-1-{FP}-{SECRET}0"),
            format!("MCPJOIN-1-{SECRET}0-{SECRET}"),
        ];
        for text in bad {
            let msg = JoinToken::parse(&text).unwrap_err().to_string();
            assert!(!msg.contains(&SECRET[..16]), "{msg}");
        }
    }

    #[test]
    fn new_fingerprints_the_der_and_round_trips() {
        let der = b"not really a certificate";
        let secret = JoinToken::generate_secret().unwrap();
        assert_eq!(secret.expose().len(), 64);
        assert!(secret
            .expose()
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_ne!(secret, JoinToken::generate_secret().unwrap());
        let t = JoinToken::new(der, secret.clone());
        assert_eq!(t.fingerprint_hex(), fingerprint_hex(der));
        // sha256("abc"), a published test vector.
        assert_eq!(
            fingerprint_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let back = JoinToken::parse(t.to_text().expose()).unwrap();
        assert_eq!(back, t);
        assert!(back.secret_matches(&secret));
    }

    #[test]
    fn secret_matches_is_exact() {
        let t = JoinToken::parse(&good()).unwrap();
        assert!(t.secret_matches(&Secret::new(SECRET)));
        let mut other = SECRET.to_string();
        other.replace_range(63..64, "e");
        assert!(!t.secret_matches(&Secret::new(other)));
        assert!(!t.secret_matches(&Secret::new(&SECRET[..63])));
        assert!(!t.secret_matches(&Secret::new("")));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = JoinToken::parse(&good()).unwrap();
        let dbg = format!("{t:?} {t:#?}");
        assert!(!dbg.contains(SECRET), "{dbg}");
        assert!(dbg.contains(FP) && dbg.contains("[redacted]"), "{dbg}");
        assert_eq!(format!("{}", t.to_text()), "[redacted]");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = JoinToken::parse(&s);
        }

        #[test]
        fn parse_never_panics_near_the_format(s in "MCPJOIN-[0-9a-fA-F-]{0,140}[ \\-x]{0,3}") {
            let _ = JoinToken::parse(&s);
        }

        #[test]
        fn format_then_parse_round_trips(fp in any::<[u8; 32]>(), secret in any::<[u8; 32]>()) {
            let t = JoinToken { ca_fingerprint: fp, secret: Secret::new(hex::encode(secret)) };
            prop_assert_eq!(JoinToken::parse(t.to_text().expose()), Ok(t));
        }
    }
}
