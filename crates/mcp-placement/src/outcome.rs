//! What placement answers: the chosen node with the rule that chose it, or an
//! error that names every node in scope and why it was rejected.

use std::fmt::Write as _;

use crate::filter::Rejection;

/// The node chosen for a service, and why (for logs and `mcp deploy` output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The node's name.
    pub node: String,
    /// The rule that chose it: `"pinned to orion"`, `"pool pi-pool: most free
    /// memory"`, `"stays on orion"`, `"core tier: master node rift"`, `"most
    /// free memory"`.
    pub reason: String,
}

/// The nodes a placement considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every registered node (no `node`, tier worker).
    Any,
    /// The members of the pool `node` named.
    Pool(String),
    /// The one node `node` named.
    Node(String),
    /// The master node (tier core).
    Master(String),
}

/// Why a service could not be placed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    /// `node` names neither a node nor a pool.
    #[error("no node or pool named {target:?} is registered")]
    UnknownTarget { service: String, target: String },
    /// The service is tier core and the master node has not registered.
    #[error("the master node {master:?} has not registered; {service:?} is tier core")]
    MasterMissing { service: String, master: String },
    /// Every node in scope was rejected; `rejections` holds each, in name order.
    #[error("{}", rejected_text(service, scope, rejections))]
    Rejected {
        service: String,
        scope: Scope,
        rejections: Vec<(String, Rejection)>,
    },
}

fn rejected_text(service: &str, scope: &Scope, rejections: &[(String, Rejection)]) -> String {
    let mut text = match scope {
        Scope::Node(node) => format!("node {node:?} cannot run {service:?}: "),
        Scope::Master(node) => format!("the master node {node:?} cannot run {service:?}: "),
        Scope::Pool(pool) => format!("no node in pool {pool:?} can run {service:?}: "),
        Scope::Any => format!("no node can run {service:?}: "),
    };
    if let Scope::Node(_) | Scope::Master(_) = scope {
        for (i, (_, why)) in rejections.iter().enumerate() {
            if i > 0 {
                text.push_str("; ");
            }
            let _ = write!(text, "{why}");
        }
        return text;
    }
    if rejections.is_empty() {
        text.push_str("no nodes registered");
    }
    for (i, (node, why)) in rejections.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        let _ = write!(text, "{node}: {why}");
    }
    text
}
