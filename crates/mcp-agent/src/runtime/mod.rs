//! Runtime drivers behind one trait: the Docker Engine API (Docker and Podman) and the
//! `exec` driver (supervised processes). The agent's deploy logic sees only this trait.

pub mod cgroup;
pub mod docker;
pub mod exec;
#[cfg(any(test, feature = "fake-runtime"))]
pub mod fake;
pub mod oom;
pub mod platform;

use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;

use futures_util::Stream;
use mcp_types::{Limits, RestartPolicy};

/// Labels every instance carries (SPEC §6), plus the digest of its component spec.
pub const LABEL_SERVICE: &str = "mcp.service";
pub const LABEL_COMPONENT: &str = "mcp.component";
pub const LABEL_NODE: &str = "mcp.node";
pub const LABEL_DIGEST: &str = "mcp.digest";

/// One component as a runtime should create it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: String,
    pub component: String,
    pub node: String,
    /// Digest of the component's definition and ports: a changed digest means recreate.
    pub digest: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (container port, host port) pairs, published on `host_ip`.
    pub ports: Vec<(u16, u16)>,
    pub host_ip: IpAddr,
    /// (host path, container path, read only).
    pub volumes: Vec<(PathBuf, String, bool)>,
    pub restart: RestartPolicy,
    /// Working directory for exec components.
    pub workdir: Option<PathBuf>,
    /// Hard memory limit and CPU quota (SPEC §3); none: unlimited.
    pub limits: Limits,
}

/// One instance as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    pub service: String,
    pub component: String,
    /// "running", "exited", "created", "restarting", "paused", "dead".
    pub state: String,
    pub image: String,
    /// Unix seconds; 0 when not running.
    pub started_at: i64,
    pub digest: String,
    pub detail: String,
    /// Why the instance's limits are not enforced (exec without a cgroup); empty
    /// when they are or it has none.
    pub limits_warning: String,
    /// Times it was killed at its memory limit, and the last time (Unix seconds).
    pub oom_kills: u32,
    pub last_oom_at: i64,
}

impl Observed {
    pub fn running(&self) -> bool {
        self.state == "running" || self.state == "restarting"
    }
}

/// Image pull progress.
#[derive(Debug, Clone, Default)]
pub struct PullProgress {
    pub status: String,
    pub current: u64,
    pub total: u64,
}

/// A piece of an instance's output.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub stream: &'static str,
    pub data: Vec<u8>,
}

pub type LogStream = Pin<Box<dyn Stream<Item = anyhow::Result<LogChunk>> + Send>>;

/// A container runtime or the process supervisor.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// "docker", "podman" or "exec".
    fn name(&self) -> &'static str;
    /// Makes the image present, reporting progress. Instances without images skip this.
    async fn pull(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> anyhow::Result<()>;
    /// The platforms a present image carries: one, or every platform of a
    /// multi-platform image where the engine keeps its list. Empty: the runtime
    /// cannot say, and nothing is checked (the exec driver has no images).
    async fn platforms(&self, _image: &str) -> anyhow::Result<Vec<platform::Platform>> {
        Ok(Vec::new())
    }
    /// Creates the instance, not started.
    async fn create(&self, instance: &Instance) -> anyhow::Result<()>;
    async fn start(&self, service: &str, component: &str) -> anyhow::Result<()>;
    async fn stop(&self, service: &str, component: &str) -> anyhow::Result<()>;
    /// Stops and deletes the instance; a missing instance is not an error.
    async fn remove(&self, service: &str, component: &str) -> anyhow::Result<()>;
    /// Every instance of this node, found by label.
    async fn list(&self) -> anyhow::Result<Vec<Observed>>;
    async fn logs(
        &self,
        service: &str,
        component: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> anyhow::Result<LogStream>;
}

/// The runtime's name for an instance: `mcp.<service>.<component>` (dots never occur
/// in DNS labels, so two instances never share a name).
pub fn instance_name(service: &str, component: &str) -> String {
    format!("mcp.{service}.{component}")
}

/// A container's name: the instance name and the node, `mcp.<service>.<component>.<node>`,
/// so nodes that share one engine (`mcp dev`, tests) never collide, even while a
/// service moves between them.
pub fn container_name(node: &str, service: &str, component: &str) -> String {
    format!("{}.{node}", instance_name(service, component))
}
