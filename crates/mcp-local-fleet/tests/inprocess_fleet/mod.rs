//! The middle test tier: a whole fleet inside one test process. A real master
//! (`mcp_master::run`) and real agents (`mcp_agent::run_with`) with their real store,
//! enrollment, mutual TLS, registration, heartbeats and control loop, on their own
//! loopback addresses, but with in-memory runtimes (`runtime::fake`), so deploys,
//! rollbacks, moves, generations and the loop's convergence are checked in
//! milliseconds, without Docker. Agents and the master can be stopped and started
//! again (same data dir, same runtime) to play a node that went away.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mcp_agent::runtime::fake::FakeRuntime;
use mcp_proto::master::v1::{self as wire, master_client::MasterClient};
use mcp_proto::tonic::metadata::MetadataValue;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{Request, Status};
use mcp_proto::transport::{ClientTls, ClientTransport};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A process-like part of the fleet: its shutdown switch and its task.
struct Part {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Part {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A fleet in this process.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    base: u8,
    nodes: Vec<String>,
    master: Option<Part>,
    agents: BTreeMap<String, Part>,
    /// Each node's runtime, kept across its agent's restarts (the "host" survives).
    pub runtimes: BTreeMap<String, Arc<FakeRuntime>>,
    join_token: String,
    token: String,
    channel: Option<Channel>,
}

impl InProcess {
    /// Master on 127.0.0.`base`:9443, node i on 127.0.0.`base + i`:9444; the first
    /// node is the master node. Heartbeats every 100 ms.
    pub async fn start(base: u8, nodes: &[&str]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let master_dir = dir.path().join("master");
        let join_token = mcp_master::security::init(&master_dir)
            .unwrap()
            .expose()
            .to_string();
        let mut fleet = InProcess {
            dir,
            base,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            master: None,
            agents: BTreeMap::new(),
            runtimes: nodes
                .iter()
                .map(|n| (n.to_string(), Arc::new(FakeRuntime::new("docker"))))
                .collect(),
            join_token,
            token: String::new(),
            channel: None,
        };
        let config = fleet.master_config();
        let security = mcp_master::security::Security::load(&config).unwrap();
        fleet.token = security
            .sign(
                "tester",
                mcp_pki::token::Role::Admin,
                Duration::from_secs(3600),
            )
            .0
            .expose()
            .to_string();
        fleet.start_master().await;
        for node in nodes {
            fleet.start_agent(node).await;
        }
        fleet.wait_registered().await;
        fleet
    }

    fn ip(&self, i: usize) -> String {
        format!("127.0.0.{}", usize::from(self.base) + i)
    }

    pub fn master_address(&self) -> String {
        format!("{}:9443", self.ip(0))
    }

    fn master_config(&self) -> mcp_master::config::Config {
        let bootstrap: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{{ name = \"{n}\", address = \"{}:9444\" }}", self.ip(i)))
            .collect();
        let text = format!(
            "node = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\ndomain = \"metacircular.net\"\n\
             allowed_domains = [\"metacircular.net\"]\n\
             heartbeat_interval = \"100ms\"\nmissed_heartbeats = 3\nprobe_timeout = \"200ms\"\n\
             bootstrap_nodes = [{}]\n",
            self.nodes[0],
            self.master_address(),
            self.dir.path().join("master").display(),
            bootstrap.join(", ")
        );
        mcp_master::config::Config::parse("master.toml", &text).unwrap()
    }

    pub async fn start_master(&mut self) {
        let (stop, shutdown) = watch::channel(false);
        let config = self.master_config();
        let task = tokio::spawn(mcp_master::run(config, shutdown));
        self.master = Some(Part { stop, task });
        self.channel = None;
        let ca_pem = std::fs::read_to_string(self.dir.path().join("master/ca.pem")).unwrap();
        let ca = mcp_pki::cert::certs_from_pem(&ca_pem).unwrap().remove(0);
        let transport = ClientTransport {
            connect_timeout: Some(Duration::from_secs(2)),
            request_timeout: None,
            tls: Some(ClientTls {
                config: mcp_pki::tls::client_config(&ca, None).unwrap(),
                server_name: mcp_pki::MASTER_NAME.to_string(),
            }),
        };
        for _ in 0..250 {
            if let Ok(channel) = transport.connect(&self.master_address()).await {
                self.channel = Some(channel);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the master did not listen on {}", self.master_address());
    }

    pub async fn stop_master(&mut self) {
        if let Some(part) = self.master.take() {
            part.stop().await;
        }
    }

    pub async fn start_agent(&mut self, node: &str) {
        let i = self.nodes.iter().position(|n| n == node).expect("a node");
        let data = self.dir.path().join(node);
        let text = format!(
            "name = \"{node}\"\nmaster = \"{}\"\nlisten = \"{}:9444\"\ndata_dir = \"{}\"\n\
             srv_root = \"{}\"\nruntime = \"exec\"\njoin_token = \"{}\"\n",
            self.master_address(),
            self.ip(i),
            data.join("data").display(),
            data.join("srv").display(),
            self.join_token
        );
        let config = mcp_agent::config::Config::parse("agent.toml", &text).unwrap();
        let fake = self.runtimes[node].clone();
        let runtimes = mcp_agent::Runtimes {
            container: Some(fake.clone()),
            exec: fake,
        };
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(mcp_agent::run_with(config, runtimes, shutdown));
        self.agents.insert(node.to_string(), Part { stop, task });
    }

    /// Stops a node's agent as SIGTERM would; its runtime (the host) keeps running.
    pub async fn stop_agent(&mut self, node: &str) {
        if let Some(part) = self.agents.remove(node) {
            part.stop().await;
        }
    }

    /// Every running node healthy in the master's view.
    pub async fn wait_registered(&self) {
        let want: Vec<&String> = self
            .nodes
            .iter()
            .filter(|n| self.agents.contains_key(*n))
            .collect();
        let ok = eventually(Duration::from_secs(10), || async {
            let nodes = self
                .client()
                .list_nodes(self.request(wire::ListNodesRequest {}))
                .await
                .ok()?
                .into_inner()
                .nodes;
            want.iter()
                .all(|w| nodes.iter().any(|n| &&n.name == w && n.state == "healthy"))
                .then_some(())
        })
        .await;
        assert!(ok.is_some(), "nodes {want:?} did not all register");
    }

    pub fn client(&self) -> MasterClient<Channel> {
        MasterClient::new(self.channel.clone().expect("the master is up"))
    }

    /// A request with the admin token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {}", self.token)).unwrap(),
        );
        request
    }

    /// Deploys definitions (TOML texts); the events, or the status it failed with.
    pub async fn deploy(&self, definitions: &[&str]) -> Result<Vec<wire::DeployEvent>, Status> {
        let request = wire::DeployRequest {
            definitions: definitions
                .iter()
                .enumerate()
                .map(|(i, toml)| wire::Definition {
                    file: format!("def{i}.toml"),
                    toml: toml.to_string(),
                })
                .collect(),
        };
        let mut stream = self
            .client()
            .deploy(self.request(request))
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.push(event?);
        }
        Ok(events)
    }

    /// (node, generation) of every copy of `service` the master knows.
    pub async fn copies(&self, service: &str) -> Vec<(String, u64)> {
        let reply = self
            .client()
            .status(self.request(wire::StatusRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let mut copies: Vec<(String, u64)> = reply
            .services
            .into_iter()
            .filter(|s| s.name == service)
            .map(|s| (s.node, s.generation))
            .collect();
        copies.sort();
        copies
    }

    /// Nodes whose runtime holds an instance of `service`.
    pub fn hosts(&self, service: &str) -> Vec<String> {
        self.runtimes
            .iter()
            .filter(|(_, r)| r.instances().iter().any(|o| o.service == service))
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub async fn events(&self) -> Vec<String> {
        self.client()
            .status(self.request(wire::StatusRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .events
            .into_iter()
            .map(|e| format!("{}: {}", e.node, e.message))
            .collect()
    }

    /// A node-facing client that presents `node`'s own certificate, as its agent would.
    pub async fn as_node(
        &self,
        node: &str,
    ) -> mcp_proto::master::v1::nodes_client::NodesClient<Channel> {
        let data = self.dir.path().join(node).join("data");
        let read = |f: &str| std::fs::read_to_string(data.join(f)).unwrap();
        let ca = mcp_pki::cert::certs_from_pem(&read("ca.pem"))
            .unwrap()
            .remove(0);
        let identity =
            mcp_pki::tls::Identity::from_pem(&read("node.pem"), &read("node-key.pem"), &[])
                .unwrap();
        let transport = ClientTransport {
            connect_timeout: Some(Duration::from_secs(2)),
            request_timeout: Some(Duration::from_secs(5)),
            tls: Some(ClientTls {
                config: mcp_pki::tls::client_config(&ca, Some(&identity)).unwrap(),
                server_name: mcp_pki::MASTER_NAME.to_string(),
            }),
        };
        mcp_proto::master::v1::nodes_client::NodesClient::new(
            transport.connect(&self.master_address()).await.unwrap(),
        )
    }

    pub async fn shutdown(mut self) {
        for node in self.nodes.clone() {
            self.stop_agent(&node).await;
        }
        self.stop_master().await;
    }
}

/// Polls `check` every 20 ms until it gives Some or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
