//! The live node registry: what each agent said at registration and in heartbeats, its
//! health, and the services it runs. Rebuilt from the agents after a restart; nothing
//! here is durable. Locks are held only for short, non-async sections.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_proto::agent::v1::{agent_client::AgentClient, ServiceStatus};
use mcp_proto::master::v1 as wire;
use mcp_proto::tonic::transport::Channel;

/// Node health (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Healthy,
    Probing,
    Unhealthy,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Probing => "probing",
            NodeState::Unhealthy => "unhealthy",
        }
    }
}

/// One registered node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub name: String,
    pub role: String,
    pub address: String,
    pub arch: String,
    pub version: String,
    pub rpcs: Vec<String>,
    pub pools: Vec<String>,
    pub resources: wire::NodeResources,
    pub containers: u32,
    pub state: NodeState,
    pub last_heartbeat: Instant,
    pub last_probe: Option<Instant>,
    pub digest: String,
    pub services: Vec<ServiceStatus>,
    pub client: AgentClient<Channel>,
}

impl NodeEntry {
    pub fn supports(&self, rpc: &str) -> bool {
        self.rpcs.iter().any(|r| r == rpc)
    }

    /// The wire view for `node list` and `status`.
    pub fn to_wire(&self) -> wire::Node {
        wire::Node {
            name: self.name.clone(),
            role: self.role.clone(),
            arch: self.arch.clone(),
            version: self.version.clone(),
            state: self.state.as_str().to_string(),
            address: self.address.clone(),
            pools: self.pools.clone(),
            last_heartbeat_ms_ago: self.last_heartbeat.elapsed().as_millis() as u64,
            resources: Some(self.resources),
            rpcs: self.rpcs.clone(),
            containers: self.containers,
        }
    }
}

/// A recent health or lifecycle event.
#[derive(Debug, Clone)]
pub struct Event {
    pub at_ms: i64,
    pub node: String,
    pub message: String,
}

const MAX_EVENTS: usize = 200;

/// All nodes, by name.
#[derive(Default)]
pub struct Registry {
    nodes: RwLock<BTreeMap<String, NodeEntry>>,
    events: Mutex<VecDeque<Event>>,
}

impl Registry {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs an event and keeps it in the recent-events list.
    pub fn event(&self, node: &str, message: String) {
        tracing::info!(node, "{message}");
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(Event {
            at_ms,
            node: node.to_string(),
            message,
        });
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A copy of one node.
    pub fn node(&self, name: &str) -> Option<NodeEntry> {
        self.read().get(name).cloned()
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Vec<NodeEntry> {
        self.read().values().cloned().collect()
    }

    /// Which node runs `service`, by what the agents last reported.
    pub fn locate(&self, service: &str) -> Option<String> {
        self.read()
            .values()
            .find(|n| n.services.iter().any(|s| s.name == service))
            .map(|n| n.name.clone())
    }

    /// Records a service's status as reported by `node` (None: it is gone there).
    pub fn set_service(&self, node: &str, service: &str, status: Option<ServiceStatus>) {
        let mut nodes = self.write();
        if let Some(entry) = nodes.get_mut(node) {
            entry.services.retain(|s| s.name != service);
            if let Some(status) = status {
                entry.services.push(status);
                entry.services.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
    }

    /// Replaces a node's whole service list.
    pub fn set_services(&self, node: &str, services: Vec<ServiceStatus>) {
        if let Some(entry) = self.write().get_mut(node) {
            entry.services = services;
        }
    }

    /// Marks a node healthy after a heartbeat or registration, logging a transition.
    pub fn heal(&self, node: &str) {
        let changed = {
            let mut nodes = self.write();
            match nodes.get_mut(node) {
                Some(entry) => {
                    entry.last_heartbeat = Instant::now();
                    let was = entry.state;
                    entry.state = NodeState::Healthy;
                    entry.last_probe = None;
                    (was != NodeState::Healthy).then_some(was)
                }
                None => None,
            }
        };
        if let Some(was) = changed {
            self.event(node, format!("{} -> healthy", was.as_str()));
        }
    }

    /// Nodes whose heartbeats are overdue and that are due a probe.
    pub fn overdue(&self, bound: Duration, reprobe: Duration) -> Vec<NodeEntry> {
        self.read()
            .values()
            .filter(|n| n.last_heartbeat.elapsed() > bound)
            .filter(|n| n.last_probe.is_none_or(|t| t.elapsed() > reprobe))
            .cloned()
            .collect()
    }

    /// Sets a node's state, logging a transition.
    pub fn set_state(&self, node: &str, state: NodeState, why: &str) {
        let was = {
            let mut nodes = self.write();
            let Some(entry) = nodes.get_mut(node) else {
                return;
            };
            let was = entry.state;
            entry.state = state;
            if state == NodeState::Probing {
                entry.last_probe = Some(Instant::now());
            }
            was
        };
        if was != state {
            self.event(
                node,
                format!("{} -> {}: {why}", was.as_str(), state.as_str()),
            );
        }
    }
}
