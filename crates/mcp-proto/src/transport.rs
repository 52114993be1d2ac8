//! The one way MCP processes dial and listen for gRPC. Every connection goes through
//! here so that TLS (and mutual TLS for agents) is a property of the transport, set in
//! one place, rather than something each caller remembers.
//!
//! Listening: `ServerTransport::serve` runs tonic `Routes` on a TCP listener (TLS
//! handshakes bounded in number and time, `accept`), `serve_unix` on a Unix socket
//! (`unix`). Both stop the same way when `shutdown` turns true: stop accepting and
//! release the port or socket file at once, end the endless streams (heartbeats,
//! `logs`: `ending`), let other open RPCs finish for `ServerTransport::grace`, then
//! close every connection that remains (`conns`), so that no stream holds a
//! process past SIGTERM. Handlers find the peer in the request's extensions:
//! `PeerInfo::of` (TCP: address, client certificate) or `UnixPeer::of` (uid, gid,
//! pid).
//!
//! Dialling: `ClientTransport` (TCP, TLS verifying the server's name, `dial`), or
//! `unix::connect` and `unix::lazy` for a socket path.

mod accept;
mod conns;
mod dial;
mod ending;
pub mod unix;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};

pub use accept::{AcceptLimits, PeerInfo, ServerConn, ServerTls};
pub use dial::{Connector, UnixConnector};
pub use ending::ENDLESS_RPCS;
pub use unix::{UnixBindError, UnixConn, UnixPeer, UnixSocket};

/// TLS for a client: whom to trust and what name the server must have.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<mcp_pki::rustls::ClientConfig>,
    /// The DNS name the server's certificate must hold (`mcp-master`, a node name).
    pub server_name: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// How a client reaches a peer.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// Bound on establishing a connection.
    pub connect_timeout: Option<Duration>,
    /// Bound on each request, streaming ones excepted.
    pub request_timeout: Option<Duration>,
    /// None only in tests of the transport itself: every MCP process sets it.
    pub tls: Option<ClientTls>,
}

/// An address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("bad address {address:?}: {reason}")]
pub struct AddressError {
    pub address: String,
    pub reason: String,
}

/// `host:port`, or `http://host:port`, as the URI tonic dials.
pub fn uri_for(address: &str) -> Result<String, AddressError> {
    let address = address.trim();
    let bad = |reason: &str| AddressError {
        address: address.to_string(),
        reason: reason.to_string(),
    };
    let rest = if let Some(rest) = address.strip_prefix("http://") {
        rest
    } else if address.contains("://") {
        return Err(bad("only host:port or http://host:port is supported"));
    } else {
        address
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.contains('/') || rest.contains('@') || rest.contains(char::is_whitespace) {
        return Err(bad("expected host:port"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad("missing :port"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("expected host:port with a port in 1-65535"));
    }
    check_host(host).map_err(|why| bad(&why))?;
    Ok(format!("http://{rest}"))
}

/// The host of an address: an IPv4 address, an IPv6 address in brackets, or a DNS
/// name of one or more labels (tailnet short names like `rift` included).
fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
            _ => Err(format!("{host} is not an IPv6 address in brackets")),
        };
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".to_string());
    }
    for label in host.split('.') {
        mcp_types::name::check_dns_label(&label.to_ascii_lowercase())
            .map_err(|why| format!("host {host:?}: {why}"))?;
    }
    Ok(())
}

impl ClientTransport {
    /// An endpoint for `address`, not yet connected.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, AddressError> {
        let uri = uri_for(address)?;
        let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| AddressError {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
        endpoint = endpoint
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(endpoint)
    }

    /// The same transport, expecting the server's certificate to be for `name`.
    pub fn named(&self, name: &str) -> ClientTransport {
        let mut t = self.clone();
        if let Some(tls) = &mut t.tls {
            tls.server_name = name.to_string();
        }
        t
    }

    fn connector(&self) -> Option<Connector> {
        self.tls.as_ref().map(|tls| Connector {
            config: tls.config.clone(),
            server_name: tls.server_name.clone(),
        })
    }

    /// A channel that connects on first use and reconnects as needed.
    pub fn lazy(&self, address: &str) -> Result<Channel, AddressError> {
        let endpoint = self.endpoint(address)?;
        Ok(match self.connector() {
            Some(connector) => endpoint.connect_with_connector_lazy(connector),
            None => endpoint.connect_lazy(),
        })
    }

    /// A channel connected now.
    pub async fn connect(&self, address: &str) -> Result<Channel, ConnectError> {
        let endpoint = self.endpoint(address)?;
        let result = match self.connector() {
            Some(connector) => endpoint.connect_with_connector(connector).await,
            None => endpoint.connect().await,
        };
        result.map_err(|e| ConnectError::Connect {
            address: address.to_string(),
            reason: source_chain(&e),
        })
    }
}

/// Dialling failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// How a server listens.
#[derive(Clone)]
pub struct ServerTransport {
    /// None only for plain TCP in tests of the transport itself: every MCP process
    /// sets it. Unix sockets never use it.
    pub tls: Option<ServerTls>,
    /// Bounds on TLS handshakes in progress.
    pub limits: AcceptLimits,
    /// How long open RPCs may run on after shutdown before their connections are
    /// closed.
    pub grace: Duration,
    /// RPC paths (`/package.Service/Method`) whose response streams end at once at
    /// shutdown rather than after the grace.
    pub endless: &'static [&'static str],
}

impl Default for ServerTransport {
    fn default() -> Self {
        ServerTransport {
            tls: None,
            limits: AcceptLimits::default(),
            grace: Duration::from_secs(2),
            endless: ENDLESS_RPCS,
        }
    }
}

impl ServerTransport {
    /// TLS with the default limits and grace.
    pub fn with_tls(tls: ServerTls) -> ServerTransport {
        ServerTransport {
            tls: Some(tls),
            ..ServerTransport::default()
        }
    }

    /// A server with MCP's settings.
    fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
    }

    /// Serves `routes` on `listener` until `shutdown` turns true (or its sender is
    /// dropped), then stops as the module documentation says.
    pub async fn serve(
        &self,
        routes: Routes,
        listener: tokio::net::TcpListener,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error> {
        let conns = conns::Conns::default();
        let incoming = accept::incoming(
            listener,
            self.tls.clone(),
            self.limits,
            conns.clone(),
            shutdown.clone(),
        );
        self.serve_incoming(routes, incoming, conns, shutdown).await
    }

    /// Serves `routes` on the Unix socket `socket` (see `UnixSocket::bind`) until
    /// `shutdown`; the socket file is removed when it stops.
    pub async fn serve_unix(
        &self,
        routes: Routes,
        socket: UnixSocket,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error> {
        let conns = conns::Conns::default();
        let incoming = unix::incoming(socket, conns.clone(), shutdown.clone());
        self.serve_incoming(routes, incoming, conns, shutdown).await
    }

    async fn serve_incoming<S, IO>(
        &self,
        routes: Routes,
        incoming: S,
        conns: conns::Conns,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), tonic::transport::Error>
    where
        S: futures_util::Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tonic::transport::server::Connected
            + tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + Unpin
            + Send
            + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
    {
        let service = ending::EndStreams {
            inner: routes.prepare(),
            endless: Arc::from(self.endless),
            shutdown: shutdown.clone(),
        };
        let mut signal = shutdown.clone();
        let serve = self
            .server()
            .serve_with_incoming_shutdown(service, incoming, async move {
                stopped(&mut signal).await;
            });
        tokio::pin!(serve);
        let mut stop = shutdown;
        tokio::select! {
            result = &mut serve => return result,
            _ = stopped(&mut stop) => {}
        }
        // Stopped accepting; tonic asks open connections to finish (HTTP/2 GOAWAY).
        let grace = self.grace;
        if let Ok(result) = tokio::time::timeout(grace, &mut serve).await {
            return result;
        }
        let open = conns.close_all();
        tracing::info!(
            open,
            ?grace,
            "shutdown: grace over, closed the open connections"
        );
        match tokio::time::timeout(Duration::from_secs(1), serve).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("shutdown: the server did not stop 1s after its connections were closed; leaving it");
                Ok(())
            }
        }
    }
}

/// Resolves when `shutdown` turns true or its sender is gone.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The receiving end of an accept loop, as a stream.
pub(crate) fn stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// An error and its causes on one line: `a: b: c`.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::uri_for;

    #[test]
    fn addresses() {
        assert_eq!(
            uri_for("127.0.0.11:9443").ok().as_deref(),
            Some("http://127.0.0.11:9443")
        );
        assert_eq!(uri_for("http://a:1/").ok().as_deref(), Some("http://a:1"));
        for good in [
            "rift:9444",
            "Rift.tail1234.ts.net:443",
            "[::1]:9443",
            "10.0.0.2:53",
        ] {
            assert!(uri_for(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            // Found by the `address` fuzz target: tonic refuses these at connect.
            "%:1",
            "[::1:5",
            "é:1",
            "{:1",
            "[rift]:1",
            "a..b:1",
            "-a:1",
            "",
            "a",
            "a:0",
            "a:70000",
            "ftp://a:1",
            "a:1/x",
            ":1",
            "u@a:1",
            "https://a:1",
        ] {
            assert!(uri_for(bad).is_err(), "{bad} should be refused");
        }
    }
}

#[cfg(test)]
#[path = "transport/tests.rs"]
mod transport_tests;
