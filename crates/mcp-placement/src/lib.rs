//! Pure placement: (service, nodes, placed services) -> a node, or every node's
//! rejection. No I/O, async, clock or sockets, so it is property-tested and
//! benchmarked alone (SPEC §4).
//!
//! The pipeline, as in Nomad's scheduler: scope (pinned node, pool, core tier,
//! any worker), then feasibility filters ([`Rejection`] names each failure),
//! then ranking by free memory after placement (ties by name), then selection
//! (a redeploy stays on its current node while that node qualifies).
//! [`Snapshot`] is built once per batch; [`place`] is the one-shot form.

mod filter;
mod fleet;
mod outcome;
mod snapshot;

#[cfg(test)]
mod tests;

pub use filter::{ImageRefusal, Rejection};
pub use fleet::{
    requests, requests_of, Capacity, Health, NodeView, PlacedService, Policy, Requested, Role,
};
pub use outcome::{Placement, PlacementError, Scope};
pub use snapshot::Snapshot;

use mcp_types::ServiceDef;

/// The pure function of the spec: (service, nodes, placed services) -> node
/// or every node's rejection. Builds a [`Snapshot`] for one placement; to place
/// many services against the same fleet, build the snapshot once.
pub fn place(
    def: &ServiceDef,
    nodes: &[NodeView],
    placed: &[PlacedService],
    current: Option<&str>,
    master_node: &str,
    policy: &Policy,
) -> Result<Placement, PlacementError> {
    Snapshot::new(nodes.to_vec(), placed, policy.clone(), master_node).place(def, current)
}
