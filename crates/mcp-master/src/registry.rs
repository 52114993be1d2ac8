//! The live node registry: what each agent said at registration and in heartbeats, its
//! health, and the services it runs. Rebuilt from the agents after a restart; nothing
//! here is durable. Locks are held only for short, non-async sections.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_proto::agent::v1::{agent_client::AgentClient, EdgeRoute, ServiceStatus};
use mcp_proto::master::v1 as wire;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::transport::ClientTransport;
use mcp_types::{Arch, Health, Role};

use crate::reconcile::plan::{newest, Copy, EdgeFacts, NodeFacts, Observed, PublicRoute};

/// One registered node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub arch: Arch,
    pub version: String,
    /// SHA-256 of the agent's executable, as it reported (SPEC §9).
    pub binary_sha256: String,
    /// Shared between the nodes that reported the same list (`Registry::intern_rpcs`).
    pub rpcs: Arc<[String]>,
    pub pools: Vec<String>,
    pub resources: wire::NodeResources,
    pub containers: u32,
    /// Health (SPEC §5).
    pub state: Health,
    pub last_heartbeat: Instant,
    pub last_probe: Option<Instant>,
    pub probe_in_flight: bool,
    pub digest: String,
    /// False when the agent said it could not read its runtime or database: `services`
    /// is then what it last reported, kept rather than believed empty.
    pub state_known: bool,
    pub services: Vec<ServiceStatus>,
    /// An edge's routes as it last reported them (and as the master since set them).
    pub edge_routes: Vec<EdgeRoute>,
    /// An edge's public address (host:port; empty when not configured).
    pub public_address: String,
    /// An edge that obtains its own public certificates (ACME).
    pub acme: bool,
    /// Created on first use, with when it was last handed out; dropped after
    /// `CLIENT_IDLE` unused (`Registry::drop_idle_clients`), which closes its
    /// connection: a node that is only heartbeating costs one connection, its own.
    pub client: Option<(AgentClient<Channel>, Instant)>,
    /// The heartbeat stream now current for this node (0: none).
    pub session: u64,
}

impl NodeEntry {
    /// What the reconcile planner sees of this node.
    pub fn facts(&self) -> NodeFacts {
        NodeFacts {
            name: self.name.clone(),
            answers: self.state == Health::Healthy && self.state_known,
            host: self.host().to_string(),
            copies: self
                .services
                .iter()
                .map(|s| Copy {
                    service: s.name.clone(),
                    generation: s.generation,
                    desired: s.desired != "absent",
                    running: s.desired == "running",
                    ready: !s.components.is_empty()
                        && s.components.iter().all(|c| c.observed == "running"),
                    routes: public_routes(s),
                    ports: s
                        .components
                        .iter()
                        .flat_map(|c| &c.routes)
                        .filter_map(|r| {
                            let port = r.address.rsplit_once(':')?.1.parse::<u16>().ok()?;
                            (port > 0).then(|| (r.name.clone(), port))
                        })
                        .collect(),
                })
                .collect(),
            edge: (self.role == Role::Edge).then(|| EdgeFacts {
                routes: self.edge_routes.iter().map(observed).collect(),
                acme: self.acme,
            }),
        }
    }

    /// The host part of the node's address.
    pub fn host(&self) -> &str {
        host_of(&self.address)
    }

    /// The SPEC §9 refusal when the node's agent lacks `rpc`.
    pub fn lacks(&self, rpc: &str) -> Option<String> {
        (!self.supports(rpc)).then(|| {
            format!(
                "node {} runs mcp-agent {}, which lacks {rpc}; run `mcp agent upgrade {}`",
                self.name, self.version, self.name
            )
        })
    }

    pub fn supports(&self, rpc: &str) -> bool {
        self.rpcs.iter().any(|r| r == rpc)
    }

    /// The wire view for `node list` and `status`.
    pub fn to_wire(&self) -> wire::Node {
        wire::Node {
            name: self.name.clone(),
            role: self.role.as_str().to_string(),
            arch: self.arch.as_str().to_string(),
            version: self.version.clone(),
            state: self.state.as_str().to_string(),
            address: self.address.clone(),
            pools: self.pools.clone(),
            last_heartbeat_ms_ago: self.last_heartbeat.elapsed().as_millis() as u64,
            resources: Some(self.resources),
            rpcs: self.rpcs.to_vec(),
            containers: self.containers,
            public_address: self.public_address.clone(),
            binary_sha256: self.binary_sha256.clone(),
        }
    }
}

/// A client for the agent of node `name` at `address`, connecting on first use.
fn dial(
    name: &str,
    address: &str,
    transport: &ClientTransport,
) -> Result<AgentClient<Channel>, String> {
    Ok(AgentClient::new(
        transport
            .named(name)
            .lazy(address)
            .map_err(|e| e.to_string())?,
    )
    .max_decoding_message_size(64 * 1024 * 1024))
}

/// The host of `host:port` (an IPv6 host keeps its brackets).
pub fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

/// A copy's public routes with the backends its node published for them.
fn public_routes(s: &ServiceStatus) -> Vec<PublicRoute> {
    let Some(spec) = &s.spec else {
        return Vec::new();
    };
    let mut routes = Vec::new();
    for c in &spec.components {
        for r in c.routes.iter().filter(|r| r.public) {
            let (Some(hostname), Some(published)) = (
                r.hostname.as_ref(),
                s.components
                    .iter()
                    .find(|cs| cs.name == c.name)
                    .and_then(|cs| cs.routes.iter().find(|p| p.name == r.name)),
            ) else {
                continue;
            };
            if published.address.is_empty() || published.address.ends_with(":0") {
                continue;
            }
            routes.push(PublicRoute {
                hostname: hostname.to_ascii_lowercase(),
                service: s.name.clone(),
                component: c.name.clone(),
                route: r.name.clone(),
                mode: if r.mode == "l4" { "l4" } else { "l7" }.to_string(),
                backend: published.address.clone(),
                backend_tls: r.mode == "l4" || r.backend_tls,
                backend_name: String::new(),
                proxy_protocol: r.proxy_protocol,
                unavailable: false,
            });
        }
    }
    routes
}

/// What the planner sees of an edge's reported route.
fn observed(r: &EdgeRoute) -> Observed {
    Observed {
        route: PublicRoute {
            hostname: r.hostname.clone(),
            service: r.service.clone(),
            component: r.component.clone(),
            route: r.route.clone(),
            mode: r.mode.clone(),
            backend: r.backend.clone(),
            backend_tls: r.backend_tls,
            backend_name: r.backend_name.clone(),
            proxy_protocol: r.proxy_protocol,
            unavailable: r.unavailable,
        },
        cert_not_before: r.cert_not_before,
        cert_not_after: r.cert_not_after,
        cert_error: r.cert_error.clone(),
    }
}

/// The OOM kills `after` reports that `before` did not (SPEC §3: an OOM kill is an
/// event the master shows, not a silent restart), one message per component.
pub fn oom_news(node: &str, before: &[ServiceStatus], after: &[ServiceStatus]) -> Vec<String> {
    let mut out = Vec::new();
    for s in after {
        for c in s.components.iter().filter(|c| c.oom_kills > 0) {
            let seen = before
                .iter()
                .filter(|b| b.name == s.name)
                .flat_map(|b| &b.components)
                .find(|b| b.name == c.name)
                .map_or(0, |b| b.oom_kills);
            if c.oom_kills <= seen {
                continue;
            }
            let limit = match c.memory_limit {
                0 => String::new(),
                bytes => format!(" of {}", mcp_types::ByteSize(bytes)),
            };
            let times = match c.oom_kills {
                1 => "once".to_string(),
                n => format!("{n} times"),
            };
            out.push(format!(
                "{}/{} on {node}: killed at its memory limit{limit} (out of memory; {times} since the instance was created)",
                s.name, c.name
            ));
        }
    }
    out
}

/// A recent health or lifecycle event.
#[derive(Debug, Clone)]
pub struct Event {
    pub at_ms: i64,
    pub node: String,
    pub message: String,
}

const MAX_EVENTS: usize = 200;

/// How long the master keeps an unused connection to an agent. Every agent keeps
/// its own connection to the master (its heartbeats); the master's own, outbound,
/// one is needed only for calls (deploys, probes, logs) and costs as much memory
/// again, so it is not kept for a fleet that is only heartbeating.
pub const CLIENT_IDLE: Duration = Duration::from_secs(60);

/// At most this many distinct RPC lists are shared (one per agent version in use).
const RPC_LISTS: usize = 16;

/// All nodes, by name.
#[derive(Default)]
pub struct Registry {
    nodes: RwLock<BTreeMap<String, NodeEntry>>,
    events: Mutex<VecDeque<Event>>,
    sessions: std::sync::atomic::AtomicU64,
    /// The distinct RPC lists agents reported, shared by their nodes.
    rpc_lists: Mutex<Vec<Arc<[String]>>>,
}

/// What a heartbeat did.
pub struct Beat {
    /// The digest differs from the state the master holds: ask for a registration.
    pub send_full_state: bool,
    /// The node was not healthy before this heartbeat.
    pub healed_from: Option<Health>,
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

    /// The RPC list an agent reported, shared with the nodes that reported the same
    /// (a fleet runs one or a few agent versions: one copy rather than one a node).
    pub fn intern_rpcs(&self, rpcs: Vec<String>) -> Arc<[String]> {
        let mut lists = self.rpc_lists.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = lists.iter().find(|l| l[..] == rpcs[..]) {
            return list.clone();
        }
        let list: Arc<[String]> = rpcs.into();
        if lists.len() < RPC_LISTS {
            lists.push(list.clone());
        }
        list
    }

    /// Drops the agent clients unused for `idle`, closing their connections once
    /// no call holds them; returns how many were dropped.
    pub fn drop_idle_clients(&self, idle: Duration) -> usize {
        let mut dropped = 0;
        for entry in self.write().values_mut() {
            if entry
                .client
                .as_ref()
                .is_some_and(|(_, used)| used.elapsed() > idle)
            {
                entry.client = None;
                dropped += 1;
            }
        }
        dropped
    }

    /// A client for the node's agent to call `rpc` with, created on first use; the
    /// SPEC §9 refusal instead when the agent did not report `rpc` (capability
    /// negotiation: every RPC the master sends a registered agent comes through here,
    /// so an old agent is never sent one it lacks).
    pub fn client(
        &self,
        name: &str,
        rpc: &str,
        transport: &ClientTransport,
    ) -> Result<AgentClient<Channel>, String> {
        debug_assert!(
            mcp_proto::AGENT_RPCS.contains(&rpc),
            "{rpc} is not an agent RPC"
        );
        let address = {
            let mut nodes = self.write();
            let entry = nodes
                .get_mut(name)
                .ok_or_else(|| format!("node {name} is not registered"))?;
            if let Some(refusal) = entry.lacks(rpc) {
                return Err(refusal);
            }
            if let Some((client, used)) = &mut entry.client {
                *used = Instant::now();
                return Ok(client.clone());
            }
            entry.address.clone()
        };
        let client = dial(name, &address, transport)?;
        if let Some(entry) = self.write().get_mut(name) {
            if entry.address == address {
                let (cached, _) = entry
                    .client
                    .get_or_insert_with(|| (client.clone(), Instant::now()));
                return Ok(cached.clone());
            }
        }
        Ok(client)
    }

    /// A client of its own for one call, not cached: a health probe. A probe must
    /// not queue behind a connection attempt that another call (a fleet-wide read)
    /// started to the same agent: it would fail at that attempt's deadline, before
    /// its own timeout, and judge a node that hangs sooner than `probe_timeout`.
    /// The same SPEC §9 refusal as `client` when the agent lacks `rpc`.
    pub fn fresh_client(
        &self,
        name: &str,
        rpc: &str,
        transport: &ClientTransport,
    ) -> Result<AgentClient<Channel>, String> {
        let address = {
            let nodes = self.read();
            let entry = nodes
                .get(name)
                .ok_or_else(|| format!("node {name} is not registered"))?;
            if let Some(refusal) = entry.lacks(rpc) {
                return Err(refusal);
            }
            entry.address.clone()
        };
        dial(name, &address, transport)
    }

    /// Applies a heartbeat in one short write; Err when the node is not registered
    /// (the agent must register first).
    pub fn heartbeat(&self, beat: &wire::HeartbeatRequest, session: u64) -> Option<Beat> {
        let healed_from = {
            let mut nodes = self.write();
            let entry = nodes.get_mut(&beat.name)?;
            if let Some(resources) = beat.resources {
                entry.resources = resources;
            }
            entry.last_heartbeat = Instant::now();
            entry.session = session;
            // An agent that cannot read its state says so: its digest means nothing
            // and the master keeps the services it last reported.
            let send_full_state = if beat.state_unknown {
                entry.state_known = false;
                false
            } else {
                entry.containers = beat.containers;
                // Back from doubt: ask for the full state even if the digest matches.
                entry.digest != beat.state_digest || !entry.state_known
            };
            let was = entry.state;
            entry.state = Health::Healthy;
            entry.last_probe = None;
            Beat {
                send_full_state,
                healed_from: (was != Health::Healthy).then_some(was),
            }
        };
        if let Some(was) = healed_from.healed_from {
            self.event(
                &beat.name,
                format!("{} -> healthy: heartbeat", was.as_str()),
            );
        }
        Some(healed_from)
    }

    /// A new heartbeat stream's id.
    pub fn new_session(&self) -> u64 {
        self.sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// A heartbeat stream ended; true when it was the node's current one (so the
    /// node deserves a probe now).
    pub fn end_session(&self, name: &str, session: u64) -> bool {
        let mut nodes = self.write();
        match nodes.get_mut(name) {
            Some(entry) if entry.session == session => {
                entry.session = 0;
                true
            }
            _ => false,
        }
    }

    /// Is `name` registered?
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// A copy of one node.
    pub fn node(&self, name: &str) -> Option<NodeEntry> {
        self.read().get(name).cloned()
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Vec<NodeEntry> {
        self.read().values().cloned().collect()
    }

    /// The registry as the reconcile planner sees it: the nodes that report services,
    /// and the edges (a worker with no services adds nothing to any plan, and most of
    /// a large fleet's registrations at a master's start are idle nodes), with the
    /// hosts of every node that answers.
    pub fn facts(&self) -> (Vec<NodeFacts>, std::collections::BTreeSet<String>) {
        let nodes = self.read();
        let facts = nodes
            .values()
            .filter(|n| !n.services.is_empty() || n.role == Role::Edge)
            .map(NodeEntry::facts)
            .collect();
        let hosts = nodes
            .values()
            .filter(|n| n.state == Health::Healthy && n.state_known)
            .map(|n| n.host().to_string())
            .collect();
        (facts, hosts)
    }

    /// Records a route the master set up on `edge` (replacing the one of its hostname).
    pub fn set_edge_route(&self, edge: &str, route: EdgeRoute) {
        if let Some(entry) = self.write().get_mut(edge) {
            entry.edge_routes.retain(|r| r.hostname != route.hostname);
            entry.edge_routes.push(route);
            entry
                .edge_routes
                .sort_by(|a, b| a.hostname.cmp(&b.hostname));
        }
    }

    /// Forgets a route the master took off `edge`.
    pub fn drop_edge_route(&self, edge: &str, hostname: &str) {
        if let Some(entry) = self.write().get_mut(edge) {
            entry.edge_routes.retain(|r| r.hostname != hostname);
        }
    }

    /// Which node runs `service`: the one with its newest copy (SPEC §5), by what the
    /// agents last reported.
    pub fn locate(&self, service: &str) -> Option<String> {
        let facts: Vec<NodeFacts> = self
            .read()
            .values()
            .filter(|n| n.services.iter().any(|s| s.name == service))
            .map(NodeEntry::facts)
            .collect();
        newest(&facts, service).map(|(n, _)| n.name.clone())
    }

    /// Every public hostname the services on the fleet claim, with the service
    /// claiming it (from each copy's deployed spec).
    pub fn public_hostnames(&self) -> BTreeMap<String, String> {
        let mut claimed = BTreeMap::new();
        for node in self.read().values() {
            for service in &node.services {
                let Some(spec) = &service.spec else { continue };
                for route in spec
                    .components
                    .iter()
                    .flat_map(|c| &c.routes)
                    .filter(|r| r.public)
                {
                    if let Some(host) = &route.hostname {
                        claimed.insert(host.to_ascii_lowercase(), service.name.clone());
                    }
                }
            }
        }
        claimed
    }

    /// The URL of a public hostname through the edge: `https://HOST/`, with the
    /// port of the edge's public address when it is not 443.
    pub fn public_url(&self, hostname: &str) -> String {
        let port = self
            .read()
            .values()
            .filter(|n| n.role == Role::Edge && !n.public_address.is_empty())
            .find_map(|n| {
                n.public_address
                    .rsplit_once(':')
                    .map(|(_, p)| p.to_string())
            });
        match port.as_deref() {
            None | Some("443") => format!("https://{hostname}/"),
            Some(port) => format!("https://{hostname}:{port}/"),
        }
    }

    /// Fills in the public URL of every public route of `services`.
    pub fn with_urls(&self, services: &mut [ServiceStatus]) {
        for r in services
            .iter_mut()
            .flat_map(|s| s.components.iter_mut())
            .flat_map(|c| c.routes.iter_mut())
            .filter(|r| r.public)
        {
            r.url = r.hostname.as_deref().map(|h| self.public_url(h));
        }
    }

    /// Forgets `node`'s copy of `service` if it is still the one of `generation` (the
    /// reconcile loop removed it).
    pub fn drop_copy(&self, node: &str, service: &str, generation: u64) {
        if let Some(entry) = self.write().get_mut(node) {
            entry
                .services
                .retain(|s| !(s.name == service && s.generation <= generation));
        }
    }

    /// Records a service's status as reported by `node` (None: it is gone there).
    pub fn set_service(&self, node: &str, service: &str, status: Option<ServiceStatus>) {
        let news = {
            let mut nodes = self.write();
            let Some(entry) = nodes.get_mut(node) else {
                return;
            };
            let news = status
                .as_ref()
                .map(|s| oom_news(node, &entry.services, std::slice::from_ref(s)))
                .unwrap_or_default();
            entry.services.retain(|s| s.name != service);
            if let Some(status) = status {
                entry.services.push(status);
                entry.services.sort_by(|a, b| a.name.cmp(&b.name));
            }
            news
        };
        for message in news {
            self.event(node, message);
        }
    }

    /// Replaces a node's whole service list.
    pub fn set_services(&self, node: &str, services: Vec<ServiceStatus>) {
        let news = match self.write().get_mut(node) {
            Some(entry) => {
                let news = oom_news(node, &entry.services, &services);
                entry.services = services;
                news
            }
            None => Vec::new(),
        };
        for message in news {
            self.event(node, message);
        }
    }

    /// Names of nodes whose heartbeats are overdue and that are due a probe (none in
    /// flight, the last one at least `reprobe` ago).
    pub fn overdue(&self, bound: Duration, reprobe: Duration) -> Vec<String> {
        self.read()
            .values()
            .filter(|n| n.last_heartbeat.elapsed() > bound && !n.probe_in_flight)
            .filter(|n| n.last_probe.is_none_or(|t| t.elapsed() > reprobe))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Starts a probe of `node`: a healthy node becomes `probing`, an unhealthy one
    /// stays unhealthy until a probe or heartbeat says otherwise. None when a probe is
    /// already in flight (or the node is gone).
    pub fn begin_probe(&self, node: &str, why: &str) -> Option<Instant> {
        let now = Instant::now();
        let was = {
            let mut nodes = self.write();
            let entry = nodes.get_mut(node)?;
            if entry.probe_in_flight {
                return None;
            }
            entry.probe_in_flight = true;
            entry.last_probe = Some(now);
            let was = entry.state;
            if was == Health::Healthy {
                entry.state = Health::Probing;
            }
            was
        };
        if was == Health::Healthy {
            self.event(node, format!("healthy -> probing: {why}"));
        }
        Some(now)
    }

    /// Records a probe's outcome, unless a heartbeat or registration arrived since it
    /// began (that already decided the node's state).
    pub fn end_probe(&self, node: &str, started: Instant, outcome: Result<(), String>) {
        let change = {
            let mut nodes = self.write();
            let Some(entry) = nodes.get_mut(node) else {
                return;
            };
            entry.probe_in_flight = false;
            if entry.last_heartbeat > started {
                return;
            }
            let was = entry.state;
            let (state, why) = match outcome {
                Ok(()) => (
                    Health::Healthy,
                    "probe answered, but heartbeats are missing".to_string(),
                ),
                Err(e) => (Health::Unhealthy, e),
            };
            entry.state = state;
            (was != state).then(|| format!("{} -> {}: {why}", was.as_str(), state.as_str()))
        };
        if let Some(message) = change {
            self.event(node, message);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(name: &str, digest: &str) -> NodeEntry {
        NodeEntry {
            name: name.to_string(),
            role: Role::Worker,
            address: "127.0.0.1:1".to_string(),
            arch: Arch::Amd64,
            version: "0".to_string(),
            binary_sha256: String::new(),
            rpcs: Arc::from(Vec::new()),
            pools: Vec::new(),
            resources: wire::NodeResources::default(),
            containers: 0,
            state: Health::Healthy,
            last_heartbeat: Instant::now(),
            last_probe: None,
            probe_in_flight: false,
            digest: digest.to_string(),
            state_known: true,
            services: Vec::new(),
            edge_routes: Vec::new(),
            public_address: String::new(),
            acme: false,
            client: None,
            session: 0,
        }
    }

    fn beat(name: &str, digest: &str) -> wire::HeartbeatRequest {
        wire::HeartbeatRequest {
            name: name.to_string(),
            resources: None,
            containers: 3,
            state_digest: digest.to_string(),
            state_unknown: false,
        }
    }

    #[test]
    fn heartbeats_need_registration_and_ask_for_state_on_a_new_digest() {
        let registry = Registry::default();
        assert!(registry.heartbeat(&beat("orion", "a"), 1).is_none());
        registry.write().insert("orion".into(), entry("orion", "a"));
        assert!(
            !registry
                .heartbeat(&beat("orion", "a"), 1)
                .unwrap()
                .send_full_state
        );
        assert!(
            registry
                .heartbeat(&beat("orion", "b"), 1)
                .unwrap()
                .send_full_state
        );
        assert_eq!(registry.node("orion").unwrap().containers, 3);
    }

    #[test]
    fn probes_do_not_overrule_a_later_heartbeat() {
        let registry = Registry::default();
        registry.write().insert("orion".into(), entry("orion", "a"));
        let started = registry.begin_probe("orion", "test").unwrap();
        assert_eq!(registry.node("orion").unwrap().state, Health::Probing);
        assert!(
            registry.begin_probe("orion", "again").is_none(),
            "one probe at a time"
        );
        std::thread::sleep(Duration::from_millis(2));
        registry.heartbeat(&beat("orion", "a"), 1).unwrap();
        registry.end_probe("orion", started, Err("timed out".into()));
        assert_eq!(registry.node("orion").unwrap().state, Health::Healthy);
    }

    #[test]
    fn an_unhealthy_node_stays_unhealthy_while_probed_again() {
        let registry = Registry::default();
        registry.write().insert("orion".into(), entry("orion", "a"));
        let started = registry.begin_probe("orion", "test").unwrap();
        registry.end_probe("orion", started, Err("refused".into()));
        assert_eq!(registry.node("orion").unwrap().state, Health::Unhealthy);
        let again = registry.begin_probe("orion", "test").unwrap();
        assert_eq!(registry.node("orion").unwrap().state, Health::Unhealthy);
        registry.end_probe("orion", again, Ok(()));
        assert_eq!(registry.node("orion").unwrap().state, Health::Healthy);
        let events: Vec<String> = registry.events().into_iter().map(|e| e.message).collect();
        assert_eq!(
            events,
            [
                "healthy -> probing: test",
                "probing -> unhealthy: refused",
                "unhealthy -> healthy: probe answered, but heartbeats are missing"
            ]
        );
    }

    fn copy(name: &str, generation: u64) -> ServiceStatus {
        ServiceStatus {
            name: name.to_string(),
            desired: "running".to_string(),
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn locate_finds_the_newest_copy_not_the_first_node() {
        let registry = Registry::default();
        let mut a = entry("aardvark", "a");
        a.services = vec![copy("hello", 5)];
        let mut z = entry("zebra", "a");
        z.services = vec![copy("hello", 9)];
        registry.write().insert("aardvark".into(), a);
        registry.write().insert("zebra".into(), z);
        assert_eq!(registry.locate("hello").as_deref(), Some("zebra"));
        registry.drop_copy("zebra", "hello", 9);
        assert_eq!(registry.locate("hello").as_deref(), Some("aardvark"));
        assert_eq!(registry.locate("nothing"), None);
    }

    #[test]
    fn an_agent_in_doubt_keeps_its_last_view() {
        let registry = Registry::default();
        let mut e = entry("orion", "a");
        e.services = vec![copy("hello", 5)];
        e.containers = 1;
        registry.write().insert("orion".into(), e);
        let mut doubt = beat("orion", "");
        doubt.state_unknown = true;
        doubt.containers = 0;
        let b = registry.heartbeat(&doubt, 1).unwrap();
        assert!(!b.send_full_state, "an unknown state is not a new state");
        let node = registry.node("orion").unwrap();
        assert_eq!(node.services.len(), 1, "the services are not forgotten");
        assert_eq!(node.containers, 1);
        assert!(!node.state_known);
        assert!(
            !node.facts().answers,
            "the loop does not act on a node in doubt"
        );
    }

    #[test]
    fn stale_streams_do_not_trigger_probes() {
        let registry = Registry::default();
        registry.write().insert("orion".into(), entry("orion", "a"));
        let old = registry.new_session();
        registry.heartbeat(&beat("orion", "a"), old).unwrap();
        let new = registry.new_session();
        registry.heartbeat(&beat("orion", "a"), new).unwrap();
        assert!(
            !registry.end_session("orion", old),
            "an old stream ending is not news"
        );
        assert!(registry.end_session("orion", new));
    }

    /// Capability negotiation (SPEC §9): no client, hence no call, for an RPC the
    /// agent did not report; the refusal names the node, its version and the RPC.
    #[tokio::test]
    async fn no_client_for_an_rpc_the_agent_lacks() {
        let registry = Registry::default();
        let mut old = entry("hyperborea", "a");
        old.version = "0.3.0".to_string();
        old.rpcs = registry.intern_rpcs(["Deploy", "Stop"].map(String::from).to_vec());
        registry.write().insert("hyperborea".into(), old);
        let transport = ClientTransport {
            connect_timeout: None,
            request_timeout: None,
            tls: None,
        };
        assert!(registry.client("hyperborea", "Stop", &transport).is_ok());
        assert_eq!(
            registry
                .client("hyperborea", "SetupEdgeRoute", &transport)
                .err()
                .as_deref(),
            Some(
                "node hyperborea runs mcp-agent 0.3.0, which lacks SetupEdgeRoute; \
                 run `mcp agent upgrade hyperborea`"
            )
        );
        assert!(
            registry.client("orion", "Stop", &transport).is_err(),
            "not registered"
        );
    }

    /// Nodes that reported the same RPCs share one list; another list is its own.
    #[test]
    fn rpc_lists_are_shared() {
        let registry = Registry::default();
        let list = || ["Deploy", "Stop"].map(String::from).to_vec();
        let a = registry.intern_rpcs(list());
        let b = registry.intern_rpcs(list());
        assert!(Arc::ptr_eq(&a, &b));
        let c = registry.intern_rpcs(vec!["Deploy".to_string()]);
        assert_eq!(&*c, ["Deploy".to_string()].as_slice());
        assert!(!Arc::ptr_eq(&a, &c));
    }

    /// The master's connection to an agent is dropped once unused for the idle
    /// time, and a later call makes a new one; a client in use is kept.
    #[tokio::test]
    async fn idle_agent_clients_are_dropped() {
        let registry = Registry::default();
        let mut node = entry("orion", "a");
        node.rpcs = registry.intern_rpcs(vec!["Stop".to_string()]);
        registry.write().insert("orion".into(), node);
        let transport = ClientTransport::default();
        assert!(registry.client("orion", "Stop", &transport).is_ok());
        assert_eq!(registry.drop_idle_clients(Duration::from_secs(60)), 0);
        assert!(registry.read()["orion"].client.is_some(), "just used: kept");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(registry.drop_idle_clients(Duration::from_millis(10)), 1);
        assert!(registry.read()["orion"].client.is_none(), "idle: dropped");
        assert!(registry.client("orion", "Stop", &transport).is_ok());
        assert!(
            registry.read()["orion"].client.is_some(),
            "made again on use"
        );
        registry.write().get_mut("orion").unwrap().client = None;
        assert!(registry.fresh_client("orion", "Stop", &transport).is_ok());
        assert!(
            registry.read()["orion"].client.is_none(),
            "a probe's client is its own"
        );
        assert!(registry.fresh_client("orion", "Probe", &transport).is_err());
    }

    #[test]
    fn an_oom_kill_is_news_once() {
        let hog = |kills: u32| {
            let mut s = copy("hog", 1);
            s.components = vec![mcp_proto::agent::v1::ComponentStatus {
                name: "web".to_string(),
                memory_limit: 32 << 20,
                oom_kills: kills,
                ..Default::default()
            }];
            s
        };
        assert!(oom_news("n1", &[], &[hog(0)]).is_empty());
        let news = oom_news("n1", &[hog(0)], &[hog(1)]);
        assert_eq!(
            news,
            vec!["hog/web on n1: killed at its memory limit of 32MiB (out of memory; once since the instance was created)"]
        );
        assert!(oom_news("n1", &[hog(1)], &[hog(1)]).is_empty());
        assert!(oom_news("n1", &[hog(1)], &[hog(3)])[0].contains("3 times"));
        // First sight (a restarted master): said once.
        assert_eq!(oom_news("n1", &[], &[hog(2)]).len(), 1);

        let registry = Registry::default();
        registry.write().insert("n1".to_string(), entry("n1", "a"));
        registry.set_services("n1", vec![hog(0)]);
        registry.set_service("n1", "hog", Some(hog(1)));
        registry.set_services("n1", vec![hog(1)]);
        let events: Vec<String> = registry.events().into_iter().map(|e| e.message).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].starts_with("hog/web on n1: killed"), "{events:?}");
    }
}
