//! SPEC §4 read literally: every node in scope evaluated from scratch, with its
//! usage summed from the placed list, for every placement. Slow and obvious;
//! the property tests hold `Snapshot` to it.

use mcp_types::{ServiceDef, Tier};

use crate::fleet::{cores, millicores};
use crate::{
    requests_of, Health, NodeView, PlacedService, Placement, PlacementError, Policy, Rejection,
    Role, Scope,
};

/// Node names must be unique (a registry is keyed by name).
pub fn place(
    def: &ServiceDef,
    nodes: &[NodeView],
    placed: &[PlacedService],
    current: Option<&str>,
    master: &str,
    policy: &Policy,
) -> Result<Placement, PlacementError> {
    let mut nodes: Vec<&NodeView> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let find = |name: &str| nodes.iter().copied().find(|n| n.name == name);
    let evaluate = |node: &NodeView| evaluate(def, node, placed, policy);
    let one = |node: &NodeView, scope: Scope, reason: String| match evaluate(node) {
        Ok(_) => Ok(Placement {
            node: node.name.clone(),
            reason,
        }),
        Err(why) => Err(PlacementError::Rejected {
            service: def.name.clone(),
            scope,
            rejections: vec![(node.name.clone(), why)],
        }),
    };

    let (scope, members): (Scope, Vec<&NodeView>) = match (&def.node, def.tier) {
        (Some(target), _) => {
            if let Some(node) = find(target) {
                return one(
                    node,
                    Scope::Node(target.clone()),
                    format!("pinned to {target}"),
                );
            }
            let members: Vec<&NodeView> = nodes
                .iter()
                .copied()
                .filter(|n| n.pools.contains(target))
                .collect();
            if members.is_empty() {
                return Err(PlacementError::UnknownTarget {
                    service: def.name.clone(),
                    target: target.clone(),
                });
            }
            (Scope::Pool(target.clone()), members)
        }
        (None, Tier::Core) => {
            return match find(master) {
                Some(node) => one(
                    node,
                    Scope::Master(master.to_string()),
                    format!("core tier: master node {master}"),
                ),
                None => Err(PlacementError::MasterMissing {
                    service: def.name.clone(),
                    master: master.to_string(),
                }),
            }
        }
        (None, Tier::Worker) => (Scope::Any, nodes.clone()),
    };

    if let Some(current) = current {
        if let Some(node) = members.iter().find(|n| n.name == current) {
            if evaluate(node).is_ok() {
                return Ok(Placement {
                    node: node.name.clone(),
                    reason: format!("stays on {current}"),
                });
            }
        }
    }
    let request = requests_of(def, policy).memory;
    let mut best: Option<(u64, usize, &str)> = None;
    let mut rejections = Vec::new();
    for node in &members {
        match evaluate(node) {
            Ok((left, count)) => {
                let after = left - request;
                // Most allocatable memory left after placement, then the fewest
                // services; ties by name (members are in name order, so the
                // first of equals stays).
                if best.is_none_or(|(b, c, _)| after > b || (after == b && count < c)) {
                    best = Some((after, count, &node.name));
                }
            }
            Err(why) => rejections.push((node.name.clone(), why)),
        }
    }
    match best {
        Some((_, _, node)) => Ok(Placement {
            node: node.to_string(),
            reason: match &scope {
                Scope::Pool(p) => format!("pool {p}: most free memory"),
                _ => "most free memory".to_string(),
            },
        }),
        None => Err(PlacementError::Rejected {
            service: def.name.clone(),
            scope,
            rejections,
        }),
    }
}

/// The node's allocatable memory not yet requested (before this placement) and
/// the number of other services placed there when it qualifies, else the first
/// filter it fails.
fn evaluate(
    def: &ServiceDef,
    node: &NodeView,
    placed: &[PlacedService],
    policy: &Policy,
) -> Result<(u64, usize), Rejection> {
    if node.health != Health::Healthy {
        return Err(Rejection::State(node.health));
    }
    if node.role != Role::Worker {
        return Err(Rejection::Role(node.role));
    }
    let allowed = &def.resources.arch;
    if !allowed.is_empty() && !allowed.contains(&node.arch) {
        return Err(Rejection::Arch {
            node: node.arch,
            allowed: allowed.clone(),
        });
    }
    // The figures in tests are small: plain sums cannot overflow.
    let (mut cpu, mut memory, mut disk, mut count) = (0u64, 0u64, 0u64, 0usize);
    for p in placed {
        if p.node == node.name && p.service != def.name {
            count += 1;
            cpu += millicores(p.requests.cpu);
            memory += p.requests.memory;
            disk += p.requests.disk;
        }
    }
    let want = requests_of(def, policy);
    let want_cpu = millicores(want.cpu);
    let cpu_allocatable = millicores(node.total.cpu).saturating_sub(millicores(policy.reserve.cpu));
    if cpu + want_cpu > cpu_allocatable {
        return Err(Rejection::Cpu {
            requested: cores(want_cpu),
            free: cores(cpu_allocatable.saturating_sub(cpu)),
        });
    }
    let memory_allocatable = node.total.memory.saturating_sub(policy.reserve.memory);
    let free_memory = node
        .free_memory
        .min(memory_allocatable.saturating_sub(memory));
    if memory + want.memory > memory_allocatable || want.memory > node.free_memory {
        return Err(Rejection::Memory {
            requested: want.memory,
            free: free_memory,
        });
    }
    let disk_allocatable = node.total.disk.saturating_sub(policy.reserve.disk);
    let free_disk = node.free_disk.min(disk_allocatable.saturating_sub(disk));
    if disk + want.disk > disk_allocatable || want.disk > node.free_disk {
        return Err(Rejection::Disk {
            requested: want.disk,
            free: free_disk,
        });
    }
    if node.free_memory < policy.min_free_memory {
        return Err(Rejection::FreeMemoryFloor {
            free: node.free_memory,
            floor: policy.min_free_memory,
        });
    }
    if node.free_disk < policy.min_free_disk {
        return Err(Rejection::FreeDiskFloor {
            free: node.free_disk,
            floor: policy.min_free_disk,
        });
    }
    Ok((memory_allocatable.saturating_sub(memory), count))
}
