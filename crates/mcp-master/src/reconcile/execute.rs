//! The executor: carries out the planner's actions against the agents, each as its own
//! task bounded by a timeout and fenced by its generation, so one slow or frozen node
//! never holds up the rest of the fleet. An action already in flight is not started
//! twice. Every outcome is an event (`mcp status` shows them); a failure is reported
//! once, and again only when its reason changes, while the loop retries with backoff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_proto::agent::v1 as agent;
use mcp_proto::tonic::Code;
use tokio::sync::{mpsc, watch};

use super::plan::Action;
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
    failing: Arc<Mutex<BTreeMap<Action, String>>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Executor {
    pub fn new(outcomes: mpsc::UnboundedSender<Outcome>) -> Executor {
        Executor {
            inflight: BTreeMap::new(),
            failing: Arc::default(),
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
            let (tx, rx) = watch::channel(false);
            self.inflight.insert(action.clone(), rx.clone());
            waits.push(rx);
            let state = state.clone();
            let failing = self.failing.clone();
            let outcomes = self.outcomes.clone();
            tokio::spawn(async move {
                let result = execute(&state, &action).await;
                record(&state, &failing, &action, &result);
                let _ = outcomes.send(Outcome { action, result });
                let _ = tx.send(true);
            });
        }
        waits
    }
}

/// Records an outcome: a new or changed failure is an event, a success clears it.
fn record(
    state: &MasterState,
    failing: &Mutex<BTreeMap<Action, String>>,
    action: &Action,
    result: &Result<(), String>,
) {
    let mut failing = failing.lock().unwrap_or_else(|e| e.into_inner());
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
                .client(node, &state.transport)
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
