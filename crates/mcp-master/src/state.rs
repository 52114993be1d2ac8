//! The master's shared state: config, the live registry, the transport to agents,
//! security, generations, the control loop's handle, and deploys in flight. Every
//! service, the health watcher and the loop hold it; none of them holds another.

use std::time::{Duration, Instant};

use mcp_proto::transport::ClientTransport;

use crate::config::Config;
use crate::registry::Registry;

/// Shared master state.
pub struct MasterState {
    pub config: Config,
    pub registry: Registry,
    pub transport: ClientTransport,
    pub security: crate::security::Security,
    /// Deploys in flight: (service, node), so that node may ask for the service's
    /// certificate before the deploy completes. An entry lives exactly as long as its
    /// deploy (see [`Placing`]); afterwards only the node holding the newest copy may.
    pub placements: std::sync::Mutex<Vec<(String, String)>>,
    /// Generations for deploys and removals.
    pub hlc: crate::hlc::Hlc,
    /// The control loop's handle.
    pub reconciler: crate::reconcile::Reconciler,
    /// Images nodes refused for their platform, for a while: placed past them.
    pub refusals: crate::refusals::Refusals,
    /// When this master started: placements wait for the fleet to re-register.
    pub started: Instant,
    /// Password checks running at once (argon2 is slow on purpose).
    pub logins: tokio::sync::Semaphore,
    /// The internal zone as the control loop last derived it (SPEC §8): the DNS
    /// backends read it, none of them ever waits on the registry. None until the
    /// first pass after the fleet settled (a server then answers SERVFAIL, never a
    /// NXDOMAIN a resolver would cache).
    pub zone: tokio::sync::watch::Sender<Option<std::sync::Arc<crate::reconcile::plan::dns::Zone>>>,
}

impl MasterState {
    /// May `node` hold a certificate for `service`? While a deploy to it runs, or while
    /// it holds the service's newest copy.
    pub fn may_issue(&self, service: &str, node: &str) -> bool {
        let placing = self
            .placements
            .lock()
            .map(|p| p.iter().any(|(s, n)| s == service && n == node))
            .unwrap_or(false);
        placing || self.registry.locate(service).as_deref() == Some(node)
    }

    /// How long a fresh master holds placements while agents re-register: a few
    /// heartbeat intervals, at least the agents' capped re-registration backoff (two
    /// seconds with jitter), at most ten seconds.
    pub fn grace(&self) -> Duration {
        (self.config.heartbeat_interval * 3).clamp(Duration::from_secs(2), Duration::from_secs(10))
    }

    /// Bootstrap nodes not registered yet; empty once the grace period is over.
    pub fn unsettled(&self) -> Vec<String> {
        if self.started.elapsed() >= self.grace() {
            return Vec::new();
        }
        let missing: Vec<String> = self
            .config
            .bootstrap_nodes
            .iter()
            .filter(|b| !self.registry.contains(&b.name))
            .map(|b| b.name.clone())
            .collect();
        if missing.is_empty() && !self.config.bootstrap_nodes.is_empty() {
            return Vec::new();
        }
        if missing.is_empty() {
            // No bootstrap list: only the grace period tells.
            return vec!["the fleet".to_string()];
        }
        missing
    }
}

/// An in-flight placement, dropped (and forgotten) when its deploy ends either way.
pub(crate) struct Placing<'a> {
    state: &'a MasterState,
    entry: (String, String),
}

impl<'a> Placing<'a> {
    pub(crate) fn new(state: &'a MasterState, service: &str, node: &str) -> Placing<'a> {
        let entry = (service.to_string(), node.to_string());
        if let Ok(mut p) = state.placements.lock() {
            p.push(entry.clone());
        }
        Placing { state, entry }
    }
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.state.placements.lock() {
            if let Some(i) = p.iter().position(|e| e == &self.entry) {
                p.swap_remove(i);
            }
        }
    }
}
