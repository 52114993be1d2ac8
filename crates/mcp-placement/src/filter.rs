//! The feasibility filters: whether one node can take one service and, when it
//! cannot, the named reason (the first filter it fails, in a fixed order).

use std::fmt;

use mcp_types::{Arch, ByteSize, ServiceDef};

use crate::fleet::{cores, Health, NodeView, Policy, Role, Units};

/// Why a node cannot take a service. `Display` gives the text of the error
/// (`arch arm64 not in [amd64]`, `memory 512MiB requested, 210MiB free`).
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// Not healthy: probing or unhealthy.
    State(Health),
    /// Not a worker.
    Role(Role),
    /// The service does not run on the node's architecture.
    Arch {
        /// The node's architecture.
        node: Arch,
        /// The architectures the service allows.
        allowed: Vec<Arch>,
    },
    /// Not enough allocatable CPU left, in cores.
    Cpu { requested: f64, free: f64 },
    /// Not enough memory: `free` is the smaller of the observed free memory
    /// and the allocatable memory not yet requested.
    Memory { requested: u64, free: u64 },
    /// Not enough disk, measured like memory.
    Disk { requested: u64, free: u64 },
    /// Observed free memory below the policy's floor.
    FreeMemoryFloor { free: u64, floor: u64 },
    /// Observed free disk below the policy's floor.
    FreeDiskFloor { free: u64, floor: u64 },
    /// The node's agent refused the service's image: it does not carry the node's
    /// platform (SPEC §3). Only the master knows this, from an agent's refusal; it
    /// passes it in with [`crate::Snapshot::place_excluding`]. Boxed: the
    /// rarest rejection should not double every other's size (a failed placement
    /// carries one per node).
    ImagePlatform(Box<ImageRefusal>),
}

/// An agent's refusal of an image, as placement names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefusal {
    pub image: String,
    /// What the image carries: `linux/amd64`.
    pub platforms: String,
    /// The node's architecture.
    pub node: Arch,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::State(health) => write!(f, "{health}"),
            Rejection::Role(role) => write!(f, "role {role}"),
            Rejection::Arch { node, allowed } => {
                write!(f, "arch {node} not in [")?;
                for (i, arch) in allowed.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arch}")?;
                }
                f.write_str("]")
            }
            Rejection::Cpu { requested, free } => {
                write!(f, "cpu {requested} requested, {free} free")
            }
            Rejection::Memory { requested, free } => write!(
                f,
                "memory {} requested, {} free",
                ByteSize(*requested),
                ByteSize(*free)
            ),
            Rejection::Disk { requested, free } => write!(
                f,
                "disk {} requested, {} free",
                ByteSize(*requested),
                ByteSize(*free)
            ),
            Rejection::FreeMemoryFloor { free, floor } => write!(
                f,
                "free memory {} below the floor of {}",
                ByteSize(*free),
                ByteSize(*floor)
            ),
            Rejection::ImagePlatform(r) => {
                write!(f, "image {} is {}, node {}", r.image, r.platforms, r.node)
            }
            Rejection::FreeDiskFloor { free, floor } => write!(
                f,
                "free disk {} below the floor of {}",
                ByteSize(*free),
                ByteSize(*floor)
            ),
        }
    }
}

/// One service's demands, worked out once per placement.
pub(crate) struct Demand<'a> {
    pub requests: Units,
    /// Allowed architectures as a bit set; 0 means any.
    pub arch_mask: u32,
    pub allowed: &'a [Arch],
}

pub(crate) fn arch_bit(arch: Arch) -> u32 {
    1 << (arch as u32)
}

impl<'a> Demand<'a> {
    pub fn of(def: &'a ServiceDef, policy: &Policy) -> Demand<'a> {
        let allowed = def.resources.arch.as_slice();
        Demand {
            requests: Units::of(&crate::requests_of(def, policy)),
            arch_mask: allowed.iter().fold(0, |m, a| m | arch_bit(*a)),
            allowed,
        }
    }
}

/// Whether `request` more fits beside `used` in `allocatable`. A node already
/// over-committed (its reserve grew, say) takes nothing, not even a zero request.
fn room(used: u64, request: u64, allocatable: u64) -> bool {
    used.checked_add(request)
        .is_some_and(|total| total <= allocatable)
}

/// A node with its figures in exact units and what is already placed on it.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub name: String,
    pub role: Role,
    pub health: Health,
    pub arch: Arch,
    pub arch_bit: u32,
    /// Total less the reserve.
    pub allocatable: Units,
    pub free_memory: u64,
    pub free_disk: u64,
    /// The requests of the services placed here.
    pub used: Units,
    /// How many services are placed here.
    pub placed: u32,
    /// Passes every filter that does not depend on the service: healthy, a
    /// worker, above both floors.
    pub eligible: bool,
}

impl NodeState {
    pub fn new(view: &NodeView, policy: &Policy) -> NodeState {
        let allocatable = Units::of(&view.total).minus(Units::of(&policy.reserve));
        let eligible = view.health == Health::Healthy
            && view.role == Role::Worker
            && view.free_memory >= policy.min_free_memory
            && view.free_disk >= policy.min_free_disk;
        NodeState {
            name: view.name.clone(),
            role: view.role,
            health: view.health,
            arch: view.arch,
            arch_bit: arch_bit(view.arch),
            allocatable,
            free_memory: view.free_memory,
            free_disk: view.free_disk,
            used: Units::default(),
            placed: 0,
            eligible,
        }
    }

    /// The memory a service could still have here given `used`: the smaller of
    /// the observed free memory and the allocatable memory not yet requested.
    pub fn free_memory_with(&self, used: Units) -> u64 {
        self.free_memory
            .min(self.allocatable.memory.saturating_sub(used.memory))
    }

    /// The allocatable memory not yet requested given `used`: what ranking goes by
    /// (SPEC §4: requests, not the noisy observed figure, which only filters).
    pub fn memory_left(&self, used: Units) -> u64 {
        self.allocatable.memory.saturating_sub(used.memory)
    }

    fn free_disk_with(&self, used: Units) -> u64 {
        self.free_disk
            .min(self.allocatable.disk.saturating_sub(used.disk))
    }

    fn cpu_fits(&self, used: Units, demand: &Demand<'_>) -> bool {
        room(used.cpu, demand.requests.cpu, self.allocatable.cpu)
    }

    fn memory_fits(&self, used: Units, demand: &Demand<'_>) -> bool {
        demand.requests.memory <= self.free_memory
            && room(used.memory, demand.requests.memory, self.allocatable.memory)
    }

    fn disk_fits(&self, used: Units, demand: &Demand<'_>) -> bool {
        demand.requests.disk <= self.free_disk
            && room(used.disk, demand.requests.disk, self.allocatable.disk)
    }

    /// The filters that depend on the service (arch, cpu, memory, disk), for
    /// a node already known to be `eligible`. The fast path of selection.
    #[inline]
    pub fn fits(&self, used: Units, demand: &Demand<'_>) -> bool {
        (demand.arch_mask == 0 || demand.arch_mask & self.arch_bit != 0)
            && self.cpu_fits(used, demand)
            && self.memory_fits(used, demand)
            && self.disk_fits(used, demand)
    }

    /// Every filter, in order; the first one failed is the reason.
    pub fn check(
        &self,
        used: Units,
        demand: &Demand<'_>,
        policy: &Policy,
    ) -> Result<(), Rejection> {
        if self.health != Health::Healthy {
            return Err(Rejection::State(self.health));
        }
        if self.role != Role::Worker {
            return Err(Rejection::Role(self.role));
        }
        if demand.arch_mask != 0 && demand.arch_mask & self.arch_bit == 0 {
            return Err(Rejection::Arch {
                node: self.arch,
                allowed: demand.allowed.to_vec(),
            });
        }
        if !self.cpu_fits(used, demand) {
            return Err(Rejection::Cpu {
                requested: cores(demand.requests.cpu),
                free: cores(self.allocatable.cpu.saturating_sub(used.cpu)),
            });
        }
        if !self.memory_fits(used, demand) {
            return Err(Rejection::Memory {
                requested: demand.requests.memory,
                free: self.free_memory_with(used),
            });
        }
        if !self.disk_fits(used, demand) {
            return Err(Rejection::Disk {
                requested: demand.requests.disk,
                free: self.free_disk_with(used),
            });
        }
        if self.free_memory < policy.min_free_memory {
            return Err(Rejection::FreeMemoryFloor {
                free: self.free_memory,
                floor: policy.min_free_memory,
            });
        }
        if self.free_disk < policy.min_free_disk {
            return Err(Rejection::FreeDiskFloor {
                free: self.free_disk,
                floor: policy.min_free_disk,
            });
        }
        Ok(())
    }
}
