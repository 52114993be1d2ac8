//! MCP's wire protocols: the generated gRPC code for `mcp.agent.v1`, `mcp.master.v1` and
//! `mcproxy.admin.v1`,
//! the conversions between wire and domain types (validated at the boundary), and the
//! transport every process uses to listen and dial. The only crate that re-exports tonic.

pub mod codec;
pub mod convert;
pub mod transport;

pub use prost;
pub use tonic;

/// `mcp.agent.v1`: the master's requests to a node's agent.
pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mcp.agent.v1");
    }
}

/// `mcp.master.v1`: agents' registration and heartbeats, and operators' commands.
pub mod master {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mcp.master.v1");
    }
}

/// `mcproxy.admin.v1`: mc-proxy's admin API on its Unix socket.
pub mod mcproxy {
    pub mod admin {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("mcproxy.admin.v1");
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/rpcs.rs"));

/// RPC names an agent of this version serves, reported at registration so the master
/// never sends an RPC an agent lacks.
pub const AGENT_RPCS: &[&str] = &[
    "Deploy",
    "Stop",
    "Start",
    "Restart",
    "Remove",
    "ListServices",
    "Logs",
    "Probe",
    "SetupEdgeRoute",
    "RemoveEdgeRoute",
    "ListEdgeRoutes",
];
