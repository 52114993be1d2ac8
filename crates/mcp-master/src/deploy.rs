//! Deploys: the placement snapshot, the hold of a fresh master until its fleet has
//! re-registered, and a batch's deploy: every service placed first (one snapshot, in
//! depends_on order), then the agents called, different nodes at the same time, a
//! service once everything it depends on in the batch runs; each service's progress
//! streamed as it comes. A failed service fails alone (and whatever depends on it);
//! the rest of the batch goes on. What must hold afterwards, such as the old copy of
//! a moved service being gone, is the control loop's; a batch waits for its pass
//! once, at the end.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use mcp_placement::{Capacity, NodeView, PlacedService, Rejection, Requested, Snapshot};
use mcp_proto::agent::v1 as agent;
use mcp_proto::agent::v1::agent_client::AgentClient;
use mcp_proto::master::v1 as wire;
use mcp_proto::refusal;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{Code, Status};
use mcp_types::{ServiceDef, Tier};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::refusals;
use crate::service::MasterService;
use crate::state::Placing;

impl MasterService {
    /// The fleet as placement sees it now: one snapshot per deploy batch.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let nodes = self.state.registry.nodes();
        let policy = self.state.config.placement.policy();
        let mut placed = Vec::new();
        let views = nodes
            .iter()
            .map(|n| {
                for s in &n.services {
                    let r = s.spec.as_ref().and_then(|spec| spec.resources.as_ref());
                    placed.push(PlacedService {
                        service: s.name.clone(),
                        node: n.name.clone(),
                        requests: mcp_placement::requests(
                            Requested {
                                cpu: r.and_then(|r| r.cpu),
                                memory: r.and_then(|r| r.memory),
                                disk: r.and_then(|r| r.disk),
                            },
                            s.spec
                                .iter()
                                .flat_map(|spec| &spec.components)
                                .map(|c| (c.cpu, c.memory)),
                            &policy.default_request,
                        ),
                    });
                }
                NodeView {
                    name: n.name.clone(),
                    role: n.role,
                    arch: n.arch,
                    health: n.state,
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
        Snapshot::new(views, &placed, policy, &self.state.config.node)
    }

    /// Holds placements of a fresh master until every bootstrap node has registered or
    /// the grace period has passed, telling the CLI why it waits: a master that placed
    /// before the node running a service re-registered would start a second copy.
    pub(crate) async fn settle(
        &self,
        out: Option<&mpsc::Sender<Result<wire::DeployEvent, Status>>>,
    ) {
        let mut told = false;
        loop {
            let missing = self.state.unsettled();
            if missing.is_empty() {
                return;
            }
            if !told {
                told = true;
                let message = format!(
                    "the master started {:.1?} ago: waiting up to {:?} for {} to register before placing",
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

    /// Deploys a batch, `defs` in depends_on order (`mcp_types::order_by_dependencies`):
    /// places every service on one snapshot, then runs the agents' deploys, at most
    /// [`PER_NODE`] at a time on a node, each once the services it depends on in the
    /// batch are running. A service that fails is reported (`Failed`) and so is each
    /// service depending on it, which is not tried; the others go on. Once all have
    /// ended, waits for the control loop's pass where a service moved or has public
    /// routes, then ends the stream: with an error naming every failure, if any.
    pub(crate) async fn deploy_batch(&self, defs: Vec<ServiceDef>, out: Out) {
        self.settle(Some(&out)).await;
        let index: HashMap<String, usize> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        let mut batch = Batch::new(&defs, &index);
        let mut snapshot = self.snapshot();
        let mut planned: Vec<Option<Planned>> = Vec::with_capacity(defs.len());
        // Per service: the nodes that refused its image, placed past (SPEC §3).
        let mut excluded: Vec<Vec<(String, Rejection)>> = Vec::with_capacity(defs.len());
        for (i, def) in defs.into_iter().enumerate() {
            excluded.push(if self.replaceable(&def) {
                self.state.refusals.of(&def)
            } else {
                Vec::new()
            });
            if batch.state[i] == State::Failed {
                // A dependency's placement failed: reported with it, not placed.
                planned.push(None);
                continue;
            }
            match self.place_one(def, &mut snapshot, &excluded[i]) {
                Ok((p, placed)) => {
                    batch.placed(i, &p);
                    let _ = out.send(Ok(placed)).await;
                    planned.push(Some(p));
                }
                Err((node, status)) => {
                    batch.nodes[i] = node;
                    planned.push(None);
                    batch.fail(i, status, &out).await;
                }
            }
        }
        let mut tasks: JoinSet<(Result<(), Status>, Planned)> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        for i in 0..planned.len() {
            if batch.state[i] == State::Waiting && batch.left[i] == 0 {
                batch.make_ready(i);
            }
        }
        let mut nodes: Vec<String> = batch.ready.keys().cloned().collect();
        loop {
            for node in nodes.drain(..) {
                while let Some(i) = batch.next_on(&node) {
                    let Some(p) = planned[i].take() else {
                        batch.state[i] = State::Failed; // not placed: reported then
                        batch.busy.entry(node.clone()).and_modify(|n| *n -= 1);
                        continue;
                    };
                    let this = self.clone();
                    let out = out.clone();
                    let id = tasks
                        .spawn(async move { (this.run_one(&p, &out).await, p) })
                        .id();
                    running.insert(id, i);
                }
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            let (i, result, tried) = match joined {
                Ok((id, (result, tried))) => (running.remove(&id), result, Some(tried)),
                Err(e) => (
                    running.remove(&e.id()),
                    Err(Status::internal(format!("the deploy task ended: {e}"))),
                    None,
                ),
            };
            let Some(i) = i else { continue };
            let node = batch.nodes[i].clone();
            if let Some(n) = batch.busy.get_mut(&node) {
                *n = n.saturating_sub(1);
            }
            nodes.push(node.clone());
            match result {
                Ok(()) => {
                    batch.state[i] = State::Done;
                    if !batch.dependents[i].is_empty() {
                        // Its names, for the services that start now.
                        self.state.reconciler.trigger();
                    }
                    for d in batch.dependents[i].clone() {
                        batch.left[d] = batch.left[d].saturating_sub(1);
                        if batch.left[d] == 0 && batch.state[d] == State::Waiting {
                            batch.make_ready(d);
                            nodes.push(batch.nodes[d].clone());
                        }
                    }
                }
                Err(status) => {
                    // An image the node cannot run: placed again past the nodes that
                    // refused it, where the definition leaves the choice to the master.
                    let refused = mcp_proto::refusal::image_platform_of(&status);
                    let again = match (refused, tried) {
                        (Some(refused), Some(tried)) => {
                            let why = self.remember_refusal(&node, &refused);
                            self.replaceable(&tried.def).then_some((tried.def, why))
                        }
                        _ => None,
                    };
                    let Some((def, why)) = again else {
                        batch.fail(i, status, &out).await;
                        continue;
                    };
                    excluded[i].push((node.clone(), why));
                    match self.place_one(def, &mut snapshot, &excluded[i]) {
                        Ok((p, placed)) => {
                            batch.placed(i, &p);
                            let _ = out.send(Ok(placed)).await;
                            batch.state[i] = State::Waiting;
                            batch.make_ready(i);
                            nodes.push(p.node.clone());
                            planned[i] = Some(p);
                        }
                        Err((node, status)) => {
                            batch.nodes[i] = node;
                            batch.fail(i, status, &out).await;
                        }
                    }
                }
            }
        }
        // Moves: the old copy is older now; the loop removes it once its node answers
        // (and, for a public service, once the edge routes to the new copy). Public
        // routes: the loop sets them up on the edge. Wait for those passes, once for
        // the batch, so the CLI returns with the services reachable and the moves
        // complete where they can be.
        let waits = (0..batch.state.len()).any(|i| batch.wait[i] && batch.state[i] == State::Done);
        if waits {
            let bound = self.state.config.probe_timeout.max(Duration::from_secs(2))
                + if batch.public {
                    Duration::from_secs(6)
                } else {
                    Duration::ZERO
                };
            // One pass switches a moved public route, the next removes the old copy.
            if self.state.reconciler.converge(bound).await && batch.twice {
                self.state.reconciler.converge(bound).await;
            }
        } else {
            self.state.reconciler.trigger();
        }
        if let Some(first) = batch.failures.first() {
            let code = first.1;
            let lines: Vec<String> = batch
                .failures
                .iter()
                .map(|(name, _, message)| format!("deploy {name}: {message}"))
                .collect();
            let _ = out.send(Err(Status::new(code, lines.join("\n")))).await;
        }
    }

    /// Places one service on the batch's snapshot and commits it there; a new
    /// generation, the master's event and the `Placed` event to send. Err: (the node
    /// if one was chosen, why not).
    fn place_one(
        &self,
        def: ServiceDef,
        snapshot: &mut Snapshot,
        excluded: &[(String, Rejection)],
    ) -> Result<(Planned, wire::DeployEvent), (String, Status)> {
        let registry = &self.state.registry;
        let current = registry.locate(&def.name);
        let mut placement = snapshot
            .place_excluding(&def, current.as_deref(), excluded)
            .map_err(|e| (String::new(), Status::failed_precondition(e.to_string())))?;
        if !excluded.is_empty() {
            let refused: Vec<String> = excluded
                .iter()
                .map(|(node, why)| refusals::refused_text(node, why))
                .collect();
            placement.reason = format!("{}; {}", refused.join("; "), placement.reason);
        }
        let target = placement.node;
        // Before anything is recorded: an agent lacking Deploy is refused here.
        let client = self
            .client(&target, "Deploy")
            .map_err(|s| (target.clone(), s))?;
        let moved = current.as_ref().is_some_and(|c| c != &target);
        let reason = match &current {
            Some(c) if moved => format!("{}; moves from {c}", placement.reason),
            _ => placement.reason,
        };
        snapshot.commit(
            &def.name,
            &target,
            mcp_placement::requests_of(&def, snapshot.policy()),
        );
        let generation = self.state.hlc.next();
        registry.event(
            &target,
            format!("deploy {} generation {generation} ({reason})", def.name),
        );
        let placed = wire::DeployEvent {
            service: def.name.clone(),
            node: target.clone(),
            event: Some(wire::deploy_event::Event::Placed(wire::Placed { reason })),
        };
        let public = def
            .components
            .iter()
            .flat_map(|c| &c.routes)
            .any(|r| r.public);
        Ok((
            Planned {
                def,
                node: target,
                client,
                generation,
                moved,
                public,
            },
            placed,
        ))
    }

    /// Deploys one placed service: calls the agent with its generation, forwards its
    /// events, records the result. A copy left on a node it moved away from is the
    /// control loop's to remove.
    async fn run_one(&self, p: &Planned, out: &Out) -> Result<(), Status> {
        let Planned {
            def,
            node: target,
            generation,
            ..
        } = p;
        let (target, generation) = (target.clone(), *generation);
        let mut client = p.client.clone();
        let registry = &self.state.registry;
        let _placing = Placing::new(&self.state, &def.name, &target);
        // A live agent answers at once (the deploy runs behind its stream): one that
        // does not within the probe timeout is frozen or gone, and the operator hears
        // so now rather than when the connection's keepalive gives up.
        let bound = self.state.config.probe_timeout.max(Duration::from_secs(2));
        let call = client.deploy(agent::DeployRequest {
            service: Some(agent::ServiceSpec::from(def)),
            generation,
        });
        let mut stream = tokio::time::timeout(bound, call)
            .await
            .map_err(|_| {
                self.agent_error(
                    &target,
                    Status::deadline_exceeded(format!("no answer within {bound:?}")),
                )
            })?
            .map_err(|s| self.agent_error(&target, s))?
            .into_inner();
        let mut done = None;
        while let Some(item) = stream.next().await {
            let mut event = item.map_err(|s| self.agent_error(&target, s))?;
            if let Some(agent::deploy_event::Event::Done(status)) = &mut event.event {
                done = Some(status.clone());
                registry.with_urls(std::slice::from_mut(status));
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
        Ok(())
    }
}

impl MasterService {
    /// May the master place `def` elsewhere when a node refuses its image? Only where
    /// the definition leaves the node to it: no `arch` named (an arch named that the
    /// image lacks fails the deploy, SPEC §3), not pinned to one node, not tier core.
    /// A pool is a choice among its nodes, so a pool's service moves within it.
    fn replaceable(&self, def: &ServiceDef) -> bool {
        def.resources.arch.is_empty()
            && match &def.node {
                Some(target) => !self.state.registry.contains(target),
                None => def.tier == Tier::Worker,
            }
    }

    /// Records that `node` refused an image (an event for `mcp status`, and the
    /// refusal for later placements); its reason for placement.
    fn remember_refusal(&self, node: &str, refused: &refusal::ImagePlatform) -> Rejection {
        let arch = self.state.registry.read().get(node).map(|n| n.arch);
        let arch = arch.unwrap_or(mcp_types::Arch::Arm64);
        let why = refusals::rejection(&refused.image, &refused.platforms, arch);
        self.state
            .refusals
            .remember(&refused.image, node, &refused.platforms, arch);
        self.state
            .registry
            .event(node, refusals::refused_text(node, &why));
        why
    }
}

/// Deploys at once on one node. One: the agent deploys one service at a time (a
/// node-wide lock in its deploy), so a second call would only wait inside the agent
/// with its stream open, and its services would start in the agent's order rather
/// than the batch's.
const PER_NODE: usize = 1;

type Out = mpsc::Sender<Result<wire::DeployEvent, Status>>;

/// A service of the batch, placed, to deploy.
struct Planned {
    def: ServiceDef,
    node: String,
    client: AgentClient<Channel>,
    generation: u64,
    moved: bool,
    public: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// For its dependencies or its node.
    Waiting,
    Running,
    Done,
    Failed,
}

/// Where each service of a batch is, by its index in depends_on order.
struct Batch {
    names: Vec<String>,
    /// Its node ("" when not placed).
    nodes: Vec<String>,
    state: Vec<State>,
    /// Dependencies in the batch not done yet.
    left: Vec<usize>,
    /// The services of the batch that depend on it.
    dependents: Vec<Vec<usize>>,
    /// It moved or has public routes: the batch waits for the loop's pass.
    wait: Vec<bool>,
    /// A moved public service: two passes.
    twice: bool,
    /// Any public routes: the edge's pass takes longer.
    public: bool,
    /// Ready to start, by node, lowest index (earliest in depends_on order) first.
    ready: HashMap<String, BTreeSet<usize>>,
    busy: HashMap<String, usize>,
    /// (service, code, message), in the order they failed.
    failures: Vec<(String, Code, String)>,
}

impl Batch {
    fn new(defs: &[ServiceDef], index: &HashMap<String, usize>) -> Batch {
        let n = defs.len();
        let mut left = vec![0; n];
        let mut dependents = vec![Vec::new(); n];
        for (i, def) in defs.iter().enumerate() {
            for dep in &def.depends_on {
                if let Some(&d) = index.get(dep) {
                    left[i] += 1;
                    dependents[d].push(i);
                }
            }
        }
        Batch {
            names: defs.iter().map(|d| d.name.clone()).collect(),
            nodes: vec![String::new(); n],
            state: vec![State::Waiting; n],
            left,
            dependents,
            wait: vec![false; n],
            twice: false,
            public: false,
            ready: HashMap::new(),
            busy: HashMap::new(),
            failures: Vec::new(),
        }
    }

    /// Service `i` is placed as `p` says: its node, and what the batch then waits for.
    fn placed(&mut self, i: usize, p: &Planned) {
        self.nodes[i].clone_from(&p.node);
        self.wait[i] |= p.moved || p.public;
        self.twice |= p.moved && p.public;
        self.public |= p.public;
    }

    fn make_ready(&mut self, i: usize) {
        self.ready
            .entry(self.nodes[i].clone())
            .or_default()
            .insert(i);
    }

    /// The next service to start on `node`, if it has room; marked running.
    fn next_on(&mut self, node: &str) -> Option<usize> {
        let busy = self.busy.entry(node.to_string()).or_default();
        if *busy >= PER_NODE {
            return None;
        }
        let i = self.ready.get_mut(node)?.pop_first()?;
        *busy += 1;
        self.state[i] = State::Running;
        Some(i)
    }

    /// Service `i` failed: reports it, then every service depending on it (directly
    /// or not), which will not be tried.
    async fn fail(&mut self, i: usize, status: Status, out: &Out) {
        let name = self.names[i].clone();
        tracing::warn!(service = %name, "deploy failed: {}", status.message());
        self.report(i, status.code(), status.message().to_string(), out)
            .await;
        let mut queue = vec![(i, name)];
        while let Some((failed, because)) = queue.pop() {
            for d in self.dependents[failed].clone() {
                if self.state[d] != State::Waiting {
                    continue;
                }
                let message =
                    format!("not deployed: it depends on {because}, which did not deploy");
                self.report(d, Code::FailedPrecondition, message, out).await;
                queue.push((d, self.names[d].clone()));
            }
        }
    }

    async fn report(&mut self, i: usize, code: Code, message: String, out: &Out) {
        self.state[i] = State::Failed;
        if let Some(ready) = self.ready.get_mut(&self.nodes[i]) {
            ready.remove(&i);
        }
        let _ = out
            .send(Ok(wire::DeployEvent {
                service: self.names[i].clone(),
                node: self.nodes[i].clone(),
                event: Some(wire::deploy_event::Event::Failed(wire::Failed {
                    code: code as i32,
                    message: message.clone(),
                })),
            }))
            .await;
        self.failures.push((self.names[i].clone(), code, message));
    }
}
