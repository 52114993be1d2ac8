//! The node: what the agent does on its own host. Deploy, lifecycle, status with
//! drift, and logs, over the desired state in the store and the runtimes. Mutations
//! are serialised by one lock; the desired state is committed before any runtime call.
//!
//! `deploy` (deploy, converge, undo of a failed deploy), `lifecycle` (stop, start,
//! restart, remove), `status` (desired versus observed, logs), `identity` (the
//! instance digest that decides reuse versus replace).

mod deploy;
pub mod identity;
mod lifecycle;
mod renewal;
mod status;

pub use renewal::renew_loop;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use mcp_proto::agent::v1 as wire;
use mcp_types::{Arch, Driver};
use tokio::sync::{mpsc, Mutex};

use crate::config::{Config, Role};
use crate::runtime::platform::PlatformMismatch;
use crate::runtime::{Observed, Runtime};
use crate::store::{Desired, ServiceRecord, Store};

/// A deploy or lifecycle step that failed, named for the operator.
#[derive(Debug, thiserror::Error)]
#[error("step {step} failed: {error:#}")]
pub struct StepError {
    pub step: &'static str,
    pub error: anyhow::Error,
}

/// Attaches a step name to a failure.
trait AtStep<T> {
    fn at(self, step: &'static str) -> Result<T, StepError>;
}

impl<T> AtStep<T> for anyhow::Result<T> {
    fn at(self, step: &'static str) -> Result<T, StepError> {
        self.map_err(|error| StepError { step, error })
    }
}

/// Why the node refused or failed a request; `server::status_of` maps each to a gRPC
/// code.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no service {0:?} on this node")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A deploy older than the one the node holds (a reordered or replayed request).
    #[error(
        "node {node} holds generation {held} of {service}, newer than the deploy's \
         {offered}: stale deploy refused"
    )]
    StaleDeploy {
        node: String,
        service: String,
        held: u64,
        offered: u64,
    },
    /// A fenced remove of a copy that a newer deploy replaced meanwhile.
    #[error("node {node} holds generation {held} of {service}, newer than {offered}: not removed")]
    NewerHeld {
        node: String,
        service: String,
        held: u64,
        offered: u64,
    },
    /// The image does not carry the node's platform (SPEC §3): refused before anything
    /// was recorded or created, so the master may place the service on another node.
    #[error(transparent)]
    Platform(#[from] PlatformMismatch),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub use crate::certs::CertSource;

/// A failed `pull_images` as the node's error: a platform mismatch is a refusal of
/// its own ([`NodeError::Platform`]), anything else the failed step.
fn refusal(failure: StepError) -> NodeError {
    let StepError { step, error } = failure;
    match error.downcast::<PlatformMismatch>() {
        Ok(mismatch) => NodeError::Platform(mismatch),
        Err(error) => NodeError::Step(StepError { step, error }),
    }
}

/// The node's services and the runtimes that run them.
pub struct Node {
    pub name: String,
    pub role: Role,
    /// The arch the node reports (its config's, else the host's): images must carry it.
    arch: Arch,
    ip: IpAddr,
    srv_root: PathBuf,
    store: Store,
    container: Option<Arc<dyn Runtime>>,
    exec: Arc<dyn Runtime>,
    lock: Mutex<()>,
    /// Internal certificates; None where no master CA is reachable (unit tests).
    certs: Option<Arc<dyn CertSource>>,
    /// Wakes the renewal loop when a certificate is added.
    pub certs_changed: tokio::sync::Notify,
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Progress sink of a deploy: events for the caller.
pub type Events = mpsc::Sender<wire::DeployEvent>;

/// A sink nobody reads: a closed channel drops the events.
fn no_events() -> Events {
    mpsc::channel(1).0
}

async fn step(events: &Events, step: &str, component: &str, message: impl Into<String>) {
    let _ = events
        .send(wire::DeployEvent {
            event: Some(wire::deploy_event::Event::Step(wire::Step {
                step: step.to_string(),
                component: component.to_string(),
                message: message.into(),
            })),
        })
        .await;
}

impl Node {
    pub fn new(
        config: &Config,
        store: Store,
        container: Option<Arc<dyn Runtime>>,
        exec: Arc<dyn Runtime>,
        certs: Option<crate::certs::CertIssuer>,
    ) -> Node {
        let certs = certs.map(|c| Arc::new(c) as Arc<dyn CertSource>);
        Node::with_cert_source(config, store, container, exec, certs)
    }

    /// `new` with any source of certificates.
    pub fn with_cert_source(
        config: &Config,
        store: Store,
        container: Option<Arc<dyn Runtime>>,
        exec: Arc<dyn Runtime>,
        certs: Option<Arc<dyn CertSource>>,
    ) -> Node {
        Node {
            name: config.name.clone(),
            role: config.role,
            arch: config.arch(),
            ip: config.node_ip(),
            srv_root: config.srv_root.clone(),
            store,
            container,
            exec,
            lock: Mutex::new(()),
            certs,
            certs_changed: tokio::sync::Notify::new(),
        }
    }

    fn runtime(&self, driver: Driver) -> anyhow::Result<&Arc<dyn Runtime>> {
        match driver {
            Driver::Exec => Ok(&self.exec),
            Driver::Container => self.container.as_ref().ok_or_else(|| {
                anyhow!(
                    "node {} has no container runtime (runtime = \"exec\")",
                    self.name
                )
            }),
        }
    }

    fn runtimes(&self) -> Vec<&Arc<dyn Runtime>> {
        let mut all = vec![&self.exec];
        all.extend(self.container.as_ref());
        all
    }

    /// Everything every runtime runs for this node.
    pub async fn observe(&self) -> anyhow::Result<Vec<Observed>> {
        let mut all = Vec::new();
        for runtime in self.runtimes() {
            all.extend(runtime.list().await?);
        }
        Ok(all)
    }

    /// At agent start: finishes removals a crash interrupted, then returns what the
    /// runtimes run (adopted, never started a second time).
    pub async fn resume(&self) -> anyhow::Result<Vec<Observed>> {
        let _guard = self.lock.lock().await;
        for record in self.store.all()? {
            if record.desired == Desired::Removing {
                let service = record.def.name.clone();
                tracing::info!(node = %self.name, service = %service, "finishing an interrupted removal");
                if let Err(e) = self.finish_removal(&service, Some(&record)).await {
                    tracing::warn!(node = %self.name, service = %service, "finish removal: {e}");
                }
            }
        }
        self.observe().await
    }

    /// The record of a service the node holds (a removal in progress is not held).
    fn record(&self, service: &str) -> Result<ServiceRecord, NodeError> {
        self.store
            .get(service)?
            .filter(|r| r.desired != Desired::Removing)
            .ok_or_else(|| NodeError::NotFound(service.to_string()))
    }
}
