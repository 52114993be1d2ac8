//! A read-only view of the fleet built once and good for many placements:
//! scope (node, pool, core, any), then the filters, then ranking and selection.
//!
//! Speed comes from one observation: within a placement the request is the
//! same for every node, so ranking by allocatable memory left after placement
//! is ranking by allocatable memory left now. Each scope keeps its eligible
//! nodes (healthy workers above the floors) sorted by (allocatable memory left
//! desc, services placed asc, name asc); the first one that passes the
//! service's filters wins, and the scan stops as soon as a node has less
//! allocatable memory left than requested. Only when nothing qualifies is
//! every node in scope evaluated, to build the rejection list.

use std::cmp::Reverse;
use std::collections::HashMap;

use mcp_types::{ServiceDef, Tier};

use crate::filter::{Demand, NodeState, Rejection};
use crate::fleet::{Capacity, NodeView, PlacedService, Policy, Units};
use crate::outcome::{Placement, PlacementError, Scope};

/// A read-only view of the fleet, built once, good for many placements
/// (Nomad-style snapshot). [`Snapshot::commit`] records a placement so the
/// next ones in a batch see it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Sorted by name, so a node's index is its rank by name.
    nodes: Vec<NodeState>,
    /// The pools each node belongs to, as indices into `pools`.
    node_pools: Vec<Vec<u32>>,
    /// Eligible nodes by rank (allocatable memory left desc, services placed
    /// asc, index asc).
    order: Vec<u32>,
    /// Sorted by name.
    pools: Vec<Pool>,
    /// Each placed service's node(s) and requests, to exclude a service
    /// from its own capacity and to replace it on commit.
    placements: HashMap<String, Vec<(u32, Units)>>,
    policy: Policy,
    master: String,
}

#[derive(Debug, Clone)]
struct Pool {
    name: String,
    /// Every member, by name.
    members: Vec<u32>,
    /// Eligible members by rank.
    order: Vec<u32>,
}

/// Where a ranked search looks.
#[derive(Clone, Copy)]
enum Within {
    All,
    Pool(usize),
}

type RankKey = (Reverse<u64>, u32, u32);

/// What one placement asks: the service's demand, its own current placement, and
/// the nodes ruled out for it.
type Asked<'a> = (&'a Demand<'a>, &'a [(u32, Units)], &'a [(u32, Rejection)]);

/// Why node `i` is ruled out for this service, if it is.
fn excluded(ex: &[(u32, Rejection)], i: u32) -> Option<&Rejection> {
    ex.iter().find(|(j, _)| *j == i).map(|(_, why)| why)
}

fn rank(nodes: &[NodeState], i: u32) -> RankKey {
    let node = &nodes[i as usize];
    (Reverse(node.memory_left(node.used)), node.placed, i)
}

fn sort_by_rank(nodes: &[NodeState], order: &mut [u32]) {
    order.sort_unstable_by_key(|&i| rank(nodes, i));
}

fn remove_ranked(nodes: &[NodeState], order: &mut Vec<u32>, key: RankKey) {
    if let Ok(pos) = order.binary_search_by_key(&key, |&j| rank(nodes, j)) {
        order.remove(pos);
    }
}

fn insert_ranked(nodes: &[NodeState], order: &mut Vec<u32>, i: u32) {
    let key = rank(nodes, i);
    let (Ok(pos) | Err(pos)) = order.binary_search_by_key(&key, |&j| rank(nodes, j));
    order.insert(pos, i);
}

impl Snapshot {
    /// Builds the view. Node names are unique in a registry; should one repeat,
    /// the first is kept. Placed services on unknown nodes are ignored.
    /// `master_node` is the node that takes `tier = "core"`.
    pub fn new(
        mut nodes: Vec<NodeView>,
        placed: &[PlacedService],
        policy: Policy,
        master_node: &str,
    ) -> Snapshot {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|later, first| later.name == first.name);
        let mut states: Vec<NodeState> = nodes.iter().map(|v| NodeState::new(v, &policy)).collect();

        let mut pool_members: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, view) in nodes.iter().enumerate() {
            for pool in &view.pools {
                let members = pool_members.entry(pool.as_str()).or_default();
                // A node listing a pool twice is a member once.
                if members.last() != Some(&(i as u32)) {
                    members.push(i as u32);
                }
            }
        }
        let mut pool_names: Vec<&str> = pool_members.keys().copied().collect();
        pool_names.sort_unstable();
        let mut node_pools = vec![Vec::new(); nodes.len()];

        let mut placements: HashMap<String, Vec<(u32, Units)>> = HashMap::new();
        for p in placed {
            if let Ok(i) = states.binary_search_by(|n| n.name.as_str().cmp(&p.node)) {
                let requests = Units::of(&p.requests);
                states[i].used = states[i].used.plus(requests);
                states[i].placed += 1;
                placements
                    .entry(p.service.clone())
                    .or_default()
                    .push((i as u32, requests));
            }
        }

        let mut order: Vec<u32> = (0..states.len() as u32)
            .filter(|&i| states[i as usize].eligible)
            .collect();
        sort_by_rank(&states, &mut order);

        let mut pools = Vec::with_capacity(pool_names.len());
        for (p, name) in pool_names.iter().enumerate() {
            let members = pool_members.remove(name).unwrap_or_default();
            for &i in &members {
                node_pools[i as usize].push(p as u32);
            }
            let mut pool_order: Vec<u32> = members
                .iter()
                .copied()
                .filter(|&i| states[i as usize].eligible)
                .collect();
            sort_by_rank(&states, &mut pool_order);
            pools.push(Pool {
                name: (*name).to_string(),
                members,
                order: pool_order,
            });
        }
        Snapshot {
            nodes: states,
            node_pools,
            order,
            pools,
            placements,
            policy,
            master: master_node.to_string(),
        }
    }

    /// Places `def`. `current` is the node it runs on now, if any: a redeploy
    /// stays there while that node qualifies and is in scope.
    pub fn place(
        &self,
        def: &ServiceDef,
        current: Option<&str>,
    ) -> Result<Placement, PlacementError> {
        self.place_excluding(def, current, &[])
    }

    /// [`Snapshot::place`] with some nodes ruled out for this service alone, each
    /// with the reason the error names (an agent refused the service's image, say).
    /// Ranking is unchanged: the best node not ruled out wins.
    pub fn place_excluding(
        &self,
        def: &ServiceDef,
        current: Option<&str>,
        excluded: &[(String, Rejection)],
    ) -> Result<Placement, PlacementError> {
        let ex: Vec<(u32, Rejection)> = excluded
            .iter()
            .filter_map(|(name, why)| Some((self.node_index(name)? as u32, why.clone())))
            .collect();
        let ex = ex.as_slice();
        let demand = Demand::of(def, &self.policy);
        let own: &[(u32, Units)] = self.placements.get(&def.name).map_or(&[], |v| v.as_slice());
        match (&def.node, def.tier) {
            (Some(target), _) => {
                if let Some(i) = self.node_index(target) {
                    return self.place_on(
                        i,
                        def,
                        (&demand, own, ex),
                        Scope::Node(target.clone()),
                        || format!("pinned to {target}"),
                    );
                }
                match self.pools.binary_search_by(|p| p.name.as_str().cmp(target)) {
                    Ok(p) => self.place_within(Within::Pool(p), def, (&demand, own, ex), current),
                    Err(_) => Err(PlacementError::UnknownTarget {
                        service: def.name.clone(),
                        target: target.clone(),
                    }),
                }
            }
            (None, Tier::Core) => match self.node_index(&self.master) {
                Some(i) => self.place_on(
                    i,
                    def,
                    (&demand, own, ex),
                    Scope::Master(self.master.clone()),
                    || format!("core tier: master node {}", self.master),
                ),
                None => Err(PlacementError::MasterMissing {
                    service: def.name.clone(),
                    master: self.master.clone(),
                }),
            },
            (None, Tier::Worker) => {
                self.place_within(Within::All, def, (&demand, own, ex), current)
            }
        }
    }

    /// The policy this snapshot places under (for `requests_of`).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Records that `service` now runs on `node` with `requests`, so later
    /// placements see them. A service runs on one node: an earlier placement
    /// of the same service (in `placed` or committed) is replaced. An unknown
    /// node takes nothing.
    pub fn commit(&mut self, service: &str, node: &str, requests: Capacity) {
        if let Some(previous) = self.placements.remove(service) {
            for (i, r) in previous {
                self.update_used(i, |used| used.minus(r), -1);
            }
        }
        if let Some(i) = self.node_index(node) {
            let requests = Units::of(&requests);
            self.update_used(i as u32, |used| used.plus(requests), 1);
            self.placements
                .insert(service.to_string(), vec![(i as u32, requests)]);
        }
    }

    /// The number of nodes in the view.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node has registered.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// Node `i`'s used requests without those of the service being placed.
    fn used_without(&self, i: u32, own: &[(u32, Units)]) -> Units {
        own.iter()
            .filter(|(j, _)| *j == i)
            .fold(self.nodes[i as usize].used, |used, (_, r)| used.minus(*r))
    }

    fn check(&self, i: u32, demand: &Demand<'_>, own: &[(u32, Units)]) -> Result<(), Rejection> {
        self.nodes[i as usize].check(self.used_without(i, own), demand, &self.policy)
    }

    /// [`Snapshot::check`], then whether the node is ruled out for this service: a
    /// node that fails a filter is named for that (its own state comes first).
    fn check_excluding(
        &self,
        i: u32,
        demand: &Demand<'_>,
        own: &[(u32, Units)],
        ex: &[(u32, Rejection)],
    ) -> Result<(), Rejection> {
        self.check(i, demand, own)?;
        match excluded(ex, i) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    fn in_scope(&self, i: u32, within: Within) -> bool {
        match within {
            Within::All => true,
            Within::Pool(p) => self.node_pools[i as usize].contains(&(p as u32)),
        }
    }

    /// One named node (pinned or the master): it, or its rejection.
    fn place_on(
        &self,
        i: usize,
        def: &ServiceDef,
        (demand, own, ex): Asked<'_>,
        scope: Scope,
        reason: impl FnOnce() -> String,
    ) -> Result<Placement, PlacementError> {
        let node = &self.nodes[i];
        match self.check_excluding(i as u32, demand, own, ex) {
            Ok(()) => Ok(Placement {
                node: node.name.clone(),
                reason: reason(),
            }),
            Err(why) => Err(PlacementError::Rejected {
                service: def.name.clone(),
                scope,
                rejections: vec![(node.name.clone(), why)],
            }),
        }
    }

    /// The best node of a pool or of the whole fleet.
    fn place_within(
        &self,
        within: Within,
        def: &ServiceDef,
        (demand, own, ex): Asked<'_>,
        current: Option<&str>,
    ) -> Result<Placement, PlacementError> {
        if let Some(i) = current.and_then(|c| self.node_index(c)) {
            let i = i as u32;
            if self.in_scope(i, within) && self.check_excluding(i, demand, own, ex).is_ok() {
                let name = &self.nodes[i as usize].name;
                return Ok(Placement {
                    node: name.clone(),
                    reason: format!("stays on {name}"),
                });
            }
        }
        let Some(i) = self.best(within, demand, own, ex) else {
            return Err(self.rejected(within, def, demand, own, ex));
        };
        let node = self.nodes[i as usize].name.clone();
        let reason = match within {
            Within::All => "most free memory".to_string(),
            Within::Pool(p) => format!("pool {}: most free memory", self.pools[p].name),
        };
        Ok(Placement { node, reason })
    }

    /// The fast path: the first node in rank order that fits, compared with
    /// the nodes hosting the service itself (whose rank changes once its own
    /// requests are left out).
    fn best(
        &self,
        within: Within,
        demand: &Demand<'_>,
        own: &[(u32, Units)],
        ex: &[(u32, Rejection)],
    ) -> Option<u32> {
        let order = match within {
            Within::All => &self.order,
            Within::Pool(p) => &self.pools[p].order,
        };
        let mut best: Option<RankKey> = None;
        for &i in order {
            let node = &self.nodes[i as usize];
            if node.memory_left(node.used) < demand.requests.memory {
                break; // every later node has less left still
            }
            if own.iter().any(|(j, _)| *j == i) || excluded(ex, i).is_some() {
                continue;
            }
            if node.fits(node.used, demand) {
                best = Some(rank(&self.nodes, i));
                break;
            }
        }
        for &(i, _) in own {
            let node = &self.nodes[i as usize];
            if !node.eligible || !self.in_scope(i, within) || excluded(ex, i).is_some() {
                continue;
            }
            let used = self.used_without(i, own);
            if node.fits(used, demand) {
                let others = own.iter().filter(|(j, _)| *j == i).count() as u32;
                let key = (
                    Reverse(node.memory_left(used)),
                    node.placed.saturating_sub(others),
                    i,
                );
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// The slow path: every node in scope, by name, with its rejection.
    fn rejected(
        &self,
        within: Within,
        def: &ServiceDef,
        demand: &Demand<'_>,
        own: &[(u32, Units)],
        ex: &[(u32, Rejection)],
    ) -> PlacementError {
        let check = |i: u32| {
            let why = self.check_excluding(i, demand, own, ex);
            debug_assert!(
                why.is_err(),
                "the fast path missed {}",
                self.nodes[i as usize].name
            );
            why.err()
                .map(|why| (self.nodes[i as usize].name.clone(), why))
        };
        let (scope, rejections) = match within {
            Within::All => (
                Scope::Any,
                (0..self.nodes.len() as u32).filter_map(check).collect(),
            ),
            Within::Pool(p) => (
                Scope::Pool(self.pools[p].name.clone()),
                self.pools[p]
                    .members
                    .iter()
                    .copied()
                    .filter_map(check)
                    .collect(),
            ),
        };
        PlacementError::Rejected {
            service: def.name.clone(),
            scope,
            rejections,
        }
    }

    /// Changes node `i`'s used requests and its count of services (by `count`),
    /// and keeps every order it is in sorted (a remove and an insert by binary
    /// search: a memmove at worst).
    fn update_used(&mut self, i: u32, change: impl FnOnce(Units) -> Units, count: i32) {
        let idx = i as usize;
        let node = &self.nodes[idx];
        let new_used = change(node.used);
        let new_placed = node.placed.saturating_add_signed(count);
        if !node.eligible {
            self.nodes[idx].used = new_used;
            self.nodes[idx].placed = new_placed;
            return;
        }
        let key = rank(&self.nodes, i);
        remove_ranked(&self.nodes, &mut self.order, key);
        for &p in &self.node_pools[idx] {
            remove_ranked(&self.nodes, &mut self.pools[p as usize].order, key);
        }
        self.nodes[idx].used = new_used;
        self.nodes[idx].placed = new_placed;
        insert_ranked(&self.nodes, &mut self.order, i);
        for &p in &self.node_pools[idx] {
            insert_ranked(&self.nodes, &mut self.pools[p as usize].order, i);
        }
    }
}
