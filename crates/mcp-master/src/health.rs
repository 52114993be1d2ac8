//! Health: a node whose heartbeats stop for `missed_heartbeats` intervals is probed;
//! a probe that fails within `probe_timeout` makes it unhealthy. A broken heartbeat
//! stream triggers a probe at once, so a dead agent (connection refused) is found
//! within about a probe timeout. Any heartbeat or registration heals a node. At start
//! the master probes its bootstrap nodes, asking them to register at once.

use std::sync::Arc;
use std::time::Duration;

use mcp_proto::agent::v1::{agent_client::AgentClient, ProbeRequest};

use crate::state::MasterState;

/// How often agent clients unused for `registry::CLIENT_IDLE` are dropped.
const CLIENT_SWEEP: Duration = Duration::from_secs(10);

/// How often overdue heartbeats are looked for: a twentieth of the interval, so a
/// failure is found within about 5% of the bound.
pub fn tick(interval: Duration) -> Duration {
    (interval / 20).clamp(Duration::from_millis(2), Duration::from_millis(500))
}

/// Probes one node now and records the outcome.
pub async fn probe(state: Arc<MasterState>, node: String, why: &str) {
    let Some(started) = state.registry.begin_probe(&node, why) else {
        return;
    };
    let timeout = state.config.probe_timeout;
    // An agent that lacks Probe cannot be asked: the probe fails with the SPEC §9
    // message, so heartbeats alone decide its health. The probe dials on its own
    // connection, so that it gets its whole timeout (`Registry::fresh_client`).
    let outcome = match state
        .registry
        .fresh_client(&node, "Probe", &state.transport)
    {
        Ok(mut client) => {
            match tokio::time::timeout(timeout, client.probe(ProbeRequest { register: false }))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(format!("probe failed: {}", status.message())),
                Err(_) => Err(format!("probe timed out after {timeout:?}")),
            }
        }
        Err(e) => Err(e),
    };
    state.registry.end_probe(&node, started, outcome);
}

/// Watches heartbeats until `shutdown` fires.
pub async fn run(state: Arc<MasterState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let interval = state.config.heartbeat_interval;
    let bound = interval * state.config.missed_heartbeats;
    let mut swept = std::time::Instant::now();
    loop {
        if swept.elapsed() >= CLIENT_SWEEP {
            state
                .registry
                .drop_idle_clients(crate::registry::CLIENT_IDLE);
            swept = std::time::Instant::now();
        }
        for node in state
            .registry
            .overdue(bound, interval.max(state.config.probe_timeout))
        {
            tokio::spawn(probe(state.clone(), node, "heartbeats missing"));
        }
        tokio::select! {
            _ = tokio::time::sleep(tick(interval)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Probes each bootstrap node once, asking it to register now.
pub async fn bootstrap(state: Arc<MasterState>) {
    let calls = state.config.bootstrap_nodes.iter().map(|b| {
        let state = state.clone();
        async move {
            let channel = match state.transport.named(&b.name).lazy(&b.address) {
                Ok(channel) => channel,
                Err(e) => return (b.name.clone(), Err(e.to_string())),
            };
            let mut client = AgentClient::new(channel);
            let result = tokio::time::timeout(
                state.config.probe_timeout,
                client.probe(ProbeRequest { register: true }),
            )
            .await;
            let outcome = match result {
                Ok(Ok(reply)) if reply.get_ref().node == b.name => Ok(()),
                Ok(Ok(reply)) => Err(format!("answered as {:?}", reply.get_ref().node)),
                Ok(Err(status)) => Err(status.message().to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            (b.name.clone(), outcome)
        }
    });
    for (name, outcome) in futures_util::future::join_all(calls).await {
        match outcome {
            Ok(()) => state.registry.event(
                &name,
                "bootstrap probe answered; asked to register".to_string(),
            ),
            Err(e) => state
                .registry
                .event(&name, format!("bootstrap probe failed: {e}")),
        }
    }
}
