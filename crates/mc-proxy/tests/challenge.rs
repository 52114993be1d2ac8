//! ACME challenges answered by the real binary (127.0.0.233-234), set and
//! cleared over its admin socket: TLS-ALPN-01 (a rustls client offering
//! `acme-tls/1` gets a self-signed certificate for the name alone with the
//! critical acmeIdentifier extension holding SHA-256 of the key authorization,
//! read with x509-parser) for a name with no route and for a routed name whose
//! ordinary clients are still served; HTTP-01 on `http_listen` over plain TCP;
//! clearing; refused input. The proxy is killed by its guard even when the
//! test fails.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::backend::{assert_served, backend_on, Pki, HOST};
use common::cli::{l7_args, route_add, serve};
use mcp_proto::mcproxy::admin::v1::{self as wire, admin_client::AdminClient};
use mcp_proto::tonic::{transport::Channel, Code};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PROXY_IP: &str = "127.0.0.233";
const BACKEND_IP: &str = "127.0.0.234";
const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const THUMBPRINT: &str = "9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER: &str = "1.3.6.1.5.5.7.1.31";

fn key_authorization(token: &str) -> String {
    format!("{token}.{THUMBPRINT}")
}

/// Accepts any certificate: a TLS-ALPN-01 validator checks it by hand (as
/// Pebble and Let's Encrypt do).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    // webpki refuses to parse a certificate with a critical extension it does
    // not know, so the handshake's signature is taken as it comes too.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A validator's handshake: `acme-tls/1` offered for `name`. The negotiated
/// protocol and the leaf certificate, or the handshake's error; once done,
/// checks that the proxy closes.
async fn validate(proxy: SocketAddr, name: &str) -> Result<(Vec<u8>, Vec<u8>), std::io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.to_string().try_into().expect("name"), tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a certificate");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tls.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the proxy did not close after the handshake: {read:?}"
    );
    Ok((alpn, leaf))
}

/// Checks a TLS-ALPN-01 certificate: for `name` alone, with the critical
/// acmeIdentifier holding the DER OCTET STRING of SHA-256(`key_auth`).
fn check_validation_cert(der: &[u8], name: &str, key_auth: &str) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse the certificate");
    let san = cert
        .subject_alternative_name()
        .expect("one SAN extension")
        .expect("a SAN extension");
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, [format!("DNSName({name})")]);
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ACME_IDENTIFIER)
        .expect("an acmeIdentifier extension");
    assert!(ext.critical, "acmeIdentifier must be critical");
    let mut want = vec![0x04, 0x20];
    want.extend_from_slice(&Sha256::digest(key_auth.as_bytes()));
    assert_eq!(ext.value, want.as_slice());
}

async fn admin(socket: &std::path::Path) -> AdminClient<Channel> {
    AdminClient::new(
        mcp_proto::transport::unix::connect(socket)
            .await
            .expect("admin socket"),
    )
}

fn set(hostname: &str, kind: &str, token: &str) -> wire::SetChallengeRequest {
    wire::SetChallengeRequest {
        hostname: hostname.into(),
        kind: kind.into(),
        token: token.into(),
        key_authorization: key_authorization(token),
    }
}

/// A plain HTTP/1.1 GET on `http_listen`: the status code and body.
async fn http_get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect http_listen");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_and_http_01_are_answered_and_cleared() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = serve(dir.path(), PROXY_IP);
    let mut c = admin(&p.socket).await;

    // TLS-ALPN-01 for a name with no route.
    let fresh = "fresh.acme.test";
    let e = validate(p.listen, fresh)
        .await
        .expect_err("no challenge yet");
    assert!(e.to_string().contains("UnrecognisedName"), "{e}");
    let r = c
        .set_challenge(set(fresh, "tls-alpn-01", TOKEN))
        .await
        .expect("set");
    assert!(!r.into_inner().replaced);
    let (alpn, leaf) = validate(p.listen, fresh).await.expect("validated");
    assert_eq!(alpn, b"acme-tls/1");
    check_validation_cert(&leaf, fresh, &key_authorization(TOKEN));

    // TLS-ALPN-01 for a routed name: ordinary clients still get the route.
    let b = backend_on(BACKEND_IP, &pki, None).await.to_string();
    let (cert, key) = pki.write_public_pair(dir.path());
    route_add(p.sock(), &l7_args(HOST, &b, &cert, &key));
    let token2 = format!("{TOKEN}-2");
    c.set_challenge(set(HOST, "tls-alpn-01", &token2))
        .await
        .expect("set");
    let (alpn, leaf) = validate(p.listen, HOST).await.expect("validated");
    assert_eq!(alpn, b"acme-tls/1");
    check_validation_cert(&leaf, HOST, &key_authorization(&token2));
    assert_served(&pki, HOST, p.listen).await;

    // HTTP-01 on http_listen, for its host and token only.
    let web = "web.acme.test";
    let path = format!("/.well-known/acme-challenge/{TOKEN}");
    assert_eq!(http_get(p.http, web, &path).await.0, 404);
    c.set_challenge(set(web, "http-01", TOKEN))
        .await
        .expect("set");
    assert_eq!(
        http_get(p.http, web, &path).await,
        (200, key_authorization(TOKEN))
    );
    assert_eq!(http_get(p.http, &format!("{web}:80"), &path).await.0, 200);
    assert_eq!(http_get(p.http, "other.acme.test", &path).await.0, 404);
    assert_eq!(
        http_get(p.http, web, "/.well-known/acme-challenge/nope")
            .await
            .0,
        404
    );
    // The tls-alpn-01 challenge of `fresh` is not an http-01 one.
    assert_eq!(http_get(p.http, fresh, &path).await.0, 404);
    assert_eq!(http_get(p.http, web, "/elsewhere").await.0, 308);

    // Cleared: no longer answered.
    let clear = |hostname: &str, token: &str| wire::ClearChallengeRequest {
        hostname: hostname.into(),
        token: token.into(),
    };
    for (hostname, token) in [(fresh, TOKEN), (web, TOKEN), (HOST, token2.as_str())] {
        let r = c
            .clear_challenge(clear(hostname, token))
            .await
            .expect("clear");
        assert!(r.into_inner().cleared, "{hostname}");
    }
    let r = c.clear_challenge(clear(web, TOKEN)).await.expect("clear");
    assert!(!r.into_inner().cleared);
    assert_eq!(http_get(p.http, web, &path).await.0, 404);
    let e = validate(p.listen, fresh).await.expect_err("cleared");
    assert!(e.to_string().contains("UnrecognisedName"), "{e}");
    // A routed name with no challenge: acme-tls/1 is not among the route's
    // protocols, so the handshake fails.
    assert!(validate(p.listen, HOST).await.is_err());

    // Refused input.
    let cases = [
        (set("*.acme.test", "http-01", TOKEN), "dns-01 only"),
        (set(web, "dns-01", TOKEN), "not tls-alpn-01 or http-01"),
        (set(web, "http-01", "a/b"), "token"),
        (
            wire::SetChallengeRequest {
                key_authorization: format!("{TOKEN}.bad thumbprint"),
                ..set(web, "http-01", TOKEN)
            },
            "thumbprint",
        ),
    ];
    for (req, want) in cases {
        let e = c.set_challenge(req).await.expect_err(want);
        assert_eq!(e.code(), Code::InvalidArgument, "{want}");
        assert!(e.message().contains(want), "{} lacks {want}", e.message());
    }
    let e = c
        .clear_challenge(clear("bad name", TOKEN))
        .await
        .expect_err("bad");
    assert_eq!(e.code(), Code::InvalidArgument);
}
