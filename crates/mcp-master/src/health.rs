//! Health: a node whose heartbeats stop for `missed_heartbeats` intervals is probed;
//! a probe that fails within `probe_timeout` makes it unhealthy. Any heartbeat or
//! registration heals it (see the registry).

use std::sync::Arc;
use std::time::Duration;

use mcp_proto::agent::v1::ProbeRequest;

use crate::registry::NodeState;
use crate::service::MasterState;

/// Watches heartbeats until `shutdown` fires.
pub async fn run(state: Arc<MasterState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = state.config.heartbeat_interval;
    let bound = interval * state.config.missed_heartbeats;
    let tick = (interval / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        for node in state.registry.overdue(bound, interval) {
            state.registry.set_state(
                &node.name,
                NodeState::Probing,
                "heartbeats missing; probing",
            );
            let state = state.clone();
            tokio::spawn(async move {
                let mut client = node.client.clone();
                let timeout = state.config.probe_timeout;
                let result = tokio::time::timeout(timeout, client.probe(ProbeRequest {})).await;
                match result {
                    Ok(Ok(_)) => state.registry.set_state(
                        &node.name,
                        NodeState::Healthy,
                        "probe answered, but heartbeats are missing",
                    ),
                    Ok(Err(status)) => state.registry.set_state(
                        &node.name,
                        NodeState::Unhealthy,
                        &format!("probe failed: {}", status.message()),
                    ),
                    Err(_) => state.registry.set_state(
                        &node.name,
                        NodeState::Unhealthy,
                        &format!("probe timed out after {timeout:?}"),
                    ),
                }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}
