//! Registration and heartbeats: the agent dials the master, registers with its full
//! state, then keeps one heartbeat stream open, sending a heartbeat every interval.
//! A broken stream, a refused heartbeat or a failed registration means register
//! again, with capped, jittered backoff, so a restarted master has its view back
//! within seconds. A probe from a master that does not know this node (`register =
//! true`) cuts the backoff short.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mcp_proto::master::v1::{self as wire, nodes_client::NodesClient};
use mcp_proto::tonic::transport::Channel;
use mcp_proto::transport::ClientTransport;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::host::CpuSampler;
use crate::node::Node;

/// First wait before registering again; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Cap of the registration backoff (plus up to as much jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A pseudo-random jitter in [0, max) from the clock and the node name; no RNG needed.
pub fn jitter(max: Duration, salt: &str) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = mcp_types::digest_hex(format!("{nanos}{salt}").as_bytes());
    let value = u64::from_str_radix(&mixed[..8], 16).unwrap_or(0);
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(value % max_ms)
}

/// Digest of the state the master holds for this node: its services and, on an
/// edge, its routes with their certificates' validity.
pub fn state_digest(
    services: &[mcp_proto::agent::v1::ServiceStatus],
    edge_routes: &[mcp_proto::agent::v1::EdgeRoute],
) -> String {
    let mut text = String::new();
    for s in services {
        text.push_str(&format!("{}={};", s.name, s.desired));
        for c in &s.components {
            text.push_str(&format!("{}={};", c.name, c.observed));
            // An OOM kill is news for the master even when the instance runs again.
            if c.oom_kills > 0 {
                text.push_str(&format!("oom {} {};", c.oom_kills, c.last_oom_at));
            }
        }
    }
    for r in edge_routes {
        text.push_str(&format!(
            "route {}={} {} {}-{} {};",
            r.hostname, r.backend, r.unavailable, r.cert_not_before, r.cert_not_after, r.cert_error
        ));
    }
    mcp_types::digest_hex(text.as_bytes())
}

fn running(services: &[mcp_proto::agent::v1::ServiceStatus]) -> u32 {
    services
        .iter()
        .flat_map(|s| &s.components)
        .filter(|c| c.observed == "running")
        .count() as u32
}

/// The registration loop's state.
struct Registrar {
    config: Config,
    node: Arc<Node>,
    /// An edge's routes, reported with its state.
    edge: Option<Arc<crate::edge::Edge>>,
    client: NodesClient<Channel>,
    cpu: CpuSampler,
    /// Running instances when the state was last read.
    containers: u32,
}

impl Registrar {
    /// The node's services, or why they cannot be read: a slow runtime or a database
    /// error is "state unknown", never an empty list the master would believe (SPEC §5).
    async fn services(&mut self) -> Result<Vec<mcp_proto::agent::v1::ServiceStatus>, String> {
        match self.node.statuses().await {
            Ok(services) => {
                self.containers = running(&services);
                Ok(services)
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(node = %self.config.name, "read service state: {message}");
                Err(message)
            }
        }
    }

    /// An edge's routes as reported (empty on a worker, or when they cannot be read:
    /// the master then plans nothing from them, as it cannot tell them from none).
    fn edge_routes(&self) -> Result<Vec<mcp_proto::agent::v1::EdgeRoute>, String> {
        match &self.edge {
            None => Ok(Vec::new()),
            Some(edge) => edge.reported().map_err(|e| {
                let message = format!("read edge routes: {e:#}");
                tracing::warn!(node = %self.config.name, "{message}");
                message
            }),
        }
    }

    /// Services and edge routes together, or why they cannot be read.
    async fn state(
        &mut self,
    ) -> Result<
        (
            Vec<mcp_proto::agent::v1::ServiceStatus>,
            Vec<mcp_proto::agent::v1::EdgeRoute>,
        ),
        String,
    > {
        let services = self.services().await?;
        Ok((services, self.edge_routes()?))
    }

    async fn register(&mut self) -> Result<Duration, String> {
        let ((services, edge_routes), state_error) = match self.state().await {
            Ok(state) => (state, None),
            Err(e) => ((Vec::new(), Vec::new()), Some(e)),
        };
        let request = wire::RegisterRequest {
            name: self.config.name.clone(),
            role: self.config.role.as_str().to_string(),
            address: self.config.listen.to_string(),
            arch: self.config.arch().as_str().to_string(),
            version: crate::VERSION.to_string(),
            binary_sha256: crate::binary_sha256().to_string(),
            rpcs: reported_rpcs(),
            pools: self.config.pools.clone(),
            resources: Some(self.cpu.resources(&self.config.data_dir)),
            state_digest: state_digest(&services, &edge_routes),
            containers: self.containers,
            services,
            edge_routes,
            public_address: self.config.public_address.clone().unwrap_or_default(),
            acme: self.config.acme.is_some(),
            state_unknown: state_error.is_some(),
            state_error: state_error.unwrap_or_default(),
        };
        let reply = self
            .client
            .register(request)
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        // Bounded whatever the master says: interval arithmetic must not overflow.
        Ok(Duration::from_millis(
            reply.heartbeat_interval_ms.clamp(5, 3_600_000),
        ))
    }

    async fn heartbeat(&mut self) -> wire::HeartbeatRequest {
        let state = self.state().await;
        wire::HeartbeatRequest {
            name: self.config.name.clone(),
            resources: Some(self.cpu.resources(&self.config.data_dir)),
            containers: self.containers,
            state_digest: state
                .as_ref()
                .map(|(s, r)| state_digest(s, r))
                .unwrap_or_default(),
            state_unknown: state.is_err(),
        }
    }

    /// Heartbeats over one stream until it breaks (Err with why), a nudge asks for a
    /// fresh registration (Ok), or shutdown (Err with an empty message). When the master
    /// asks for the full state (the digest changed after a deploy, stop or start), the
    /// agent registers again over a unary call and keeps this stream: closing it would
    /// look like a dead agent and make the master probe a healthy node.
    async fn session(
        &mut self,
        interval: Duration,
        shutdown: &mut watch::Receiver<bool>,
        nudge: &Notify,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel(4);
        let first = self.heartbeat().await;
        tx.send(first)
            .await
            .map_err(|_| "heartbeat queue closed".to_string())?;
        let mut replies = self
            .client
            .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let beat = self.heartbeat().await;
                    if tx.send(beat).await.is_err() {
                        return Err("heartbeat stream closed".to_string());
                    }
                }
                reply = replies.next() => match reply {
                    Some(Ok(reply)) if reply.send_full_state => {
                        self.register().await?;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => return Err(status.message().to_string()),
                    None => return Err("the master closed the heartbeat stream".to_string()),
                },
                _ = nudge.notified() => return Ok(()),
                _ = shutdown.changed() => return Err(String::new()),
            }
        }
    }
}

/// Registers and heartbeats until `shutdown` fires. `nudge` re-registers at once.
pub async fn run(
    config: Config,
    transport: ClientTransport,
    node: Arc<Node>,
    edge: Option<Arc<crate::edge::Edge>>,
    nudge: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let channel = match transport.lazy(&config.master) {
        Ok(channel) => channel,
        Err(e) => {
            tracing::error!("master address: {e}");
            return;
        }
    };
    let mut registrar = Registrar {
        client: NodesClient::new(channel),
        node,
        edge,
        cpu: CpuSampler::default(),
        containers: 0,
        config,
    };
    let name = registrar.config.name.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match registrar.register().await {
            Ok(interval) => {
                tracing::info!(node = %name, master = %registrar.config.master, "registered");
                backoff = BACKOFF_MIN;
                match registrar.session(interval, &mut shutdown, &nudge).await {
                    Ok(()) => continue,
                    Err(e) if e.is_empty() => return,
                    Err(e) => {
                        tracing::warn!(node = %name, "heartbeats stopped ({e}); registering again")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %name, "register with master {}: {e}", registrar.config.master)
            }
        }
        let wait = backoff + jitter(backoff, &name);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = nudge.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The RPCs this agent reports at registration (SPEC §9): every one it serves. Built
/// with the `test-without-rpc` feature (the `mcp-agent-without-rpc` test binary
/// only), it leaves out those named in `MCP_AGENT_DROP_RPCS` (comma-separated), as
/// an older agent would, while still answering them: a test then proves the master
/// refuses before it sends.
fn reported_rpcs() -> Vec<String> {
    #[cfg(feature = "test-without-rpc")]
    let dropped = std::env::var("MCP_AGENT_DROP_RPCS").unwrap_or_default();
    #[cfg(not(feature = "test-without-rpc"))]
    let dropped = String::new();
    let dropped: Vec<&str> = dropped.split(',').map(str::trim).collect();
    mcp_proto::AGENT_RPCS
        .iter()
        .filter(|rpc| !dropped.contains(rpc))
        .map(|rpc| rpc.to_string())
        .collect()
}
