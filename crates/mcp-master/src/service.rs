//! The operator-facing gRPC service (`mcp.master.v1.Master`): deploy and lifecycle
//! commands, carried to the agent that runs (or will run) each service, and fleet-wide
//! reads. Every call has passed `authz` before it gets here. Agent errors are mapped
//! here, in one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mcp_proto::agent::v1 as agent;
use mcp_proto::agent::v1::agent_client::AgentClient;
use mcp_proto::convert::check_service_name;
use mcp_proto::master::v1::{self as wire, master_server::Master};
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{self, Code, Request, Response, Status};
use mcp_proto::transport::ClientTransport;
use mcp_types::ServiceDef;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::registry::{NodeEntry, NodeState, Registry};
use mcp_placement::{Capacity, Health, NodeView, PlacedService, Role, Snapshot};

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
    /// When this master started: placements wait for the fleet to re-register.
    pub started: Instant,
    /// Password checks running at once (argon2 is slow on purpose).
    pub logins: tokio::sync::Semaphore,
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
            .filter(|b| self.registry.node(&b.name).is_none())
            .map(|b| b.name.clone())
            .collect();
        if missing.is_empty() && !self.config.bootstrap_nodes.is_empty() {
            return Vec::new();
        }
        if missing.is_empty() {
            // No bootstrap list: only the grace period tells.
            return vec!["(any node)".to_string()];
        }
        missing
    }
}

/// An in-flight placement, dropped (and forgotten) when its deploy ends either way.
struct Placing<'a> {
    state: &'a MasterState,
    entry: (String, String),
}

impl<'a> Placing<'a> {
    fn new(state: &'a MasterState, service: &str, node: &str) -> Placing<'a> {
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

/// The service implementation.
#[derive(Clone)]
pub struct MasterService {
    pub state: Arc<MasterState>,
}

/// An agent's error as the operator should see it. The CLI reads `Unavailable` as "the
/// master could not be reached", so an unreachable agent becomes FailedPrecondition.
pub fn from_agent(node: &str, status: Status) -> Status {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => {
            Status::failed_precondition(format!("node {node} did not answer: {}", status.message()))
        }
        Code::Unauthenticated | Code::PermissionDenied => Status::failed_precondition(format!(
            "node {node} refused the master: {}",
            status.message()
        )),
        code => Status::new(code, format!("node {node}: {}", status.message())),
    }
}

impl MasterService {
    fn node_for(&self, service: &str) -> Result<NodeEntry, Status> {
        let registry = &self.state.registry;
        let name = registry
            .locate(service)
            .ok_or_else(|| Status::not_found(format!("no service {service:?} is deployed")))?;
        registry
            .node(&name)
            .ok_or_else(|| Status::not_found(format!("node {name} is not registered")))
    }

    /// A client for a node's agent.
    fn client(&self, node: &str) -> Result<AgentClient<Channel>, Status> {
        self.state
            .registry
            .client(node, &self.state.transport)
            .map_err(Status::failed_precondition)
    }

    fn require(&self, node: &NodeEntry, rpc: &str) -> Result<(), Status> {
        if node.supports(rpc) {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "node {} runs mcp-agent {}, which lacks {rpc}; run `mcp agent upgrade {}`",
                node.name, node.version, node.name
            )))
        }
    }

    /// Asks every worker for its services, concurrently; a node that does not answer
    /// keeps what it last reported.
    async fn refresh(&self) {
        let nodes = self.state.registry.nodes();
        let calls = nodes
            .into_iter()
            .filter(|n| n.role == "worker" && n.state != NodeState::Unhealthy)
            .map(|n| async move {
                let Ok(mut client) = self.client(&n.name) else {
                    return (n.name, None);
                };
                let reply = tokio::time::timeout(
                    self.state.config.probe_timeout.max(Duration::from_secs(2)),
                    client.list_services(agent::ListServicesRequest {}),
                )
                .await;
                (n.name, Some(reply))
            });
        for (name, reply) in futures_util::future::join_all(calls).await {
            if let Some(Ok(Ok(reply))) = reply {
                self.state
                    .registry
                    .set_services(&name, reply.into_inner().services);
            }
        }
    }

    /// The fleet as placement sees it now: one snapshot per deploy batch.
    fn snapshot(&self) -> Snapshot {
        let nodes = self.state.registry.nodes();
        let mut placed = Vec::new();
        let views = nodes
            .iter()
            .map(|n| {
                for s in &n.services {
                    let r = s.spec.as_ref().and_then(|spec| spec.resources.as_ref());
                    placed.push(PlacedService {
                        service: s.name.clone(),
                        node: n.name.clone(),
                        requests: Capacity {
                            cpu: r.and_then(|r| r.cpu).unwrap_or(0.0),
                            memory: r.and_then(|r| r.memory).unwrap_or(0),
                            disk: r.and_then(|r| r.disk).unwrap_or(0),
                        },
                    });
                }
                NodeView {
                    name: n.name.clone(),
                    role: if n.role == "worker" {
                        Role::Worker
                    } else {
                        Role::Edge
                    },
                    arch: n.arch.parse().unwrap_or(mcp_types::Arch::Amd64),
                    health: match n.state {
                        NodeState::Healthy => Health::Healthy,
                        NodeState::Probing => Health::Probing,
                        NodeState::Unhealthy => Health::Unhealthy,
                    },
                    pools: n.pools.clone(),
                    total: Capacity {
                        cpu: n.resources.cpu_cores,
                        memory: n.resources.memory_total,
                        disk: n.resources.disk_total,
                    },
                    free_memory: n.resources.memory_free,
                    free_disk: n.resources.disk_free,
                }
            })
            .collect();
        Snapshot::new(
            views,
            &placed,
            self.state.config.placement.policy(),
            &self.state.config.node,
        )
    }

    /// Holds placements of a fresh master until every bootstrap node has registered or
    /// the grace period has passed, telling the CLI why it waits: a master that placed
    /// before the node running a service re-registered would start a second copy.
    async fn settle(&self, out: Option<&mpsc::Sender<Result<wire::DeployEvent, Status>>>) {
        let mut told = false;
        loop {
            let missing = self.state.unsettled();
            if missing.is_empty() {
                return;
            }
            if !told {
                told = true;
                let message = format!(
                    "the master started {:.1?} ago; waiting up to {:?} for nodes to register ({})",
                    self.state.started.elapsed(),
                    self.state.grace(),
                    missing.join(", ")
                );
                tracing::info!("{message}");
                if let Some(out) = out {
                    let _ = out
                        .send(Ok(wire::DeployEvent {
                            service: String::new(),
                            node: String::new(),
                            event: Some(wire::deploy_event::Event::Agent(agent::DeployEvent {
                                event: Some(agent::deploy_event::Event::Step(agent::Step {
                                    step: "wait".to_string(),
                                    component: String::new(),
                                    message,
                                })),
                            })),
                        }))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deploys one service: place, call the agent with a new generation, forward its
    /// events, record the result. A copy left on a node it moved away from is the
    /// control loop's to remove; the deploy waits for that pass.
    async fn deploy_one(
        &self,
        def: ServiceDef,
        snapshot: &mut Snapshot,
        out: &mpsc::Sender<Result<wire::DeployEvent, Status>>,
    ) -> Result<(), Status> {
        let registry = &self.state.registry;
        let current = registry.locate(&def.name);
        let placement = snapshot
            .place(&def, current.as_deref())
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let target = placement.node;
        let node = registry
            .node(&target)
            .ok_or_else(|| Status::failed_precondition(format!("node {target} vanished")))?;
        self.require(&node, "Deploy")?;
        let reason = match &current {
            Some(c) if c != &target => format!("{}; moves from {c}", placement.reason),
            _ => placement.reason,
        };
        snapshot.commit(&def.name, &target, mcp_placement::requests_of(&def));
        let _placing = Placing::new(&self.state, &def.name, &target);
        let generation = self.state.hlc.next();
        registry.event(
            &target,
            format!("deploy {} generation {generation} ({reason})", def.name),
        );
        let _ = out
            .send(Ok(wire::DeployEvent {
                service: def.name.clone(),
                node: target.clone(),
                event: Some(wire::deploy_event::Event::Placed(wire::Placed { reason })),
            }))
            .await;
        let mut client = self.client(&node.name)?;
        let mut stream = client
            .deploy(agent::DeployRequest {
                service: Some(agent::ServiceSpec::from(&def)),
                generation,
            })
            .await
            .map_err(|s| from_agent(&target, s))?
            .into_inner();
        let mut done = None;
        while let Some(item) = stream.next().await {
            let event = item.map_err(|s| from_agent(&target, s))?;
            if let Some(agent::deploy_event::Event::Done(status)) = &event.event {
                done = Some(status.clone());
            }
            let _ = out
                .send(Ok(wire::DeployEvent {
                    service: def.name.clone(),
                    node: target.clone(),
                    event: Some(wire::deploy_event::Event::Agent(event)),
                }))
                .await;
        }
        let status = done.ok_or_else(|| {
            Status::aborted(format!(
                "node {target}: deploy of {} ended without a result",
                def.name
            ))
        })?;
        self.state.reconciler.deployed(&def.name);
        registry.set_service(&target, &def.name, Some(status));
        if current.is_some_and(|c| c != target) {
            // Moves: the old copy is older now; the loop removes it once its node
            // answers. Wait for one pass so the CLI returns with the move complete
            // where it can be.
            self.state
                .reconciler
                .converge(self.state.config.probe_timeout.max(Duration::from_secs(2)))
                .await;
        } else {
            self.state.reconciler.trigger();
        }
        Ok(())
    }

    async fn lifecycle(
        &self,
        service: String,
        rpc: &'static str,
    ) -> Result<agent::ServiceStatus, Status> {
        check_service_name(&service)?;
        self.settle(None).await;
        let node = self.node_for(&service)?;
        self.require(&node, rpc)?;
        let mut client = self.client(&node.name)?;
        let request = agent::ServiceRequest {
            service: service.clone(),
            generation: None,
        };
        let reply = match rpc {
            "Stop" => client.stop(request).await,
            "Start" => client.start(request).await,
            _ => client.restart(request).await,
        }
        .map_err(|s| from_agent(&node.name, s))?
        .into_inner();
        let status = reply
            .status
            .ok_or_else(|| Status::internal(format!("node {}: empty reply", node.name)))?;
        self.state
            .registry
            .set_service(&node.name, &service, Some(status.clone()));
        self.state
            .registry
            .event(&node.name, format!("{} {service}", rpc.to_lowercase()));
        self.state.reconciler.trigger();
        Ok(status)
    }
}

type DeployStream = ReceiverStream<Result<wire::DeployEvent, Status>>;
type LogStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<agent::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Master for MasterService {
    type DeployStream = DeployStream;
    type LogsStream = LogStream;

    async fn login(
        &self,
        request: Request<wire::LoginRequest>,
    ) -> Result<Response<wire::LoginReply>, Status> {
        let r = request.into_inner();
        if self.state.security.uses_introspection() {
            return Err(Status::failed_precondition(
                "this master checks tokens with its identity service; log in there",
            ));
        }
        let refused = || Status::unauthenticated("unknown user or wrong password");
        let user = self.state.config.users.get(&r.user).ok_or_else(refused)?;
        let password = mcp_pki::Secret::new(r.password);
        // Argon2 is deliberately slow: it runs off the async runtime, a few at a time,
        // so a burst of logins (this call needs no token) cannot stall heartbeats.
        let _slot = self
            .state
            .logins
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?;
        let hash = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            mcp_pki::password::verify_password(&password, &hash)
        })
        .await
        .map_err(|e| Status::internal(format!("check the password: {e}")))?
        .map_err(|e| Status::internal(format!("users.{}.password_hash: {e}", r.user)))?;
        if !ok {
            tracing::warn!(user = %r.user, "login refused");
            return Err(refused());
        }
        let role = user.role.role();
        let (token, expires_at) =
            self.state
                .security
                .sign(&r.user, role, self.state.config.token_ttl);
        tracing::info!(user = %r.user, role = role.as_str(), "logged in");
        Ok(Response::new(wire::LoginReply {
            token: token.expose().to_string(),
            expires_at: expires_at as i64,
            role: role.as_str().to_string(),
        }))
    }

    async fn deploy(
        &self,
        request: Request<wire::DeployRequest>,
    ) -> Result<Response<DeployStream>, Status> {
        let r = request.into_inner();
        if r.definitions.is_empty() {
            return Err(Status::invalid_argument("no definitions given"));
        }
        let mut defs = Vec::new();
        let mut problems = Vec::new();
        for d in &r.definitions {
            match mcp_types::parse_definition(&d.file, &d.toml) {
                Ok(def) => defs.push(def),
                Err(e) => problems.push(e.to_string()),
            }
        }
        for def in &defs {
            for c in &def.components {
                for route in c.routes.iter().filter(|r| r.public) {
                    if let Some(host) = &route.hostname {
                        if !self.state.config.hostname_allowed(host) {
                            problems.push(format!(
                                "{}: components.{}.routes.{}.hostname: {host} is not in allowed_domains [{}]",
                                def.name,
                                c.name,
                                route.name,
                                self.state.config.allowed_domains.join(", ")
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(Status::invalid_argument(problems.join("\n")));
        }
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Status::invalid_argument(format!(
                "service {:?} is given twice",
                dup[0]
            )));
        }
        let registry = &self.state.registry;
        let order =
            mcp_types::order_by_dependencies(&defs, &|name| registry.locate(name).is_some())
                .map_err(Status::invalid_argument)?;
        let mut ordered: Vec<Option<ServiceDef>> = defs.into_iter().map(Some).collect();
        let ordered: Vec<ServiceDef> = order
            .into_iter()
            .filter_map(|i| ordered.get_mut(i).and_then(Option::take))
            .collect();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move {
            this.settle(Some(&tx)).await;
            let mut snapshot = this.snapshot();
            for def in ordered {
                let name = def.name.clone();
                if let Err(status) = this.deploy_one(def, &mut snapshot, &tx).await {
                    tracing::warn!(service = %name, "deploy failed: {}", status.message());
                    let _ = tx
                        .send(Err(Status::new(
                            status.code(),
                            format!("deploy {name}: {}", status.message()),
                        )))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self.lifecycle(request.into_inner().service, "Stop").await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn start(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self
            .lifecycle(request.into_inner().service, "Start")
            .await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn restart(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self
            .lifecycle(request.into_inner().service, "Restart")
            .await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn remove(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::RemoveReply>, Status> {
        let service = request.into_inner().service;
        check_service_name(&service)?;
        self.settle(None).await;
        let node = self.node_for(&service)?;
        self.require(&node, "Remove")?;
        let mut client = self.client(&node.name)?;
        client
            .remove(agent::ServiceRequest {
                service: service.clone(),
                generation: None,
            })
            .await
            .map_err(|s| from_agent(&node.name, s))?;
        self.state.registry.set_service(&node.name, &service, None);
        self.state
            .registry
            .event(&node.name, format!("removed {service}"));
        // Any other copy (on a node that was away) is at or below this generation: the
        // loop removes it wherever it turns up.
        self.state
            .reconciler
            .removed(&service, self.state.hlc.next());
        self.state
            .reconciler
            .converge(self.state.config.probe_timeout.max(Duration::from_secs(2)))
            .await;
        Ok(Response::new(wire::RemoveReply {
            service,
            node: node.name,
        }))
    }

    async fn list(
        &self,
        _request: Request<wire::ListRequest>,
    ) -> Result<Response<wire::ListReply>, Status> {
        self.refresh().await;
        let mut services: Vec<agent::ServiceStatus> = self
            .state
            .registry
            .nodes()
            .into_iter()
            .flat_map(|n| n.services)
            .collect();
        services.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
        Ok(Response::new(wire::ListReply { services }))
    }

    async fn status(
        &self,
        request: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusReply>, Status> {
        let r = request.into_inner();
        self.refresh().await;
        let nodes: Vec<NodeEntry> = self.state.registry.nodes();
        let mut services: Vec<agent::ServiceStatus> =
            nodes.iter().flat_map(|n| n.services.clone()).collect();
        if let Some(name) = &r.service {
            check_service_name(name)?;
            services.retain(|s| &s.name == name);
            if services.is_empty() {
                return Err(Status::not_found(format!(
                    "no service {name:?} is deployed"
                )));
            }
        }
        services.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
        let events = self
            .state
            .registry
            .events()
            .into_iter()
            .filter(|e| {
                r.service
                    .as_ref()
                    .is_none_or(|s| e.message.contains(s.as_str()))
            })
            .map(|e| wire::Event {
                at_ms: e.at_ms,
                node: e.node,
                message: e.message,
            })
            .collect();
        Ok(Response::new(wire::StatusReply {
            nodes: nodes.iter().map(NodeEntry::to_wire).collect(),
            services,
            events,
        }))
    }

    async fn logs(
        &self,
        request: Request<wire::LogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        check_service_name(&r.service)?;
        let node = self.node_for(&r.service)?;
        self.require(&node, "Logs")?;
        let mut client = self.client(&node.name)?;
        let name = node.name.clone();
        let stream = client
            .logs(agent::LogsRequest {
                service: r.service,
                component: r.component,
                follow: r.follow,
                tail: r.tail,
            })
            .await
            .map_err(|s| from_agent(&name, s))?
            .into_inner();
        Ok(Response::new(Box::pin(
            stream.map(move |item| item.map_err(|s| from_agent(&name, s))),
        )))
    }

    async fn list_nodes(
        &self,
        _request: Request<wire::ListNodesRequest>,
    ) -> Result<Response<wire::ListNodesReply>, Status> {
        let nodes = self
            .state
            .registry
            .nodes()
            .iter()
            .map(NodeEntry::to_wire)
            .collect();
        Ok(Response::new(wire::ListNodesReply { nodes }))
    }
}
