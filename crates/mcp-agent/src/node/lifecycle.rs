//! Lifecycle: stop, start, restart and remove a service the node holds. Each commits
//! the new desired state before it touches a runtime; a removal is recorded as a
//! tombstone (desired "removing") first, so a crash mid-removal is finished later (by
//! the next start of the agent, or the next lifecycle call for the service).

use anyhow::Context;
use mcp_proto::agent::v1 as wire;

use super::{no_events, refusal, AtStep, Node, NodeError};
use crate::store::{Desired, ServiceRecord};

impl Node {
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
    /// `Running`, converges (recreating anything missing). A service whose removal a
    /// crash interrupted is removed now, and is not found.
    async fn lifecycle(
        &self,
        service: &str,
        desired: Desired,
        stop_first: bool,
    ) -> Result<wire::ServiceStatus, NodeError> {
        let _guard = self.lock.lock().await;
        if let Some(removing) = self
            .store
            .get(service)?
            .filter(|r| r.desired == Desired::Removing)
        {
            self.finish_removal(service, Some(&removing)).await?;
            return Err(NodeError::NotFound(service.to_string()));
        }
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
            self.pull_images(&record.def, &no_events())
                .await
                .map_err(refusal)?;
            self.converge(&record, &no_events(), &mut Vec::new())
                .await?;
        }
        Ok(self.status_of(&record).await?)
    }

    /// Removes the service: commits a tombstone, removes its instances and
    /// certificate, then forgets it. Its data under `<srv_root>/<service>/` stays.
    /// With `generation`, a fenced remove: refused when this node holds a newer
    /// generation of the service (a reconcile loop removing a stale copy never
    /// removes a newer deploy).
    pub async fn remove(&self, service: &str, generation: Option<u64>) -> Result<(), NodeError> {
        let _guard = self.lock.lock().await;
        let known = self.store.get(service)?;
        if let (Some(offered), Some(record)) = (generation, &known) {
            if record.generation > offered {
                return Err(NodeError::NewerHeld {
                    node: self.name.clone(),
                    service: service.to_string(),
                    held: record.generation,
                    offered,
                });
            }
        }
        if known.is_some() {
            self.store
                .set_desired(service, Desired::Removing)
                .at("record")?;
        } else if !self.observe().await?.iter().any(|o| o.service == service) {
            return Err(NodeError::NotFound(service.to_string()));
        }
        self.finish_removal(service, known.as_ref()).await
    }

    /// Removes every instance of `service` (those `record` names and any the runtimes
    /// show), its certificate, and its record. Idempotent: a crash at any point is
    /// finished by running it again.
    pub(super) async fn finish_removal(
        &self,
        service: &str,
        record: Option<&ServiceRecord>,
    ) -> Result<(), NodeError> {
        let observed = self.observe().await.at("observe")?;
        let mut components: Vec<String> = observed
            .iter()
            .filter(|o| o.service == service)
            .map(|o| o.component.clone())
            .collect();
        if let Some(record) = record {
            components.extend(record.def.components.iter().map(|c| c.name.clone()));
        }
        components.sort();
        components.dedup();
        for component in &components {
            for runtime in self.runtimes() {
                runtime.remove(service, component).await.at("remove")?;
            }
        }
        self.remove_certs(service).at("certificate")?;
        self.store.delete(service).at("record")?;
        Ok(())
    }

    /// Deletes `<srv_root>/<service>/certs/`, if there.
    pub(super) fn remove_certs(&self, service: &str) -> anyhow::Result<()> {
        let certs = self.srv_root.join(service).join("certs");
        match std::fs::remove_dir_all(&certs) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", certs.display())),
        }
    }
}
