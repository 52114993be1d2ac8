//! rustls configurations for every MCP connection: TLS 1.3 only, ring only. A
//! certificate and its key are an [`Identity`], a cell that configurations read at
//! each handshake, so a renewed certificate is presented from the next handshake on
//! without rebuilding anything. Enrollment uses a verifier that trusts a CA only when
//! its SHA-256 matches the join token. Listening and dialling live in
//! `mcp_proto::transport`.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::cert::{certs_from_pem, key_from_pem, provider};
use crate::error::PkiError;

/// A certificate chain and its key, for one side of a connection, in a cell that can
/// be swapped while connections are served.
///
/// Clones share the cell: [`Identity::replace`] through any clone changes what every
/// configuration built from any of them presents at its next handshake. Open
/// connections keep the certificate they were made with.
#[derive(Clone)]
pub struct Identity {
    cell: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain().len())
            .field("key", &"[redacted]")
            .finish()
    }
}

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    extra_chain: &[CertificateDer<'static>],
) -> Result<Arc<CertifiedKey>, PkiError> {
    let mut chain = certs_from_pem(cert_pem)?;
    chain.extend(extra_chain.iter().cloned());
    let key = provider()
        .key_provider
        .load_private_key(key_from_pem(key_pem)?)
        .map_err(|e| PkiError::Invalid(format!("private key: {e}")))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        PkiError::Invalid(format!("the key does not belong to the certificate: {e}"))
    })?;
    Ok(Arc::new(certified))
}

impl Identity {
    /// From PEM texts; `extra_chain` (e.g. the CA) is sent after the certificate.
    /// Refuses a key that is not the certificate's.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        extra_chain: &[CertificateDer<'static>],
    ) -> Result<Identity, PkiError> {
        Ok(Identity {
            cell: Arc::new(RwLock::new(certified_key(cert_pem, key_pem, extra_chain)?)),
        })
    }

    /// Presents this certificate from the next handshake on. The cell keeps the old
    /// one if the new pair does not parse or match.
    pub fn replace(
        &self,
        cert_pem: &str,
        key_pem: &str,
        extra_chain: &[CertificateDer<'static>],
    ) -> Result<(), PkiError> {
        let next = certified_key(cert_pem, key_pem, extra_chain)?;
        *self.cell.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// What the next handshake presents.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.cell.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The chain presented, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().cert.clone()
    }

    /// The leaf certificate presented.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().cert.first().cloned()
    }
}

/// Reads the cell at each handshake, on either side.
#[derive(Debug)]
struct Resolver(Identity);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| PkiError::Invalid(format!("bad CA certificate: {e}")))?;
    Ok(Arc::new(roots))
}

/// Whom a server asks for a client certificate.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// Clients may present a certificate from this CA (the master: agents do, the CLI
    /// does not).
    Optional(CertificateDer<'static>),
    /// Clients must present a certificate from this CA (agents: only the master calls).
    Required(CertificateDer<'static>),
}

const ALPN_H2: &[u8] = b"h2";

/// A TLS 1.3 server configuration presenting `identity` (read at each handshake).
pub fn server_config(identity: &Identity, auth: ClientAuth) -> Result<Arc<ServerConfig>, PkiError> {
    let (ca, optional) = match &auth {
        ClientAuth::Optional(ca) => (ca, true),
        ClientAuth::Required(ca) => (ca, false),
    };
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
    if optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| PkiError::Invalid(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(identity.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration trusting `ca`, presenting `identity` if given
/// (read at each handshake).
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(format!("TLS versions: {e}")))?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some(id) => {
            let mut config = builder.with_client_cert_resolver(Arc::new(Resolver(id.clone())));
            // A resumed session skips the client certificate, and the server would
            // go on seeing the one from before a renewal: full handshakes only.
            config.resumption = rustls::client::Resumption::disabled();
            config
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Trusts the server's chain only if the last certificate it sends (its CA) has the
/// join token's fingerprint and the server certificate chains to it.
#[derive(Debug)]
struct FingerprintVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.last().ok_or_else(|| {
            rustls::Error::General("the master sent no CA certificate with its own".to_string())
        })?;
        let got = crate::join::fingerprint(ca);
        if got != self.fingerprint {
            return Err(rustls::Error::General(format!(
                "the master's CA fingerprint {} does not match the join token's {}; check the token",
                hex::encode(got),
                hex::encode(self.fingerprint)
            )));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration for enrollment: no CA yet, only the join token's
/// fingerprint of it.
pub fn enrollment_config(fingerprint: [u8; 32]) -> Result<Arc<ClientConfig>, PkiError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FingerprintVerifier {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
