//! `mcp-agent`: runs on every node. As a worker it runs the node's services through a
//! container runtime or the exec driver, keeping their desired state in SQLite; as an
//! edge node it runs none. It dials only the master, and answers the master's RPCs.

pub mod acme;
pub mod certs;
pub mod config;
pub mod edge;
pub mod host;
pub mod node;
pub mod process;
pub mod register;
pub mod runtime;
pub mod security;
pub mod server;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mcp_proto::agent::v1::agent_server::AgentServer;
use mcp_proto::tonic::service::Routes;
use mcp_proto::transport::{ClientTransport, ServerTransport};

use crate::config::{Config, RuntimeKind};
use crate::runtime::Runtime;

/// This agent's version, reported at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this binary was built for (`mcp-agent --version`).
pub const TARGET: &str = env!("MCP_AGENT_TARGET");

/// SHA-256 (lowercase hex) of this process's executable, reported at registration
/// (SPEC §9). Read from `/proc/self/exe` on first use, which `main` makes the start:
/// the file may be replaced on disk later, as `mcp agent upgrade` does. Empty (and
/// logged) when it cannot be read.
pub fn binary_sha256() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        let exe = std::path::Path::new("/proc/self/exe");
        mcp_pki::digest::sha256_file(exe).unwrap_or_else(|e| {
            tracing::warn!("hash /proc/self/exe: {e}");
            String::new()
        })
    })
}

/// The runtimes a node drives: a container runtime (Docker or Podman) where it has
/// one, and the exec driver.
pub struct Runtimes {
    pub container: Option<Arc<dyn Runtime>>,
    pub exec: Arc<dyn Runtime>,
}

/// Creates the data dir and srv_root and resolves both to real paths.
fn prepare(mut config: Config) -> anyhow::Result<(Config, PathBuf)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
    let data_dir = config
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolve data dir {}", config.data_dir.display()))?;
    std::fs::create_dir_all(&config.srv_root)
        .with_context(|| format!("create srv_root {}", config.srv_root.display()))?;
    config.srv_root = config
        .srv_root
        .canonicalize()
        .with_context(|| format!("resolve srv_root {}", config.srv_root.display()))?;
    Ok((config, data_dir))
}

/// Runs the agent until `shutdown` becomes true. `supervisor_exe` is the binary that
/// understands `supervise DIR` (the agent binary itself).
pub async fn run(
    config: Config,
    supervisor_exe: PathBuf,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (config, data_dir) = prepare(config)?;
    let container: Option<Arc<dyn Runtime>> = match (config.runtime, config.socket()) {
        (RuntimeKind::Exec, _) | (_, None) => None,
        (kind, Some(socket)) => {
            let name = if kind == RuntimeKind::Podman {
                "podman"
            } else {
                "docker"
            };
            Some(Arc::new(
                runtime::docker::DockerRuntime::connect(&socket, &config.name, name).await?,
            ))
        }
    };
    let exec: Arc<dyn Runtime> = Arc::new(runtime::exec::ExecRuntime::new(
        data_dir.join("exec"),
        &config.name,
        supervisor_exe,
    )?);
    serve(config, data_dir, Runtimes { container, exec }, shutdown).await
}

/// Runs the agent on runtimes the caller made (tests: `runtime::fake`), until
/// `shutdown`: everything else (store, enrollment, TLS, registration, RPCs) is real.
pub async fn run_with(
    config: Config,
    runtimes: Runtimes,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (config, data_dir) = prepare(config)?;
    serve(config, data_dir, runtimes, shutdown).await
}

async fn serve(
    config: Config,
    data_dir: PathBuf,
    runtimes: Runtimes,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = store::Store::open(&data_dir.join("agent.db"))?;
    let Runtimes { container, exec } = runtimes;
    let tls = security::node_tls(&config, &data_dir).await?;
    let master_transport = ClientTransport {
        connect_timeout: Some(std::time::Duration::from_secs(3)),
        request_timeout: None,
        tls: Some(tls.master.clone()),
    };
    let renewal_client = mcp_proto::master::v1::nodes_client::NodesClient::new(
        master_transport.lazy(&config.master)?,
    );
    let issuer = certs::CertIssuer {
        client: renewal_client.clone(),
        node: config.name.clone(),
    };
    let node = Arc::new(node::Node::new(
        &config,
        store,
        container,
        exec,
        Some(issuer),
    ));

    // Adoption: whatever runs with this node's label is found, not started again.
    let adopted = node.resume().await?;
    tracing::info!(
        node = %config.name,
        runtime = ?config.runtime,
        adopted = adopted.len(),
        listen = %config.listen,
        "agent starting"
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let server_transport = ServerTransport::with_tls(tls.server.clone());
    let nudge = Arc::new(tokio::sync::Notify::new());
    // An edge programs its mc-proxy from its own table (SPEC §7).
    let edge = match (&config.role, &config.proxy_admin_socket) {
        (mcp_types::Role::Edge, Some(socket)) => {
            let ca_path = data_dir.join(security::CA_FILE);
            let fleet_ca_pem = std::fs::read_to_string(&ca_path)
                .with_context(|| format!("read the fleet CA {}", ca_path.display()))?;
            let edge_store = store::Store::open(&data_dir.join("agent.db"))?;
            let edge = edge::Edge::new(edge_store, socket.clone(), fleet_ca_pem);
            Some(Arc::new(match &config.acme {
                Some(acme) => edge.with_acme(acme.clone(), data_dir.join("acme")),
                None => edge,
            }))
        }
        _ => None,
    };
    let resync = edge
        .clone()
        .map(|e| tokio::spawn(e.resync_loop(shutdown.clone())));
    let acme = edge
        .clone()
        .map(|e| tokio::spawn(e.acme_loop(shutdown.clone())));
    let service = server::AgentService {
        node: node.clone(),
        nudge: nudge.clone(),
        edge: edge.clone(),
    };
    let register = tokio::spawn(register::run(
        config.clone(),
        master_transport,
        node.clone(),
        edge,
        nudge,
        shutdown.clone(),
    ));
    let renew = tokio::spawn(node::renew_loop(node.clone(), shutdown.clone()));
    let renew_node_cert = tokio::spawn(security::renew_loop(
        config.name.clone(),
        data_dir.clone(),
        tls.clone(),
        renewal_client,
        shutdown.clone(),
    ));
    server_transport
        .serve(
            Routes::new(AgentServer::new(service)),
            listener,
            shutdown.clone(),
        )
        .await
        .context("serve agent RPCs")?;
    let _ = register.await;
    let _ = renew.await;
    let _ = renew_node_cert.await;
    for task in [resync, acme].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}
