//! The admin API (`mcproxy.admin.v1`, SPEC §7) on a 0600 Unix socket: only root
//! and the proxy's own user get in (checked per request from `SO_PEERCRED`).
//! Every field is validated before anything changes; a change is committed to
//! `routes.db` and only then swapped into the live table, under one lock so
//! concurrent changes apply in the order they were committed.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use mcp_proto::mcproxy::admin::v1::{self as wire, admin_server};
use mcp_proto::tonic::service::Routes;
use mcp_proto::tonic::{self, Request, Response, Status};
use mcp_proto::transport::{ServerTransport, UnixPeer, UnixSocket};
use tokio::sync::watch;
use tracing::info;

use crate::challenge::{check_hostname, check_token, Challenge};
use crate::proxy::Proxy;
use crate::routes::{Pattern, RouteError, Table};
use crate::store::Store;
use crate::wire::{route_from_wire, route_to_wire};

/// The Admin service: the live proxy, its store, and who may call.
pub struct Admin {
    proxy: Arc<Proxy>,
    store: Mutex<Store>,
    /// The proxy's own uid; root is let in too.
    owner: u32,
}

/// Whether `peer` may use the admin API of a proxy running as `owner`.
pub fn admit(peer: Option<UnixPeer>, owner: u32) -> Result<(), Status> {
    match peer {
        Some(p) if p.uid == 0 || p.uid == owner => Ok(()),
        Some(p) => Err(Status::permission_denied(format!(
            "uid {} may not use mc-proxy's admin API (only root and uid {owner})",
            p.uid
        ))),
        None => Err(Status::permission_denied(
            "caller unknown: the admin API is only served on its Unix socket",
        )),
    }
}

impl Admin {
    /// `owner`: the proxy's own uid.
    pub fn new(proxy: Arc<Proxy>, store: Store, owner: u32) -> Admin {
        Admin {
            proxy,
            store: Mutex::new(store),
            owner,
        }
    }

    /// The gRPC routes serving this service.
    pub fn routes(self) -> Routes {
        Routes::new(admin_server::AdminServer::new(self))
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        admit(UnixPeer::of(request), self.owner)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Commits a change to `routes.db`, then applies it to a copy of the live
    /// table and swaps that in, all under the store's lock.
    fn change<T>(
        &self,
        commit: impl FnOnce(&mut Store) -> anyhow::Result<T>,
        edit: impl FnOnce(&mut Table) -> Result<(), RouteError>,
    ) -> Result<T, Status> {
        let mut store = self.store();
        let done = commit(&mut store).map_err(|e| Status::internal(format!("{e:#}")))?;
        let mut table = self.proxy.routes().table.clone();
        edit(&mut table).map_err(|e| Status::internal(e.to_string()))?;
        self.proxy.set_routes(table);
        Ok(done)
    }
}

#[tonic::async_trait]
impl admin_server::Admin for Admin {
    async fn add_route(
        &self,
        request: Request<wire::AddRouteRequest>,
    ) -> Result<Response<wire::AddRouteReply>, Status> {
        self.check(&request)?;
        let w = request
            .into_inner()
            .route
            .ok_or_else(|| Status::invalid_argument("route: missing"))?;
        let (pattern, route) = route_from_wire(&w).map_err(Status::invalid_argument)?;
        self.proxy
            .check(&pattern, &route)
            .map_err(|e| Status::invalid_argument(format!("route {pattern}: {e}")))?;
        let replaced = self.change(
            |store| store.put(&pattern, &route),
            |table| table.insert(&pattern.to_string(), route.clone()),
        )?;
        info!(hostname = %pattern, backend = %route.backend, mode = route.mode.as_str(), replaced, "route added");
        Ok(Response::new(wire::AddRouteReply { replaced }))
    }

    async fn remove_route(
        &self,
        request: Request<wire::RemoveRouteRequest>,
    ) -> Result<Response<wire::RemoveRouteReply>, Status> {
        self.check(&request)?;
        let hostname = request.into_inner().hostname;
        let pattern =
            Pattern::parse(&hostname).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let removed = self.change(
            |store| store.remove(&pattern),
            |table| table.remove(&pattern.to_string()).map(drop),
        )?;
        info!(hostname = %pattern, removed, "route removed");
        Ok(Response::new(wire::RemoveRouteReply { removed }))
    }

    async fn list_routes(
        &self,
        request: Request<wire::ListRoutesRequest>,
    ) -> Result<Response<wire::ListRoutesReply>, Status> {
        self.check(&request)?;
        let live = self.proxy.routes();
        let routes = live
            .table
            .routes()
            .into_iter()
            .map(|(p, r)| route_to_wire(&p, r, false))
            .collect();
        Ok(Response::new(wire::ListRoutesReply { routes }))
    }

    async fn set_challenge(
        &self,
        request: Request<wire::SetChallengeRequest>,
    ) -> Result<Response<wire::SetChallengeReply>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let challenge = Challenge::new(&r.hostname, &r.kind, &r.token, &r.key_authorization)
            .map_err(Status::invalid_argument)?;
        let (hostname, kind) = (challenge.hostname.clone(), challenge.kind);
        let replaced = self
            .proxy
            .challenges()
            .set(challenge)
            .map_err(Status::resource_exhausted)?;
        info!(%hostname, kind = kind.as_str(), token = %r.token, replaced, "acme challenge set");
        Ok(Response::new(wire::SetChallengeReply { replaced }))
    }

    async fn clear_challenge(
        &self,
        request: Request<wire::ClearChallengeRequest>,
    ) -> Result<Response<wire::ClearChallengeReply>, Status> {
        self.check(&request)?;
        let r = request.into_inner();
        let hostname = check_hostname(&r.hostname).map_err(Status::invalid_argument)?;
        check_token(&r.token).map_err(Status::invalid_argument)?;
        let cleared = self.proxy.challenges().clear(&hostname, &r.token);
        info!(%hostname, token = %r.token, cleared, "acme challenge cleared");
        Ok(Response::new(wire::ClearChallengeReply { cleared }))
    }

    async fn health(
        &self,
        request: Request<wire::HealthRequest>,
    ) -> Result<Response<wire::HealthReply>, Status> {
        self.check(&request)?;
        let routes = u32::try_from(self.proxy.routes().table.len()).unwrap_or(u32::MAX);
        Ok(Response::new(wire::HealthReply {
            status: "ok".into(),
            routes,
        }))
    }
}

/// The bound admin socket and the uid allowed beside root.
pub struct Bound {
    socket: UnixSocket,
    owner: u32,
}

/// Binds the admin socket at `path` (its directory created if missing, mode
/// 0700). The proxy's own uid is the socket file's owner, as this process
/// created it.
pub fn bind(path: &Path) -> anyhow::Result<Bound> {
    use anyhow::Context as _;
    use std::os::unix::fs::DirBuilderExt as _;
    use std::os::unix::fs::MetadataExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    let socket = UnixSocket::bind(path).with_context(|| "admin_socket".to_string())?;
    let owner = std::fs::symlink_metadata(socket.path())
        .with_context(|| format!("stat {}", path.display()))?
        .uid();
    Ok(Bound { socket, owner })
}

/// Serves the Admin service over `proxy` and `store` on a bound socket until
/// `shutdown`; the socket file is removed when it ends.
pub async fn serve_bound(
    proxy: Arc<Proxy>,
    store: Store,
    bound: Bound,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let path = bound.socket.path().to_path_buf();
    let admin = Admin::new(proxy, store, bound.owner);
    info!(socket = %path.display(), "admin API serving");
    ServerTransport::default()
        .serve_unix(admin.routes(), bound.socket, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("admin API on {}: {e}", path.display()))
}

/// Binds the admin socket at `path` and serves it until `shutdown`.
pub async fn serve(
    proxy: Arc<Proxy>,
    store: Store,
    path: &Path,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let bound = bind(path)?;
    serve_bound(proxy, store, bound, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_table() {
        let peer = |uid| {
            Some(UnixPeer {
                uid,
                gid: 0,
                pid: None,
            })
        };
        assert!(admit(peer(0), 1000).is_ok());
        assert!(admit(peer(1000), 1000).is_ok());
        let e = admit(peer(1001), 1000).expect_err("other uid");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("uid 1001"), "{}", e.message());
        assert_eq!(
            admit(None, 1000).expect_err("none").code(),
            tonic::Code::PermissionDenied
        );
    }

    #[tokio::test]
    async fn add_list_remove_over_the_socket() {
        use crate::proxy::Limits;
        use wire::admin_client::AdminClient;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let proxy = Proxy::new(Limits {
            max_connections: 4,
            handshake_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            drain_timeout: std::time::Duration::from_secs(1),
            copy: Default::default(),
        })
        .expect("proxy");
        let path = dir.path().join("run/admin.sock");
        let (stop, rx) = watch::channel(false);
        let (p, at) = (Arc::clone(&proxy), path.clone());
        let server = tokio::spawn(async move { serve(p, store, &at, rx).await });
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = mcp_proto::transport::unix::connect(&path).await {
                client = Some(AdminClient::new(c));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut client = client.expect("admin socket");
        let route = |host: &str| wire::AddRouteRequest {
            route: Some(wire::Route {
                hostname: host.into(),
                backend: "127.0.0.1:8443".into(),
                ..Default::default()
            }),
        };
        let r = client.add_route(route("A.example.com")).await.expect("add");
        assert!(!r.into_inner().replaced);
        let r = client.add_route(route("a.example.com")).await.expect("add");
        assert!(r.into_inner().replaced);
        assert!(proxy.routes().table.lookup("a.example.com").is_some());
        let e = client.add_route(route("bad name")).await.expect_err("bad");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("bad name"), "{}", e.message());
        let e = client
            .add_route(wire::AddRouteRequest { route: None })
            .await
            .expect_err("none");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let list = client
            .list_routes(wire::ListRoutesRequest {})
            .await
            .expect("list")
            .into_inner()
            .routes;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].hostname, "a.example.com");
        let h = client.health(wire::HealthRequest {}).await.expect("health");
        assert_eq!(h.into_inner().routes, 1);
        let r = client
            .remove_route(wire::RemoveRouteRequest {
                hostname: "a.example.com".into(),
            })
            .await
            .expect("remove");
        assert!(r.into_inner().removed);
        assert!(proxy.routes().table.is_empty());
        stop.send(true).expect("stop");
        server.await.expect("join").expect("serve");
        // Committed: a reopened store holds nothing.
        assert!(Store::open(dir.path())
            .expect("reopen")
            .list()
            .expect("list")
            .is_empty());
    }
}
