//! The accept loop and one connection's life: at most `max_connections` at
//! once; read the ClientHello within `handshake_timeout`; pick the route from
//! the current table; refuse an unknown or missing name with the
//! `unrecognized_name` alert before any backend is dialled; else dial the
//! backend, send it the buffered ClientHello and forward (`l4`). The route table
//! is swapped whole, so a change applies to new connections and leaves open ones
//! alone.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn, Instrument as _};

use crate::config::Config;
use crate::l4::{self, CopyMode};
use crate::routes::{Mode, Route, Table};
use crate::sni::{self, Parsed};
use crate::store::Store;

/// Time to connect to a backend.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to deliver an alert and see the client go, before closing anyway.
const ALERT_LINGER: Duration = Duration::from_secs(1);

/// The knobs of the connection path, from `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub copy: CopyMode,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Limits {
        Limits {
            max_connections: c.max_connections,
            handshake_timeout: c.handshake_timeout,
            idle_timeout: c.idle_timeout,
            copy: CopyMode::default(),
        }
    }
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    handshake_timeouts: AtomicU64,
    refused: AtomicU64,
    dials: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Cut for not sending a whole ClientHello in time.
    pub handshake_timeouts: u64,
    /// Answered with an alert (unknown or missing name, bad hello, no L7 yet).
    pub refused: u64,
    /// Backend connections attempted.
    pub dials: u64,
}

/// The proxy: its limits, the current route table and counters.
pub struct Proxy {
    limits: Limits,
    routes: RwLock<Arc<Table>>,
    counters: Counters,
}

impl Proxy {
    pub fn new(limits: Limits) -> Arc<Proxy> {
        Arc::new(Proxy {
            limits,
            routes: RwLock::new(Arc::new(Table::new())),
            counters: Counters::default(),
        })
    }

    /// Replaces the route table; connections accepted from now on use it.
    pub fn set_routes(&self, table: Table) {
        let table = Arc::new(table);
        match self.routes.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<Table> {
        match self.routes.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            handshake_timeouts: c.handshake_timeouts.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dials: c.dials.load(Ordering::Relaxed),
        }
    }

    /// Accepts on `listener` until `shutdown` turns true (or its sender goes);
    /// open connections are then closed too.
    pub async fn serve(self: &Arc<Self>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut stop = shutdown.clone();
        loop {
            // At the cap, stop accepting: new clients wait in the kernel backlog.
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return, // never closed
                },
                () = stopped(&mut stop) => return,
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
                () = stopped(&mut stop) => return,
            };
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let this = Arc::clone(self);
            let mut stop = shutdown.clone();
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    tokio::select! {
                        () = this.connection(stream, peer) => {}
                        () = stopped(&mut stop) => {}
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    /// One client connection, from its first byte to its close.
    async fn connection(&self, mut client: TcpStream, peer: SocketAddr) {
        // Forwarded bytes go out as they come; TLS does its own batching.
        if let Err(e) = client.set_nodelay(true) {
            debug!(%peer, error = %e, "set TCP_NODELAY");
        }
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
                self.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, timeout = ?self.limits.handshake_timeout, "no whole ClientHello in time");
                return;
            }
        };
        let host = match parsed {
            Parsed::Found(host) => host,
            Parsed::NoSni => {
                return self
                    .refuse(client, peer, sni::ALERT_UNRECOGNIZED_NAME, "no server name")
                    .await
            }
            Parsed::Invalid(reason) => {
                return self
                    .refuse(client, peer, sni::ALERT_DECODE_ERROR, reason)
                    .await
            }
            Parsed::NeedMore => return, // read_hello never returns it
        };
        let Some(route) = self.routes().lookup(&host).cloned() else {
            return self
                .refuse(client, peer, sni::ALERT_UNRECOGNIZED_NAME, "no route")
                .await;
        };
        if route.mode == Mode::L7 {
            return self
                .refuse(
                    client,
                    peer,
                    sni::ALERT_INTERNAL_ERROR,
                    "l7 routes are not served yet",
                )
                .await;
        }
        self.counters.dials.fetch_add(1, Ordering::Relaxed);
        let backend = match self.dial(&route, &hello, peer, &client).await {
            Ok(b) => b,
            Err(e) => {
                warn!(%peer, %host, backend = %route.backend, error = %e, "dial backend");
                return self
                    .refuse(
                        client,
                        peer,
                        sni::ALERT_INTERNAL_ERROR,
                        "backend unreachable",
                    )
                    .await;
            }
        };
        match l4::forward(client, backend, self.limits.idle_timeout, self.limits.copy).await {
            Ok(moved) => debug!(%peer, %host, ?moved, "connection done"),
            Err(e) => debug!(%peer, %host, error = %e, "connection ended"),
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
        let target = route.backend.to_string();
        let mut backend = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target.as_str()))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect {target}: timed out"),
                )
            })??;
        backend.set_nodelay(true)?;
        if route.proxy_protocol {
            let local = client.local_addr()?;
            backend.write_all(&l4::proxy_v2_header(peer, local)).await?;
        }
        backend.write_all(hello).await?;
        Ok(backend)
    }

    /// Sends a fatal alert and closes, letting the client read it first.
    async fn refuse(&self, mut client: TcpStream, peer: SocketAddr, alert: u8, why: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, alert, why, "refused");
        let linger = async {
            client.write_all(&sni::alert(alert)).await?;
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
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Opens `routes.db`, binds `config.listen` and the admin socket, and serves
/// the stored routes (with no admin call needed after a restart) and the admin
/// API, sharing one route table, until `shutdown`.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)?;
    let table = store.table()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    // The whole config (it holds no secret), as operators check it at start.
    info!(?config, "mc-proxy serving");
    let proxy = Proxy::new(Limits::from(&config));
    info!(routes = table.len(), "routes loaded from routes.db");
    proxy.set_routes(table);
    let admin = crate::admin::serve(
        Arc::clone(&proxy),
        store,
        &config.admin_socket,
        shutdown.clone(),
    );
    let serve = proxy.serve(listener, shutdown);
    tokio::pin!(admin, serve);
    tokio::select! {
        r = &mut admin => {
            // Ended by shutdown (then the proxy ends too) or failed (stop all).
            r?;
            serve.await;
        }
        () = &mut serve => {
            admin.await?;
        }
    }
    Ok(())
}
