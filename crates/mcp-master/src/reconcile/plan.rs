//! The planner: a pure function from a snapshot of the registry (what the agents
//! reported, and what the master was asked) to the actions that make the fleet match
//! it. No I/O, no clock, no locks, so it is table- and property-tested alone, as
//! `mcp-placement` is. Each kind of derived state is one projection of the same
//! snapshot: the copies of each service (here) and every edge's route table
//! (`routes`); DNS records plug in beside them as a further `plan_*` function whose
//! actions join the same list.

pub mod dns;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};

pub use routes::{CertPlan, EdgeFacts, Observed, PublicRoute};

/// What the planner sees of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    /// The node answers RPCs now (healthy, and its service state is known).
    pub answers: bool,
    /// The host part of its address (an IP literal): what its services' names
    /// resolve to.
    pub host: String,
    pub copies: Vec<Copy>,
    /// An edge node: the routes it reported. None for a worker.
    pub edge: Option<EdgeFacts>,
}

/// One copy of a service on a node, as its agent reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub service: String,
    /// The generation of the deploy it comes from (0: before generations, or an
    /// instance with no desired state on its node).
    pub generation: u64,
    /// The node holds desired state for it (false: only instances, desired "absent").
    pub desired: bool,
    /// The operator wants it running (false: stopped, or no desired state).
    pub running: bool,
    /// Every component is observed running (a new copy may still be starting).
    pub ready: bool,
    /// Its public routes, each with the backend it publishes (`backend_name` and
    /// `unavailable` are the planner's to fill).
    pub routes: Vec<PublicRoute>,
    /// Every route's published port on the node: (route name, port).
    pub ports: Vec<(String, u16)>,
}

/// The registry as the planner sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub nodes: Vec<NodeFacts>,
    /// Services removed by an operator, with the generation of the removal: any copy
    /// at or below it is garbage wherever it turns up.
    pub removed: BTreeMap<String, u64>,
    /// The fleet has had its time to register after the master started: until then
    /// no edge route is touched (a service not reported yet is not a service gone).
    pub settled: bool,
    /// Unix seconds now: certificates are renewed at two thirds of their lifetime.
    pub now: i64,
    /// The internal zone (`svc.mcp.<domain>`): an l7 backend's certificate name.
    pub zone: String,
    /// Hosts of every node that answers (the host part of its address), whether or
    /// not it reports services: a route to one of them for a service it does not run
    /// is stale.
    pub answering_hosts: BTreeSet<String>,
}

/// Something the executor must make true.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Remove `service` from `node`, fenced by `generation`: the agent refuses if its
    /// copy has become newer meanwhile.
    RemoveCopy {
        service: String,
        node: String,
        generation: u64,
        why: Why,
    },
    /// Forget a removal once no copy of the service is left anywhere.
    ForgetRemoval { service: String },
    /// Set up (or replace) a public route on an edge.
    SetupRoute {
        edge: String,
        route: PublicRoute,
        cert: CertPlan,
    },
    /// Take a route the registry no longer derives off an edge.
    RemoveRoute {
        edge: String,
        hostname: String,
        service: String,
    },
}

impl Action {
    /// The node an action concerns ("" for the master's own bookkeeping).
    pub fn node(&self) -> &str {
        match self {
            Action::RemoveCopy { node, .. } => node,
            Action::ForgetRemoval { .. } => "",
            Action::SetupRoute { edge, .. } | Action::RemoveRoute { edge, .. } => edge,
        }
    }

    /// What the action changes: two actions with one key never run at once (a route
    /// set up for an old backend must not land after the one for the new).
    pub fn key(&self) -> (&str, &str) {
        match self {
            Action::RemoveCopy { node, service, .. } => (node, service),
            Action::ForgetRemoval { service } => ("", service),
            Action::SetupRoute { edge, route, .. } => (edge, &route.hostname),
            Action::RemoveRoute { edge, hostname, .. } => (edge, hostname),
        }
    }
}

/// Why a copy goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// A newer copy runs elsewhere (a move, or a redeploy while this node was away).
    Superseded { by_node: String, by_generation: u64 },
    /// The operator removed the service.
    Removed,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Superseded {
                by_node,
                by_generation,
            } => write!(f, "superseded by generation {by_generation} on {by_node}"),
            Why::Removed => write!(f, "the service was removed"),
        }
    }
}

/// The copy that should exist of `service`: the newest generation; among equals a
/// copy with desired state beats bare instances, then the node name decides (so every
/// caller agrees). None when no node reports the service.
pub fn newest<'a>(nodes: &'a [NodeFacts], service: &str) -> Option<(&'a NodeFacts, &'a Copy)> {
    top(nodes
        .iter()
        .flat_map(|n| n.copies.iter().map(move |c| (n, c)))
        .filter(|(_, c)| c.service == service))
}

/// The newest of copies of one service, as [`newest`] orders them.
fn top<'a>(
    copies: impl Iterator<Item = (&'a NodeFacts, &'a Copy)>,
) -> Option<(&'a NodeFacts, &'a Copy)> {
    copies.max_by(|(na, a), (nb, b)| {
        (a.generation, a.desired)
            .cmp(&(b.generation, b.desired))
            .then_with(|| nb.name.cmp(&na.name))
    })
}

/// Every copy of every service, by service name, in node order: one pass, so a
/// projection over all services is not one scan of the fleet per service.
fn by_service(world: &World) -> BTreeMap<&str, Vec<(&NodeFacts, &Copy)>> {
    let mut services: BTreeMap<&str, Vec<(&NodeFacts, &Copy)>> = BTreeMap::new();
    for node in &world.nodes {
        for copy in &node.copies {
            services
                .entry(copy.service.as_str())
                .or_default()
                .push((node, copy));
        }
    }
    services
}

/// Is `copy` of `service` at or below an operator's removal of it?
pub fn removed(world: &World, service: &str, copy: &Copy) -> bool {
    world
        .removed
        .get(service)
        .is_some_and(|at| copy.generation <= *at)
}

/// The copy each wanted service is known by (its newest, holding desired state, not
/// removed), with its node, by service name: what every projection derives from.
pub fn wanted(world: &World) -> Vec<(&NodeFacts, &Copy)> {
    by_service(world)
        .into_values()
        .filter_map(|copies| top(copies.into_iter()))
        .filter(|(_, top)| top.desired && !removed(world, &top.service, top))
        .collect()
}

/// Every action the world needs now, sorted.
pub fn plan(world: &World) -> Vec<Action> {
    let mut actions = plan_copies(world);
    actions.extend(routes::plan_routes(world));
    actions.sort();
    actions
}

/// Copies: one per service, the newest. Older copies are removed once their node
/// answers; removed services lose every copy at or below the removal. Two copies that
/// cannot be ordered (both generation 0 with desired state) are left alone: the master
/// cannot know which is right.
fn plan_copies(world: &World) -> Vec<Action> {
    let mut actions = Vec::new();
    let services = by_service(world);
    for (service, copies) in &services {
        let removed_at = world.removed.get(*service).copied();
        let Some((top_node, top)) = top(copies.iter().copied()) else {
            continue;
        };
        for &(node, copy) in copies {
            let why = match removed_at {
                Some(at) if copy.generation <= at => Why::Removed,
                _ if std::ptr::eq(copy, top) => continue,
                _ if routes::still_routed(world, copy) => continue,
                _ if copy.generation < top.generation
                    || (copy.generation == top.generation && !copy.desired && top.desired) =>
                {
                    Why::Superseded {
                        by_node: top_node.name.clone(),
                        by_generation: top.generation,
                    }
                }
                _ => continue,
            };
            if node.answers {
                actions.push(Action::RemoveCopy {
                    service: service.to_string(),
                    node: node.name.clone(),
                    generation: copy.generation,
                    why,
                });
            }
        }
    }
    for service in world.removed.keys() {
        if !services.contains_key(service.as_str()) {
            actions.push(Action::ForgetRemoval {
                service: service.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests;
