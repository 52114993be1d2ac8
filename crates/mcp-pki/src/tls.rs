//! TLS for every MCP connection: TLS 1.3 only, ring only. The server side accepts
//! connections and records the peer's certificate for the RPC handlers; the client
//! side is a connector tonic dials through. Enrollment uses a verifier that trusts
//! a CA only when its SHA-256 matches the join token.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::ca::PkiError;

pub use futures_util::Stream;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Invalid(
            "no certificate in the PEM text".to_string(),
        ));
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("bad private key PEM: {e}")))
}

/// Is this certificate valid for the DNS name `name` (its SAN)?
pub fn cert_is_for(der: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Does this certificate chain to `ca` (signature and validity now)?
pub fn chains_to(der: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) else {
        return false;
    };
    let provider = provider();
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

/// A certificate chain and its key, for one side of a connection.
#[derive(Clone, Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// From PEM texts; `extra_chain` (e.g. the CA) is sent after the certificate.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        extra_chain: &[CertificateDer<'static>],
    ) -> Result<Identity, PkiError> {
        let mut chain = certs_from_pem(cert_pem)?;
        chain.extend(extra_chain.iter().cloned());
        Ok(Identity {
            chain,
            key: Arc::new(key_from_pem(key_pem)?),
        })
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

/// A TLS 1.3 server configuration.
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
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| PkiError::Invalid(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A TLS 1.3 client configuration trusting `ca`, presenting `identity` if given.
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Invalid(format!("TLS versions: {e}")))?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| PkiError::Invalid(format!("client certificate: {e}")))?,
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

/// What an RPC handler knows of its peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain, when it presented one.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl PeerInfo {
    /// Is the client's certificate for `name`?
    pub fn is(&self, name: &str) -> bool {
        self.certs
            .as_ref()
            .and_then(|c| c.first())
            .is_some_and(|c| cert_is_for(c, name))
    }

    pub fn has_cert(&self) -> bool {
        self.certs.as_ref().is_some_and(|c| !c.is_empty())
    }
}

/// An accepted server connection, plain or TLS.
pub enum ServerConn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            ServerConn::Plain(s) => PeerInfo {
                remote: s.peer_addr().ok(),
                certs: None,
            },
            ServerConn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    remote: tcp.peer_addr().ok(),
                    certs: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
                }
            }
        }
    }
}

impl AsyncRead for ServerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a server admits connections.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Drop connections whose client certificate is not for this name (an agent
    /// admits only the master).
    pub require_name: Option<String>,
}

/// Accepted connections: TLS handshakes run concurrently, bounded by a timeout,
/// so a slow or hostile client never holds up the others.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> impl futures_util::Stream<Item = Result<ServerConn, io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<ServerConn, io::Error>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                if tx.send(Ok(ServerConn::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        if let Some(name) = &tls.require_name {
                            let ok = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .is_some_and(|c| cert_is_for(c, name));
                            if !ok {
                                tracing::warn!(%peer, "refused a connection: its certificate is not {name}'s");
                                return;
                            }
                        }
                        let _ = tx.send(Ok(ServerConn::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A tonic connector: TCP to the URI's authority, then TLS verifying `server_name`.
#[derive(Clone)]
pub struct Connector {
    pub config: Arc<ClientConfig>,
    pub server_name: String,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let name = self.server_name.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host:port"))?;
            let tcp = TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("server name {name:?}: {e}"),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
