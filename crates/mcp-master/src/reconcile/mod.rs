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
}

impl Default for Reconciler {
    fn default() -> Self {
        Reconciler {
            wake: Notify::new(),
            asked: AtomicU64::new(0),
            done: watch::Sender::new(0),
            removed: Mutex::default(),
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

    pub(crate) fn forget_removal(&self, service: &str) {
        self.lock().remove(service);
    }

    /// The registry and the master's intent as the planner sees them.
    pub fn world(&self, state: &MasterState) -> plan::World {
        plan::World {
            nodes: state.registry.facts(),
            removed: self.lock().clone(),
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
