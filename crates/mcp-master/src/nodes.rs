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

type HeartbeatStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<wire::HeartbeatReply, Status>> + Send>,
>;

/// One heartbeat stream. When it ends, however it ends (the agent closed it, the
/// connection broke, the master refused a heartbeat), it is dropped, and if it
/// was the node's current stream the node is probed at once: a dead agent is
/// found within about a probe timeout rather than after missed heartbeats.
struct Session {
    id: u64,
    state: Arc<MasterState>,
    peer: PeerInfo,
    /// The node this stream speaks for, from its first heartbeat.
    node: Option<String>,
    /// A heartbeat was refused: the refusal is the stream's last reply.
    refused: bool,
}

impl Session {
    fn beat(&mut self, beat: &wire::HeartbeatRequest) -> Result<wire::HeartbeatReply, Status> {
        // The certificate is checked once: the stream's peer does not change.
        match &self.node {
            Some(name) if name == &beat.name => {}
            Some(name) => {
                require_node(&self.peer, &beat.name)?;
                return Err(Status::invalid_argument(format!(
                    "heartbeat for {} on the stream of {name}",
                    beat.name
                )));
            }
            None => {
                require_node(&self.peer, &beat.name)?;
                self.node = Some(beat.name.clone());
            }
        }
        match self.state.registry.heartbeat(beat, self.id) {
            Some(b) => Ok(wire::HeartbeatReply {
                send_full_state: b.send_full_state,
            }),
            None => Err(Status::not_found(format!(
                "node {} is not registered; register first",
                beat.name
            ))),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(name) = self.node.take() else { return };
        if !self.state.registry.end_session(&name, self.id) {
            return;
        }
        // Outside a runtime (the process is ending) there is nothing to probe with.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(crate::health::probe(
                self.state.clone(),
                name,
                "heartbeat stream closed",
            ));
        }
    }
}

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
        // Its agent (re)started, perhaps with another arch: what it refused is news.
        self.state.refusals.forget_node(&r.name);
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
        let before = known.as_ref().map_or(&[][..], |k| &k.services[..]);
        for message in crate::registry::oom_news(&r.name, before, &services) {
            registry.event(&r.name, message);
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
            rpcs: registry.intern_rpcs(r.rpcs),
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
        let inbound = request.into_inner();
        let session = Session {
            id: self.state.registry.new_session(),
            state: self.state.clone(),
            peer,
            node: None,
            refused: false,
        };
        // One reply per heartbeat, read and answered in the response stream itself:
        // no task and no channel per node (memory at 10,000 agents, BENCHMARKS.md).
        let replies = futures_util::stream::unfold(
            (inbound, session),
            |(mut inbound, mut session)| async move {
                if session.refused {
                    return None;
                }
                let Some(Ok(beat)) = inbound.next().await else {
                    return None;
                };
                let reply = session.beat(&beat);
                session.refused = reply.is_err();
                Some((reply, (inbound, session)))
            },
        );
        Ok(Response::new(Box::pin(replies)))
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
