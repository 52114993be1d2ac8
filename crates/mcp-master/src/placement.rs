//! Placement for a deploy: which node runs a service. A pure function of the service,
//! the nodes and where services run now; no I/O.

use mcp_types::{ServiceDef, Tier};

/// What placement needs to know of a node.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub role: String,
    pub arch: String,
    pub healthy: bool,
    pub pools: Vec<String>,
    pub memory_free: u64,
}

fn rejection(def: &ServiceDef, node: &Candidate) -> Option<String> {
    if !node.healthy {
        return Some("unhealthy".to_string());
    }
    if node.role != "worker" {
        return Some(format!("role {}", node.role));
    }
    let archs = &def.resources.arch;
    if !archs.is_empty() && !archs.iter().any(|a| a.as_str() == node.arch) {
        let allowed: Vec<&str> = archs.iter().map(|a| a.as_str()).collect();
        return Some(format!(
            "arch {} not in [{}]",
            node.arch,
            allowed.join(", ")
        ));
    }
    if let Some(memory) = def.resources.memory {
        if memory.0 > node.memory_free {
            return Some(format!(
                "memory {memory} requested, {} free",
                mcp_types::ByteSize(node.memory_free)
            ));
        }
    }
    None
}

/// Picks the node for `def`. `current` is where it runs now; `master_node` takes
/// `tier = "core"`. The error lists every node considered and why it was rejected.
pub fn place(
    def: &ServiceDef,
    nodes: &[Candidate],
    current: Option<&str>,
    master_node: &str,
) -> Result<String, String> {
    let (pool, scope): (Option<&str>, Vec<&Candidate>) = match (&def.node, def.tier) {
        (Some(target), _) => {
            if let Some(node) = nodes.iter().find(|n| &n.name == target) {
                return match rejection(def, node) {
                    None => Ok(node.name.clone()),
                    Some(why) => Err(format!("node {target} cannot run {:?}: {why}", def.name)),
                };
            }
            let members: Vec<&Candidate> =
                nodes.iter().filter(|n| n.pools.contains(target)).collect();
            if members.is_empty() {
                return Err(format!(
                    "no node or pool named {target:?} is registered (service {:?})",
                    def.name
                ));
            }
            (Some(target), members)
        }
        (None, Tier::Core) => {
            let Some(node) = nodes.iter().find(|n| n.name == master_node) else {
                return Err(format!(
                    "the master node {master_node} has not registered; {:?} is tier core",
                    def.name
                ));
            };
            return match rejection(def, node) {
                None => Ok(node.name.clone()),
                Some(why) => Err(format!(
                    "master node {master_node} cannot run {:?}: {why}",
                    def.name
                )),
            };
        }
        (None, Tier::Worker) => (None, nodes.iter().collect()),
    };
    if let Some(current) = current {
        if let Some(node) = scope.iter().find(|n| n.name == current) {
            if rejection(def, node).is_none() {
                return Ok(node.name.clone());
            }
        }
    }
    let mut best: Option<&Candidate> = None;
    let mut reasons = Vec::new();
    for node in &scope {
        match rejection(def, node) {
            Some(why) => reasons.push(format!("{}: {why}", node.name)),
            None => {
                let better = best.is_none_or(|b| {
                    node.memory_free > b.memory_free
                        || (node.memory_free == b.memory_free && node.name < b.name)
                });
                if better {
                    best = Some(node);
                }
            }
        }
    }
    match best {
        Some(node) => Ok(node.name.clone()),
        None if scope.is_empty() => Err(format!(
            "no node can run {:?}: no nodes registered",
            def.name
        )),
        None => Err(format!(
            "no node {}can run {:?}: {}",
            pool.map(|p| format!("in pool {p} ")).unwrap_or_default(),
            def.name,
            reasons.join("; ")
        )),
    }
}
