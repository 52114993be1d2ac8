//! `mcp-master`: the live node registry, health, placement, deploy coordination and
//! fleet-wide status. It keeps nothing durable but its config, the fleet and public
//! CAs' keys, its signing secrets and the ids of revoked operator tokens in its data
//! dir: after a restart the agents re-register and its view is whole again.

pub mod authz;
pub mod config;
pub mod deploy;
pub mod dns;
pub mod health;
pub mod hlc;
pub mod introspect;
pub mod nodes;
pub mod reconcile;
pub mod refusals;
pub mod registry;
pub mod revoked;
pub mod security;
pub mod service;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcp_proto::master::v1::{master_server::MasterServer, nodes_server::NodesServer};
use mcp_proto::tonic::service::Routes;
use mcp_proto::transport::{ClientTransport, ServerTransport};

use crate::config::Config;
use crate::service::MasterService;
use crate::state::MasterState;

/// This master's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the master until `shutdown` becomes true.
pub async fn run(
    config: Config,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // An uninitialised data dir is refused before any socket is bound.
    let security = security::Security::load(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    serve(config, security, listener, shutdown).await
}

/// Runs the master on a bound listener (tests bind first to learn the port).
pub async fn serve(
    config: Config,
    security: security::Security,
    listener: tokio::net::TcpListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(
        node = %config.node,
        listen = %config.listen,
        heartbeat_interval = ?config.heartbeat_interval,
        missed_heartbeats = config.missed_heartbeats,
        probe_timeout = ?config.probe_timeout,
        users = config.users.len(),
        "master starting"
    );
    let server_transport = ServerTransport::with_tls(security.server.clone());
    let state = Arc::new(MasterState {
        registry: registry::Registry::default(),
        transport: ClientTransport {
            connect_timeout: Some(config.probe_timeout.min(Duration::from_secs(5))),
            request_timeout: None,
            tls: Some(security.agent_client.clone()),
        },
        placements: std::sync::Mutex::default(),
        hlc: hlc::Hlc::default(),
        reconciler: reconcile::Reconciler::default(),
        refusals: refusals::Refusals::default(),
        started: std::time::Instant::now(),
        logins: tokio::sync::Semaphore::new(2),
        zone: tokio::sync::watch::Sender::new(Default::default()),
        security,
        config,
    });
    let dns = dns::start(state.clone(), shutdown.clone())
        .await
        .context("start the DNS backend")?;
    let health = tokio::spawn(health::run(state.clone(), shutdown.clone()));
    tokio::spawn(health::bootstrap(state.clone()));
    let renew = tokio::spawn(security::renew_loop(state.clone(), shutdown.clone()));
    // One pass once the fleet has had its grace period to re-register, then on demand
    // and on a periodic resync.
    let resync = config_resync(&state.config);
    let reconcile = tokio::spawn(reconcile::run(state.clone(), resync, shutdown.clone()));
    {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.grace()).await;
            state.reconciler.trigger();
        });
    }
    let routes = Routes::new(NodesServer::new(nodes::NodeService {
        state: state.clone(),
    }))
    .add_service(authz::Authorized::new(
        MasterServer::new(MasterService {
            state: state.clone(),
        }),
        state,
    ));
    server_transport
        .serve(routes, listener, shutdown.clone())
        .await
        .context("serve master RPCs")?;
    let _ = health.await;
    let _ = reconcile.await;
    let _ = renew.await;
    if let Some(dns) = dns {
        let _ = dns.await;
    }
    Ok(())
}

/// The loop's periodic resync: the heartbeat interval, within 1 s to 60 s.
fn config_resync(config: &Config) -> Duration {
    config
        .heartbeat_interval
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}
