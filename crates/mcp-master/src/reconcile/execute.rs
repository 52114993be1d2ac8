//! The executor: carries out the planner's actions against the agents, each as its own
//! task bounded by a timeout and fenced by its generation, so one slow or frozen node
//! never holds up the rest of the fleet. An action already in flight is not started
//! twice. Every outcome is an event (`mcp status` shows them); a failure is reported
//! once, and again only when its reason changes, while the loop retries with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcp_proto::agent::v1 as agent;
use mcp_proto::tonic::Code;
use tokio::sync::{mpsc, watch};

use super::plan::{Action, CertPlan, PublicRoute};
use crate::state::MasterState;

/// Bound on one action's RPC: a remove stops containers, which may take a while.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of one action.
pub struct Outcome {
    pub action: Action,
    pub result: Result<(), String>,
}

/// Actions in flight and the failures seen so far.
pub struct Executor {
    inflight: BTreeMap<Action, watch::Receiver<bool>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Executor {
    pub fn new(outcomes: mpsc::UnboundedSender<Outcome>) -> Executor {
        Executor {
            inflight: BTreeMap::new(),
            outcomes,
        }
    }

    /// Starts every action not already in flight; returns a watch per action of the
    /// plan (true once it has finished) so a caller can wait for the whole plan.
    pub fn start(
        &mut self,
        state: &Arc<MasterState>,
        actions: Vec<Action>,
    ) -> Vec<watch::Receiver<bool>> {
        self.inflight.retain(|_, done| !*done.borrow());
        let mut waits = Vec::with_capacity(actions.len());
        for action in actions {
            if let Some(done) = self.inflight.get(&action) {
                waits.push(done.clone());
                continue;
            }
            // Another action on the same thing is in flight (a route set up for an
            // older backend): wait for it; its outcome brings a new pass.
            if let Some((_, done)) = self.inflight.iter().find(|(a, _)| a.key() == action.key()) {
                waits.push(done.clone());
                continue;
            }
            let (tx, rx) = watch::channel(false);
            self.inflight.insert(action.clone(), rx.clone());
            waits.push(rx);
            let state = state.clone();
            let outcomes = self.outcomes.clone();
            tokio::spawn(async move {
                let result = execute(&state, &action).await;
                record(&state, &action, &result);
                let _ = outcomes.send(Outcome { action, result });
                let _ = tx.send(true);
            });
        }
        waits
    }
}

/// Records an outcome: a new or changed failure is an event, a success clears it.
fn record(state: &MasterState, action: &Action, result: &Result<(), String>) {
    let mut failing = state
        .reconciler
        .failing
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(()) => {
            failing.remove(action);
        }
        Err(message) => {
            if failing.get(action) != Some(message) {
                state.registry.event(
                    action.node(),
                    format!("reconcile: {message}; retrying with backoff"),
                );
                failing.insert(action.clone(), message.clone());
            }
        }
    }
}

/// One action. Err: what failed, for the operator.
async fn execute(state: &MasterState, action: &Action) -> Result<(), String> {
    match action {
        Action::SetupRoute { edge, route, cert } => setup_route(state, edge, route, *cert).await,
        Action::RemoveRoute {
            edge,
            hostname,
            service,
        } => {
            let what = format!("remove the route of {hostname} ({service}) from {edge}");
            let mut client = state
                .registry
                .client(edge, "RemoveEdgeRoute", &state.transport)
                .map_err(|e| format!("{what}: {e}"))?;
            let call = client.remove_edge_route(agent::RemoveEdgeRouteRequest {
                hostname: hostname.clone(),
            });
            match tokio::time::timeout(ACTION_TIMEOUT, call).await {
                Err(_) => Err(format!("{what}: timed out after {ACTION_TIMEOUT:?}")),
                Ok(Err(status)) => Err(format!("{what}: {}", status.message())),
                Ok(Ok(_)) => {
                    state.registry.drop_edge_route(edge, hostname);
                    state
                        .registry
                        .event(edge, format!("route {hostname} removed ({service})"));
                    Ok(())
                }
            }
        }
        Action::ForgetRemoval { service } => {
            state.reconciler.forget_removal(service);
            Ok(())
        }
        Action::RemoveCopy {
            service,
            node,
            generation,
            why,
        } => {
            let what = format!("remove {service} (generation {generation}) from {node}");
            let mut client = state
                .registry
                .client(node, "Remove", &state.transport)
                .map_err(|e| format!("{what}: {e}"))?;
            let call = client.remove(agent::ServiceRequest {
                service: service.clone(),
                generation: Some(*generation),
            });
            match tokio::time::timeout(ACTION_TIMEOUT, call).await {
                Err(_) => Err(format!("{what}: timed out after {ACTION_TIMEOUT:?}")),
                Ok(Ok(_)) => {
                    state.registry.drop_copy(node, service, *generation);
                    state.registry.event(
                        node,
                        format!("removed {service} (generation {generation}): {why}"),
                    );
                    Ok(())
                }
                Ok(Err(status)) if status.code() == Code::NotFound => {
                    state.registry.drop_copy(node, service, *generation);
                    Ok(())
                }
                Ok(Err(status)) => Err(format!("{what}: {}", status.message())),
            }
        }
    }
}

/// Sets up one route on an edge, with a fresh public certificate when the plan says
/// so (the hostname only: nothing internal is ever on it), and records it.
async fn setup_route(
    state: &MasterState,
    edge: &str,
    route: &PublicRoute,
    cert: CertPlan,
) -> Result<(), String> {
    let what = format!(
        "route {} -> {} ({}) on {edge}",
        route.hostname, route.backend, route.service
    );
    let mut client = state
        .registry
        .client(edge, "SetupEdgeRoute", &state.transport)
        .map_err(|e| format!("{what}: {e}"))?;
    let mut wire = agent::EdgeRoute {
        hostname: route.hostname.clone(),
        service: route.service.clone(),
        component: route.component.clone(),
        route: route.route.clone(),
        backend: route.backend.clone(),
        mode: route.mode.clone(),
        backend_tls: route.backend_tls,
        backend_name: route.backend_name.clone(),
        proxy_protocol: route.proxy_protocol,
        unavailable: route.unavailable,
        ..Default::default()
    };
    let mut validity = None;
    if cert == CertPlan::Issue {
        let issued = state
            .security
            .public_ca
            .issue(
                std::slice::from_ref(&route.hostname),
                state.config.service_cert_ttl,
            )
            .map_err(|e| format!("{what}: issue the public certificate: {e}"))?;
        validity = Some(
            mcp_pki::cert::validity_unix(&issued.cert_pem)
                .map_err(|e| format!("{what}: read the issued certificate: {e}"))?,
        );
        wire.cert_pem = issued.cert_pem;
        wire.key_pem = issued.key_pem.expose().to_string();
    }
    let call = client.setup_edge_route(agent::SetupEdgeRouteRequest {
        route: Some(wire.clone()),
    });
    match tokio::time::timeout(ACTION_TIMEOUT, call).await {
        Err(_) => Err(format!("{what}: timed out after {ACTION_TIMEOUT:?}")),
        Ok(Err(status)) => Err(format!("{what}: {}", status.message())),
        Ok(Ok(reply)) => {
            let before = state.registry.node(edge).and_then(|n| {
                n.edge_routes
                    .into_iter()
                    .find(|r| r.hostname == route.hostname)
            });
            wire.cert_pem.clear();
            wire.key_pem.clear();
            match (validity, &before) {
                (Some((nb, na)), _) => {
                    wire.cert_not_before = nb;
                    wire.cert_not_after = na;
                }
                (None, Some(b)) => {
                    wire.cert_not_before = b.cert_not_before;
                    wire.cert_not_after = b.cert_not_after;
                }
                (None, None) => {}
            }
            state.registry.set_edge_route(edge, wire);
            let verb = if reply.into_inner().replaced {
                "updated"
            } else {
                "set up"
            };
            let note = match (cert, route.unavailable) {
                (_, true) => " (stopped: answers 503)",
                (CertPlan::Issue, _) => " with a new public certificate",
                _ => "",
            };
            state.registry.event(
                edge,
                format!(
                    "route {} -> {} {verb} for {}{note}",
                    route.hostname, route.backend, route.service
                ),
            );
            Ok(())
        }
    }
}
