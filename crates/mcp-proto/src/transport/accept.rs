//! The TCP accept loop: TLS handshakes run concurrently, at most
//! `AcceptLimits::max_handshakes` at once and each bounded by
//! `AcceptLimits::handshake_timeout`, so a flood of slow or silent clients can
//! neither exhaust the process nor hold up the others for long. Each accepted
//! connection records its peer (`PeerInfo`) for the RPC handlers. The loop ends,
//! and the port is released, when the server stops.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mcp_pki::cert::cert_is_for;
use mcp_pki::rustls::pki_types::CertificateDer;
use mcp_pki::rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::conns::{Conns, Tracked};
use super::stopped;

/// How a server admits TLS connections.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// Drop connections whose client certificate is not for this name (an agent
    /// admits only the master).
    pub require_name: Option<String>,
}

/// Bounds on TLS handshakes in progress.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Handshakes in progress at once; beyond it the loop stops accepting (new
    /// clients wait in the kernel's backlog) until one finishes.
    pub max_handshakes: usize,
    /// A client that has not completed its handshake by then is disconnected.
    pub handshake_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What an RPC handler knows of a TCP peer; in every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain, when it presented one.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl PeerInfo {
    /// The peer of `request` as the transport recorded it (empty when the request
    /// did not come through it, as in handler unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> PeerInfo {
        request
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .unwrap_or_default()
    }

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

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted TCP connection, plain or TLS, registered for shutdown.
pub struct ServerConn {
    stream: Stream,
    tracked: Tracked,
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match &self.stream {
            Stream::Plain(s) => PeerInfo {
                remote: s.peer_addr().ok(),
                certs: None,
            },
            Stream::Tls(s) => {
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
        let this = self.get_mut();
        if let Some(closed) = this.tracked.poll_read_closed(cx) {
            return closed;
        }
        match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(closed) = this.tracked.poll_write_closed(cx) {
            return closed;
        }
        match &mut this.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepted connections (handshakes done) until `stop`; then the listener is
/// dropped and the stream ends once the handshakes in flight are abandoned.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
    limits: AcceptLimits,
    conns: Conns,
    stop: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = io::Result<ServerConn>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<ServerConn>>(64);
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.max(1)));
    let mut stop_loop = stop.clone();
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = stopped(&mut stop_loop) => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = stopped(&mut stop_loop) => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!("accept on {:?}: {e}", listener.local_addr().ok());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tracked = conns.track();
            let Some(tls) = tls.clone() else {
                drop(permit);
                let conn = ServerConn {
                    stream: Stream::Plain(tcp),
                    tracked,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
                let handshake =
                    tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
                let result = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    result = handshake => result,
                };
                match result {
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
                        let conn = ServerConn {
                            stream: Stream::Tls(Box::new(stream)),
                            tracked,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(
                        %peer,
                        timeout = ?limits.handshake_timeout,
                        "TLS handshake timed out: disconnected"
                    ),
                }
            });
        }
    });
    super::stream_from(rx)
}
