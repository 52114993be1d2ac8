//! The agent's gRPC service (`mcp.agent.v1.Agent`): converts wire requests to domain
//! values, calls the node, and maps its errors to gRPC status codes, in one place.

use std::sync::Arc;

use futures_util::StreamExt;
use mcp_proto::agent::v1::{self as wire, agent_server::Agent};
use mcp_proto::convert::check_service_name;
use mcp_proto::refusal;
use mcp_proto::tonic::{self, Request, Response, Status};
use mcp_types::ServiceDef;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::node::{Node, NodeError};

/// The service implementation.
pub struct AgentService {
    pub node: Arc<Node>,
    /// Wakes the registration loop: a probe from a master that lost this node.
    pub nudge: Arc<tokio::sync::Notify>,
    /// An edge node's routes and its mc-proxy; None on a worker.
    pub edge: Option<Arc<crate::edge::Edge>>,
}

impl AgentService {
    /// The edge, or the refusal a worker gives edge RPCs.
    fn edge(&self) -> Result<&Arc<crate::edge::Edge>, Status> {
        self.edge.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "node {} is a worker: edge routes are set up on an edge node (role = \"edge\")",
                self.node.name
            ))
        })
    }
}

/// The one mapping from edge errors to gRPC statuses.
fn edge_status(error: crate::edge::EdgeError) -> Status {
    match error {
        crate::edge::EdgeError::Invalid(m) => Status::invalid_argument(m),
        crate::edge::EdgeError::Unavailable(m) => Status::unavailable(m),
        crate::edge::EdgeError::Internal(e) => Status::internal(format!("{e:#}")),
    }
}

/// The one mapping from node errors to gRPC statuses.
pub fn status_of(error: NodeError) -> Status {
    match error {
        NodeError::NotFound(_) => Status::not_found(error.to_string()),
        NodeError::Invalid(_) => Status::invalid_argument(error.to_string()),
        NodeError::StaleDeploy { .. } | NodeError::NewerHeld { .. } => {
            Status::failed_precondition(error.to_string())
        }
        NodeError::Platform(m) => {
            let refused = refusal::ImagePlatform {
                image: m.image.clone(),
                platforms: m.platforms_text(),
            };
            refusal::image_platform(m.to_string(), &refused)
        }
        NodeError::Step(e) => Status::aborted(e.to_string()),
        NodeError::Internal(e) => Status::internal(format!("{e:#}")),
    }
}

type EventStream = ReceiverStream<Result<wire::DeployEvent, Status>>;
type LogStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<wire::LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type DeployStream = EventStream;
    type LogsStream = LogStream;

    async fn deploy(
        &self,
        request: Request<wire::DeployRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let generation = request.generation;
        let spec = request
            .service
            .ok_or_else(|| Status::invalid_argument("service: missing"))?;
        let def =
            ServiceDef::try_from(spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (out_tx, out_rx) = mpsc::channel(256);
        let (events_tx, mut events_rx) = mpsc::channel::<wire::DeployEvent>(256);
        let node = self.node.clone();
        let span =
            tracing::info_span!("deploy", node = %node.name, service = %def.name, generation);
        tokio::spawn(
            async move {
                let service = def.name.clone();
                let forward = {
                    let out_tx = out_tx.clone();
                    tokio::spawn(async move {
                        while let Some(event) = events_rx.recv().await {
                            let _ = out_tx.send(Ok(event)).await;
                        }
                    })
                };
                // The deploy runs to its end even if the caller goes away.
                let result = node.deploy(def, generation, &events_tx).await;
                drop(events_tx);
                let _ = forward.await;
                match result {
                    Ok(status) => {
                        tracing::info!(node = %node.name, service = %service, "deployed");
                        let _ = out_tx
                            .send(Ok(wire::DeployEvent {
                                event: Some(wire::deploy_event::Event::Done(status)),
                            }))
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.name, service = %service, "deploy failed: {e}");
                        let _ = out_tx.send(Err(status_of(e))).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn stop(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let service = request.into_inner().service;
        check_service_name(&service)?;
        let status = self.node.stop(&service).await.map_err(status_of)?;
        tracing::info!(node = %self.node.name, service = %service, "stopped");
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn start(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let service = request.into_inner().service;
        check_service_name(&service)?;
        let status = self.node.start(&service).await.map_err(status_of)?;
        tracing::info!(node = %self.node.name, service = %service, "started");
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn restart(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::ServiceReply>, Status> {
        let service = request.into_inner().service;
        check_service_name(&service)?;
        let status = self.node.restart(&service).await.map_err(status_of)?;
        tracing::info!(node = %self.node.name, service = %service, "restarted");
        Ok(Response::new(wire::ServiceReply {
            status: Some(status),
        }))
    }

    async fn remove(
        &self,
        request: Request<wire::ServiceRequest>,
    ) -> Result<Response<wire::RemoveReply>, Status> {
        let wire::ServiceRequest {
            service,
            generation,
        } = request.into_inner();
        check_service_name(&service)?;
        self.node
            .remove(&service, generation)
            .await
            .map_err(status_of)?;
        tracing::info!(node = %self.node.name, service = %service, "removed");
        Ok(Response::new(wire::RemoveReply { service }))
    }

    async fn list_services(
        &self,
        _request: Request<wire::ListServicesRequest>,
    ) -> Result<Response<wire::ListServicesReply>, Status> {
        let services = self
            .node
            .statuses()
            .await
            .map_err(|e| status_of(e.into()))?;
        Ok(Response::new(wire::ListServicesReply { services }))
    }

    async fn logs(
        &self,
        request: Request<wire::LogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let r = request.into_inner();
        check_service_name(&r.service)?;
        if !r.component.is_empty() {
            mcp_types::name::check_dns_label(&r.component)
                .map_err(|e| Status::invalid_argument(format!("component: {e}")))?;
        }
        let streams = self
            .node
            .logs(&r.service, &r.component, r.follow, r.tail)
            .await
            .map_err(status_of)?;
        let merged =
            futures_util::stream::select_all(streams.into_iter().map(|(component, stream)| {
                stream.map(move |chunk| {
                    chunk
                        .map(|c| wire::LogChunk {
                            component: component.clone(),
                            stream: c.stream.to_string(),
                            data: c.data,
                            node: String::new(),
                        })
                        .map_err(|e| Status::internal(format!("{e:#}")))
                })
            }));
        Ok(Response::new(Box::pin(merged)))
    }

    async fn probe(
        &self,
        request: Request<wire::ProbeRequest>,
    ) -> Result<Response<wire::ProbeReply>, Status> {
        if request.into_inner().register {
            tracing::info!(node = %self.node.name, "the master asked for registration");
            self.nudge.notify_one();
        }
        Ok(Response::new(wire::ProbeReply {
            node: self.node.name.clone(),
            version: crate::VERSION.to_string(),
        }))
    }

    async fn setup_edge_route(
        &self,
        request: Request<wire::SetupEdgeRouteRequest>,
    ) -> Result<Response<wire::SetupEdgeRouteReply>, Status> {
        let edge = self.edge()?;
        let route = request
            .into_inner()
            .route
            .ok_or_else(|| Status::invalid_argument("route: missing"))?;
        let replaced = edge.setup(route).await.map_err(edge_status)?;
        Ok(Response::new(wire::SetupEdgeRouteReply { replaced }))
    }

    async fn remove_edge_route(
        &self,
        request: Request<wire::RemoveEdgeRouteRequest>,
    ) -> Result<Response<wire::RemoveEdgeRouteReply>, Status> {
        let edge = self.edge()?;
        let hostname = request.into_inner().hostname;
        let removed = edge.remove(&hostname).await.map_err(edge_status)?;
        Ok(Response::new(wire::RemoveEdgeRouteReply { removed }))
    }

    async fn list_edge_routes(
        &self,
        _request: Request<wire::ListEdgeRoutesRequest>,
    ) -> Result<Response<wire::ListEdgeRoutesReply>, Status> {
        let edge = self.edge()?;
        let routes = edge
            .reported()
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        Ok(Response::new(wire::ListEdgeRoutesReply { routes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_refusals_are_failed_preconditions() {
        let stale = NodeError::StaleDeploy {
            node: "n".to_string(),
            service: "s".to_string(),
            held: 2,
            offered: 1,
        };
        let newer = NodeError::NewerHeld {
            node: "n".to_string(),
            service: "s".to_string(),
            held: 2,
            offered: 1,
        };
        for error in [stale, newer] {
            let text = error.to_string();
            let status = status_of(error);
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert_eq!(status.message(), text);
        }
        assert_eq!(
            status_of(NodeError::NotFound("s".to_string())).code(),
            tonic::Code::NotFound
        );
    }
}
