//! Operator tokens: what `mcp login` gets back and every master RPC checks.
//! A token is `MCPTOK-1.<hex(json claims)>.<hex(hmac-sha256)>`, signed with a
//! key only the master holds; the signature is checked before the payload is
//! parsed, so nothing an attacker wrote is interpreted. Also the parser of the
//! `authorization: Bearer <token>` header that carries it.

use std::fmt;
use std::str::FromStr;

use ring::hmac;
use ring::rand::SecureRandom;

use crate::Secret;

const PREFIX: &str = "MCPTOK-1.";
/// The longest token or authorization header accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Who a token speaks for, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub user: String,
    pub role: Role,
    /// Unix seconds; the token is refused from this second on.
    pub expires_at: u64,
    /// Unix seconds.
    pub issued_at: u64,
}

/// What an operator may do: `admin` everything, `viewer` read-only commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is neither `admin` nor `viewer`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?}: expected \"admin\" or \"viewer\"")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// Why a token or authorization header was refused. No variant carries the token.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token's signature does not match (tampered, or from another master)")]
    BadSignature,
    #[error("the token has expired; run `mcp login`")]
    Expired { expired_at: u64 },
    #[error("bad authorization header: {0}")]
    BadHeader(String),
}

/// The master's HMAC-SHA256 key for operator tokens. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct TokenKey {
    bytes: Vec<u8>,
    key: hmac::Key,
}

impl TokenKey {
    /// A fresh key of 32 random bytes.
    pub fn generate() -> Result<TokenKey, ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut bytes)?;
        Ok(TokenKey::from_bytes(&bytes))
    }

    /// The key stored in the data dir (see [`TokenKey::to_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> TokenKey {
        TokenKey {
            bytes: bytes.to_vec(),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// The raw key, for storing in the data dir (mode 0600).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// `MCPTOK-1.<hex(json claims)>.<hex(hmac)>`; the HMAC covers everything
    /// before the last dot, the version included. The JSON also carries `jti`, 16
    /// random bytes in hex, so two logins of one user in the same second get two
    /// tokens, and revoking one (`mcp logout`) leaves the other; `verify` ignores it.
    pub fn sign(&self, claims: &Claims) -> Secret {
        #[derive(serde::Serialize)]
        struct Signed<'a> {
            #[serde(flatten)]
            claims: &'a Claims,
            jti: String,
        }
        let mut nonce = [0u8; 16];
        // Without randomness the token is still sound, only not unique per login.
        let _ = ring::rand::SystemRandom::new().fill(&mut nonce);
        let signed = Signed {
            claims,
            jti: hex::encode(nonce),
        };
        // Strings, an enum and integers: it always serializes.
        let json = serde_json::to_vec(&signed).unwrap_or_default();
        let signed = format!("{PREFIX}{}", hex::encode(json));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        Secret::new(format!("{signed}.{}", hex::encode(tag.as_ref())))
    }

    /// The claims of a token this key signed and that has not expired at `now`
    /// (unix seconds). The signature is checked before the payload is decoded.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let malformed = |why: &str| TokenError::Malformed(why.to_string());
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("longer than 4096 bytes"));
        }
        if !token.starts_with(PREFIX) {
            return Err(if token.starts_with("MCPTOK-") {
                malformed("unsupported version (this build reads MCPTOK-1)")
            } else {
                malformed("an MCP token starts with MCPTOK-1.")
            });
        }
        let Some((signed, sig_hex)) = token.rsplit_once('.') else {
            return Err(malformed("no signature"));
        };
        let payload_hex = &signed[PREFIX.len().min(signed.len())..];
        if signed.len() < PREFIX.len() || payload_hex.is_empty() {
            return Err(malformed("no claims"));
        }
        if payload_hex.contains('.') {
            return Err(malformed("too many dots"));
        }
        let sig = hex::decode(sig_hex).map_err(|_| malformed("the signature is not hex"))?;
        hmac::verify(&self.key, signed.as_bytes(), &sig).map_err(|_| TokenError::BadSignature)?;
        // Signed by us from here on: a failure below is a bug or a key shared
        // with something that writes other payloads.
        let json = hex::decode(payload_hex).map_err(|_| malformed("the claims are not hex"))?;
        let claims: Claims = serde_json::from_slice(&json)
            .map_err(|e| TokenError::Malformed(format!("the claims are not valid: {e}")))?;
        if now >= claims.expires_at {
            return Err(TokenError::Expired {
                expired_at: claims.expires_at,
            });
        }
        Ok(claims)
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

/// "Bearer <token>" (case-insensitive scheme, one space or more) -> the token;
/// errors name what is wrong. Limit 4096 bytes. The token must be an RFC 6750
/// `b64token` (letters, digits and `-._~+/`, then optional `=` padding).
pub fn parse_bearer(header: &str) -> Result<&str, TokenError> {
    let bad = |why: &str| TokenError::BadHeader(why.to_string());
    if header.len() > MAX_TOKEN_LEN {
        return Err(bad("longer than 4096 bytes"));
    }
    let header = header.trim_matches(|c| c == ' ' || c == '\t');
    if header.is_empty() {
        return Err(bad("empty; expected `Bearer <token>`"));
    }
    let (scheme, rest) = match header.find(' ') {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(bad("the scheme must be Bearer"));
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(bad("no token after Bearer"));
    }
    if token.contains([' ', '\t']) {
        return Err(bad("whitespace inside the token"));
    }
    let body = token.trim_end_matches('=');
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/');
    if body.is_empty() || !body.chars().all(b64) {
        return Err(bad("the token has characters a bearer token cannot have"));
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims() -> Claims {
        Claims {
            user: "kyle".into(),
            role: Role::Admin,
            expires_at: 2_000,
            issued_at: 1_000,
        }
    }

    fn key() -> TokenKey {
        TokenKey::from_bytes(&[7u8; 32])
    }

    /// The token with the hex digit at `at` changed to another value.
    fn flip(token: &str, at: usize) -> String {
        let mut b = token.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let t = key().sign(&claims());
        assert!(t.expose().starts_with("MCPTOK-1."));
        assert_eq!(key().verify(t.expose(), 1_500), Ok(claims()));
        assert_eq!(key().verify(t.expose(), 1_999), Ok(claims()));
        let viewer = Claims {
            role: Role::Viewer,
            ..claims()
        };
        assert_eq!(key().verify(key().sign(&viewer).expose(), 0), Ok(viewer));
    }

    #[test]
    fn two_tokens_for_the_same_claims_differ() {
        let (a, b) = (key().sign(&claims()), key().sign(&claims()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(key().verify(a.expose(), 1_500), Ok(claims()));
        assert_eq!(key().verify(b.expose(), 1_500), Ok(claims()));
    }

    #[test]
    fn expired_token_is_refused() {
        let t = key().sign(&claims());
        for now in [2_000, 2_001, u64::MAX] {
            assert_eq!(
                key().verify(t.expose(), now),
                Err(TokenError::Expired { expired_at: 2_000 })
            );
        }
        let msg = TokenError::Expired { expired_at: 2_000 }.to_string();
        assert!(msg.contains("mcp login"), "{msg}");
    }

    #[test]
    fn tampered_token_is_refused() {
        let t = key().sign(&claims());
        let t = t.expose();
        let first_payload_digit = PREFIX.len();
        let last_sig_digit = t.len() - 1;
        let dot = t.rfind('.').unwrap();
        for at in [
            first_payload_digit,
            first_payload_digit + 5,
            dot - 1,
            dot + 1,
            last_sig_digit,
        ] {
            let bad = flip(t, at);
            assert_ne!(bad, t);
            assert_eq!(
                key().verify(&bad, 1_500),
                Err(TokenError::BadSignature),
                "flipped {at}"
            );
        }
        // A forged payload (admin for ever) with the old signature.
        let forged_claims = Claims {
            expires_at: u64::MAX,
            ..claims()
        };
        let forged = format!(
            "{PREFIX}{}.{}",
            hex::encode(serde_json::to_vec(&forged_claims).unwrap()),
            &t[dot + 1..]
        );
        assert_eq!(key().verify(&forged, 1_500), Err(TokenError::BadSignature));
        // Upper-casing the payload changes the signed bytes.
        let upper = format!("{}{}", t[..dot].to_uppercase(), &t[dot..]);
        assert_eq!(key().verify(&upper, 1_500), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_from_another_key_is_refused() {
        let other = TokenKey::generate().unwrap();
        let t = other.sign(&claims());
        assert_eq!(
            key().verify(t.expose(), 1_500),
            Err(TokenError::BadSignature)
        );
        assert_eq!(other.verify(t.expose(), 1_500), Ok(claims()));
        let again = TokenKey::from_bytes(&other.to_bytes());
        assert_eq!(again.verify(t.expose(), 1_500), Ok(claims()));
        assert_ne!(other.to_bytes(), TokenKey::generate().unwrap().to_bytes());
        assert_eq!(other.to_bytes().len(), 32);
    }

    #[test]
    fn malformed_tokens_are_named() {
        let good = key().sign(&claims());
        let good = good.expose();
        let dot = good.rfind('.').unwrap();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "starts with MCPTOK-1."),
            ("eyJhbGciOi.x.y".into(), "starts with MCPTOK-1."),
            ("MCPTOK-2.00.00".into(), "unsupported version"),
            ("MCPTOK-1.".into(), "no claims"),
            ("MCPTOK-1.abcd".into(), "no claims"),
            ("MCPTOK-1..00".into(), "no claims"),
            ("MCPTOK-1.ab.cd.ef".into(), "too many dots"),
            (format!("{}.zz", &good[..dot]), "signature is not hex"),
            (format!("{}.abc", &good[..dot]), "signature is not hex"),
            ("x".repeat(MAX_TOKEN_LEN + 1), "longer than 4096"),
        ];
        for (token, want) in cases {
            match key().verify(&token, 0) {
                Err(TokenError::Malformed(why)) => assert!(why.contains(want), "{token:?}: {why}"),
                other => panic!("{token:?}: {other:?}"),
            }
        }
        // A short signature is a mismatch, not a parse error.
        assert_eq!(
            key().verify(&format!("{}.00", &good[..dot]), 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn signed_garbage_payload_is_malformed_not_a_panic() {
        let k = key();
        for payload in ["zz", "7b7d", "6e756c6c"] {
            let signed = format!("{PREFIX}{payload}");
            let tag = hmac::sign(&k.key, signed.as_bytes());
            let token = format!("{signed}.{}", hex::encode(tag.as_ref()));
            assert!(
                matches!(k.verify(&token, 0), Err(TokenError::Malformed(_))),
                "{payload}"
            );
        }
    }

    #[test]
    fn parse_bearer_table() {
        let ok = [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER abc", "abc"),
            ("Bearer    abc", "abc"),
            ("  Bearer abc  ", "abc"),
            ("Bearer MCPTOK-1.7b22.00ff", "MCPTOK-1.7b22.00ff"),
            ("Bearer a-b_c~d+e/f.g==", "a-b_c~d+e/f.g=="),
        ];
        for (header, want) in ok {
            assert_eq!(parse_bearer(header), Ok(want), "{header:?}");
        }
        let bad = [
            ("", "empty"),
            ("   ", "empty"),
            ("Bearer", "no token"),
            ("Bearer   ", "no token"),
            ("Basic dXNlcjpwYXNz", "scheme must be Bearer"),
            ("Bearerabc", "scheme must be Bearer"),
            ("Bearer\tabc", "scheme must be Bearer"),
            ("abc", "scheme must be Bearer"),
            ("Bearer abc def", "whitespace inside"),
            ("Bearer abc\tdef", "whitespace inside"),
            ("Bearer ===", "characters"),
            ("Bearer a=b", "characters"),
            ("Bearer abc\r\nX-Evil:1", "characters"),
            ("Bearer tökén", "characters"),
        ];
        for (header, want) in bad {
            match parse_bearer(header) {
                Err(TokenError::BadHeader(why)) => assert!(why.contains(want), "{header:?}: {why}"),
                other => panic!("{header:?}: {other:?}"),
            }
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert!(
            matches!(parse_bearer(&long), Err(TokenError::BadHeader(why)) if why.contains("4096"))
        );
        let fits = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN - 7));
        assert_eq!(parse_bearer(&fits).map(str::len), Ok(MAX_TOKEN_LEN - 7));
    }

    #[test]
    fn bearer_then_verify() {
        let t = key().sign(&claims());
        let header = format!("Bearer {}", t.expose());
        assert_eq!(
            key().verify(parse_bearer(&header).unwrap(), 1_000),
            Ok(claims())
        );
    }

    #[test]
    fn role_names() {
        for role in [Role::Admin, Role::Viewer] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".into())));
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn debug_never_shows_the_key_or_token() {
        let k = TokenKey::from_bytes(b"super-secret-key-bytes");
        let dbg = format!("{k:?} {k:#?}");
        assert!(
            !dbg.contains("super") && !dbg.contains(&hex::encode(b"super")),
            "{dbg}"
        );
        let t = k.sign(&claims());
        assert_eq!(format!("{t:?}"), "[redacted]");
        let err = k
            .verify(&flip(t.expose(), t.expose().len() - 1), 0)
            .unwrap_err();
        assert!(!err.to_string().contains(&t.expose()[9..20]));
    }

    proptest! {
        #[test]
        fn parse_bearer_never_panics(s in any::<String>()) {
            if let Ok(t) = parse_bearer(&s) {
                prop_assert!(!t.is_empty() && s.contains(t));
            }
        }

        #[test]
        fn verify_never_panics(s in any::<String>(), now in any::<u64>()) {
            let _ = key().verify(&s, now);
        }

        #[test]
        fn verify_never_panics_near_the_format(s in "MCPTOK-1\\.[0-9a-f.]{0,80}", now in any::<u64>()) {
            let _ = key().verify(&s, now);
        }

        #[test]
        fn sign_then_verify_round_trips_any_claims(
            user in any::<String>(),
            admin in any::<bool>(),
            issued_at in any::<u64>(),
            expires_at in 1u64..,
        ) {
            let c = Claims { user, role: if admin { Role::Admin } else { Role::Viewer }, expires_at, issued_at };
            let t = key().sign(&c);
            if t.expose().len() <= MAX_TOKEN_LEN {
                prop_assert_eq!(key().verify(t.expose(), expires_at - 1), Ok(c.clone()));
                let header = format!("Bearer {}", t.expose());
                prop_assert_eq!(parse_bearer(&header), Ok(t.expose()));
            }
        }
    }
}
