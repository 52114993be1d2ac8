//! Status: each service's desired state against what the runtimes show (drift), the
//! instances no desired state accounts for (desired "absent"), and logs.

use std::collections::BTreeMap;

use mcp_proto::agent::v1 as wire;
use mcp_types::{Component, Driver};

use super::{Node, NodeError};
use crate::runtime::{LogStream, Observed};
use crate::store::{Desired, ServiceRecord};

impl Node {
    pub(super) async fn status_of(
        &self,
        record: &ServiceRecord,
    ) -> anyhow::Result<wire::ServiceStatus> {
        let observed = self.observe().await?;
        Ok(self.status_with(record, &observed))
    }

    fn status_with(&self, record: &ServiceRecord, observed: &[Observed]) -> wire::ServiceStatus {
        let def = &record.def;
        let limits = def.limits();
        let components = def
            .components
            .iter()
            .zip(&limits)
            .map(|(component, limits)| {
                let seen = observed
                    .iter()
                    .find(|o| o.service == def.name && o.component == component.name);
                let state = seen.map_or("missing", |o| o.state.as_str()).to_string();
                let running = seen.is_some_and(Observed::running);
                let drift = match record.desired {
                    Desired::Running => !running,
                    Desired::Stopped | Desired::Removing => running,
                };
                let routes = component
                    .routes
                    .iter()
                    .map(|route| {
                        let host_port = record.host_port(&component.name, &route.name).unwrap_or(0);
                        wire::PublishedRoute {
                            name: route.name.clone(),
                            port: u32::from(route.port),
                            address: std::net::SocketAddr::new(self.ip, host_port).to_string(),
                            mode: mcp_proto::convert::route_mode_str(route.mode).to_string(),
                            public: route.public,
                            hostname: route.hostname.clone(),
                            url: None,
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
                    image: component
                        .image
                        .clone()
                        .unwrap_or_else(|| component.command.first().cloned().unwrap_or_default()),
                    started_at: seen.map_or(0, |o| o.started_at),
                    routes,
                    drift,
                    detail: seen.map(|o| o.detail.clone()).unwrap_or_default(),
                    memory_limit: limits.memory.map_or(0, |m| m.0),
                    cpu_limit: limits.cpu.unwrap_or(0.0),
                    limits_enforced: !limits.is_none()
                        && seen.is_some_and(|o| o.limits_warning.is_empty()),
                    limits_warning: seen.map(|o| o.limits_warning.clone()).unwrap_or_default(),
                    oom_kills: seen.map_or(0, |o| o.oom_kills),
                    last_oom_at: seen.map_or(0, |o| o.last_oom_at),
                }
            })
            .collect();
        wire::ServiceStatus {
            name: def.name.clone(),
            node: self.name.clone(),
            desired: record.desired.as_str().to_string(),
            spec: Some(wire::ServiceSpec::from(def)),
            components,
            generation: record.generation,
        }
    }

    /// Desired versus observed for every service, plus instances labelled for this
    /// node that no desired state accounts for (desired "absent").
    pub async fn statuses(&self) -> anyhow::Result<Vec<wire::ServiceStatus>> {
        // A removal in progress holds nothing: its instances show as orphans.
        let mut records = self.store.all()?;
        records.retain(|r| r.desired != Desired::Removing);
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
