//! What a node is and how it is doing, as every crate names it: its role and its
//! health. (Its arch is [`crate::Arch`].) Pure: no I/O.

use std::fmt;
use std::str::FromStr;

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs services.
    Worker,
    /// Runs the edge proxy only; never gets a service.
    Edge,
}

impl Role {
    /// The name used in configs and messages: `"worker"` or `"edge"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Edge => "edge",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "worker" => Ok(Role::Worker),
            "edge" => Ok(Role::Edge),
            _ => Err(format!("unknown role {s:?}; known: \"worker\", \"edge\"")),
        }
    }
}

/// A node's health as the master's heartbeat tracking sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Heartbeats arrive; the only state that can take a service.
    Healthy,
    /// Heartbeats were missed and the master is probing it.
    Probing,
    /// Probes failed.
    Unhealthy,
}

impl Health {
    /// The name used in the CLI and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Probing => "probing",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Health {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "healthy" => Ok(Health::Healthy),
            "probing" => Ok(Health::Probing),
            "unhealthy" => Ok(Health::Unhealthy),
            _ => Err(format!(
                "unknown health {s:?}; known: \"healthy\", \"probing\", \"unhealthy\""
            )),
        }
    }
}
