//! The operator-facing gRPC service (`mcp.master.v1.Master`): deploy and lifecycle
//! commands, carried to the agent that runs (or will run) each service, and fleet-wide
//! reads. Every call has passed `authz` before it gets here. Agent errors are mapped
//! here, in one place.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mcp_proto::agent::v1 as agent;
use mcp_proto::agent::v1::agent_client::AgentClient;
use mcp_proto::convert::check_service_name;
use mcp_proto::master::v1::{self as wire, master_server::Master};
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{self, Code, Request, Response, Status};
use mcp_types::ServiceDef;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::registry::NodeEntry;
use crate::state::MasterState;

/// How long a fleet-wide read (`mcp list`, `ps`, `status`) waits for the nodes'
/// fresh state before it answers with what they last reported.
pub const READ_BOUND: Duration = Duration::from_millis(500);

/// The service implementation.
#[derive(Clone)]
pub struct MasterService {
    pub state: Arc<MasterState>,
}

/// An agent's error as the operator should see it, named by node and, when the node
/// did not answer, with its state as the master sees it (`seen`). The CLI takes its
/// exit code from the code alone (SPEC §10): Unavailable means the master could not
/// be reached, Unauthenticated/PermissionDenied that it refused the operator, and
/// InvalidArgument an invalid definition. None of those is true of a node that did not
/// answer or refused what the master (which checked the definition) sent: they become
/// FailedPrecondition, an operation failure.
pub fn agent_status(node: &str, seen: &str, status: Status) -> Status {
    let message = status.message();
    // A status the master's own transport made (the call to the agent broke or timed
    // out) carries the error it came from; one the agent sent never does.
    let local = std::error::Error::source(&status).is_some();
    let code = status.code();
    if local
        || matches!(
            code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        )
    {
        return Status::failed_precondition(format!(
            "node {node} ({seen}) did not answer: {message}"
        ));
    }
    match code {
        Code::Unauthenticated | Code::PermissionDenied => {
            Status::failed_precondition(format!("node {node} refused the master: {message}"))
        }
        Code::InvalidArgument => {
            Status::failed_precondition(format!("node {node} refused it: {message}"))
        }
        // The metadata goes along: it holds a typed refusal (`mcp_proto::refusal`).
        code => Status::with_metadata(
            code,
            format!("node {node}: {message}"),
            status.metadata().clone(),
        ),
    }
}

impl MasterService {
    /// [`agent_status`] for `node`, with its state and last heartbeat as seen now.
    pub(crate) fn agent_error(&self, node: &str, status: Status) -> Status {
        let seen = match self.state.registry.node(node) {
            Some(n) => format!(
                "{}, last heartbeat {:.1} s ago",
                n.state.as_str(),
                n.last_heartbeat.elapsed().as_secs_f64()
            ),
            None => "no longer registered".to_string(),
        };
        agent_status(node, &seen, status)
    }
}

impl MasterService {
    /// The public hostname rules of a deploy (SPEC §6 step 2): each hostname is
    /// equal to or under one of `allowed_domains`, is never an internal name
    /// (`*.svc.mcp.<domain>`), and is claimed by one service only, in this batch
    /// and across the fleet. One line per problem, naming where.
    fn hostname_problems(&self, defs: &[ServiceDef]) -> Vec<String> {
        let config = &self.state.config;
        let mut claimed = self.state.registry.public_hostnames();
        let mut problems = Vec::new();
        for def in defs {
            for c in &def.components {
                for route in c.routes.iter().filter(|r| r.public) {
                    let Some(host) = &route.hostname else {
                        continue;
                    };
                    let host = host.to_ascii_lowercase();
                    let at = format!(
                        "{}: components.{}.routes.{}.hostname: {host}",
                        def.name, c.name, route.name
                    );
                    if config.hostname_internal(&host) {
                        problems.push(format!(
                            "{at} is an internal name (*.{}), never a public one",
                            config.internal_zone()
                        ));
                    } else if !config.hostname_allowed(&host) {
                        problems.push(format!(
                            "{at} is not in allowed_domains [{}]",
                            config.allowed_domains.join(", ")
                        ));
                    }
                    match claimed.get(&host) {
                        Some(other) if *other != def.name => problems.push(format!(
                            "{at} is already the public hostname of service {other:?}"
                        )),
                        _ => {
                            claimed.insert(host, def.name.clone());
                        }
                    }
                }
            }
        }
        problems
    }

    fn node_for(&self, service: &str) -> Result<NodeEntry, Status> {
        let registry = &self.state.registry;
        let name = registry
            .locate(service)
            .ok_or_else(|| Status::not_found(format!("no service {service:?} is deployed")))?;
        registry
            .node(&name)
            .ok_or_else(|| Status::not_found(format!("node {name} is not registered")))
    }

    /// A client for a node's agent to call `rpc` with, or FailedPrecondition: the node
    /// is gone, or its agent lacks `rpc` (the SPEC §9 message).
    pub(crate) fn client(&self, node: &str, rpc: &str) -> Result<AgentClient<Channel>, Status> {
        self.state
            .registry
            .client(node, rpc, &self.state.transport)
            .map_err(Status::failed_precondition)
    }

    /// Asks every healthy worker for its services, concurrently, for at most
    /// [`READ_BOUND`] (the probe timeout if shorter): a fleet-wide read answers from
    /// the master's view at once rather than wait on a node that hangs. A node that
    /// does not answer in time, whose agent lacks ListServices, or that is not
    /// healthy keeps what it last reported (its heartbeats' digest keeps that within
    /// a heartbeat of the truth) and is returned, sorted, so the reply can say so.
    async fn refresh(&self) -> Vec<String> {
        let bound = READ_BOUND.min(self.state.config.probe_timeout);
        let workers: Vec<NodeEntry> = self
            .state
            .registry
            .nodes()
            .into_iter()
            .filter(|n| n.role == mcp_types::Role::Worker)
            .collect();
        let mut unanswered: Vec<String> = workers
            .iter()
            .filter(|n| n.state != mcp_types::Health::Healthy)
            .map(|n| n.name.clone())
            .collect();
        let calls = workers
            .into_iter()
            .filter(|n| n.state == mcp_types::Health::Healthy)
            .map(|n| async move {
                let Ok(mut client) = self.client(&n.name, "ListServices") else {
                    return (n.name, None);
                };
                let reply = tokio::time::timeout(
                    bound,
                    client.list_services(agent::ListServicesRequest {}),
                )
                .await;
                match reply {
                    Ok(Ok(reply)) => (n.name, Some(reply.into_inner().services)),
                    _ => (n.name, None),
                }
            });
        for (name, reply) in futures_util::future::join_all(calls).await {
            match reply {
                Some(services) => self.state.registry.set_services(&name, services),
                None => unanswered.push(name),
            }
        }
        unanswered.sort();
        unanswered
    }

    /// Fails at once, as [`agent_status`] says, when `node`'s agent does not answer a
    /// Probe within the probe timeout: a unary call that may rightly take long (a
    /// stop waits out the container's grace period) is made only to an agent that
    /// answers, so a frozen node fails the command now rather than when the
    /// connection's keepalive gives up.
    async fn answering(&self, node: &str, client: &mut AgentClient<Channel>) -> Result<(), Status> {
        let supports = self
            .state
            .registry
            .node(node)
            .is_some_and(|n| n.supports("Probe"));
        if !supports {
            return Ok(()); // Never an RPC the agent did not report (SPEC §9).
        }
        let bound = self.state.config.probe_timeout.max(Duration::from_secs(2));
        let probe = client.probe(agent::ProbeRequest { register: false });
        match tokio::time::timeout(bound, probe).await {
            Err(_) => Err(self.agent_error(
                node,
                Status::deadline_exceeded(format!("no answer to a probe within {bound:?}")),
            )),
            // A status the agent sent (it answered) is not this check's business.
            Ok(Err(status)) if std::error::Error::source(&status).is_some() => {
                Err(self.agent_error(node, status))
            }
            Ok(_) => Ok(()),
        }
    }

    async fn lifecycle(
        &self,
        service: String,
        rpc: &'static str,
    ) -> Result<agent::ServiceStatus, Status> {
        check_service_name(&service)?;
        self.settle(None).await;
        let node = self.node_for(&service)?;
        let mut client = self.client(&node.name, rpc)?;
        self.answering(&node.name, &mut client).await?;
        let request = agent::ServiceRequest {
            service: service.clone(),
            generation: None,
        };
        let reply = match rpc {
            "Stop" => client.stop(request).await,
            "Start" => client.start(request).await,
            _ => client.restart(request).await,
        }
        .map_err(|s| self.agent_error(&node.name, s))?
        .into_inner();
        let status = reply
            .status
            .ok_or_else(|| Status::internal(format!("node {}: empty reply", node.name)))?;
        self.state
            .registry
            .set_service(&node.name, &service, Some(status.clone()));
        self.state
            .registry
            .event(&node.name, format!("{} {service}", rpc.to_lowercase()));
        let public = status
            .spec
            .iter()
            .flat_map(|s| &s.components)
            .flat_map(|c| &c.routes)
            .any(|r| r.public);
        if public {
            // The edge answers 503 for a stopped service, and serves it again once
            // started: wait for the pass that says so.
            self.state
                .reconciler
                .converge(self.state.config.probe_timeout.max(Duration::from_secs(2)))
                .await;
        } else {
            self.state.reconciler.trigger();
        }
        Ok(status)
    }
}

type DeployStream = ReceiverStream<Result<wire::DeployEvent, Status>>;
type LogStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<agent::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Master for MasterService {
    type DeployStream = DeployStream;
    type LogsStream = LogStream;

    async fn login(
        &self,
        request: Request<wire::LoginRequest>,
    ) -> Result<Response<wire::LoginReply>, Status> {
        let r = request.into_inner();
        if self.state.security.uses_introspection() {
            return Err(Status::failed_precondition(
                "this master checks tokens with its identity service; log in there",
            ));
        }
        let refused = || Status::unauthenticated("unknown user or wrong password");
        let user = self.state.config.users.get(&r.user).ok_or_else(refused)?;
        let password = mcp_pki::Secret::new(r.password);
        // Argon2 is deliberately slow: it runs off the async runtime, a few at a time,
        // so a burst of logins (this call needs no token) cannot stall heartbeats.
        let _slot = self
            .state
            .logins
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))?;
        let hash = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            mcp_pki::password::verify_password(&password, &hash)
        })
        .await
        .map_err(|e| Status::internal(format!("check the password: {e}")))?
        .map_err(|e| Status::internal(format!("users.{}.password_hash: {e}", r.user)))?;
        if !ok {
            tracing::warn!(user = %r.user, "login refused");
            return Err(refused());
        }
        let role = user.role.role();
        let (token, expires_at) =
            self.state
                .security
                .sign(&r.user, role, self.state.config.token_ttl);
        tracing::info!(user = %r.user, role = role.as_str(), "logged in");
        Ok(Response::new(wire::LoginReply {
            token: token.expose().to_string(),
            expires_at: expires_at as i64,
            role: role.as_str().to_string(),
        }))
    }

    async fn revoke(
        &self,
        request: Request<wire::RevokeRequest>,
    ) -> Result<Response<wire::RevokeReply>, Status> {
        // The authorization layer checked the token and left its claims here.
        let claims = request
            .extensions()
            .get::<mcp_pki::token::Claims>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no token: run `mcp login`"))?;
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("no token: run `mcp login`"))?;
        let token = mcp_pki::token::parse_bearer(header)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        self.state
            .security
            .revoke(token, &claims)
            .map_err(|e| Status::internal(format!("revoke the token: {e:#}")))?;
        tracing::info!(user = %claims.user, "token revoked");
        let expires_at = if claims.expires_at == u64::MAX {
            0
        } else {
            i64::try_from(claims.expires_at).unwrap_or(i64::MAX)
        };
        Ok(Response::new(wire::RevokeReply { expires_at }))
    }

    async fn deploy(
        &self,
        request: Request<wire::DeployRequest>,
    ) -> Result<Response<DeployStream>, Status> {
        let r = request.into_inner();
        if r.definitions.is_empty() {
            return Err(Status::invalid_argument("no definitions given"));
        }
        let mut defs = Vec::new();
        let mut problems = Vec::new();
        for d in &r.definitions {
            match mcp_types::parse_definition(&d.file, &d.toml) {
                Ok(def) => defs.push(def),
                Err(e) => problems.push(e.to_string()),
            }
        }
        problems.extend(self.hostname_problems(&defs));
        if !problems.is_empty() {
            return Err(Status::invalid_argument(problems.join("\n")));
        }
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Status::invalid_argument(format!(
                "service {:?} is given twice",
                dup[0]
            )));
        }
        let registry = &self.state.registry;
        let order =
            mcp_types::order_by_dependencies(&defs, &|name| registry.locate(name).is_some())
                .map_err(Status::invalid_argument)?;
        let mut ordered: Vec<Option<ServiceDef>> = defs.into_iter().map(Some).collect();
        let ordered: Vec<ServiceDef> = order
            .into_iter()
            .filter_map(|i| ordered.get_mut(i).and_then(Option::take))
            .collect();
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        tokio::spawn(async move { this.deploy_batch(ordered, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self.lifecycle(request.into_inner().service, "Stop").await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn start(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self
            .lifecycle(request.into_inner().service, "Start")
            .await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn restart(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let status = self
            .lifecycle(request.into_inner().service, "Restart")
            .await?;
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn remove(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::RemoveReply>, Status> {
        let service = request.into_inner().service;
        check_service_name(&service)?;
        self.settle(None).await;
        let node = self.node_for(&service)?;
        let mut client = self.client(&node.name, "Remove")?;
        self.answering(&node.name, &mut client).await?;
        client
            .remove(agent::ServiceRequest {
                service: service.clone(),
                generation: None,
            })
            .await
            .map_err(|s| self.agent_error(&node.name, s))?;
        self.state.registry.set_service(&node.name, &service, None);
        self.state
            .registry
            .event(&node.name, format!("removed {service}"));
        // Any other copy (on a node that was away) is at or below this generation: the
        // loop removes it wherever it turns up.
        self.state
            .reconciler
            .removed(&service, self.state.hlc.next());
        self.state
            .reconciler
            .converge(self.state.config.probe_timeout.max(Duration::from_secs(2)))
            .await;
        Ok(Response::new(wire::RemoveReply {
            service,
            node: node.name,
        }))
    }

    async fn list(
        &self,
        _request: Request<wire::ListRequest>,
    ) -> Result<Response<wire::ListReply>, Status> {
        let unanswered = self.refresh().await;
        let mut services: Vec<agent::ServiceStatus> = self
            .state
            .registry
            .nodes()
            .into_iter()
            .flat_map(|n| n.services)
            .collect();
        services.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
        self.state.registry.with_urls(&mut services);
        Ok(Response::new(wire::ListReply {
            services,
            unanswered,
        }))
    }

    async fn status(
        &self,
        request: Request<wire::StatusRequest>,
    ) -> Result<Response<wire::StatusReply>, Status> {
        let r = request.into_inner();
        let unanswered = self.refresh().await;
        let nodes: Vec<NodeEntry> = self.state.registry.nodes();
        let mut services: Vec<agent::ServiceStatus> =
            nodes.iter().flat_map(|n| n.services.clone()).collect();
        self.state.registry.with_urls(&mut services);
        if let Some(name) = &r.service {
            check_service_name(name)?;
            services.retain(|s| &s.name == name);
            if services.is_empty() {
                return Err(Status::not_found(format!(
                    "no service {name:?} is deployed"
                )));
            }
        }
        services.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
        let events = self
            .state
            .registry
            .events()
            .into_iter()
            .filter(|e| {
                r.service
                    .as_ref()
                    .is_none_or(|s| e.message.contains(s.as_str()))
            })
            .map(|e| wire::Event {
                at_ms: e.at_ms,
                node: e.node,
                message: e.message,
            })
            .collect();
        let names = match &r.service {
            None => Vec::new(),
            Some(service) => {
                let zone = self.state.config.internal_zone();
                self.state
                    .zone
                    .borrow()
                    .iter()
                    .flat_map(|z| z.iter())
                    .filter(|rec| {
                        crate::reconcile::plan::dns::service_of(&rec.name, &zone)
                            == Some(service.as_str())
                    })
                    .map(|rec| rec.to_string())
                    .collect()
            }
        };
        Ok(Response::new(wire::StatusReply {
            nodes: nodes.iter().map(NodeEntry::to_wire).collect(),
            services,
            events,
            names,
            unanswered,
        }))
    }

    async fn logs(
        &self,
        request: Request<wire::LogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        check_service_name(&r.service)?;
        let node = self.node_for(&r.service)?;
        let mut client = self.client(&node.name, "Logs")?;
        self.answering(&node.name, &mut client).await?;
        let name = node.name.clone();
        let stream = client
            .logs(agent::LogsRequest {
                service: r.service,
                component: r.component,
                follow: r.follow,
                tail: r.tail,
            })
            .await
            .map_err(|s| self.agent_error(&name, s))?
            .into_inner();
        let this = self.clone();
        Ok(Response::new(Box::pin(stream.map(move |item| {
            item.map(|mut chunk| {
                chunk.node.clone_from(&name);
                chunk
            })
            .map_err(|s| this.agent_error(&name, s))
        }))))
    }

    async fn list_nodes(
        &self,
        _request: Request<wire::ListNodesRequest>,
    ) -> Result<Response<wire::ListNodesReply>, Status> {
        let nodes = self
            .state
            .registry
            .nodes()
            .iter()
            .map(NodeEntry::to_wire)
            .collect();
        Ok(Response::new(wire::ListNodesReply { nodes }))
    }

    async fn list_routes(
        &self,
        _request: Request<wire::ListRoutesRequest>,
    ) -> Result<Response<wire::ListRoutesReply>, Status> {
        let world = self.state.reconciler.world(&self.state);
        let failing = self.state.reconciler.failures();
        Ok(Response::new(wire::ListRoutesReply {
            routes: crate::reconcile::routes_view(&world, &failing),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_never_read_as_the_masters_own() {
        let seen = "healthy, last heartbeat 0.5 s ago";
        for status in [
            Status::unavailable("connection refused"),
            Status::deadline_exceeded("slow"),
            Status::cancelled("Timeout expired"),
            Status::from_error(Box::new(std::io::Error::other("transport error"))),
        ] {
            let mapped = agent_status("orion", seen, status);
            assert_eq!(mapped.code(), Code::FailedPrecondition);
            assert!(
                mapped
                    .message()
                    .starts_with("node orion (healthy, last heartbeat 0.5 s ago) did not answer"),
                "{mapped:?}"
            );
        }
        for status in [
            Status::unauthenticated("x"),
            Status::permission_denied("x"),
            Status::invalid_argument("x"),
        ] {
            assert_eq!(
                agent_status("orion", seen, status).code(),
                Code::FailedPrecondition
            );
        }
        let kept = agent_status("orion", seen, Status::not_found("no service"));
        assert_eq!(kept.code(), Code::NotFound);
        assert_eq!(kept.message(), "node orion: no service");
        // A typed refusal stays typed.
        let refused = mcp_proto::refusal::ImagePlatform {
            image: "mcp-test/hello:1".to_string(),
            platforms: "linux/amd64".to_string(),
        };
        let status = mcp_proto::refusal::image_platform("image ...".to_string(), &refused);
        let mapped = agent_status("hyperborea", seen, status);
        assert_eq!(mapped.code(), Code::FailedPrecondition);
        assert_eq!(
            mcp_proto::refusal::image_platform_of(&mapped),
            Some(refused)
        );
    }
}
