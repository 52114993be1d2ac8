//! The accept loop and one connection's life: at most `max_connections` at
//! once; read the ClientHello within `handshake_timeout`; pick the route from
//! the current table; refuse an unknown or missing name with the
//! `unrecognized_name` alert before any backend is dialled; else dial the
//! backend, send it the buffered ClientHello and forward (`l4`). The route table
//! is swapped whole, so a change applies to new connections and leaves open ones
//! alone. A ClientHello offering ALPN `acme-tls/1` for a name with a pending
//! TLS-ALPN-01 challenge is answered here, before any route is looked up.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn, Instrument as _};

use crate::challenge::{Challenges, ACME_TLS_ALPN};
use crate::config::Config;
use crate::l4::{self, Activity, CopyMode};
use crate::l7::{self, L7Route};
use crate::metrics::{Metrics, Refusal};
use crate::routes::{Mode, Route, Table};
use crate::sni::{self, Parsed};
use crate::store::Store;

/// Time to connect to a backend.
const DIAL_TIMEOUT: Duration = l7::DIAL_TIMEOUT;
/// Time to deliver an alert and see the client go, before closing anyway.
const ALERT_LINGER: Duration = Duration::from_secs(1);

/// The knobs of the connection path, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// After SIGTERM, how long open connections may finish.
    pub drain_timeout: Duration,
    pub copy: CopyMode,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Limits {
        Limits {
            max_connections: c.max_connections,
            handshake_timeout: c.handshake_timeout,
            idle_timeout: c.idle_timeout,
            drain_timeout: c.drain_timeout,
            copy: CopyMode::default(),
        }
    }
}

/// A snapshot of the main counters (the rest are in `metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Cut for not sending a whole ClientHello in time.
    pub handshake_timeouts: u64,
    /// Ended before forwarding for any other reason (alerts, TLS failures).
    pub refused: u64,
    /// L4 backend connections attempted.
    pub dials: u64,
}

/// What connections are routed by: the route table and, for its L7 routes,
/// their loaded certificates and backend pools. Swapped whole.
#[derive(Default)]
pub struct Live {
    pub table: Table,
    pub l7: Table<Arc<L7Route>>,
    /// Every route's counters (by pattern, so a wildcard has one set).
    counters: Table<Arc<crate::metrics::RouteCounters>>,
}

/// The live routes, shared by the proxy and the TLS certificate resolver.
#[derive(Default)]
struct Shared(RwLock<Arc<Live>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("live routes")
    }
}

impl Shared {
    fn get(&self) -> Arc<Live> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
    fn set(&self, live: Live) {
        let live = Arc::new(live);
        match self.0.write() {
            Ok(mut guard) => *guard = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
    }
}

/// The proxy: its limits, the live routes and the counters.
pub struct Proxy {
    limits: Limits,
    live: Arc<Shared>,
    metrics: Arc<Metrics>,
    tls: Arc<rustls::ServerConfig>,
    challenges: Arc<Challenges>,
}

impl Proxy {
    pub fn new(limits: Limits) -> anyhow::Result<Arc<Proxy>> {
        let live = Arc::new(Shared::default());
        let from = Arc::clone(&live);
        let resolver =
            l7::Resolver(move |name: &str| from.get().l7.lookup(name).map(|r| Arc::clone(&r.key)));
        let tls = l7::server_config(Arc::new(resolver)).context("L7 TLS config")?;
        Ok(Arc::new(Proxy {
            limits,
            live,
            metrics: Arc::new(Metrics::default()),
            tls,
            challenges: Arc::new(Challenges::default()),
        }))
    }

    /// Replaces the route table; connections accepted from now on use it. L7
    /// routes that did not change keep their loaded state and backend pools.
    pub fn set_routes(&self, table: Table) {
        let old = self.live.get();
        let l7 = l7::build_all(&table, Some(&old.l7), &self.metrics);
        let mut counters = Table::new();
        for (pattern, _) in table.routes() {
            let c = self.metrics.route(&pattern);
            counters.insert_pattern(pattern, c);
        }
        self.live.set(Live {
            table,
            l7,
            counters,
        });
    }

    /// The live routes.
    pub fn routes(&self) -> Arc<Live> {
        self.live.get()
    }

    /// Checks that a route can be served (an L7 route's certificate, key and
    /// backend roots load), without changing anything.
    pub fn check(&self, pattern: &crate::routes::Pattern, route: &Route) -> Result<(), String> {
        match route.mode {
            Mode::L4 => Ok(()),
            Mode::L7 => L7Route::build(pattern, route, &Metrics::default()).map(drop),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The pending ACME challenges (in memory only).
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    pub fn stats(&self) -> Stats {
        let m = &self.metrics;
        let timeouts = m.refused_total(Refusal::HandshakeTimeout);
        Stats {
            accepted: m.accepted_total(),
            handshake_timeouts: timeouts,
            refused: m.refused_all() - timeouts,
            dials: m.dials_total(),
        }
    }

    /// Accepts on `listener` until `shutdown` turns true (or its sender goes);
    /// then stops accepting and lets open connections finish for up to
    /// `drain_timeout` (L7 connections are asked to close after their current
    /// request) before cutting the rest.
    pub async fn serve(self: &Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let (cut_tx, cut_rx) = watch::channel(false);
        let mut stop = shutdown.clone();
        loop {
            // At the cap, stop accepting: new clients wait in the kernel backlog.
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return, // never closed
                },
                () = stopped(&mut stop) => break,
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopped(&mut stop) => break,
            };
            let open = self.metrics.accepted();
            let this = Arc::clone(self);
            let drain = shutdown.clone();
            let mut cut = cut_rx.clone();
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    tokio::select! {
                        () = this.connection(stream, peer, drain) => {}
                        () = stopped(&mut cut) => {}
                    }
                    drop(open);
                    drop(permit);
                }
                .instrument(span),
            );
        }
        drop(listener);
        let max = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let open = self.metrics.open_now();
        if open > 0 {
            info!(open, deadline = ?self.limits.drain_timeout, "draining open connections");
        }
        let drained =
            tokio::time::timeout(self.limits.drain_timeout, slots.acquire_many(max)).await;
        match drained {
            Ok(_) => {}
            Err(_) => {
                let open = self.metrics.open_now();
                info!(open, "drain deadline passed: closing the rest");
                let _ = cut_tx.send(true);
                // Let the cut tasks run their drops.
                let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(max)).await;
            }
        };
    }

    /// One client connection, from its first byte to its close. `drain` turns
    /// true when the proxy stops: an L4 copy then goes on to its end (or the
    /// deadline), an L7 connection closes after its current requests.
    async fn connection(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        // Forwarded bytes go out as they come; TLS does its own batching.
        if let Err(e) = client.set_nodelay(true) {
            debug!(%peer, error = %e, "set TCP_NODELAY");
        }
        let started = tokio::time::Instant::now();
        let (hello, parsed) = match tokio::time::timeout(
            self.limits.handshake_timeout,
            read_hello(&mut client),
        )
        .await
        {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "read ClientHello");
                return;
            }
            Err(_) => {
                self.metrics.refused(Refusal::HandshakeTimeout);
                debug!(%peer, timeout = ?self.limits.handshake_timeout, "no whole ClientHello in time");
                return;
            }
        };
        let host = match parsed {
            Parsed::Found(host) => host,
            Parsed::NoSni => {
                return self
                    .refuse(
                        client,
                        peer,
                        Refusal::NoSni,
                        sni::ALERT_UNRECOGNIZED_NAME,
                        "no server name",
                    )
                    .await
            }
            Parsed::Invalid(reason) => {
                return self
                    .refuse(
                        client,
                        peer,
                        Refusal::BadHello,
                        sni::ALERT_DECODE_ERROR,
                        reason,
                    )
                    .await
            }
            Parsed::NeedMore => return, // read_hello never returns it
        };
        if let Some(config) = self.challenges.tls_alpn(&host) {
            if sni::offers_alpn(&hello, ACME_TLS_ALPN) {
                let left = self
                    .limits
                    .handshake_timeout
                    .saturating_sub(started.elapsed());
                return self
                    .answer_tls_alpn(client, hello, peer, &host, config, left)
                    .await;
            }
        }
        let live = self.routes();
        let Some(route) = live.table.lookup(&host).cloned() else {
            return self
                .refuse(
                    client,
                    peer,
                    Refusal::UnknownName,
                    sni::ALERT_UNRECOGNIZED_NAME,
                    "no route",
                )
                .await;
        };
        if route.mode == Mode::L7 {
            let Some(l7) = live.l7.lookup(&host).cloned() else {
                return self
                    .refuse(
                        client,
                        peer,
                        Refusal::NotServed,
                        sni::ALERT_INTERNAL_ERROR,
                        "the l7 route's certificate could not be loaded",
                    )
                    .await;
            };
            drop(live);
            let left = self
                .limits
                .handshake_timeout
                .saturating_sub(started.elapsed());
            return self.terminate(client, hello, peer, l7, left, drain).await;
        }
        let counters = live.counters.lookup(&host).cloned();
        drop(live);
        if route.unavailable {
            // The service is stopped; this proxy holds no TLS for an l4 name,
            // so it can only close.
            return self.close(client, peer, Refusal::Unavailable).await;
        }
        self.metrics.dialled();
        let backend = match self.dial(&route, &hello, peer, &client).await {
            Ok(b) => b,
            Err(e) => {
                if let Some(c) = counters {
                    c.dial_error();
                }
                warn!(%peer, %host, backend = %route.backend, error = %e, "dial backend");
                return self
                    .refuse(
                        client,
                        peer,
                        Refusal::BackendUnreachable,
                        sni::ALERT_INTERNAL_ERROR,
                        "backend unreachable",
                    )
                    .await;
            }
        };
        match l4::forward(client, backend, self.limits.idle_timeout, self.limits.copy).await {
            Ok(moved) => {
                self.metrics.received(moved.to_backend as usize);
                self.metrics.sent(moved.to_client as usize);
                debug!(%peer, %host, ?moved, "connection done")
            }
            Err(e) => debug!(%peer, %host, error = %e, "connection ended"),
        }
    }

    /// L7: finishes the TLS handshake (within what is left of the handshake
    /// timeout) and serves HTTP on it.
    async fn terminate(
        &self,
        client: TcpStream,
        hello: Vec<u8>,
        peer: SocketAddr,
        route: Arc<L7Route>,
        left: Duration,
        mut drain: watch::Receiver<bool>,
    ) {
        let local = match client.local_addr() {
            Ok(a) => a,
            Err(e) => return debug!(%peer, error = %e, "local address"),
        };
        let activity = Arc::new(Activity::new());
        let io = l7::ClientIo::new(
            hello,
            client,
            Arc::clone(&activity),
            Arc::clone(&self.metrics),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.tls));
        let tls = match tokio::time::timeout(left, acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.metrics.refused(Refusal::Tls);
                return debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.metrics.refused(Refusal::HandshakeTimeout);
                return debug!(%peer, "TLS handshake not done in time");
            }
        };
        l7::serve(tls, route, peer, local, activity, self.limits, async move {
            stopped(&mut drain).await
        })
        .await;
    }

    /// TLS-ALPN-01 (RFC 8737): completes the handshake with the challenge's
    /// certificate and `acme-tls/1`, then closes.
    async fn answer_tls_alpn(
        &self,
        client: TcpStream,
        hello: Vec<u8>,
        peer: SocketAddr,
        host: &str,
        config: Arc<rustls::ServerConfig>,
        left: Duration,
    ) {
        let io = l7::ClientIo::new(
            hello,
            client,
            Arc::new(Activity::new()),
            Arc::clone(&self.metrics),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(left, acceptor.accept(io)).await {
            Ok(Ok(mut tls)) => {
                info!(%peer, host, "tls-alpn-01 challenge answered");
                let _ = tokio::time::timeout(ALERT_LINGER, tls.shutdown()).await;
            }
            Ok(Err(e)) => {
                self.metrics.refused(Refusal::Tls);
                debug!(%peer, host, error = %e, "tls-alpn-01 handshake failed");
            }
            Err(_) => {
                self.metrics.refused(Refusal::HandshakeTimeout);
                debug!(%peer, host, "tls-alpn-01 handshake not done in time");
            }
        }
    }

    /// Connects to the route's backend and sends it what it must see first: the
    /// PROXY header if asked, then the client's ClientHello bytes.
    async fn dial(
        &self,
        route: &Route,
        hello: &[u8],
        peer: SocketAddr,
        client: &TcpStream,
    ) -> io::Result<TcpStream> {
        let proxy = match route.proxy_protocol {
            true => Some((peer, client.local_addr()?)),
            false => None,
        };
        let mut backend =
            tokio::time::timeout(DIAL_TIMEOUT, l4::connect_backend(&route.backend, proxy))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect {}: timed out", route.backend),
                    )
                })??;
        backend.write_all(hello).await?;
        Ok(backend)
    }

    /// Sends a fatal alert and closes, letting the client read it first.
    async fn refuse(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        why: Refusal,
        alert: u8,
        text: &str,
    ) {
        debug!(%peer, alert, why = text, "refused");
        self.linger(client, why, Some(alert)).await;
    }

    /// Closes without an alert (the client sees the connection end).
    async fn close(&self, client: TcpStream, peer: SocketAddr, why: Refusal) {
        debug!(%peer, why = why.as_str(), "closed after the ClientHello");
        self.linger(client, why, None).await;
    }

    /// Counts the refusal, sends `alert` if any, half-closes and lets the
    /// client go first.
    async fn linger(&self, mut client: TcpStream, why: Refusal, alert: Option<u8>) {
        self.metrics.refused(why);
        let linger = async {
            if let Some(alert) = alert {
                client.write_all(&sni::alert(alert)).await?;
            }
            client.shutdown().await?;
            // Drain until the client closes, so our close sends no RST that could
            // discard the alert before the client reads it.
            let mut sink = [0u8; 1024];
            while client.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(ALERT_LINGER, linger).await;
    }
}

/// Reads until the ClientHello is complete (or refused); every byte read is
/// returned for the backend. Parses once per completed record.
async fn read_hello(client: &mut TcpStream) -> io::Result<(Vec<u8>, Parsed)> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let mut first = true;
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed before its ClientHello ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if !first && buf.len() < sni::wanted(&buf) {
            continue;
        }
        first = false;
        match sni::parse(&buf) {
            Parsed::NeedMore if buf.len() >= sni::MAX_INPUT => {
                return Ok((
                    buf,
                    Parsed::Invalid("ClientHello spread over too many bytes"),
                ))
            }
            Parsed::NeedMore => {}
            done => return Ok((buf, done)),
        }
    }
}

/// Resolves when the shutdown flag is true or its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Takes the listening sockets from an mc-proxy running on the same
/// `data_dir` (`handover`), or binds `config.listen` (and `http_listen`,
/// `metrics_listen` when set); opens `routes.db` and serves its routes (no
/// admin call needed after a restart), the admin API and the plain listeners
/// until `shutdown` or until a newer mc-proxy takes the sockets over; then
/// drains.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    use crate::handover;
    use std::os::fd::AsFd as _;

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data_dir {}", config.data_dir.display()))?;
    let handover_socket = config.data_dir.join(handover::SOCKET);
    let mut taken = {
        let path = handover_socket.clone();
        tokio::task::spawn_blocking(move || handover::take(&path))
            .await
            .context("handover")??
    };
    let listener = open_listener(taken.as_mut(), "listen", Some(config.listen))
        .await?
        .context("listen: no socket")?;
    let http = open_listener(taken.as_mut(), "http_listen", config.http_listen).await?;
    let metrics = open_listener(taken.as_mut(), "metrics_listen", config.metrics_listen).await?;
    // The old proxy's admin API has stopped by now, so routes.db is settled.
    let store = Store::open(&config.data_dir)?;
    let table = store.table()?;
    // The whole config (it holds no secret), as operators check it at start.
    info!(?config, handover = taken.is_some(), "mc-proxy serving");
    let proxy = Proxy::new(Limits::from(&config))?;
    info!(
        routes = table.len(),
        l7 = table
            .routes()
            .iter()
            .filter(|(_, r)| r.mode == Mode::L7)
            .count(),
        "routes loaded from routes.db"
    );
    proxy.set_routes(table);
    let bound = crate::admin::bind(&config.admin_socket)?;
    if let Some(t) = taken {
        t.confirm().context("confirm the handover")?;
        info!("took the listening sockets over from the running mc-proxy");
    }

    // Stopping: on `shutdown`, or when a newer proxy has taken the sockets.
    let (handed_tx, handed_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let mut shutdown = shutdown.clone();
        let mut handed = handed_rx.clone();
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped(&mut shutdown) => {}
                () = stopped(&mut handed) => {}
            }
            let _ = stop_tx.send(true);
        });
    }
    let mut offered = vec![("listen", listener.as_fd().try_clone_to_owned()?)];
    let mut side = Vec::new();
    if let Some(l) = http {
        offered.push(("http_listen", l.as_fd().try_clone_to_owned()?));
        let port = config.listen.port();
        side.push(tokio::spawn(crate::plain::serve(
            "http_listen",
            l,
            crate::plain::redirect_handler(port, Arc::clone(proxy.challenges())),
            stop_rx.clone(),
        )));
    }
    if let Some(l) = metrics {
        offered.push(("metrics_listen", l.as_fd().try_clone_to_owned()?));
        side.push(tokio::spawn(crate::plain::serve(
            "metrics_listen",
            l,
            crate::plain::metrics_handler(Arc::clone(proxy.metrics())),
            stop_rx.clone(),
        )));
    }
    let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(1);
    let offer = tokio::spawn(handover::offer(
        handover_socket,
        offered,
        admin_tx,
        handed_tx,
        stop_rx.clone(),
    ));
    let admin = admin_loop(
        Arc::clone(&proxy),
        store,
        bound,
        config.clone(),
        admin_rx,
        stop_rx.clone(),
    );
    let serve = proxy.serve(listener, stop_rx);
    tokio::pin!(admin, serve);
    let result = tokio::select! {
        r = &mut admin => {
            // Ended by shutdown (then the proxy ends too) or failed (stop all).
            if r.is_ok() {
                serve.await;
            }
            r
        }
        () = &mut serve => {
            let _ = stop_tx.send(true);
            admin.await
        }
    };
    for task in side {
        task.abort();
    }
    if let Ok(Err(e)) = offer.await {
        warn!(error = %format!("{e:#}"), "handover socket");
    }
    result
}

/// The socket for `key`: taken over from the running proxy, or bound to `want`.
async fn open_listener(
    taken: Option<&mut crate::handover::Taken>,
    key: &'static str,
    want: Option<SocketAddr>,
) -> anyhow::Result<Option<TcpListener>> {
    if let Some(t) = taken {
        if let Some(l) = crate::handover::check(t, key, want)? {
            return Ok(Some(TcpListener::from_std(l)?));
        }
    }
    match want {
        None => Ok(None),
        Some(a) => TcpListener::bind(a)
            .await
            .map(Some)
            .with_context(|| format!("{key} {a}")),
    }
}

/// The admin API, paused while a handover is under way and resumed if it
/// fails (with `routes.db` opened and the socket bound again), until `stop`.
async fn admin_loop(
    proxy: Arc<Proxy>,
    store: Store,
    bound: crate::admin::Bound,
    config: Config,
    mut commands: tokio::sync::mpsc::Receiver<crate::handover::AdminCommand>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use crate::handover::AdminCommand;
    let mut first = Some((store, bound));
    loop {
        let (store, bound) = match first.take() {
            Some(x) => x,
            None => (
                Store::open(&config.data_dir)?,
                crate::admin::bind(&config.admin_socket)?,
            ),
        };
        let (pause_tx, pause_rx) = watch::channel(false);
        let serve = crate::admin::serve_bound(Arc::clone(&proxy), store, bound, pause_rx);
        tokio::pin!(serve);
        let paused = tokio::select! {
            r = &mut serve => return r,
            () = stopped(&mut stop) => {
                let _ = pause_tx.send(true);
                return serve.await;
            }
            c = commands.recv() => match c {
                Some(AdminCommand::Pause(done)) => {
                    let _ = pause_tx.send(true);
                    serve.await?;
                    let _ = done.send(());
                    true
                }
                Some(AdminCommand::Resume) => false,
                None => {
                    // The handover offer has ended; serve on until stopped.
                    let _ = pause_tx.send(false);
                    tokio::select! {
                        r = &mut serve => return r,
                        () = stopped(&mut stop) => {
                            let _ = pause_tx.send(true);
                            return serve.await;
                        }
                    }
                }
            },
        };
        if paused {
            // Wait to resume; a completed handover ends with `stop`.
            tokio::select! {
                c = commands.recv() => match c {
                    Some(AdminCommand::Resume) => {}
                    Some(AdminCommand::Pause(done)) => { let _ = done.send(()); }
                    None => {
                        stopped(&mut stop).await;
                        return Ok(());
                    }
                },
                () = stopped(&mut stop) => return Ok(()),
            }
        }
    }
}
