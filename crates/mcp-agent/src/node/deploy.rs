//! Deploy: commit the desired state, provision the certificate, converge the runtimes
//! (pull, create what is missing or changed, start, prune); on failure remove what the
//! deploy created and bring the previous definition back.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use mcp_proto::agent::v1 as wire;
use mcp_types::{Component, Driver, ServiceDef};
use tokio::sync::mpsc;

use super::identity::{identity, legacy_digest, same_identity, RoutePort};
use super::{no_events, refusal, step, AtStep, Events, Node, NodeError, StepError};
use crate::config::Role;
use crate::runtime::platform;
use crate::runtime::{Instance, Observed, PullProgress};
use crate::store::{Desired, ServiceRecord};

/// The routes of `component` with the host ports `record` holds for them.
fn route_ports(component: &Component, record: &ServiceRecord) -> anyhow::Result<Vec<RoutePort>> {
    component
        .routes
        .iter()
        .map(|route| {
            let host_port = record
                .host_port(&component.name, &route.name)
                .ok_or_else(|| anyhow!("no port recorded for route {}", route.name))?;
            Ok((route.name.clone(), route.port, host_port))
        })
        .collect()
}

impl Node {
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
        let routes = route_ports(component, record)?;
        for (name, port, host_port) in &routes {
            let var = format!("MCP_PORT_{}", name.to_uppercase().replace('-', "_"));
            env.push((var, if exec { host_port } else { port }.to_string()));
        }
        if exec {
            env.push(("MCP_ADDR".to_string(), self.ip.to_string()));
        }
        let limits = def.limits_of(&component.name);
        let digest = identity(
            &def.name,
            &self.name,
            &self.ip.to_string(),
            component,
            &routes,
            &limits,
        );
        Ok(Instance {
            service: def.name.clone(),
            component: component.name.clone(),
            node: self.name.clone(),
            digest,
            image: component.image.clone(),
            command: component.command.clone(),
            env,
            ports: if exec {
                Vec::new()
            } else {
                routes
                    .iter()
                    .map(|(_, port, host)| (*port, *host))
                    .collect()
            },
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
            limits,
        })
    }

    /// Is `observed` the instance `instance` describes? Its label is the current
    /// identity, or the legacy one of the same definition (an instance the previous
    /// agent created, adopted as it is; never when the component has limits, which
    /// legacy instances were created without).
    fn is_same(
        &self,
        observed: &Observed,
        instance: &Instance,
        component: &Component,
        record: &ServiceRecord,
    ) -> bool {
        let legacy = route_ports(component, record).map(|routes| {
            let ports: Vec<(u16, u16)> = routes.iter().map(|(_, p, h)| (*p, *h)).collect();
            legacy_digest(&record.def.name, &self.name, component, &ports)
        });
        match legacy.ok().filter(|_| instance.limits.is_none()) {
            Some(legacy) => same_identity(&observed.digest, &instance.digest, &legacy),
            None => observed.digest == instance.digest,
        }
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

    /// Deploys or updates a service at `generation` (0: the request carries none).
    /// Refuses a deploy older than the one the node holds. On failure, removes what
    /// this deploy created and restores the previous desired state and instances.
    pub async fn deploy(
        &self,
        def: ServiceDef,
        generation: u64,
        events: &Events,
    ) -> Result<wire::ServiceStatus, NodeError> {
        if self.role == Role::Edge {
            return Err(NodeError::Invalid(format!(
                "node {} is an edge node and runs no services",
                self.name
            )));
        }
        let _guard = self.lock.lock().await;
        let mut previous = self.store.get(&def.name)?;
        if let Some(held) = previous.as_ref().map(|p| p.generation) {
            if generation != 0 && held > generation {
                return Err(NodeError::StaleDeploy {
                    node: self.name.clone(),
                    service: def.name.clone(),
                    held,
                    offered: generation,
                });
            }
        }
        for component in &def.components {
            self.runtime(component.driver)
                .map_err(|e| NodeError::Invalid(format!("{e:#}")))?;
        }
        if let Some(removing) = previous.take_if(|p| p.desired == Desired::Removing) {
            // A removal a crash interrupted: finish it; this deploy starts afresh.
            self.finish_removal(&def.name, Some(&removing)).await?;
        }
        // Before anything is recorded or created: an image the node cannot run is
        // refused, and the master may place the service elsewhere.
        self.pull_images(&def, events).await.map_err(refusal)?;
        let ports = self.assign_ports(&def, previous.as_ref()).at("ports")?;
        let record = ServiceRecord {
            def: def.clone(),
            desired: Desired::Running,
            ports,
            generation: match generation {
                0 => previous.as_ref().map_or(0, |p| p.generation),
                g => g,
            },
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
                let status = self.status_of(&record).await?;
                // Limits the host cannot enforce do not fail the deploy: they are said.
                for c in status
                    .components
                    .iter()
                    .filter(|c| !c.limits_warning.is_empty())
                {
                    let warning = format!("warning: {}", c.limits_warning);
                    step(events, "limits", &c.name, warning).await;
                }
                step(events, "done", "", "running").await;
                Ok(status)
            }
            Err(failure) => Err(self
                .undo(&def.name, previous.as_ref(), &created, failure, events)
                .await
                .into()),
        }
    }

    /// Brings a restored record's instances back. A runtime may release the host port
    /// of an instance it just removed a moment later (rootless Podman's port
    /// forwarder does), so a failed attempt is retried a few times, briefly.
    async fn converge_again(&self, record: &ServiceRecord) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            let result = match self.pull_images(&record.def, &no_events()).await {
                Ok(()) => self.converge(record, &no_events(), &mut Vec::new()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::info!(service = %record.def.name, attempt, "restore: {e}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a failed deploy: removes the instances it created, restores the previous
    /// desired state and brings the previous instances back (same definition, image
    /// and host ports), or, for a fresh deploy, forgets the service and its
    /// certificate. Returns the failure, saying whether the restore worked.
    async fn undo(
        &self,
        service: &str,
        previous: Option<&ServiceRecord>,
        created: &[(Driver, String)],
        failure: StepError,
        events: &Events,
    ) -> StepError {
        step(
            events,
            "cleanup",
            "",
            format!("{failure}; removing what this deploy created"),
        )
        .await;
        for (driver, component) in created {
            if let Ok(runtime) = self.runtime(*driver) {
                if let Err(e) = runtime.remove(service, component).await {
                    tracing::warn!(service, component, "cleanup after failed deploy: {e:#}");
                }
            }
        }
        let Some(previous) = previous else {
            if let Err(e) = self.store.delete(service) {
                tracing::error!(service, "forget the service after a failed deploy: {e:#}");
            }
            if let Err(e) = self.remove_certs(service) {
                tracing::error!(service, "remove certificates after a failed deploy: {e:#}");
            }
            return failure;
        };
        let restored = match self.store.put(previous) {
            Ok(()) => self.converge_again(previous).await,
            Err(e) => Err(e.context("restore the previous desired state")),
        };
        let StepError { step: at, error } = failure;
        match restored {
            Ok(()) => {
                step(events, "restore", "", "the previous definition runs again").await;
                StepError {
                    step: at,
                    error: anyhow!("{error:#}; the previous definition was restored"),
                }
            }
            Err(e) => {
                tracing::error!(service, "restore after failed deploy: {e:#}");
                StepError {
                    step: at,
                    error: anyhow!(
                        "{error:#}; restoring the previous definition also failed: {e:#}"
                    ),
                }
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

    /// Replaces a service's internal certificate with a fresh one. The master is asked
    /// without holding the node's lock; a service removed meanwhile loses the new
    /// certificate again.
    pub async fn renew_cert(&self, service: &str) -> anyhow::Result<()> {
        let issuer = self
            .certs
            .as_ref()
            .context("no master to ask for certificates")?;
        let gone = || anyhow!("service {service} is no longer on node {}", self.name);
        self.record(service).map_err(|_| gone())?;
        let dir = self.service_dir(service)?;
        let (not_before, not_after) = issuer.provision(service, &dir).await?;
        let _guard = self.lock.lock().await;
        if self.record(service).is_err() {
            self.remove_certs(service)?;
            return Err(gone());
        }
        self.store.put_cert(service, not_before, not_after)
    }

    /// Makes every container image of `def` present (progress to `events`) and checks
    /// that each carries the node's platform: a mismatch fails at step `platform`
    /// with a [`platform::PlatformMismatch`] (see [`refusal`]), before anything is created.
    pub(super) async fn pull_images(
        &self,
        def: &ServiceDef,
        events: &Events,
    ) -> Result<(), StepError> {
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
            let platforms = runtime.platforms(image).await.at("platform")?;
            platform::check(image, &platforms, &self.name, self.arch).map_err(|m| StepError {
                step: "platform",
                error: m.into(),
            })?;
        }
        Ok(())
    }

    /// Makes the runtimes match a record whose images are present (`pull_images`):
    /// creates what is missing or changed, starts what is stopped (when the record's
    /// desired state is running), removes components the definition no longer has.
    /// `created` collects what it creates, for `undo`.
    pub(super) async fn converge(
        &self,
        record: &ServiceRecord,
        events: &Events,
        created: &mut Vec<(Driver, String)>,
    ) -> Result<(), StepError> {
        let def = &record.def;
        let observed = self.observe().await.at("observe")?;
        for component in &def.components {
            let runtime = self.runtime(component.driver).at("create")?;
            let instance = self.instance(def, component, record).at("prepare")?;
            let current = observed
                .iter()
                .find(|o| o.service == def.name && o.component == component.name);
            let reuse = current.is_some_and(|o| self.is_same(o, &instance, component, record));
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
            if record.desired != Desired::Running {
                continue;
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
