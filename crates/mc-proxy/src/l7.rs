//! L7 termination once a route is chosen: TLS ends here (rustls, TLS 1.2 and
//! 1.3, ALPN `h2` and `http/1.1`, the certificate picked per SNI by a resolver
//! over the live table), HTTP/1.1 or HTTP/2 is served by hyper, and each request
//! goes to the route's backend over a pool of kept-alive HTTP/1.1 connections,
//! in TLS verified against the route's CA for its backend name, or plain.
//! Bodies stream both ways; upgrades (WebSocket) become a two-way byte copy.
//!
//! The edge is the first hop the backend can trust, so `X-Forwarded-For`,
//! `-Proto` and `-Host` are set here, replacing whatever the client sent.
//!
//! A route marked `unavailable` (its service is stopped) still completes the
//! handshake with its certificate, then answers every request 503 with
//! `Retry-After`, dialling nothing.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream as ClientTls;
use tracing::{debug, warn};

use crate::l4::{self, Activity};
use crate::metrics::{Metrics, RouteCounters};
use crate::routes::{Backend, Mode, Pattern, Route, Table};

/// Time to connect to a backend (and finish its TLS handshake).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) read from a client, in
/// HTTP/1.1 the read buffer (hyper's floor is 8 KiB), in HTTP/2 the header list.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long an idle pooled backend connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle pooled connections kept per backend.
const POOL_MAX_IDLE: usize = 256;
/// The `Retry-After` of an unavailable route's 503, in seconds.
pub const UNAVAILABLE_RETRY_AFTER: &str = "5";

/// The response body: the backend's, streamed, or one of ours.
pub type Body = Either<Incoming, Full<Bytes>>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What an L7 route needs at run time, built from its `Route` when the table
/// is swapped in (and kept across swaps while the route is unchanged, so its
/// pool of backend connections stays warm).
pub struct L7Route {
    /// The route it was built from.
    pub route: Route,
    pattern: Pattern,
    /// The public certificate, served for this route's names.
    pub key: Arc<CertifiedKey>,
    /// Shared by every client of a route without PROXY headers.
    client: Client<Connector, Incoming>,
    connector: Connector,
    /// `scheme://backend` for request URIs (the connector ignores them; the
    /// pool keys on them).
    base: String,
    counters: Arc<RouteCounters>,
}

impl L7Route {
    /// Checks and loads an L7 route: its certificate chain and key (which must
    /// match), and for a TLS backend its roots and the name to verify.
    pub fn build(pattern: &Pattern, route: &Route, metrics: &Metrics) -> Result<L7Route, String> {
        if route.mode != Mode::L7 {
            return Err("not an l7 route".into());
        }
        let tls = route
            .tls
            .as_ref()
            .ok_or("cert_pem and key_pem: required for l7 routes")?;
        let certs =
            mcp_pki::cert::certs_from_pem(&tls.cert_pem).map_err(|e| format!("cert_pem: {e}"))?;
        let key = mcp_pki::cert::key_from_pem(&tls.key_pem).map_err(|e| format!("key_pem: {e}"))?;
        let key = CertifiedKey::from_der(certs, key, &provider())
            .map_err(|e| format!("cert_pem and key_pem: {e}"))?;
        let tls_backend = if route.backend_tls {
            let ca = tls.backend_ca_pem.as_deref().ok_or(
                "backend_ca_pem: required for an l7 route with a TLS backend (or use a plain backend)",
            )?;
            let mut roots = RootCertStore::empty();
            for cert in
                mcp_pki::cert::certs_from_pem(ca).map_err(|e| format!("backend_ca_pem: {e}"))?
            {
                roots
                    .add(cert)
                    .map_err(|e| format!("backend_ca_pem: {e}"))?;
            }
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("backend TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = match (&route.backend_name, &route.backend) {
                (Some(n), _) => n.clone(),
                (None, Backend::Addr(a)) => a.ip().to_string(),
                (None, Backend::Name { host, .. }) => host.clone(),
            };
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("backend_name {name:?}: {e}"))?;
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                name.to_owned(),
            ))
        } else {
            None
        };
        let counters = metrics.route(pattern);
        let connector = Connector {
            backend: route.backend.clone(),
            tls: tls_backend,
            proxy: None,
            counters: Arc::clone(&counters),
        };
        Ok(L7Route {
            route: route.clone(),
            pattern: pattern.clone(),
            key: Arc::new(key),
            client: pool(connector.clone()),
            connector,
            base: format!("http://{}", route.backend),
            counters,
        })
    }

    /// The client a connection from `peer` (reaching us on `local`) uses: the
    /// route's shared pool, or with PROXY headers a pool of its own, since each
    /// backend connection then speaks for one client.
    fn client_for(&self, peer: SocketAddr, local: SocketAddr) -> Client<Connector, Incoming> {
        if self.route.proxy_protocol {
            pool(Connector {
                proxy: Some((peer, local)),
                ..self.connector.clone()
            })
        } else {
            self.client.clone()
        }
    }
}

fn pool(connector: Connector) -> Client<Connector, Incoming> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// The L7 state of every L7 route of a table, reusing `old`'s entry for each
/// route that did not change. A route that cannot be loaded is left out and
/// logged; its clients get an alert.
pub fn build_all(
    table: &Table,
    old: Option<&Table<Arc<L7Route>>>,
    metrics: &Metrics,
) -> Table<Arc<L7Route>> {
    let mut out = Table::new();
    for (pattern, route) in table.routes() {
        if route.mode != Mode::L7 {
            continue;
        }
        if let Some(kept) = old
            .and_then(|t| t.get(&pattern))
            .filter(|k| k.route == *route)
        {
            out.insert_pattern(pattern, Arc::clone(kept));
            continue;
        }
        match L7Route::build(&pattern, route, metrics) {
            Ok(l7) => out.insert_pattern(pattern, Arc::new(l7)),
            Err(e) => warn!(hostname = %pattern, error = %e, "l7 route not served"),
        }
    }
    out
}

/// Picks the certificate by SNI from the live table (so it changes with it).
pub struct Resolver<F>(pub F);

impl<F> std::fmt::Debug for Resolver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver(live routes)")
    }
}

impl<F> ResolvesServerCert for Resolver<F>
where
    F: Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync,
{
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        (self.0)(&name)
    }
}

/// The one server config of every L7 route: TLS 1.3 and 1.2, `h2` then
/// `http/1.1`, certificates from `resolver`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// The client side of an L7 connection: the bytes already read for the SNI
/// first, then the socket; every byte either way counts as activity and in the
/// byte counters.
pub struct ClientIo {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
}

impl ClientIo {
    pub(crate) fn new(
        prefix: Vec<u8>,
        inner: TcpStream,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
    ) -> ClientIo {
        ClientIo {
            prefix,
            at: 0,
            inner,
            activity,
            metrics,
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.touch();
            this.metrics.received(n);
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            this.activity.touch();
            this.metrics.sent(n);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.activity.touch();
            this.metrics.sent(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Dials a route's backend for the pool: TCP, the PROXY header if the route
/// asks, then TLS verified for the backend name unless the backend is plain.
#[derive(Clone)]
struct Connector {
    backend: Backend,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The client and the address it reached, for a PROXY header.
    proxy: Option<(SocketAddr, SocketAddr)>,
    counters: Arc<RouteCounters>,
}

impl Connector {
    async fn connect(self) -> io::Result<TokioIo<BackendIo>> {
        let dial = async {
            let tcp = l4::connect_backend(&self.backend, self.proxy).await?;
            match &self.tls {
                None => Ok(BackendIo::Plain(tcp)),
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await?;
                    Ok(BackendIo::Tls(Box::new(tls)))
                }
            }
        };
        let r = match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect {}: timed out", self.backend),
            )),
        };
        if r.is_err() {
            self.counters.dial_error();
        }
        r.map(TokioIo::new)
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<BackendIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<BackendIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

/// A backend connection, plain or TLS.
enum BackendIo {
    Plain(TcpStream),
    Tls(Box<ClientTls<TcpStream>>),
}

impl Connection for BackendIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for BackendIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_write(cx, b),
            BackendIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            BackendIo::Plain(s) => s.is_write_vectored(),
            BackendIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Serves HTTP on an accepted TLS connection until the client goes, the
/// connection idles out, or `drain` resolves (then in-flight requests finish
/// and the connection closes, up to the caller's deadline).
pub(crate) async fn serve(
    tls: tokio_rustls::server::TlsStream<ClientIo>,
    route: Arc<L7Route>,
    peer: SocketAddr,
    local: SocketAddr,
    activity: Arc<Activity>,
    limits: crate::proxy::Limits,
    drain: impl Future<Output = ()>,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let client = route.client_for(peer, local);
    // Requests begun on this connection: a drain lets a new connection's first
    // request in before it asks the connection to close.
    let (begun_tx, mut begun) = tokio::sync::watch::channel(0u64);
    let svc = hyper::service::service_fn(move |req| {
        let route = Arc::clone(&route);
        let client = client.clone();
        begun_tx.send_modify(|n| *n += 1);
        async move { Ok::<_, Infallible>(forward(&route, &client, req, peer).await) }
    });
    let io = TokioIo::new(tls);
    let idle = activity.idle(limits.idle_timeout);
    let first_wait = limits.handshake_timeout;
    let drain = async move {
        drain.await;
        // A client that connected just before the drain has its request on the
        // way: wait for it (at most the time it had to send it).
        let _ = tokio::time::timeout(first_wait, begun.wait_for(|n| *n > 0)).await;
    };
    tokio::pin!(drain, idle);
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(256)
            .serve_connection(io, svc);
        tokio::pin!(conn);
        drive(conn.as_mut(), drain, idle, |c| c.graceful_shutdown()).await;
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        drive(conn.as_mut(), drain, idle, |c| c.graceful_shutdown()).await;
    }
}

/// Runs a hyper connection; on `drain` asks it to finish gracefully and keeps
/// running it; on `idle` drops it.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    mut drain: Pin<&mut impl Future<Output = ()>>,
    mut idle: Pin<&mut impl Future<Output = ()>>,
    graceful: impl FnOnce(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let done = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = drain.as_mut() => None,
        () = idle.as_mut() => return debug!("l7 connection idle"),
    };
    let r = match done {
        Some(r) => r,
        None => {
            graceful(conn.as_mut());
            tokio::select! {
                r = conn.as_mut() => r,
                () = idle.as_mut() => return,
            }
        }
    };
    if let Err(e) = r {
        debug!(error = %e, "l7 connection ended");
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` and an
/// `Upgrade` header), and to what.
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks || req.version() != Version::HTTP_11 {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// The request's host: the URI's authority (HTTP/2, absolute form) or `Host`,
/// lowercase and without a port.
fn host_of(req: &Request<Incoming>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            let a: http::uri::Authority = h.parse().ok()?;
            a.host().to_string()
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

fn reply(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{text}\n")))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One request: checks its host is this connection's route, forwards it and
/// streams the answer back (or 502 when the backend cannot be reached or
/// fails its certificate check, 503 when the route is unavailable).
async fn forward(
    route: &L7Route,
    client: &Client<Connector, Incoming>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let response = forward_inner(route, client, req, peer).await;
    route.counters.status(response.status().as_u16());
    response
}

async fn forward_inner(
    route: &L7Route,
    client: &Client<Connector, Incoming>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(host) = host_of(&req) else {
        return reply(StatusCode::BAD_REQUEST, "no host in the request");
    };
    // A client may reuse a connection for another name its certificate
    // covers (HTTP/2 coalescing); only this route's names are served here.
    if !route.pattern.matches(&host) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "this connection does not serve that host",
        );
    }
    if route.route.unavailable {
        let mut r = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable: the service behind this name is stopped",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER),
        );
        return r;
    }
    let upgrade = upgrade_of(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{}{path}", route.base).parse() {
        Ok(u) => u,
        Err(_) => return reply(StatusCode::BAD_REQUEST, "bad request target"),
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Ok(v) = HeaderValue::from_str(&host) {
        headers.insert(header::HOST, v.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("https"),
    );
    if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(u) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.clone());
    }

    let mut resp = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            let cause = error_chain(&e);
            warn!(hostname = %route.pattern, backend = %route.route.backend, error = %cause, "backend request failed");
            return reply(StatusCode::BAD_GATEWAY, "bad gateway: the backend failed");
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, backend_upgrade) {
                    Ok((c, b)) => {
                        let mut c = TokioIo::new(c);
                        let mut b = TokioIo::new(b);
                        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
                            debug!(error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => debug!(error = %e, "upgrade failed"),
                }
            });
            let (mut parts, body) = resp.into_parts();
            let upgrade_to = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(u) = upgrade_to {
                parts.headers.insert(header::UPGRADE, u);
            }
            return Response::from_parts(parts, Either::Left(body));
        }
        return reply(
            StatusCode::BAD_GATEWAY,
            "the backend switched protocols unasked",
        );
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}

/// The error and its sources, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
