//! `deploys`: deploys per second end to end. N simulated nodes enroll and register
//! like the `heartbeats` ones, and each also serves the agent's gRPC API over mutual
//! TLS on the address it registered (its node certificate, admitting only the
//! master's), answering Deploy as an agent does when it succeeds (the desired state
//! committed, `record` and `done` steps, then `done` with the service's status)
//! without a runtime, and Probe and ListServices from what it was deployed. Then one
//! DeployRequest of S one-component services, as the admin user, timed from the
//! request to the last `done` the master forwards.

use std::pin::Pin;

use mcp_pki::tls::ClientAuth;
use mcp_proto::agent::v1::{self as agent, agent_server::Agent, agent_server::AgentServer};
use mcp_proto::tonic::{self, Response, Status};
use mcp_proto::transport::{ServerTls, ServerTransport};

use super::*;

type Events = Pin<Box<dyn futures_util::Stream<Item = Result<agent::DeployEvent, Status>> + Send>>;
type Chunks = Pin<Box<dyn futures_util::Stream<Item = Result<agent::LogChunk, Status>> + Send>>;

/// One simulated agent: what it was deployed, by name.
struct SimAgent {
    name: String,
    services: Mutex<Vec<agent::ServiceStatus>>,
}

fn unimplemented<T>(rpc: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{rpc}: the simulated agent only deploys"
    )))
}

fn step(step: &str, message: &str) -> Result<agent::DeployEvent, Status> {
    Ok(agent::DeployEvent {
        event: Some(agent::deploy_event::Event::Step(agent::Step {
            step: step.to_string(),
            component: String::new(),
            message: message.to_string(),
        })),
    })
}

#[tonic::async_trait]
impl Agent for SimAgent {
    type DeployStream = Events;
    type LogsStream = Chunks;

    async fn deploy(
        &self,
        request: tonic::Request<agent::DeployRequest>,
    ) -> Result<Response<Events>, Status> {
        let r = request.into_inner();
        let spec = r
            .service
            .ok_or_else(|| Status::invalid_argument("service: missing"))?;
        let now = unix_ms() / 1000;
        let status = agent::ServiceStatus {
            name: spec.name.clone(),
            node: self.name.clone(),
            desired: "running".to_string(),
            components: spec
                .components
                .iter()
                .map(|c| agent::ComponentStatus {
                    name: c.name.clone(),
                    driver: "container".to_string(),
                    desired: "running".to_string(),
                    observed: "running".to_string(),
                    image: c.image.clone().unwrap_or_default(),
                    started_at: now,
                    ..Default::default()
                })
                .collect(),
            spec: Some(spec),
            generation: r.generation,
        };
        if let Ok(mut services) = self.services.lock() {
            services.retain(|s| s.name != status.name);
            services.push(status.clone());
        }
        let events = vec![
            step("record", "desired state committed"),
            step("done", "running"),
            Ok(agent::DeployEvent {
                event: Some(agent::deploy_event::Event::Done(status)),
            }),
        ];
        Ok(Response::new(Box::pin(futures_util::stream::iter(events))))
    }

    async fn list_services(
        &self,
        _request: tonic::Request<agent::ListServicesRequest>,
    ) -> Result<Response<agent::ListServicesReply>, Status> {
        let services = self.services.lock().map(|s| s.clone()).unwrap_or_default();
        Ok(Response::new(agent::ListServicesReply { services }))
    }

    async fn probe(
        &self,
        _request: tonic::Request<agent::ProbeRequest>,
    ) -> Result<Response<agent::ProbeReply>, Status> {
        Ok(Response::new(agent::ProbeReply {
            node: self.name.clone(),
            version: "sim".to_string(),
        }))
    }

    async fn stop(
        &self,
        _r: tonic::Request<agent::ServiceRequest>,
    ) -> Result<Response<agent::ServiceReply>, Status> {
        unimplemented("Stop")
    }

    async fn start(
        &self,
        _r: tonic::Request<agent::ServiceRequest>,
    ) -> Result<Response<agent::ServiceReply>, Status> {
        unimplemented("Start")
    }

    async fn restart(
        &self,
        _r: tonic::Request<agent::ServiceRequest>,
    ) -> Result<Response<agent::ServiceReply>, Status> {
        unimplemented("Restart")
    }

    async fn remove(
        &self,
        _r: tonic::Request<agent::ServiceRequest>,
    ) -> Result<Response<agent::RemoveReply>, Status> {
        unimplemented("Remove")
    }

    async fn logs(
        &self,
        _r: tonic::Request<agent::LogsRequest>,
    ) -> Result<Response<Chunks>, Status> {
        unimplemented("Logs")
    }

    async fn setup_edge_route(
        &self,
        _r: tonic::Request<agent::SetupEdgeRouteRequest>,
    ) -> Result<Response<agent::SetupEdgeRouteReply>, Status> {
        unimplemented("SetupEdgeRoute")
    }

    async fn remove_edge_route(
        &self,
        _r: tonic::Request<agent::RemoveEdgeRouteRequest>,
    ) -> Result<Response<agent::RemoveEdgeRouteReply>, Status> {
        unimplemented("RemoveEdgeRoute")
    }

    async fn list_edge_routes(
        &self,
        _r: tonic::Request<agent::ListEdgeRoutesRequest>,
    ) -> Result<Response<agent::ListEdgeRoutesReply>, Status> {
        unimplemented("ListEdgeRoutes")
    }
}

/// Enrolls node `i`, starts its agent server on its address, and returns the
/// channel (with its certificate) it registers over.
async fn serve_node(
    i: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Channel> {
    let tls = tls()?;
    let reply = NodesClient::new(channel()?)
        .enroll(wire::EnrollRequest {
            name: node_name(i),
            secret: tls.join_secret.clone(),
        })
        .await
        .with_context(|| format!("enroll {}", node_name(i)))?
        .into_inner();
    let identity = Identity::from_pem(
        &reply.cert_pem,
        &reply.key_pem,
        std::slice::from_ref(&tls.ca),
    )?;
    let address = node_address(i);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("listen on {address}"))?;
    let server = ServerTransport::with_tls(ServerTls {
        config: mcp_pki::tls::server_config(&identity, ClientAuth::Required(tls.ca.clone()))?,
        require_name: Some(MASTER_NAME.to_string()),
    });
    let service = SimAgent {
        name: node_name(i),
        services: Mutex::default(),
    };
    tokio::spawn(async move {
        let routes = tonic::service::Routes::new(AgentServer::new(service));
        if let Err(e) = server.serve(routes, listener, shutdown).await {
            eprintln!("deploys: the agent of {} stopped: {e}", node_name(i));
        }
    });
    Ok(transport(&tls, Some(&identity))?.lazy(MASTER)?)
}

/// The definition of simulated service `i`: one component, no routes.
fn definition(i: usize) -> wire::Definition {
    let name = format!("d{i:05}");
    wire::Definition {
        file: format!("{name}.toml"),
        toml: format!("name = \"{name}\"\n[[components]]\nname = \"web\"\nimage = \"sim/app:1\"\n"),
    }
}

pub(crate) async fn deploys(
    cpu: Option<u32>,
    nodes: usize,
    services: usize,
    cold: bool,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-deploys-{}", std::process::id()));
    let master = Master::start(&dir, "30s", 3, "5s", cpu)?;
    // After the master process started: its grace has begun by then.
    let started = Instant::now();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let results: Vec<anyhow::Result<Channel>> = futures_util::stream::iter(0..nodes)
        .map(|i| serve_node(i, shutdown.clone()))
        .buffered(64)
        .collect()
        .await;
    let channels = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    register_all(0..nodes, &channels).await?;
    let mut client = operator()?;
    // A fresh master holds placements for its start-up grace (three heartbeat
    // intervals, at most 10 s): wait it out rather than time it.
    let grace = Duration::from_secs(10) + Duration::from_millis(500);
    tokio::time::sleep(grace.saturating_sub(started.elapsed())).await;
    let registered = client
        .list_nodes(wire::ListNodesRequest {})
        .await?
        .into_inner()
        .nodes
        .iter()
        .filter(|n| n.state == "healthy")
        .count();
    if registered < nodes {
        bail!("only {registered} of {nodes} nodes are healthy");
    }
    if !cold {
        // The master's connections to its agents, as a master that has run a while
        // has them: `list` asks every worker for its services.
        let t = Instant::now();
        client.list(wire::ListRequest {}).await?;
        eprintln!(
            "deploys: warm-up: the master reached its {nodes} agents in {:.0} ms (mcp list)",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let request = wire::DeployRequest {
        definitions: (0..services).map(definition).collect(),
    };
    let cpu0 = cpu_seconds(master.pid());
    let own0 = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let mut stream = client.deploy(request).await?.into_inner();
    let (mut placed, mut done, mut failed) = (0usize, 0usize, Vec::new());
    let (mut first_placed, mut last_placed, mut last_done) = (None, Duration::ZERO, Duration::ZERO);
    let deadline = Duration::from_secs(600);
    loop {
        let left = deadline.saturating_sub(t0.elapsed());
        let Some(item) = tokio::time::timeout(left, stream.next())
            .await
            .context("deploys: the batch did not end in 600 s")?
        else {
            break;
        };
        let event = item.context("the deploy stream")?;
        match event.event {
            Some(wire::deploy_event::Event::Placed(_)) => {
                placed += 1;
                first_placed.get_or_insert(t0.elapsed());
                last_placed = t0.elapsed();
            }
            Some(wire::deploy_event::Event::Agent(agent::DeployEvent {
                event: Some(agent::deploy_event::Event::Done(_)),
            })) => {
                done += 1;
                last_done = t0.elapsed();
            }
            Some(wire::deploy_event::Event::Failed(f)) => {
                failed.push(format!("{}: {}", event.service, f.message));
            }
            _ => {}
        }
    }
    let ended = t0.elapsed();
    let cpu_used = cpu_seconds(master.pid()) - cpu0;
    let own_used = cpu_seconds(std::process::id()) - own0;
    let _ = stop.send(true);
    if done != services {
        bail!(
            "{done} of {services} services acknowledged ({placed} placed); failed: {}",
            failed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let secs = last_done.as_secs_f64();
    println!(
        "deploys: nodes={nodes} services={services}{} placed and acknowledged in {:.3} s: {:.0} services/s (first placed {:.0} ms, all placed {:.0} ms, stream ended {:.0} ms) master_cpu={:.2} s ({:.0}% of one core, {:.0} us per service) master_rss={:.1}MiB sim_cpu={:.0}% of one core",
        if cold { " (cold: no connections yet)" } else { "" },
        secs,
        services as f64 / secs.max(1e-9),
        first_placed.unwrap_or_default().as_secs_f64() * 1000.0,
        last_placed.as_secs_f64() * 1000.0,
        ended.as_secs_f64() * 1000.0,
        cpu_used,
        100.0 * cpu_used / ended.as_secs_f64().max(1e-9),
        1e6 * cpu_used / services as f64,
        mib(rss(master.pid())),
        100.0 * own_used / ended.as_secs_f64().max(1e-9),
    );
    Ok(())
}
