//! ACME challenges answered by the edge (SPEC §7), set and cleared by the edge
//! agent through the admin API: TLS-ALPN-01 (RFC 8737) on the public
//! listener, for a ClientHello offering ALPN `acme-tls/1`, with a self-signed
//! certificate for the hostname carrying the critical acmeIdentifier extension
//! (SHA-256 of the key authorization); HTTP-01 on `http_listen` at
//! `/.well-known/acme-challenge/<token>`.
//!
//! Held in memory only: a challenge lives for the minutes an ACME order takes
//! (at most `TTL` here, and at most `MAX_PENDING` at once), and a restarted or
//! replaced mc-proxy has none, so the ACME client sets them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest as _, Sha256};

use crate::routes::Pattern;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// How long a challenge is answered if nobody clears it.
pub const TTL: Duration = Duration::from_secs(3600);
/// Most challenges pending at once.
pub const MAX_PENDING: usize = 1024;
/// Token length bounds: 128 bits of entropy in base64url (RFC 8555 §8.1) and
/// a cap well above what CAs send.
pub const TOKEN_LEN: std::ops::RangeInclusive<usize> = 22..=256;
/// Longest account key thumbprint accepted after `token.` (SHA-256 is 43).
const MAX_THUMBPRINT: usize = 128;

/// The two challenge types mc-proxy answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TlsAlpn01,
    Http01,
}

impl Kind {
    pub fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "tls-alpn-01" => Ok(Kind::TlsAlpn01),
            "http-01" => Ok(Kind::Http01),
            other => Err(format!("kind {other:?}: not tls-alpn-01 or http-01")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TlsAlpn01 => "tls-alpn-01",
            Kind::Http01 => "http-01",
        }
    }
}

/// A checked challenge, ready to answer.
pub struct Challenge {
    pub hostname: String,
    pub kind: Kind,
    pub token: String,
    pub key_authorization: String,
    /// TLS-ALPN-01: the server config presenting the validation certificate.
    tls: Option<Arc<ServerConfig>>,
    expires: Instant,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("hostname", &self.hostname)
            .field("kind", &self.kind)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The exact hostname a challenge may be for.
pub fn check_hostname(hostname: &str) -> Result<String, String> {
    match Pattern::parse(hostname).map_err(|e| e.to_string())? {
        Pattern::Exact(h) => Ok(h),
        Pattern::Wildcard(_) => Err(format!(
            "hostname {hostname:?}: a wildcard name is validated by dns-01 only"
        )),
    }
}

/// The token of a challenge: base64url, `TOKEN_LEN` characters.
pub fn check_token(token: &str) -> Result<(), String> {
    if !TOKEN_LEN.contains(&token.len()) {
        return Err(format!(
            "token: {} characters, not {} to {}",
            token.len(),
            TOKEN_LEN.start(),
            TOKEN_LEN.end()
        ));
    }
    if !base64url(token) {
        return Err("token: a character outside base64url (A-Z a-z 0-9 - _)".into());
    }
    Ok(())
}

impl Challenge {
    /// Checks every field and, for TLS-ALPN-01, builds the validation
    /// certificate (a fresh P-256 key, self-signed).
    pub fn new(
        hostname: &str,
        kind: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<Challenge, String> {
        let hostname = check_hostname(hostname)?;
        let kind = Kind::parse(kind)?;
        check_token(token)?;
        let thumbprint = key_authorization
            .strip_prefix(token)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or("key_authorization: not `<token>.<thumbprint>` for this token")?;
        if thumbprint.is_empty() || thumbprint.len() > MAX_THUMBPRINT || !base64url(thumbprint) {
            return Err(format!(
                "key_authorization: the thumbprint is not 1 to {MAX_THUMBPRINT} base64url characters"
            ));
        }
        let tls = match kind {
            Kind::Http01 => None,
            Kind::TlsAlpn01 => Some(validation_config(&hostname, key_authorization)?),
        };
        Ok(Challenge {
            hostname,
            kind,
            token: token.to_string(),
            key_authorization: key_authorization.to_string(),
            tls,
            expires: Instant::now() + TTL,
        })
    }
}

/// A TLS server config for TLS-ALPN-01: only `acme-tls/1`, and a
/// self-signed certificate for `hostname` alone with the critical
/// id-pe-acmeIdentifier extension holding SHA-256(key authorization).
fn validation_config(hostname: &str, key_authorization: &str) -> Result<Arc<ServerConfig>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("tls-alpn-01 certificate: {e}");
    let digest = Sha256::digest(key_authorization.as_bytes());
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(|e| bad(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| bad(&e))?;
    let cert = params.self_signed(&key).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Not `CertifiedKey::from_der`: its key check parses the certificate with
    // webpki, which refuses the critical extension it does not know.
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| bad(&e))?;
    let certified = CertifiedKey::new(vec![cert.der().clone()], signer);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(Arc::new(certified))));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Always the one certificate.
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The pending challenges, by hostname and token.
#[derive(Debug, Default)]
pub struct Challenges {
    pending: Mutex<HashMap<(String, String), Challenge>>,
}

impl Challenges {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Challenge>> {
        let mut g = match self.pending.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        g.retain(|_, c| c.expires > now);
        g
    }

    /// Answers `challenge` from now on; whether one of its hostname and token
    /// was replaced. Refused when `MAX_PENDING` are pending.
    pub fn set(&self, challenge: Challenge) -> Result<bool, String> {
        let mut g = self.lock();
        let key = (challenge.hostname.clone(), challenge.token.clone());
        if !g.contains_key(&key) && g.len() >= MAX_PENDING {
            return Err(format!(
                "{MAX_PENDING} challenges pending already: clear some first"
            ));
        }
        Ok(g.insert(key, challenge).is_some())
    }

    /// Stops answering the challenge of `hostname` and `token`; whether there
    /// was one.
    pub fn clear(&self, hostname: &str, token: &str) -> bool {
        self.lock()
            .remove(&(hostname.to_string(), token.to_string()))
            .is_some()
    }

    /// The TLS config of the newest pending TLS-ALPN-01 challenge of `host`.
    pub fn tls_alpn(&self, host: &str) -> Option<Arc<ServerConfig>> {
        self.lock()
            .values()
            .filter(|c| c.hostname == host && c.kind == Kind::TlsAlpn01)
            .max_by_key(|c| c.expires)
            .and_then(|c| c.tls.clone())
    }

    /// The key authorization of a pending HTTP-01 challenge of `host` and
    /// `token`.
    pub fn http01(&self, host: &str, token: &str) -> Option<String> {
        self.lock()
            .get(&(host.to_string(), token.to_string()))
            .filter(|c| c.kind == Kind::Http01)
            .map(|c| c.key_authorization.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const THUMB: &str = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";

    fn ka() -> String {
        format!("{TOKEN}.{THUMB}")
    }

    #[test]
    fn checks_every_field() {
        let long = "a".repeat(257);
        type Case<'a> = ((&'a str, &'a str, &'a str, String), &'a str);
        let cases: Vec<Case> = vec![
            (("*.example.com", "http-01", TOKEN, ka()), "dns-01 only"),
            (("bad name", "http-01", TOKEN, ka()), "character outside"),
            (
                ("a.example.com", "dns-01", TOKEN, ka()),
                "not tls-alpn-01 or http-01",
            ),
            (
                ("a.example.com", "http-01", "short", ka()),
                "token: 5 characters",
            ),
            (("a.example.com", "http-01", &long, ka()), "token: 257"),
            (
                (
                    "a.example.com",
                    "http-01",
                    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ+PCt92wr/oA",
                    ka(),
                ),
                "outside base64url",
            ),
            (
                (
                    "a.example.com",
                    "http-01",
                    TOKEN,
                    format!("x{TOKEN}.{THUMB}"),
                ),
                "not `<token>.<thumbprint>`",
            ),
            (
                ("a.example.com", "http-01", TOKEN, format!("{TOKEN}.")),
                "the thumbprint",
            ),
            (
                ("a.example.com", "http-01", TOKEN, format!("{TOKEN}.a\nb")),
                "the thumbprint",
            ),
        ];
        for ((h, k, t, a), want) in cases {
            let e = Challenge::new(h, k, t, &a).expect_err(want);
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let c = Challenge::new("A.Example.com", "tls-alpn-01", TOKEN, &ka()).expect("valid");
        assert_eq!(c.hostname, "a.example.com");
        assert!(c.tls.is_some());
    }

    #[test]
    fn set_look_up_clear() {
        let all = Challenges::default();
        let http = Challenge::new("a.example.com", "http-01", TOKEN, &ka()).expect("http");
        assert!(!all.set(http).expect("set"));
        assert_eq!(all.http01("a.example.com", TOKEN), Some(ka()));
        assert_eq!(all.http01("b.example.com", TOKEN), None);
        assert!(all.tls_alpn("a.example.com").is_none());
        let alpn = Challenge::new("a.example.com", "tls-alpn-01", TOKEN, &ka()).expect("alpn");
        assert!(all.set(alpn).expect("replace"));
        assert!(all.tls_alpn("a.example.com").is_some());
        assert_eq!(all.http01("a.example.com", TOKEN), None);
        assert!(all.clear("a.example.com", TOKEN));
        assert!(!all.clear("a.example.com", TOKEN));
        assert!(all.is_empty());
    }

    #[test]
    fn bounded() {
        let all = Challenges::default();
        for i in 0..MAX_PENDING {
            let token = format!("{TOKEN}{i}");
            let c = Challenge::new(
                "a.example.com",
                "http-01",
                &token,
                &format!("{token}.{THUMB}"),
            )
            .expect("valid");
            all.set(c).expect("set");
        }
        let c = Challenge::new("b.example.com", "http-01", TOKEN, &ka()).expect("valid");
        assert!(all.set(c).expect_err("full").contains("pending already"));
    }
}
