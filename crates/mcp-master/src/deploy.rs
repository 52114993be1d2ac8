//! Deploys: the placement snapshot, the hold of a fresh master until its fleet has
//! re-registered, and one service's deploy (place, a new generation, the agent's
//! streamed progress). What must hold afterwards, such as the old copy of a moved
//! service being gone, is the control loop's; a deploy only waits for its pass.

use std::time::Duration;

use futures_util::StreamExt;
use mcp_placement::{Capacity, NodeView, PlacedService, Snapshot};
use mcp_proto::agent::v1 as agent;
use mcp_proto::master::v1 as wire;
use mcp_proto::tonic::Status;
use mcp_types::ServiceDef;
use tokio::sync::mpsc;

use crate::service::{from_agent, MasterService};
use crate::state::Placing;

impl MasterService {
    /// The fleet as placement sees it now: one snapshot per deploy batch.
    pub(crate) fn snapshot(&self) -> Snapshot {
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

    /// Deploys one service: place, call the agent with a new generation, forward its
    /// events, record the result. A copy left on a node it moved away from is the
    /// control loop's to remove; the deploy waits for that pass.
    pub(crate) async fn deploy_one(
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
        // Before anything is recorded: an agent lacking Deploy is refused here.
        let mut client = self.client(&node.name, "Deploy")?;
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
            let mut event = item.map_err(|s| from_agent(&target, s))?;
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
        let moved = current.is_some_and(|c| c != target);
        let public = def
            .components
            .iter()
            .flat_map(|c| &c.routes)
            .any(|r| r.public);
        // Moves: the old copy is older now; the loop removes it once its node answers
        // (and, for a public service, once the edge routes to the new copy). Public
        // routes: the loop sets them up on the edge. Wait for those passes so the CLI
        // returns with the service reachable and the move complete where it can be.
        let bound = self.state.config.probe_timeout.max(Duration::from_secs(2))
            + if public {
                Duration::from_secs(6)
            } else {
                Duration::ZERO
            };
        match (moved, public) {
            (false, false) => self.state.reconciler.trigger(),
            (true, true) => {
                // One pass switches the route, the next removes the old copy.
                if self.state.reconciler.converge(bound).await {
                    self.state.reconciler.converge(bound).await;
                }
            }
            _ => {
                self.state.reconciler.converge(bound).await;
            }
        }
        Ok(())
    }
}
