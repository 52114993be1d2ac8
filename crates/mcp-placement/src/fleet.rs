//! What placement sees of the fleet: nodes as the registry last heard of them,
//! the services already placed, and the operator's reserve and floors.

use mcp_types::{Arch, ServiceDef};

pub use mcp_types::{Health, Role};

/// CPU cores, memory bytes and disk bytes: a node's total, a reserve, or a
/// service's requests.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Capacity {
    /// Cores; counted in whole millicores (0.001 core), so sums are exact.
    pub cpu: f64,
    /// Bytes of memory.
    pub memory: u64,
    /// Bytes of disk.
    pub disk: u64,
}

/// One node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Unique across nodes; shares one namespace with pool names.
    pub name: String,
    /// Workers run services; edge nodes never do.
    pub role: Role,
    /// The node's CPU architecture.
    pub arch: Arch,
    /// Only `Healthy` nodes take services.
    pub health: Health,
    /// The pools the agent declared when it registered.
    pub pools: Vec<String>,
    /// What the node has in all; the policy's reserve is taken off this.
    pub total: Capacity,
    /// Free memory the last heartbeat reported.
    pub free_memory: u64,
    /// Free disk the last heartbeat reported.
    pub free_disk: u64,
}

/// A service already placed on a node, with what it requested.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedService {
    /// The service name.
    pub service: String,
    /// The node it runs on.
    pub node: String,
    /// Its requests (see [`requests_of`]).
    pub requests: Capacity,
}

/// The operator's knobs: what every node keeps for itself, and how little
/// observed free memory and disk a node may have and still take a service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Taken off every node's total to give its allocatable capacity.
    pub reserve: Capacity,
    /// A node whose observed free memory is below this takes nothing.
    pub min_free_memory: u64,
    /// A node whose observed free disk is below this takes nothing.
    pub min_free_disk: u64,
    /// What a component that names no cpu or memory (its own, or through its
    /// service's `[resources]`) counts as requesting: master.toml `[placement]`
    /// `default_cpu` and `default_memory` (disk has no default).
    pub default_request: Capacity,
}

/// What `def` requests (SPEC §4): see [`requests`].
pub fn requests_of(def: &ServiceDef, policy: &Policy) -> Capacity {
    let r = &def.resources;
    requests(
        Requested {
            cpu: r.cpu,
            memory: r.memory.map(|m| m.bytes()),
            disk: r.disk.map(|d| d.bytes()),
        },
        def.components
            .iter()
            .map(|c| (c.cpu, c.memory.map(|m| m.bytes()))),
        &policy.default_request,
    )
}

/// A service's `[resources]` as placement reads them: bytes and cores, `None`
/// where the definition sets nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Requested {
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub disk: Option<u64>,
}

/// What a service requests (SPEC §4), from its `[resources]` and its
/// components' own `(cpu, memory)`: cpu and memory are the service's value when
/// it sets one, else the sum over its components of each one's own value or
/// `defaults`; disk is the service's or none. So a request-less service still
/// takes room, and services that set nothing spread across equal nodes.
pub fn requests<I>(service: Requested, components: I, defaults: &Capacity) -> Capacity
where
    I: IntoIterator<Item = (Option<f64>, Option<u64>)>,
    I::IntoIter: Clone,
{
    let components = components.into_iter();
    Capacity {
        cpu: service.cpu.unwrap_or_else(|| {
            components
                .clone()
                .map(|(cpu, _)| cpu.unwrap_or(defaults.cpu))
                .sum()
        }),
        memory: service.memory.unwrap_or_else(|| {
            components.fold(0u64, |sum, (_, memory)| {
                sum.saturating_add(memory.unwrap_or(defaults.memory))
            })
        }),
        disk: service.disk.unwrap_or(0),
    }
}

/// Cores as whole millicores, rounded to the nearest; negative, NaN and
/// infinite values count as zero (validation refuses them before this).
pub(crate) fn millicores(cpu: f64) -> u64 {
    if cpu.is_finite() && cpu > 0.0 {
        // `as` saturates for values beyond u64.
        (cpu * 1000.0).round() as u64
    } else {
        0
    }
}

/// Millicores back to cores, for messages.
pub(crate) fn cores(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Capacity in exact integer units: millicores and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Units {
    pub cpu: u64,
    pub memory: u64,
    pub disk: u64,
}

impl Units {
    pub fn of(c: &Capacity) -> Units {
        Units {
            cpu: millicores(c.cpu),
            memory: c.memory,
            disk: c.disk,
        }
    }

    pub fn plus(self, o: Units) -> Units {
        Units {
            cpu: self.cpu.saturating_add(o.cpu),
            memory: self.memory.saturating_add(o.memory),
            disk: self.disk.saturating_add(o.disk),
        }
    }

    pub fn minus(self, o: Units) -> Units {
        Units {
            cpu: self.cpu.saturating_sub(o.cpu),
            memory: self.memory.saturating_sub(o.memory),
            disk: self.disk.saturating_sub(o.disk),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn millicores_round_and_clamp() {
        assert_eq!(millicores(2.0), 2000);
        assert_eq!(millicores(0.5), 500);
        assert_eq!(millicores(0.0004), 0);
        assert_eq!(millicores(0.0005), 1);
        assert_eq!(millicores(-1.0), 0);
        assert_eq!(millicores(f64::NAN), 0);
        assert_eq!(millicores(f64::INFINITY), 0);
        assert_eq!(millicores(1e30), u64::MAX);
        assert_eq!(cores(500), 0.5);
    }

    #[test]
    fn names_round_trip() {
        for h in [Health::Healthy, Health::Probing, Health::Unhealthy] {
            assert_eq!(h.to_string().parse::<Health>().unwrap(), h);
        }
        for r in [Role::Worker, Role::Edge] {
            assert_eq!(r.to_string().parse::<Role>().unwrap(), r);
        }
        assert!("sick".parse::<Health>().unwrap_err().contains("\"sick\""));
        assert!("master".parse::<Role>().is_err());
    }
}
