//! An edge node's public routes (SPEC §7): validated, committed to `agent.db`
//! (`edge_routes`, one versioned JSON row per hostname) before mc-proxy is
//! programmed through its admin socket, and re-applied whenever mc-proxy's
//! table differs from the agent's (its start, a restart of mc-proxy, a change
//! made behind the agent's back). mc-proxy's own `routes.db` keeps serving
//! while the agent is down; the agent owns the proxy's table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mcp_proto::agent::v1::EdgeRoute;
use mcp_proto::mcproxy::admin::v1::{self as admin, admin_client::AdminClient};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::Store;

/// The format of a stored edge route.
const ROUTE_FORMAT: u64 = 1;
/// How often mc-proxy's table is compared with the agent's.
const RESYNC: Duration = Duration::from_secs(2);

/// How long a route switching backends waits for the new one to accept.
const BACKEND_WAIT: Duration = Duration::from_secs(5);

/// Why an edge route was refused.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{0}")]
    Invalid(String),
    /// Not now: the new backend does not answer yet.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// The edge's routes and the mc-proxy it programs.
pub struct Edge {
    store: Store,
    socket: PathBuf,
    /// The fleet CA (PEM): what an l7 route's TLS backend is verified against.
    fleet_ca_pem: String,
    /// Wakes the resync loop after a change.
    changed: tokio::sync::Notify,
    /// The stored routes as reported, kept between changes: every heartbeat asks
    /// (for its digest), and the table changes only through `put` and `delete`.
    reports: std::sync::Mutex<Option<Vec<EdgeRoute>>>,
    /// Public certificates from ACME, where `[acme]` is configured.
    acme: Option<Acme>,
}

/// The edge's ACME side: its config, where its account lives, and the state of
/// each hostname's last attempt.
struct Acme {
    config: crate::acme::AcmeConfig,
    account_dir: PathBuf,
    /// Hostnames whose last attempt failed: why, when to try again, the next wait.
    failing: std::sync::Mutex<BTreeMap<String, (String, tokio::time::Instant, Duration)>>,
    /// Wakes the ACME loop (a route without a certificate arrived).
    wake: tokio::sync::Notify,
}

/// First wait after a failed ACME attempt for a hostname; doubles up to the cap.
const ACME_BACKOFF_MIN: Duration = Duration::from_secs(2);
const ACME_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How often the ACME loop looks for certificates due (without a wake-up).
const ACME_TICK: Duration = Duration::from_secs(30);
/// The shortest wait for a renewal, so a certificate due as soon as it is issued
/// is not asked for in a tight loop.
const ACME_RENEW_MIN: Duration = Duration::from_secs(1);

/// Checks a route from the master.
pub fn validate(r: &EdgeRoute) -> Result<(), String> {
    let host = r.hostname.strip_prefix("*.").unwrap_or(&r.hostname);
    mcp_types::name::check_hostname(host).map_err(|e| format!("hostname: {e}"))?;
    let (bhost, port) = r
        .backend
        .rsplit_once(':')
        .ok_or_else(|| format!("backend {:?}: not host:port", r.backend))?;
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || bhost.is_empty() {
        return Err(format!("backend {:?}: not host:port", r.backend));
    }
    match r.mode.as_str() {
        "l4" => {
            if !r.cert_pem.is_empty() || !r.key_pem.is_empty() {
                return Err("cert_pem, key_pem: only for l7 routes".into());
            }
        }
        "l7" => {
            if r.cert_pem.is_empty() != r.key_pem.is_empty() {
                return Err("cert_pem and key_pem: both or neither".into());
            }
        }
        other => return Err(format!("mode {other:?}: not l4 or l7")),
    }
    Ok(())
}

fn encode(r: &EdgeRoute) -> String {
    serde_json::json!({
        "v": ROUTE_FORMAT,
        "hostname": r.hostname,
        "service": r.service,
        "component": r.component,
        "route": r.route,
        "backend": r.backend,
        "mode": r.mode,
        "backend_tls": r.backend_tls,
        "backend_name": r.backend_name,
        "proxy_protocol": r.proxy_protocol,
        "unavailable": r.unavailable,
        "cert_pem": r.cert_pem,
        "key_pem": r.key_pem,
    })
    .to_string()
}

fn decode(text: &str) -> anyhow::Result<EdgeRoute> {
    let v: serde_json::Value = serde_json::from_str(text).context("edge route JSON")?;
    let format = v["v"].as_u64().unwrap_or(0);
    if format != ROUTE_FORMAT {
        anyhow::bail!(
            "edge route format {format}: this agent reads {ROUTE_FORMAT}; run a newer mcp-agent"
        );
    }
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let b = |k: &str| v[k].as_bool().unwrap_or(false);
    Ok(EdgeRoute {
        hostname: s("hostname"),
        service: s("service"),
        component: s("component"),
        route: s("route"),
        backend: s("backend"),
        mode: s("mode"),
        backend_tls: b("backend_tls"),
        backend_name: s("backend_name"),
        proxy_protocol: b("proxy_protocol"),
        unavailable: b("unavailable"),
        cert_pem: s("cert_pem"),
        key_pem: s("key_pem"),
        ..Default::default()
    })
}

/// Can mc-proxy serve it now? An l7 route needs its certificate (ACME may not
/// have brought it yet).
fn servable(r: &EdgeRoute) -> bool {
    r.mode != "l7" || !r.cert_pem.is_empty()
}

/// A stored route as it is reported: the key and certificate left out, the
/// certificate's validity in.
fn report(mut r: EdgeRoute) -> EdgeRoute {
    if let Ok((nb, na)) = mcp_pki::cert::validity_unix(&r.cert_pem) {
        r.cert_not_before = nb;
        r.cert_not_after = na;
    }
    r.cert_pem.clear();
    r.key_pem.clear();
    r
}

/// Waits until `backend` accepts a TCP connection, at most `bound`.
async fn wait_for_backend(backend: &str, bound: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(backend),
        )
        .await;
        let error = match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{backend} does not accept connections after {bound:?}: {error}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What mc-proxy is asked to serve for a route.
fn to_admin(r: &EdgeRoute, fleet_ca_pem: &str) -> admin::Route {
    let l7 = r.mode == "l7";
    admin::Route {
        hostname: r.hostname.clone(),
        backend: r.backend.clone(),
        mode: r.mode.clone(),
        backend_tls: !l7 || r.backend_tls,
        backend_name: if l7 {
            r.backend_name.clone()
        } else {
            String::new()
        },
        proxy_protocol: r.proxy_protocol,
        cert_pem: r.cert_pem.clone(),
        key_pem: r.key_pem.clone(),
        backend_ca_pem: if l7 && r.backend_tls {
            fleet_ca_pem.to_string()
        } else {
            String::new()
        },
        unavailable: r.unavailable,
    }
}

/// The fields ListRoutes shows (it leaves keys out), to compare tables.
fn shown(r: &admin::Route) -> (String, String, String, bool, String, bool, bool) {
    (
        r.hostname.clone(),
        r.backend.clone(),
        if r.mode.is_empty() {
            "l4".into()
        } else {
            r.mode.clone()
        },
        r.backend_tls,
        r.backend_name.clone(),
        r.proxy_protocol,
        r.unavailable,
    )
}

impl Edge {
    pub fn new(store: Store, socket: PathBuf, fleet_ca_pem: String) -> Edge {
        Edge {
            store,
            socket,
            fleet_ca_pem,
            changed: tokio::sync::Notify::new(),
            reports: std::sync::Mutex::default(),
            acme: None,
        }
    }

    /// Obtains l7 certificates from ACME (account kept in `account_dir`) instead of
    /// taking them from the master.
    pub fn with_acme(mut self, config: crate::acme::AcmeConfig, account_dir: PathBuf) -> Edge {
        self.acme = Some(Acme {
            config,
            account_dir,
            failing: std::sync::Mutex::default(),
            wake: tokio::sync::Notify::new(),
        });
        self
    }

    /// The stored routes.
    pub fn routes(&self) -> anyhow::Result<Vec<EdgeRoute>> {
        self.store
            .edge_routes()?
            .iter()
            .map(|(_, json)| decode(json))
            .collect()
    }

    /// The stored routes as the master sees them: no key, no certificate, but
    /// the certificate's validity.
    pub fn reported(&self) -> anyhow::Result<Vec<EdgeRoute>> {
        let cached = self
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut routes = match cached {
            Some(routes) => routes,
            None => {
                let routes: Vec<EdgeRoute> = self.routes()?.into_iter().map(report).collect();
                *self.reports.lock().unwrap_or_else(|e| e.into_inner()) = Some(routes.clone());
                routes
            }
        };
        if let Some(acme) = &self.acme {
            let failing = acme.failing.lock().unwrap_or_else(|e| e.into_inner());
            for r in &mut routes {
                if let Some((why, _, _)) = failing.get(&r.hostname) {
                    r.cert_error = why.clone();
                }
            }
        }
        Ok(routes)
    }

    /// Stores a route (replacing its hostname's); whether it replaced one.
    fn put(&self, route: &EdgeRoute) -> anyhow::Result<bool> {
        let replaced = self.store.put_edge_route(&route.hostname, &encode(route));
        *self.reports.lock().unwrap_or_else(|e| e.into_inner()) = None;
        replaced
    }

    /// Deletes a hostname's route; whether there was one.
    fn delete(&self, hostname: &str) -> anyhow::Result<bool> {
        let removed = self.store.remove_edge_route(hostname);
        *self.reports.lock().unwrap_or_else(|e| e.into_inner()) = None;
        removed
    }

    /// Commits `route`, then programs mc-proxy. A proxy that cannot be reached
    /// is not an error: the route is committed and the resync loop applies it.
    /// An l7 route without a certificate keeps the one stored for its hostname.
    /// A route that moves to another backend switches only once that backend
    /// accepts connections (make before break): until then the old one serves.
    pub async fn setup(&self, mut route: EdgeRoute) -> Result<bool, EdgeError> {
        validate(&route)
            .map_err(|e| EdgeError::Invalid(format!("route {}: {e}", route.hostname)))?;
        let old = self
            .routes()
            .map_err(EdgeError::Internal)?
            .into_iter()
            .find(|r| r.hostname == route.hostname);
        if route.mode == "l7" && route.cert_pem.is_empty() {
            match old.as_ref().filter(|o| !o.cert_pem.is_empty()) {
                Some(o) => {
                    route.cert_pem = o.cert_pem.clone();
                    route.key_pem = o.key_pem.clone();
                }
                // ACME brings one: the route is kept and served once it has.
                None if self.acme.is_some() => {}
                None => {
                    return Err(EdgeError::Invalid(format!(
                        "route {}: no certificate: the edge holds none for this hostname",
                        route.hostname
                    )))
                }
            }
        }
        if let Some(o) = &old {
            if o.backend != route.backend && !route.unavailable {
                wait_for_backend(&route.backend, BACKEND_WAIT)
                    .await
                    .map_err(|e| {
                        EdgeError::Unavailable(format!(
                            "route {}: the new backend {e}; {} keeps serving",
                            route.hostname, o.backend
                        ))
                    })?;
            }
        }
        let replaced = self.put(&route).map_err(EdgeError::Internal)?;
        if !servable(&route) {
            // Waiting for its ACME certificate.
            if let Some(acme) = &self.acme {
                acme.wake.notify_one();
            }
            info!(hostname = %route.hostname, backend = %route.backend, replaced, "edge route kept; served once ACME brings its certificate");
            return Ok(replaced);
        }
        self.program(&route).await?;
        self.changed.notify_one();
        info!(hostname = %route.hostname, backend = %route.backend, mode = %route.mode, replaced, "edge route set up");
        Ok(replaced)
    }

    /// Programs one route into mc-proxy. A proxy that cannot be reached is not an
    /// error (the resync loop applies the route); material it refuses takes the
    /// route back out.
    async fn program(&self, route: &EdgeRoute) -> Result<(), EdgeError> {
        let wire = to_admin(route, &self.fleet_ca_pem);
        match self.client().await {
            Ok(mut c) => match c
                .add_route(admin::AddRouteRequest { route: Some(wire) })
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == mcp_proto::tonic::Code::InvalidArgument => {
                    // mc-proxy refused the material: take the route back out.
                    let _ = self.delete(&route.hostname);
                    return Err(EdgeError::Invalid(format!(
                        "route {}: mc-proxy refused it: {}",
                        route.hostname,
                        s.message()
                    )));
                }
                Err(s) => {
                    warn!(hostname = %route.hostname, error = %s.message(), "program mc-proxy: the resync will retry")
                }
            },
            Err(e) => {
                warn!(hostname = %route.hostname, error = %format!("{e:#}"), "mc-proxy unreachable: the resync will apply the route")
            }
        }
        Ok(())
    }

    /// Removes the route of `hostname` from the database and from mc-proxy.
    pub async fn remove(&self, hostname: &str) -> Result<bool, EdgeError> {
        let removed = self.delete(hostname).map_err(EdgeError::Internal)?;
        if let Ok(mut c) = self.client().await {
            if let Err(s) = c
                .remove_route(admin::RemoveRouteRequest {
                    hostname: hostname.to_string(),
                })
                .await
            {
                warn!(hostname, error = %s.message(), "remove from mc-proxy: the resync will retry");
            }
        }
        self.changed.notify_one();
        info!(hostname, removed, "edge route removed");
        Ok(removed)
    }

    async fn client(&self) -> anyhow::Result<AdminClient<mcp_proto::tonic::transport::Channel>> {
        let channel = mcp_proto::transport::unix::connect(&self.socket)
            .await
            .with_context(|| format!("mc-proxy admin socket {}", self.socket.display()))?;
        Ok(AdminClient::new(channel))
    }

    /// Makes mc-proxy's table the agent's: adds what is missing or different,
    /// removes what the agent does not hold. Returns the changes made.
    pub async fn apply(&self) -> anyhow::Result<usize> {
        let want: Vec<EdgeRoute> = self.routes()?.into_iter().filter(servable).collect();
        let mut c = self.client().await?;
        let have = c
            .list_routes(admin::ListRoutesRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("ListRoutes: {}", s.message()))?
            .into_inner()
            .routes;
        let mut changes = 0;
        for r in &want {
            let wire = to_admin(r, &self.fleet_ca_pem);
            if !have.iter().any(|h| shown(h) == shown(&wire)) {
                c.add_route(admin::AddRouteRequest { route: Some(wire) })
                    .await
                    .map_err(|s| anyhow::anyhow!("AddRoute {}: {}", r.hostname, s.message()))?;
                changes += 1;
            }
        }
        for h in &have {
            if !want.iter().any(|r| r.hostname == h.hostname) {
                c.remove_route(admin::RemoveRouteRequest {
                    hostname: h.hostname.clone(),
                })
                .await
                .map_err(|s| anyhow::anyhow!("RemoveRoute {}: {}", h.hostname, s.message()))?;
                changes += 1;
            }
        }
        Ok(changes)
    }

    /// Obtains ACME certificates for l7 routes that have none or whose certificate
    /// is past two thirds of its lifetime, one hostname at a time, each failure
    /// retried with a doubling backoff; nothing is asked of the CA while every
    /// certificate is good. Until `shutdown`; returns at once without `[acme]`.
    pub async fn acme_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(acme) = &self.acme else {
            return;
        };
        loop {
            if let Err(e) = self.acme_pass(acme, &mut shutdown).await {
                warn!(error = %format!("{e:#}"), "acme: read the routes: retrying");
            }
            // The next failed hostname's retry or the next renewal due, if it comes
            // before the next tick (a certificate may live less than a tick).
            let retry = {
                let routes = self.routes().unwrap_or_default();
                let now = std::time::SystemTime::now();
                let failing = acme.failing.lock().unwrap_or_else(|e| e.into_inner());
                let renewal = routes
                    .iter()
                    .filter(|r| r.mode == "l7" && !failing.contains_key(&r.hostname))
                    .filter_map(|r| {
                        mcp_pki::cert::cert_from_pem(&r.cert_pem)
                            .and_then(|der| mcp_pki::cert::validity(&der))
                            .ok()
                    })
                    .map(|(nb, na)| {
                        let at = mcp_pki::cert::renew_at(nb, na);
                        at.duration_since(now)
                            .unwrap_or_default()
                            .max(ACME_RENEW_MIN)
                    });
                failing
                    .values()
                    .map(|(_, at, _)| at.saturating_duration_since(tokio::time::Instant::now()))
                    .chain(renewal)
                    .min()
                    .unwrap_or(ACME_TICK)
                    .min(ACME_TICK)
            };
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = acme.wake.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn acme_pass(
        &self,
        acme: &Acme,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now();
        let due: Vec<EdgeRoute> = self
            .routes()?
            .into_iter()
            .filter(|r| r.mode == "l7")
            .filter(|r| {
                mcp_pki::cert::cert_from_pem(&r.cert_pem)
                    .and_then(|der| mcp_pki::cert::validity(&der))
                    .map_or(true, |(nb, na)| now >= mcp_pki::cert::renew_at(nb, na))
            })
            .collect();
        // Hostnames no longer routed are forgotten.
        {
            let hosts: Vec<String> = self.routes()?.into_iter().map(|r| r.hostname).collect();
            acme.failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|h, _| hosts.contains(h));
        }
        for route in due {
            if *shutdown.borrow() {
                return Ok(());
            }
            let waiting = acme
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&route.hostname)
                .is_some_and(|(_, at, _)| tokio::time::Instant::now() < *at);
            if waiting {
                continue;
            }
            let host = route.hostname.clone();
            info!(hostname = %host, "acme: asking for a certificate");
            let result = tokio::select! {
                r = crate::acme::obtain(&acme.config, &acme.account_dir, &host, &self.socket) => r,
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            };
            match result {
                Ok((cert_pem, key_pem)) => {
                    acme.failing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&host);
                    // The route may have changed meanwhile: put the certificate on
                    // the one stored now.
                    let Some(mut current) = self.routes()?.into_iter().find(|r| r.hostname == host)
                    else {
                        continue;
                    };
                    current.cert_pem = cert_pem;
                    current.key_pem = key_pem;
                    self.put(&current)?;
                    if let Err(e) = self.program(&current).await {
                        warn!(hostname = %host, error = %e, "acme: mc-proxy refused the certificate");
                    }
                    self.changed.notify_one();
                    info!(hostname = %host, "acme: certificate obtained and served");
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    let mut failing = acme.failing.lock().unwrap_or_else(|e| e.into_inner());
                    let wait = failing
                        .get(&host)
                        .map_or(ACME_BACKOFF_MIN, |(_, _, w)| (*w * 2).min(ACME_BACKOFF_MAX));
                    warn!(hostname = %host, error = %why, retry_in = ?wait, "acme: no certificate");
                    failing.insert(host, (why, tokio::time::Instant::now() + wait, wait));
                }
            }
        }
        Ok(())
    }

    /// Re-applies the table at start, after each change, and every few
    /// seconds (so a restarted mc-proxy gets it back), until `shutdown`.
    pub async fn resync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_error: Option<String> = None;
        loop {
            match self.apply().await {
                Ok(0) => {
                    if last_error.take().is_some() {
                        info!("mc-proxy's routes match the agent's again");
                    }
                }
                Ok(n) => {
                    last_error = None;
                    info!(
                        changes = n,
                        "mc-proxy's routes re-applied from the agent's database"
                    );
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!(error = %text, "re-apply edge routes: retrying");
                    }
                    last_error = Some(text);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RESYNC) => {}
                () = self.changed.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(mode: &str) -> EdgeRoute {
        EdgeRoute {
            hostname: "photos.example.net".into(),
            service: "photos".into(),
            component: "web".into(),
            route: "https".into(),
            backend: "127.0.0.12:41000".into(),
            mode: mode.into(),
            backend_tls: true,
            backend_name: "photos.svc.mcp.example.net".into(),
            proxy_protocol: false,
            cert_pem: if mode == "l7" {
                "C".into()
            } else {
                String::new()
            },
            key_pem: if mode == "l7" {
                "K".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    #[test]
    fn validation_and_encoding() {
        assert!(validate(&route("l4")).is_ok());
        assert!(validate(&route("l7")).is_ok());
        let bad = |f: &dyn Fn(&mut EdgeRoute), want: &str| {
            let mut r = route("l7");
            f(&mut r);
            let e = validate(&r).expect_err(want);
            assert!(e.contains(want), "{e} lacks {want}");
        };
        bad(&|r| r.hostname = "bad name".into(), "hostname");
        bad(&|r| r.backend = "nowhere".into(), "not host:port");
        bad(&|r| r.backend = "h:0".into(), "not host:port");
        bad(&|r| r.mode = "l5".into(), "not l4 or l7");
        bad(&|r| r.key_pem.clear(), "both or neither");
        let again = decode(&encode(&route("l7"))).expect("decode");
        assert_eq!(again, route("l7"));
        let newer = format!("{:#}", decode("{\"v\":2}").expect_err("a newer format"));
        assert!(newer.contains("run a newer mcp-agent"), "{newer}");
        // As stored before `proxy_protocol` and `unavailable` were keys: both false.
        let older = r#"{"v":1,"hostname":"a.example.net","service":"a","component":"w","route":"r","backend":"127.0.0.1:1","mode":"l4","backend_tls":false,"backend_name":"","cert_pem":"","key_pem":""}"#;
        let older = decode(older).expect("decode");
        assert!(!older.proxy_protocol && !older.unavailable && older.mode == "l4");
        let a = to_admin(&route("l7"), "CA");
        assert_eq!(a.backend_ca_pem, "CA");
        let a = to_admin(&route("l4"), "CA");
        assert!(a.backend_tls && a.backend_ca_pem.is_empty() && a.backend_name.is_empty());
    }
}
