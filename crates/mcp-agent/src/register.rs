//! Registration and heartbeats: the agent dials the master, registers with its full
//! state, then pushes heartbeats. A refused or failed heartbeat means re-register,
//! with capped, jittered backoff, so a restarted master has its view back quickly.

use std::sync::Arc;
use std::time::Duration;

use mcp_proto::master::v1::{self as wire, master_client::MasterClient};
use mcp_proto::transport::ClientTransport;

use crate::config::Config;
use crate::host;
use crate::node::Node;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A small pseudo-random jitter in [0, max) from the clock; no RNG crate needed.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from(nanos) % max_ms)
}

fn state_digest(services: &[mcp_proto::agent::v1::ServiceStatus]) -> String {
    let mut text = String::new();
    for s in services {
        text.push_str(&format!("{}={};", s.name, s.desired));
        for c in &s.components {
            text.push_str(&format!("{}={};", c.name, c.observed));
        }
    }
    mcp_types::digest_hex(text.as_bytes())
}

/// Registers and heartbeats until `shutdown` fires.
pub async fn run(
    config: Config,
    node: Arc<Node>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let transport = ClientTransport {
        connect_timeout: Some(Duration::from_secs(3)),
        request_timeout: Some(Duration::from_secs(10)),
    };
    let channel = match transport.lazy(&config.master) {
        Ok(channel) => channel,
        Err(e) => {
            tracing::error!("master address: {e}");
            return;
        }
    };
    let mut client = MasterClient::new(channel);
    let mut backoff = BACKOFF_MIN;
    let mut registered: Option<Duration> = None;
    let mut last_digest = String::new();
    loop {
        let wait = match registered {
            None => {
                let services = node.statuses().await.unwrap_or_default();
                let digest = state_digest(&services);
                let request = wire::RegisterRequest {
                    name: config.name.clone(),
                    role: config.role.as_str().to_string(),
                    address: config.listen.to_string(),
                    arch: config.arch().as_str().to_string(),
                    version: crate::VERSION.to_string(),
                    rpcs: mcp_proto::AGENT_RPCS
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    pools: config.pools.clone(),
                    resources: Some(host::resources(&config.data_dir)),
                    services,
                };
                match client.register(request).await {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let interval = Duration::from_millis(reply.heartbeat_interval_ms.max(10));
                        tracing::info!(node = %config.name, master = %config.master, "registered");
                        registered = Some(interval);
                        last_digest = digest;
                        backoff = BACKOFF_MIN;
                        interval
                    }
                    Err(status) => {
                        tracing::warn!(node = %config.name, "register with master {}: {}", config.master, status.message());
                        let wait = backoff + jitter(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        wait
                    }
                }
            }
            Some(interval) => {
                let services = node.statuses().await.unwrap_or_default();
                let digest = state_digest(&services);
                let containers = services
                    .iter()
                    .flat_map(|s| &s.components)
                    .filter(|c| c.observed == "running")
                    .count() as u32;
                let request = wire::HeartbeatRequest {
                    name: config.name.clone(),
                    resources: Some(host::resources(&config.data_dir)),
                    containers,
                    state_digest: digest.clone(),
                };
                match client.heartbeat(request).await {
                    Ok(reply) if reply.get_ref().send_full_state || digest != last_digest => {
                        registered = None;
                        Duration::ZERO
                    }
                    Ok(_) => interval,
                    Err(status) => {
                        tracing::warn!(node = %config.name, "heartbeat refused or failed ({}); registering again", status.message());
                        registered = None;
                        jitter(BACKOFF_MIN)
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
