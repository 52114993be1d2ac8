//! The node: what the agent does on its own host. Deploy, lifecycle, status with
//! drift, and logs, over the desired state in the store and the runtimes. Mutations
//! are serialised by one lock; the desired state is committed before any runtime call.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use mcp_proto::agent::v1 as wire;
use mcp_types::{Component, Driver, ServiceDef};
use tokio::sync::{mpsc, Mutex};

use crate::config::{Config, Role};
use crate::runtime::{Instance, LogStream, Observed, PullProgress, Runtime};
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

/// A refusal that is the caller's fault (maps to InvalidArgument / NotFound).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no service {0:?} on this node")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The node's services and the runtimes that run them.
pub struct Node {
    pub name: String,
    pub role: Role,
    ip: IpAddr,
    srv_root: PathBuf,
    store: Store,
    container: Option<Arc<dyn Runtime>>,
    exec: Arc<dyn Runtime>,
    lock: Mutex<()>,
    /// Internal certificates from the master; None where no master CA is reachable
    /// (unit tests).
    certs: Option<crate::certs::CertIssuer>,
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

fn digest_of(service: &str, node: &str, component: &Component, ports: &[(u16, u16)]) -> String {
    let text = serde_json::json!({
        "service": service, "node": node, "component": component, "ports": ports,
    })
    .to_string();
    mcp_types::digest_hex(text.as_bytes())
}

impl Node {
    pub fn new(
        config: &Config,
        store: Store,
        container: Option<Arc<dyn Runtime>>,
        exec: Arc<dyn Runtime>,
        certs: Option<crate::certs::CertIssuer>,
    ) -> Node {
        Node {
            name: config.name.clone(),
            role: config.role,
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

    /// `<srv_root>/<service>`, created, as a real path.
    fn service_dir(&self, service: &str) -> anyhow::Result<PathBuf> {
        let dir = self.srv_root.join(service);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        dir.canonicalize()
            .with_context(|| format!("resolve {}", dir.display()))
    }

    /// Resolves every volume's host side under `<srv_root>/<service>/`, creating the
    /// directories, and refuses any that a symlink leads out of it.
    fn volumes(
        &self,
        def: &ServiceDef,
        component: &Component,
    ) -> anyhow::Result<Vec<(PathBuf, String, bool)>> {
        let base = self.service_dir(&def.name)?;
        let mut out = Vec::new();
        for volume in &component.volumes {
            let rel = volume.host_relative(&def.name).ok_or_else(|| {
                anyhow!("volume {volume}: host side is not under /srv/{}/", def.name)
            })?;
            let path = base.join(rel);
            create_dirs_within(&base, Path::new(rel))?;
            let real = path
                .canonicalize()
                .with_context(|| format!("resolve {}", path.display()))?;
            if !real.starts_with(&base) {
                bail!(
                    "volume {volume}: {} leads to {}, outside {}",
                    path.display(),
                    real.display(),
                    base.display()
                );
            }
            out.push((real, volume.container.clone(), volume.read_only));
        }
        Ok(out)
    }

    fn instance(
        &self,
        def: &ServiceDef,
        component: &Component,
        record: &ServiceRecord,
    ) -> anyhow::Result<Instance> {
        let exec = component.driver == Driver::Exec;
        let mut env: Vec<(String, String)> = component.env.clone().into_iter().collect();
        env.push(("MCP_SERVICE".to_string(), def.name.clone()));
        env.push(("MCP_NODE".to_string(), self.name.clone()));
        let mut ports = Vec::new();
        for route in &component.routes {
            let host_port = record
                .ports
                .get(&(component.name.clone(), route.name.clone()))
                .copied()
                .ok_or_else(|| anyhow!("no port recorded for route {}", route.name))?;
            ports.push((route.port, host_port));
            let var = format!("MCP_PORT_{}", route.name.to_uppercase().replace('-', "_"));
            env.push((var, if exec { host_port } else { route.port }.to_string()));
        }
        if exec {
            env.push(("MCP_ADDR".to_string(), self.ip.to_string()));
        }
        let digest = digest_of(&def.name, &self.name, component, &ports);
        Ok(Instance {
            service: def.name.clone(),
            component: component.name.clone(),
            node: self.name.clone(),
            digest,
            image: component.image.clone(),
            command: component.command.clone(),
            env,
            ports: if exec { Vec::new() } else { ports },
            host_ip: self.ip,
            volumes: if exec {
                Vec::new()
            } else {
                self.volumes(def, component)?
            },
            restart: component.restart,
            workdir: if exec {
                Some(self.service_dir(&def.name)?)
            } else {
                None
            },
        })
    }

    /// Host ports for every route: kept from the previous record where the route
    /// existed, otherwise a free port on the node's address.
    fn assign_ports(
        &self,
        def: &ServiceDef,
        previous: Option<&ServiceRecord>,
    ) -> anyhow::Result<BTreeMap<(String, String), u16>> {
        let mut used: Vec<u16> = self.store.used_ports()?;
        if let Some(previous) = previous {
            used.retain(|p| !previous.ports.values().any(|q| q == p));
        }
        let mut ports = BTreeMap::new();
        for component in &def.components {
            for route in &component.routes {
                let key = (component.name.clone(), route.name.clone());
                let kept = previous.and_then(|p| p.ports.get(&key)).copied();
                let port = match kept {
                    Some(port) => port,
                    None => free_port(self.ip, &used)?,
                };
                used.push(port);
                ports.insert(key, port);
            }
        }
        Ok(ports)
    }

    /// Deploys or updates a service. On failure, removes what this deploy created and
    /// restores the previous desired state.
    pub async fn deploy(
        &self,
        def: ServiceDef,
        events: &Events,
    ) -> Result<wire::ServiceStatus, NodeError> {
        if self.role == Role::Edge {
            return Err(NodeError::Invalid(format!(
                "node {} is an edge node and runs no services",
                self.name
            )));
        }
        let _guard = self.lock.lock().await;
        let previous = self.store.get(&def.name)?;
        for component in &def.components {
            self.runtime(component.driver)
                .map_err(|e| NodeError::Invalid(format!("{e:#}")))?;
        }
        let ports = self.assign_ports(&def, previous.as_ref()).at("ports")?;
        let record = ServiceRecord {
            def: def.clone(),
            desired: Desired::Running,
            ports,
        };
        self.store.put(&record).at("record")?;
        step(events, "record", "", "desired state committed").await;

        let mut created: Vec<(Driver, String)> = Vec::new();
        let provisioned = self.provision_cert(&def, events).await;
        let result = match provisioned {
            Ok(()) => self.converge(&record, events, &mut created).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                step(events, "done", "", "running").await;
                Ok(self.status_of(&record).await?)
            }
            Err(failure) => {
                step(
                    events,
                    "cleanup",
                    "",
                    format!("{failure}; removing what this deploy created"),
                )
                .await;
                for (driver, component) in &created {
                    if let Ok(runtime) = self.runtime(*driver) {
                        if let Err(e) = runtime.remove(&def.name, component).await {
                            tracing::warn!(service = %def.name, component, "cleanup after failed deploy: {e:#}");
                        }
                    }
                }
                let restored = match &previous {
                    Some(previous) => self.store.put(previous),
                    None => self.store.delete(&def.name),
                };
                if let Err(e) = restored {
                    tracing::error!(service = %def.name, "restore desired state after failed deploy: {e:#}");
                }
                Err(failure.into())
            }
        }
    }

    /// Obtains the service's internal certificate when it has routes (and the node
    /// has a master to ask).
    async fn provision_cert(&self, def: &ServiceDef, events: &Events) -> Result<(), StepError> {
        let has_routes = def.components.iter().any(|c| !c.routes.is_empty());
        let Some(issuer) = self.certs.as_ref().filter(|_| has_routes) else {
            return Ok(());
        };
        let dir = self.service_dir(&def.name).at("certificate")?;
        let (not_before, not_after) = issuer.provision(&def.name, &dir).await.at("certificate")?;
        self.store
            .put_cert(&def.name, not_before, not_after)
            .at("certificate")?;
        self.certs_changed.notify_one();
        step(
            events,
            "certificate",
            "",
            format!(
                "{} internal certificate written to {}/certs",
                def.name,
                dir.display()
            ),
        )
        .await;
        Ok(())
    }

    /// (service, not_before, not_after) of every internal certificate.
    pub fn cert_schedule(&self) -> anyhow::Result<Vec<(String, i64, i64)>> {
        self.store.certs()
    }

    /// Replaces a service's internal certificate with a fresh one.
    pub async fn renew_cert(&self, service: &str) -> anyhow::Result<()> {
        let issuer = self
            .certs
            .as_ref()
            .context("no master to ask for certificates")?;
        let dir = self.service_dir(service)?;
        let (not_before, not_after) = issuer.provision(service, &dir).await?;
        self.store.put_cert(service, not_before, not_after)
    }

    /// Makes the runtimes match a record whose desired state is running: pulls images,
    /// creates what is missing or changed, starts what is stopped, removes components
    /// the definition no longer has.
    async fn converge(
        &self,
        record: &ServiceRecord,
        events: &Events,
        created: &mut Vec<(Driver, String)>,
    ) -> Result<(), StepError> {
        let def = &record.def;
        for component in &def.components {
            let Some(image) = component.image.as_deref() else {
                continue;
            };
            if component.driver != Driver::Container {
                continue;
            }
            let runtime = self.runtime(component.driver).at("pull")?;
            step(events, "pull", &component.name, format!("pulling {image}")).await;
            let (tx, mut rx) = mpsc::unbounded_channel::<PullProgress>();
            let forward = {
                let events = events.clone();
                let component = component.name.clone();
                let image = image.to_string();
                tokio::spawn(async move {
                    while let Some(p) = rx.recv().await {
                        let _ = events
                            .send(wire::DeployEvent {
                                event: Some(wire::deploy_event::Event::Pull(wire::PullProgress {
                                    component: component.clone(),
                                    image: image.clone(),
                                    status: p.status,
                                    current: p.current,
                                    total: p.total,
                                })),
                            })
                            .await;
                    }
                })
            };
            let result = runtime
                .pull(image, &move |p| {
                    let _ = tx.send(p);
                })
                .await;
            let _ = forward.await;
            result.at("pull")?;
        }
        let observed = self.observe().await.at("observe")?;
        for component in &def.components {
            let runtime = self.runtime(component.driver).at("create")?;
            let instance = self.instance(def, component, record).at("prepare")?;
            let current = observed
                .iter()
                .find(|o| o.service == def.name && o.component == component.name);
            let reuse = current.is_some_and(|o| o.digest == instance.digest);
            if !reuse {
                if current.is_some() {
                    step(
                        events,
                        "replace",
                        &component.name,
                        "definition changed; replacing",
                    )
                    .await;
                    runtime
                        .remove(&def.name, &component.name)
                        .await
                        .at("replace")?;
                }
                step(events, "create", &component.name, "creating").await;
                created.push((component.driver, component.name.clone()));
                runtime.create(&instance).await.at("create")?;
            }
            if !(reuse && current.is_some_and(Observed::running)) {
                step(events, "start", &component.name, "starting").await;
                runtime
                    .start(&def.name, &component.name)
                    .await
                    .at("start")?;
            } else {
                step(
                    events,
                    "start",
                    &component.name,
                    "already running, unchanged",
                )
                .await;
            }
        }
        for o in &observed {
            if o.service == def.name && !def.components.iter().any(|c| c.name == o.component) {
                step(
                    events,
                    "prune",
                    &o.component,
                    "no longer in the definition; removing",
                )
                .await;
                for runtime in self.runtimes() {
                    runtime.remove(&def.name, &o.component).await.at("prune")?;
                }
            }
        }
        Ok(())
    }

    fn record(&self, service: &str) -> Result<ServiceRecord, NodeError> {
        self.store
            .get(service)?
            .ok_or_else(|| NodeError::NotFound(service.to_string()))
    }

    pub async fn stop(&self, service: &str) -> Result<wire::ServiceStatus, NodeError> {
        self.lifecycle(service, Desired::Stopped, true).await
    }

    pub async fn start(&self, service: &str) -> Result<wire::ServiceStatus, NodeError> {
        self.lifecycle(service, Desired::Running, false).await
    }

    pub async fn restart(&self, service: &str) -> Result<wire::ServiceStatus, NodeError> {
        self.lifecycle(service, Desired::Running, true).await
    }

    /// Commits the new desired state, stops the components when asked, then, for
    /// `Running`, converges (recreating anything missing).
    async fn lifecycle(
        &self,
        service: &str,
        desired: Desired,
        stop_first: bool,
    ) -> Result<wire::ServiceStatus, NodeError> {
        let _guard = self.lock.lock().await;
        let mut record = self.record(service)?;
        self.store.set_desired(service, desired).at("record")?;
        record.desired = desired;
        if stop_first {
            for component in &record.def.components {
                let runtime = self.runtime(component.driver).at("stop")?;
                runtime.stop(service, &component.name).await.at("stop")?;
            }
        }
        if desired == Desired::Running {
            // Nobody watches these events: a closed channel drops them.
            let (events, _) = mpsc::channel(1);
            self.converge(&record, &events, &mut Vec::new()).await?;
        }
        Ok(self.status_of(&record).await?)
    }

    /// Removes the service's instances, then its desired state and ports. Its data
    /// under `<srv_root>/<service>/` stays.
    pub async fn remove(&self, service: &str) -> Result<(), NodeError> {
        let _guard = self.lock.lock().await;
        let known = self.store.get(service)?;
        let observed = self.observe().await?;
        let mut components: Vec<String> = observed
            .iter()
            .filter(|o| o.service == service)
            .map(|o| o.component.clone())
            .collect();
        if let Some(record) = &known {
            components.extend(record.def.components.iter().map(|c| c.name.clone()));
        }
        if known.is_none() && components.is_empty() {
            return Err(NodeError::NotFound(service.to_string()));
        }
        components.sort();
        components.dedup();
        for component in &components {
            for runtime in self.runtimes() {
                runtime.remove(service, component).await.at("remove")?;
            }
        }
        let certs = self.srv_root.join(service).join("certs");
        if certs.exists() {
            std::fs::remove_dir_all(&certs)
                .with_context(|| format!("remove {}", certs.display()))
                .at("certificate")?;
        }
        self.store.delete(service).at("record")?;
        Ok(())
    }

    async fn status_of(&self, record: &ServiceRecord) -> anyhow::Result<wire::ServiceStatus> {
        let observed = self.observe().await?;
        Ok(self.status_with(record, &observed))
    }

    fn status_with(&self, record: &ServiceRecord, observed: &[Observed]) -> wire::ServiceStatus {
        let def = &record.def;
        let components =
            def.components
                .iter()
                .map(|component| {
                    let seen = observed
                        .iter()
                        .find(|o| o.service == def.name && o.component == component.name);
                    let state = seen.map_or("missing", |o| o.state.as_str()).to_string();
                    let running = seen.is_some_and(Observed::running);
                    let drift = match record.desired {
                        Desired::Running => !running,
                        Desired::Stopped => running,
                    };
                    let routes = component
                        .routes
                        .iter()
                        .map(|route| {
                            let host_port = record
                                .ports
                                .get(&(component.name.clone(), route.name.clone()))
                                .copied()
                                .unwrap_or(0);
                            wire::PublishedRoute {
                                name: route.name.clone(),
                                port: u32::from(route.port),
                                address: std::net::SocketAddr::new(self.ip, host_port).to_string(),
                                mode: mcp_proto::convert::route_mode_str(route.mode).to_string(),
                                public: route.public,
                                hostname: route.hostname.clone(),
                            }
                        })
                        .collect();
                    wire::ComponentStatus {
                        name: component.name.clone(),
                        driver: match component.driver {
                            Driver::Container => {
                                self.container.as_ref().map_or("container", |r| r.name())
                            }
                            Driver::Exec => "exec",
                        }
                        .to_string(),
                        desired: record.desired.as_str().to_string(),
                        observed: state,
                        image: component.image.clone().unwrap_or_else(|| {
                            component.command.first().cloned().unwrap_or_default()
                        }),
                        started_at: seen.map_or(0, |o| o.started_at),
                        routes,
                        drift,
                        detail: seen.map(|o| o.detail.clone()).unwrap_or_default(),
                    }
                })
                .collect();
        wire::ServiceStatus {
            name: def.name.clone(),
            node: self.name.clone(),
            desired: record.desired.as_str().to_string(),
            spec: Some(wire::ServiceSpec::from(def)),
            components,
            generation: 0,
        }
    }

    /// Desired versus observed for every service, plus instances labelled for this
    /// node that no desired state accounts for (desired "absent").
    pub async fn statuses(&self) -> anyhow::Result<Vec<wire::ServiceStatus>> {
        let records = self.store.all()?;
        let observed = self.observe().await?;
        let mut out: Vec<wire::ServiceStatus> = records
            .iter()
            .map(|r| self.status_with(r, &observed))
            .collect();
        let mut orphans: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
        for o in &observed {
            if !records.iter().any(|r| r.def.name == o.service) {
                orphans.entry(&o.service).or_default().push(o);
            }
        }
        for (service, instances) in orphans {
            out.push(wire::ServiceStatus {
                name: service.to_string(),
                node: self.name.clone(),
                desired: "absent".to_string(),
                spec: None,
                generation: 0,
                components: instances
                    .iter()
                    .map(|o| wire::ComponentStatus {
                        name: o.component.clone(),
                        desired: "absent".to_string(),
                        observed: o.state.clone(),
                        image: o.image.clone(),
                        started_at: o.started_at,
                        drift: true,
                        detail: "no desired state on this node".to_string(),
                        ..Default::default()
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Output of one component, or of all of them merged.
    pub async fn logs(
        &self,
        service: &str,
        component: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<Vec<(String, LogStream)>, NodeError> {
        let record = self.record(service)?;
        let components: Vec<&Component> = record
            .def
            .components
            .iter()
            .filter(|c| component.is_empty() || c.name == component)
            .collect();
        if components.is_empty() {
            return Err(NodeError::Invalid(format!(
                "service {service} has no component {component:?}"
            )));
        }
        let mut streams = Vec::new();
        for c in components {
            let runtime = self.runtime(c.driver)?;
            streams.push((
                c.name.clone(),
                runtime.logs(service, &c.name, follow, tail).await?,
            ));
        }
        Ok(streams)
    }
}

/// Creates `base/rel` one component at a time, refusing to pass through a symlink, so
/// a link planted inside the service's directory cannot redirect the mount.
fn create_dirs_within(base: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut path = base.to_path_buf();
    for part in rel.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!(
                    "{} is a symlink; volumes may not pass through links",
                    path.display()
                )
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("inspect {}", path.display())),
        }
    }
    Ok(())
}

/// A port free on `ip` now and not recorded for another route.
fn free_port(ip: IpAddr, used: &[u16]) -> anyhow::Result<u16> {
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("find a free port on {ip}"))?;
        let port = listener.local_addr()?.port();
        if !used.contains(&port) {
            return Ok(port);
        }
    }
    bail!("no free port on {ip}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn volume_dirs_refuse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("svc");
        std::fs::create_dir_all(&base).unwrap();
        create_dirs_within(&base, Path::new("data/a")).unwrap();
        assert!(base.join("data/a").is_dir());
        std::os::unix::fs::symlink("/etc", base.join("evil")).unwrap();
        let err = create_dirs_within(&base, Path::new("evil/x")).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn free_ports_skip_used() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = free_port(ip, &[]).unwrap();
        let b = free_port(ip, &[a]).unwrap();
        assert_ne!(a, b);
    }
}
