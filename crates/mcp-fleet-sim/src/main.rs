//! `mcp-fleet-sim`: a fleet simulator for benchmarks. Many lightweight simulated
//! agents in this process speak the real protocol (Register, the Heartbeats stream)
//! to a real `mcp-master` process, and the figures the issue asks for are printed:
//! heartbeat throughput and latency, master memory per fleet size, how fast a
//! restarted master is repopulated, failure-detection time against its bound, and
//! the idle RSS of a real `mcp-agent`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use mcp_agent::register::{jitter, BACKOFF_MAX, BACKOFF_MIN};
use mcp_pki::rustls::pki_types::CertificateDer;
use mcp_pki::tls::Identity;
use mcp_pki::MASTER_NAME;
use mcp_proto::master::v1::{self as wire, master_client::MasterClient, nodes_client::NodesClient};
use mcp_proto::tonic::metadata::{Ascii, MetadataValue};
use mcp_proto::tonic::service::interceptor::InterceptedService;
use mcp_proto::tonic::service::Interceptor;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::Request;
use mcp_proto::transport::{ClientTls, ClientTransport};

mod agent_rss;
mod deploys;
mod detect;
mod heartbeats;
mod memory;
mod repopulate;

#[derive(Parser)]
#[command(
    name = "mcp-fleet-sim",
    about = "Benchmarks mcp-master with simulated agents"
)]
struct Cli {
    /// CPU to pin the master to with taskset (none: no pinning).
    #[arg(long, global = true)]
    master_cpu: Option<u32>,
    /// Give the master `[dns] backend = "embedded"` answering on this address
    /// (UDP and TCP), for a DNS load beside the fleet (bench/fleet-sim.sh --dns-load).
    #[arg(long, global = true)]
    master_dns: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Heartbeats per second the master sustains, with handling latency.
    Heartbeats {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Offered heartbeats per second across all nodes.
        #[arg(long, default_value_t = 20000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Master RSS with N registered, heartbeating nodes.
    Memory {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        nodes: Vec<usize>,
    },
    /// Time for N agents to repopulate a restarted master.
    Repopulate {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
    },
    /// Failure-detection time of a frozen and of a dead agent against the bound.
    Detect {
        #[arg(long, default_value_t = 10)]
        runs: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3)]
        missed: u32,
        #[arg(long, default_value_t = 100)]
        probe_timeout_ms: u64,
    },
    /// RSS of a real mcp-agent registered with a real master, per runtime: idle,
    /// then with one service deployed and answering.
    AgentRss {
        /// The runtimes to measure, one agent after the other.
        #[arg(long, value_delimiter = ',', default_value = "exec,docker")]
        runtimes: Vec<String>,
    },
    /// Deploys per second end to end: one batch of one-component services placed on
    /// simulated nodes that answer Deploy like an agent (no runtime), from the
    /// request to the last acknowledgement.
    Deploys {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 10000)]
        services: usize,
        /// Skip the warm-up `list` that connects the master to every agent first.
        #[arg(long)]
        cold: bool,
    },
}

const MASTER: &str = "127.0.0.61:9443";

/// A master process started for one measurement.
struct Master {
    child: Child,
    dir: PathBuf,
    /// Leave the data dir on drop (a successor uses it).
    keep_dir: bool,
}

impl Master {
    fn start(
        dir: &Path,
        interval: &str,
        missed: u32,
        probe: &str,
        cpu: Option<u32>,
    ) -> anyhow::Result<Master> {
        std::fs::create_dir_all(dir)?;
        let bin = mcp_local_fleet::Binaries::find()?.path("mcp-master");
        let join_token = master_secrets(&bin, dir)?;
        let config = dir.join("master.toml");
        std::fs::write(
            &config,
            format!(
                "node = \"sim-00000\"\nlisten = \"{MASTER}\"\ndata_dir = \"{}\"\ndomain = \"sim.test\"\nheartbeat_interval = \"{interval}\"\nmissed_heartbeats = {missed}\nprobe_timeout = \"{probe}\"\n[placement]\nmin_free_memory = \"0B\"\nmin_free_disk = \"0B\"\nreserve_memory = \"0B\"\nreserve_disk = \"0B\"\n[users.sim]\npassword_hash = \"{}\"\nrole = \"admin\"\n",
                dir.display(),
                join_token.1
            ) + &MASTER_DNS
                .get()
                .map(|a| format!("[dns]\nbackend = \"embedded\"\nlisten = \"{a}\"\n"))
                .unwrap_or_default(),
        )?;
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let log = std::fs::File::create(dir.join("master.log"))?;
        let child = command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let master = Master {
            child,
            dir: dir.to_path_buf(),
            keep_dir: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(MASTER).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "master did not listen; see {}",
                    dir.join("master.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))?;
        let ca = mcp_pki::cert::certs_from_pem(&ca_pem)?.remove(0);
        let token =
            mcp_pki::join::JoinToken::parse(&join_token.0).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tls = SimTls {
            ca,
            join_secret: token.secret.expose().to_string(),
            token: String::new(),
        };
        // Master::start runs inside the benchmark's runtime; log in on a thread of
        // its own with a runtime of its own.
        let token = std::thread::scope(|scope| scope.spawn(|| login(&tls)).join())
            .map_err(|_| anyhow::anyhow!("login thread panicked"))??;
        if let Ok(mut slot) = TLS.lock() {
            *slot = Some(Arc::new(SimTls { token, ..tls }));
        }
        Ok(master)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        mcp_local_fleet::send_signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // A clean stop first (profilers write their reports on exit), then a kill.
        mcp_local_fleet::send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// VmRSS of a process in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What the simulated agents and operator need to speak TLS to the current master.
struct SimTls {
    ca: CertificateDer<'static>,
    join_secret: String,
    token: String,
}

/// The current master's TLS context (a benchmark binary: one master at a time).
static TLS: Mutex<Option<Arc<SimTls>>> = Mutex::new(None);

/// `--master-dns`: the embedded DNS server's address in every master started.
static MASTER_DNS: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

fn tls() -> anyhow::Result<Arc<SimTls>> {
    TLS.lock()
        .ok()
        .and_then(|t| t.clone())
        .context("no master started")
}

/// `mcp-master init` (or `join-token` when done before) and a password hash for the
/// simulator's operator: (join token, hash).
fn master_secrets(bin: &Path, dir: &Path) -> anyhow::Result<(String, String)> {
    use std::io::Write;
    let sub = if dir.join("ca.pem").exists() {
        "join-token"
    } else {
        "init"
    };
    let out = Command::new(bin)
        .arg(sub)
        .arg("--data-dir")
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("mcp-master {sub}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut child = Command::new(bin)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"sim")?;
    }
    let hash = String::from_utf8_lossy(&child.wait_with_output()?.stdout)
        .trim()
        .to_string();
    Ok((token, hash))
}

fn transport(tls: &SimTls, identity: Option<&Identity>) -> anyhow::Result<ClientTransport> {
    Ok(ClientTransport {
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: None,
        tls: Some(ClientTls {
            config: mcp_pki::tls::client_config(&tls.ca, identity)?,
            server_name: MASTER_NAME.to_string(),
        }),
    })
}

fn login(tls: &SimTls) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = transport(tls, None)?.connect(MASTER).await?;
        let reply = MasterClient::new(channel)
            .login(wire::LoginRequest {
                user: "sim".to_string(),
                password: "sim".to_string(),
            })
            .await?
            .into_inner();
        Ok(reply.token)
    })
}

/// A channel without a client certificate (enrollment).
fn channel() -> anyhow::Result<Channel> {
    let tls = tls()?;
    Ok(transport(&tls, None)?.lazy(MASTER)?)
}

/// A master client carrying the simulator's operator token.
fn operator() -> anyhow::Result<MasterClient<InterceptedService<Channel, impl Interceptor + Clone>>>
{
    let tls = tls()?;
    let header: MetadataValue<Ascii> = format!("Bearer {}", tls.token).parse()?;
    let channel = transport(&tls, None)?.lazy(MASTER)?;
    Ok(MasterClient::with_interceptor(
        channel,
        move |mut r: Request<()>| {
            r.metadata_mut().insert("authorization", header.clone());
            Ok(r)
        },
    ))
}

/// Enrolls simulated node `i` and returns a channel carrying its certificate.
async fn node_channel(i: usize) -> anyhow::Result<Channel> {
    let tls = tls()?;
    let reply = NodesClient::new(channel()?)
        .enroll(wire::EnrollRequest {
            name: node_name(i),
            secret: tls.join_secret.clone(),
        })
        .await
        .with_context(|| format!("enroll {}", node_name(i)))?
        .into_inner();
    let identity = Identity::from_pem(&reply.cert_pem, &reply.key_pem, &[])?;
    Ok(transport(&tls, Some(&identity))?.lazy(MASTER)?)
}

fn node_name(i: usize) -> String {
    format!("sim-{i:05}")
}

/// An address per simulated node; nothing listens there unless a test makes it.
fn node_address(i: usize) -> String {
    format!(
        "127.0.{}.{}:{}",
        100 + i / 60000,
        1 + (i / 250) % 250,
        20000 + i % 250
    )
}

fn register_request(i: usize, address: String) -> wire::RegisterRequest {
    wire::RegisterRequest {
        name: node_name(i),
        role: "worker".to_string(),
        address,
        arch: if i.is_multiple_of(3) {
            "arm64"
        } else {
            "amd64"
        }
        .to_string(),
        version: "sim".to_string(),
        rpcs: mcp_proto::AGENT_RPCS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        pools: vec![format!("pool-{}", i % 10)],
        resources: Some(resources()),
        services: Vec::new(),
        state_digest: "sim".to_string(),
        containers: 0,
        ..Default::default()
    }
}

fn resources() -> wire::NodeResources {
    wire::NodeResources {
        cpu_cores: 4.0,
        cpu_used: 0.1,
        memory_total: 8 << 30,
        memory_free: 6 << 30,
        disk_total: 64 << 30,
        disk_free: 40 << 30,
    }
}

fn heartbeat(i: usize) -> wire::HeartbeatRequest {
    wire::HeartbeatRequest {
        name: node_name(i),
        resources: Some(resources()),
        containers: 0,
        state_digest: "sim".to_string(),
        state_unknown: false,
    }
}

/// Registers nodes `range` with bounded concurrency; one channel per node.
async fn register_all(range: std::ops::Range<usize>, channels: &[Channel]) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(range)
        .map(|i| {
            let mut client = NodesClient::new(channels[i % channels.len()].clone());
            async move {
                client
                    .register(register_request(i, node_address(i)))
                    .await
                    .with_context(|| format!("register {}", node_name(i)))?;
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Latency samples in microseconds and a count of replies, shared by the nodes.
#[derive(Default)]
struct Stats {
    replies: AtomicU64,
    latencies: Mutex<Vec<u32>>,
    measuring: std::sync::atomic::AtomicBool,
}

/// One simulated node's heartbeat stream: sends a heartbeat every `interval` after
/// `offset`, timing each reply, until `stop`.
async fn heartbeat_loop(
    i: usize,
    channel: Channel,
    interval: Duration,
    offset: Duration,
    stats: Arc<Stats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut client = NodesClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let Ok(response) = client
        .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut replies = response.into_inner();
    let sent: Arc<Mutex<std::collections::VecDeque<Instant>>> = Arc::default();
    let reader = {
        let sent = sent.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut local = Vec::new();
            while let Some(Ok(_)) = replies.next().await {
                let at = sent.lock().map(|mut q| q.pop_front()).ok().flatten();
                if stats.measuring.load(Ordering::Relaxed) {
                    stats.replies.fetch_add(1, Ordering::Relaxed);
                    if let Some(at) = at {
                        local.push(at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
            }
            if let Ok(mut all) = stats.latencies.lock() {
                all.extend(local);
            }
        })
    };
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Ok(mut q) = sent.lock() {
                    q.push_back(Instant::now());
                }
                if tx.send(heartbeat(i)).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(tx);
    let _ = reader.await;
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

/// Starts `nodes` heartbeat loops at `rate` heartbeats per second in all.
fn start_loops(
    nodes: usize,
    rate: u64,
    channels: &[Channel],
    stats: &Arc<Stats>,
) -> (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let interval = Duration::from_secs_f64(nodes as f64 / rate.max(1) as f64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles = (0..nodes)
        .map(|i| {
            let offset = interval.mul_f64(i as f64 / nodes as f64);
            tokio::spawn(heartbeat_loop(
                i,
                channels[i % channels.len()].clone(),
                interval,
                offset,
                stats.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    (stop_tx, handles)
}

/// One enrolled channel per simulated node.
async fn channels(n: usize) -> anyhow::Result<Vec<Channel>> {
    let results: Vec<anyhow::Result<Channel>> = futures_util::stream::iter(0..n)
        .map(node_channel)
        .buffered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn state_of(node: &str) -> String {
    let Ok(mut client) = operator() else {
        return String::new();
    };
    client
        .list_nodes(wire::ListNodesRequest {})
        .await
        .ok()
        .and_then(|r| {
            r.into_inner()
                .nodes
                .into_iter()
                .find(|n| n.name == node)
                .map(|n| n.state)
        })
        .unwrap_or_default()
}

/// One simulator at a time on this machine: every run starts its master on the
/// same fixed address ([`MASTER`]), so a second run (another benchmark, a CI smoke
/// test) waits here for the first to end, at most 10 minutes. The lock is the
/// process's: the kernel releases it however the process ends.
fn take_turn() -> anyhow::Result<std::fs::File> {
    let path = std::env::temp_dir().join("mcp-fleet-sim.lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    if file.try_lock().is_ok() {
        return Ok(file);
    }
    eprintln!(
        "mcp-fleet-sim: waiting for another mcp-fleet-sim to end ({} is locked)",
        path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if file.try_lock().is_ok() {
            return Ok(file);
        }
    }
    bail!(
        "another mcp-fleet-sim held {} for 10 minutes",
        path.display()
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _turn = take_turn()?;
    if let Some(dns) = cli.master_dns {
        let _ = MASTER_DNS.set(dns);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Heartbeats {
                nodes,
                rate,
                seconds,
            } => heartbeats::heartbeats(cli.master_cpu, nodes, rate, seconds).await,
            Cmd::Memory { nodes } => memory::memory(cli.master_cpu, nodes).await,
            Cmd::Repopulate { nodes } => repopulate::repopulate(cli.master_cpu, nodes).await,
            Cmd::Detect {
                runs,
                interval_ms,
                missed,
                probe_timeout_ms,
            } => detect::detect(cli.master_cpu, runs, interval_ms, missed, probe_timeout_ms).await,
            Cmd::Deploys {
                nodes,
                services,
                cold,
            } => deploys::deploys(cli.master_cpu, nodes, services, cold).await,
            Cmd::AgentRss { runtimes } => agent_rss::agent_rss(cli.master_cpu, &runtimes).await,
        }
    })
}
