//! The node-facing service (`mcp.master.v1.Nodes`): enrollment, registration,
//! heartbeats and certificates. Every call but Enroll needs the calling node's own
//! certificate; none accepts an operator token.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use mcp_proto::convert::check_service_name;
use mcp_proto::master::v1::{self as wire, nodes_server::Nodes};
use mcp_proto::tonic::{self, Request, Response, Status};
use mcp_proto::transport::PeerInfo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::registry::NodeEntry;
use crate::state::MasterState;
use mcp_types::{Arch, Health, Role};

/// The caller must hold `node`'s certificate.
fn require_node(peer: &PeerInfo, node: &str) -> Result<(), Status> {
    if !peer.has_cert() {
        return Err(Status::unauthenticated(format!(
            "node {node} presented no certificate: enroll it with a join token first"
        )));
    }
    if !peer.is(node) {
        return Err(Status::permission_denied(format!(
            "the caller's certificate is not for node {node}: a node may speak only for itself"
        )));
    }
    Ok(())
}

/// The node-facing service.
#[derive(Clone)]
pub struct NodeService {
    pub state: Arc<MasterState>,
}

type HeartbeatStream = ReceiverStream<Result<wire::HeartbeatReply, Status>>;

#[tonic::async_trait]
impl Nodes for NodeService {
    type HeartbeatsStream = HeartbeatStream;

    async fn enroll(
        &self,
        request: Request<wire::EnrollRequest>,
    ) -> Result<Response<wire::EnrollReply>, Status> {
        let r = request.into_inner();
        mcp_types::name::check_dns_label(&r.name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        if r.name == mcp_pki::MASTER_NAME {
            return Err(Status::invalid_argument(format!(
                "name: {} is reserved for the master",
                r.name
            )));
        }
        if !self.state.security.join_secret_ok(&r.secret) {
            tracing::warn!(node = %r.name, "enrollment refused: wrong join secret");
            return Err(Status::unauthenticated(
                "the join token's secret is wrong: `mcp-master join-token` prints the right one",
            ));
        }
        let issued = self
            .state
            .security
            .ca
            .issue(
                std::slice::from_ref(&r.name),
                self.state.config.node_cert_ttl,
            )
            .map_err(|e| Status::internal(format!("issue the node certificate: {e}")))?;
        self.state.registry.event(&r.name, "enrolled".to_string());
        Ok(Response::new(wire::EnrollReply {
            ca_pem: self.state.security.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem.expose().to_string(),
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<wire::IssueCertificateRequest>,
    ) -> Result<Response<wire::IssueCertificateReply>, Status> {
        let peer = PeerInfo::of(&request);
        let r = request.into_inner();
        check_service_name(&r.service)?;
        require_node(&peer, &r.node)?;
        if !self.state.may_issue(&r.service, &r.node) {
            return Err(Status::permission_denied(format!(
                "service {} is not placed on node {}",
                r.service, r.node
            )));
        }
        let name = format!("{}.svc.mcp.{}", r.service, self.state.config.domain);
        let issued = self
            .state
            .security
            .ca
            .issue(
                std::slice::from_ref(&name),
                self.state.config.service_cert_ttl,
            )
            .map_err(|e| Status::internal(format!("issue the service certificate: {e}")))?;
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        };
        Ok(Response::new(wire::IssueCertificateReply {
            ca_pem: self.state.security.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem.expose().to_string(),
            not_before: crate::security::now() as i64,
            not_after: unix(issued.not_after),
            names: vec![name],
        }))
    }

    async fn register(
        &self,
        request: Request<wire::RegisterRequest>,
    ) -> Result<Response<wire::RegisterReply>, Status> {
        let peer = PeerInfo::of(&request);
        let r = request.into_inner();
        mcp_types::name::check_dns_label(&r.name)
            .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        require_node(&peer, &r.name)?;
        let role: Role = r
            .role
            .parse()
            .map_err(|e| Status::invalid_argument(format!("role: {e}")))?;
        let arch: Arch = r
            .arch
            .parse()
            .map_err(|_| Status::invalid_argument(format!("arch: unknown arch {:?}", r.arch)))?;
        for pool in &r.pools {
            mcp_types::name::check_dns_label(pool)
                .map_err(|e| Status::invalid_argument(format!("pools: {e}")))?;
        }
        mcp_proto::transport::uri_for(&r.address)
            .map_err(|e| Status::invalid_argument(format!("address: {e}")))?;
        let registry = &self.state.registry;
        let known = registry.node(&r.name);
        for s in &r.services {
            self.state.hlc.observe(s.generation);
        }
        // An agent that cannot read its state keeps the view the master had of it.
        let (services, edge_routes, digest, containers) = match (&known, r.state_unknown) {
            (Some(k), true) => (
                k.services.clone(),
                k.edge_routes.clone(),
                k.digest.clone(),
                k.containers,
            ),
            (None, true) => (Vec::new(), Vec::new(), String::new(), 0),
            (_, false) => (r.services, r.edge_routes, r.state_digest, r.containers),
        };
        // An edge's certificate trouble (ACME) is news once per reason.
        for route in edge_routes.iter().filter(|e| !e.cert_error.is_empty()) {
            let before = known
                .as_ref()
                .and_then(|k| k.edge_routes.iter().find(|o| o.hostname == route.hostname));
            if before.is_none_or(|b| b.cert_error != route.cert_error) {
                registry.event(
                    &r.name,
                    format!(
                        "certificate of {}: {}; the edge retries with backoff",
                        route.hostname, route.cert_error
                    ),
                );
            }
        }
        if r.state_unknown && known.as_ref().is_none_or(|k| k.state_known) {
            registry.event(
                &r.name,
                format!("state unknown: {}; keeping the last view", r.state_error),
            );
        }
        let entry = NodeEntry {
            name: r.name.clone(),
            role,
            address: r.address.clone(),
            arch,
            version: r.version,
            binary_sha256: r.binary_sha256,
            rpcs: r.rpcs,
            pools: r.pools,
            resources: r.resources.unwrap_or_default(),
            containers,
            state: Health::Healthy,
            last_heartbeat: Instant::now(),
            last_probe: None,
            probe_in_flight: false,
            digest,
            state_known: !r.state_unknown,
            services,
            edge_routes,
            public_address: r.public_address,
            acme: r.acme,
            client: known
                .as_ref()
                .filter(|k| k.address == r.address)
                .and_then(|k| k.client.clone()),
            session: known.as_ref().map_or(0, |k| k.session),
        };
        registry.write().insert(r.name.clone(), entry);
        match known {
            None => registry.event(&r.name, format!("registered from {}", r.address)),
            Some(k) if k.state != Health::Healthy => registry.event(
                &r.name,
                format!("{} -> healthy: registered", k.state.as_str()),
            ),
            Some(_) => {}
        }
        self.state.reconciler.trigger();
        Ok(Response::new(wire::RegisterReply {
            master_node: self.state.config.node.clone(),
            heartbeat_interval_ms: self.state.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeats(
        &self,
        request: Request<tonic::Streaming<wire::HeartbeatRequest>>,
    ) -> Result<Response<HeartbeatStream>, Status> {
        let peer = PeerInfo::of(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let session = state.registry.new_session();
            let mut node: Option<String> = None;
            while let Some(item) = inbound.next().await {
                let Ok(beat) = item else { break };
                if let Err(status) = require_node(&peer, &beat.name) {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                match &node {
                    Some(name) if name != &beat.name => {
                        let _ = tx
                            .send(Err(Status::invalid_argument(format!(
                                "heartbeat for {} on the stream of {name}",
                                beat.name
                            ))))
                            .await;
                        break;
                    }
                    Some(_) => {}
                    None => node = Some(beat.name.clone()),
                }
                let reply = match state.registry.heartbeat(&beat, session) {
                    Some(b) => Ok(wire::HeartbeatReply {
                        send_full_state: b.send_full_state,
                    }),
                    None => Err(Status::not_found(format!(
                        "node {} is not registered; register first",
                        beat.name
                    ))),
                };
                let refused = reply.is_err();
                if tx.send(reply).await.is_err() || refused {
                    break;
                }
            }
            // The stream broke: if the agent died, a probe finds out now rather
            // than after missed_heartbeats intervals.
            if let Some(name) = node {
                if state.registry.end_session(&name, session) {
                    crate::health::probe(state.clone(), name, "heartbeat stream closed").await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew_node_certificate(
        &self,
        request: Request<wire::RenewNodeCertificateRequest>,
    ) -> Result<Response<wire::EnrollReply>, Status> {
        let peer = PeerInfo::of(&request);
        let r = request.into_inner();
        mcp_types::name::check_dns_label(&r.node)
            .map_err(|e| Status::invalid_argument(format!("node: {e}")))?;
        require_node(&peer, &r.node)?;
        let issued = self
            .state
            .security
            .ca
            .issue(
                std::slice::from_ref(&r.node),
                self.state.config.node_cert_ttl,
            )
            .map_err(|e| Status::internal(format!("issue the node certificate: {e}")))?;
        self.state
            .registry
            .event(&r.node, "node certificate renewed".to_string());
        Ok(Response::new(wire::EnrollReply {
            ca_pem: self.state.security.ca.cert_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem.expose().to_string(),
        }))
    }
}
