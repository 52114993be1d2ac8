//! The control loop: everything the master derives from its registry (which copy of a
//! service must go after a move, and next the edge route tables and DNS records) is
//! computed by a pure planner from a snapshot and made true by an executor, again and
//! again, level-triggered as Kubernetes controllers are. It runs when asked (a deploy,
//! move, stop/start, remove, a node registering), after the master starts, on a
//! periodic resync, and sooner after a failure, with backoff. Handlers that need
//! something true afterwards ask the loop (`converge`); they grow no imperative
//! sequence of their own.

pub mod execute;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::state::MasterState;

/// First retry after a failed action; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Cap of the retry backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Least time between two passes: a storm of registrations (a restarted master with
/// thousands of agents) coalesces into a few passes instead of one per node.
pub const MIN_GAP: Duration = Duration::from_millis(25);

/// The loop's handle, shared by the handlers.
pub struct Reconciler {
    wake: Notify,
    /// Passes asked for, and the last one completed: `converge` waits for a pass that
    /// started after it asked.
    asked: AtomicU64,
    done: watch::Sender<u64>,
    /// Services removed by an operator: generation of the removal. In memory only: a
    /// restarted master forgets them (SPEC: the master keeps nothing durable).
    removed: Mutex<BTreeMap<String, u64>>,
    /// Actions failing now, with why (the executor's; `mcp route list` shows them).
    pub(crate) failing: Mutex<BTreeMap<plan::Action, String>>,
}

impl Default for Reconciler {
    fn default() -> Self {
        Reconciler {
            wake: Notify::new(),
            asked: AtomicU64::new(0),
            done: watch::Sender::new(0),
            removed: Mutex::default(),
            failing: Mutex::default(),
        }
    }
}

impl Reconciler {
    /// Asks for a pass soon.
    pub fn trigger(&self) {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks for a pass and waits (at most `timeout`) until one that started after this
    /// call has completed. False on timeout.
    pub async fn converge(&self, timeout: Duration) -> bool {
        let ticket = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut done = self.done.subscribe();
        tokio::time::timeout(timeout, done.wait_for(|d| *d >= ticket))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Records an operator's removal of `service` at `generation`.
    pub fn removed(&self, service: &str, generation: u64) {
        self.lock().insert(service.to_string(), generation);
    }

    /// A new deploy supersedes any removal.
    pub fn deployed(&self, service: &str) {
        self.lock().remove(service);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.removed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The actions failing now, with why.
    pub fn failures(&self) -> BTreeMap<plan::Action, String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn forget_removal(&self, service: &str) {
        self.lock().remove(service);
    }

    /// The registry and the master's intent as the planner sees them.
    pub fn world(&self, state: &MasterState) -> plan::World {
        let (nodes, answering_hosts) = state.registry.facts();
        plan::World {
            nodes,
            removed: self.lock().clone(),
            settled: state.unsettled().is_empty(),
            now: crate::security::now() as i64,
            zone: state.config.internal_zone(),
            answering_hosts,
        }
    }
}

/// The loop: one pass per wake-up (coalesced), a resync every `resync`, retries with
/// backoff while actions fail, until `shutdown`. A pass plans and starts actions; it
/// counts as done for `converge` once every action it planned has finished.
pub async fn run(state: Arc<MasterState>, resync: Duration, mut shutdown: watch::Receiver<bool>) {
    let (outcomes_tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let mut executor = execute::Executor::new(outcomes_tx);
    let mut backoff = BACKOFF_MIN;
    let mut next_wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = state.reconciler.wake.notified() => {}
            _ = tokio::time::sleep(next_wait) => {}
            Some(outcome) = outcomes.recv() => {
                let outcome: execute::Outcome = outcome;
                match outcome.result {
                    // Something changed: look again at once.
                    Ok(()) => backoff = BACKOFF_MIN,
                    Err(_) => {
                        next_wait = backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
        next_wait = resync;
        let ticket = state.reconciler.asked.load(Ordering::SeqCst);
        let world = state.reconciler.world(&state);
        let actions = plan::plan(&world);
        // The zone follows the same snapshot; readers see a new one only when it
        // changed (nothing before the fleet settles: a name not reported yet is not
        // a name gone).
        if world.settled {
            let zone = plan::dns::zone_records(&world);
            state.zone.send_if_modified(|current| {
                if current.as_deref() == Some(&zone) {
                    false
                } else {
                    *current = Some(Arc::new(zone));
                    true
                }
            });
        }
        // A failure of an action no longer planned is no longer news.
        state
            .reconciler
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a, _| actions.contains(a));
        let waits = executor.start(&state, actions);
        let state = state.clone();
        tokio::spawn(async move {
            for mut done in waits {
                let _ = done.wait_for(|d| *d).await;
            }
            state.reconciler.done.send_modify(|d| *d = (*d).max(ticket));
        });
    }
}

/// `mcp route list`: every edge's table as the registry derives it, beside what the
/// edge reported, with the failure of any action on a route.
pub fn routes_view(
    world: &plan::World,
    failing: &BTreeMap<plan::Action, String>,
) -> Vec<mcp_proto::master::v1::RouteView> {
    use mcp_proto::master::v1::RouteView;
    let want = plan::routes::desired(world);
    let error_of = |edge: &str, host: &str| {
        failing
            .iter()
            .find(|(a, _)| a.key() == (edge, host))
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    };
    let view =
        |edge: &str, r: &plan::PublicRoute, seen: Option<&plan::Observed>, state: &str| RouteView {
            hostname: r.hostname.clone(),
            service: r.service.clone(),
            component: r.component.clone(),
            route: r.route.clone(),
            mode: r.mode.clone(),
            edge: edge.to_string(),
            backend: r.backend.clone(),
            cert_not_after: seen
                .filter(|o| o.route.mode == "l7" && o.cert_not_after > 0)
                .map(|o| o.cert_not_after),
            state: state.to_string(),
            error: {
                let e = error_of(edge, &r.hostname);
                match seen.map(|o| o.cert_error.as_str()) {
                    Some(c) if e.is_empty() && !c.is_empty() => format!("certificate: {c}"),
                    _ => e,
                }
            },
        };
    let mut out = Vec::new();
    let edges: Vec<(&str, &plan::EdgeFacts)> = world
        .nodes
        .iter()
        .filter_map(|n| n.edge.as_ref().map(|e| (n.name.as_str(), e)))
        .collect();
    if edges.is_empty() {
        for r in want.values() {
            let mut v = view("", r, None, "pending");
            v.error = "no edge node is registered".to_string();
            out.push(v);
        }
    }
    for (edge, facts) in edges {
        for r in want.values() {
            let seen = facts.routes.iter().find(|o| o.route.hostname == r.hostname);
            // An l7 route serves only with a certificate that has not expired (an
            // ACME edge may still be waiting for its first).
            let certified =
                |o: &plan::Observed| o.route.mode != "l7" || o.cert_not_after > world.now;
            let state = match seen {
                Some(o) if o.route == *r && !certified(o) => "pending",
                Some(o) if o.route == *r && r.unavailable => "stopped",
                Some(o) if o.route == *r => "serving",
                _ => "pending",
            };
            let mut v = view(edge, r, seen, state);
            if state == "pending" && v.error.is_empty() && seen.is_some_and(|o| o.route == *r) {
                v.error = "waiting for the edge's certificate".to_string();
            }
            out.push(v);
        }
        for o in &facts.routes {
            if !want.contains_key(&o.route.hostname) {
                out.push(view(edge, &o.route, Some(o), "stale"));
            }
        }
    }
    out.sort_by(|a, b| (&a.hostname, &a.edge).cmp(&(&b.hostname, &b.edge)));
    out
}
