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
    /// RSS of a real, idle mcp-agent (exec runtime) registered with a real master.
    AgentRss,
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

async fn heartbeats(cpu: Option<u32>, nodes: usize, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-{}", std::process::id()));
    let master = Master::start(&dir, "30s", 3, "5s", cpu)?;
    let channels = channels(nodes).await?;
    register_all(0..nodes, &channels).await?;
    let stats = Arc::new(Stats::default());
    let (stop, handles) = start_loops(nodes, rate, &channels, &stats);
    if let Some(dns) = MASTER_DNS.get() {
        let dns = *dns;
        let waited = Instant::now();
        tokio::task::spawn_blocking(move || zone_published(dns)).await??;
        eprintln!(
            "heartbeats: the master's DNS answers the zone {:.1} s after the fleet registered",
            waited.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_seconds(master.pid());
    stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    if MASTER_DNS.get().is_some() {
        eprintln!(
            "heartbeats: measuring {seconds} s from unix ms {}",
            unix_ms()
        );
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    if MASTER_DNS.get().is_some() {
        eprintln!("heartbeats: measured until unix ms {}", unix_ms());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(master.pid()) - cpu0;
    let _ = stop.send(true);
    for h in handles {
        let _ = h.await;
    }
    let replies = stats.replies.load(Ordering::Relaxed);
    let mut lat = stats
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    println!(
        "heartbeats: nodes={nodes} offered={rate}/s achieved={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms master_cpu={:.0}% of one core master_rss={:.1}MiB",
        replies as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        100.0 * cpu_used / elapsed,
        mib(rss(master.pid())),
    );
    Ok(())
}

/// Waits (at most 60 s) until the embedded DNS server on `addr` answers a query in
/// the zone with something other than SERVFAIL: the zone is published once the
/// master's start-up grace is over.
fn zone_published(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut query = vec![0x5e, 0x11, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in "s00000.svc.mcp.sim.test".split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        socket.send_to(&query, addr)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n >= 12 && buf[..2] == query[..2] && buf[3] & 0x0f != 2 {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the master's DNS server on {addr} still answers SERVFAIL after 60 s")
}

async fn memory(cpu: Option<u32>, sizes: Vec<usize>) -> anyhow::Result<()> {
    for nodes in sizes {
        let dir = std::env::temp_dir().join(format!("mcp-sim-mem-{}-{nodes}", std::process::id()));
        let master = Master::start(&dir, "30s", 3, "5s", cpu)?;
        let idle = rss(master.pid());
        let channels = channels(nodes).await?;
        register_all(0..nodes, &channels).await?;
        let stats = Arc::new(Stats::default());
        // Every node heartbeats every 30 s, spread out; memory settles after a few.
        let (stop, handles) = start_loops(nodes, (nodes as u64 / 30).max(1), &channels, &stats);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut client = operator()?;
        let listed = client
            .list_nodes(wire::ListNodesRequest {})
            .await?
            .into_inner()
            .nodes
            .len();
        println!(
            "memory: nodes={nodes} registered={listed} master_rss={:.1}MiB (idle {:.1}MiB, {:.1}KiB per node)",
            mib(rss(master.pid())),
            mib(idle),
            (rss(master.pid()).saturating_sub(idle)) as f64 / 1024.0 / nodes as f64
        );
        let _ = stop.send(true);
        for h in handles {
            let _ = h.await;
        }
        drop(master);
    }
    Ok(())
}

/// A simulated agent that re-registers (with the agent's backoff) whenever its
/// heartbeat stream breaks, as a real agent does.
async fn resilient_node(
    i: usize,
    channel: Channel,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut stop = stop;
    loop {
        let mut client = NodesClient::new(channel.clone());
        if client
            .register(register_request(i, node_address(i)))
            .await
            .is_ok()
        {
            backoff = BACKOFF_MIN;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let _ = tx.send(heartbeat(i)).await;
            if let Ok(response) = client
                .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                let mut replies = response.into_inner();
                let mut ticker = tokio::time::interval(interval);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => { if tx.send(heartbeat(i)).await.is_err() { break } }
                        reply = replies.next() => match reply { Some(Ok(_)) => {}, _ => break },
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        let wait = backoff + jitter(backoff, &node_name(i));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn count_nodes() -> usize {
    let Ok(mut client) = operator() else { return 0 };
    client
        .list_nodes(wire::ListNodesRequest {})
        .await
        .map_or(0, |r| r.into_inner().nodes.len())
}

async fn repopulate(cpu: Option<u32>, nodes: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-repop-{}", std::process::id()));
    let mut master = Master::start(&dir, "5s", 3, "2s", cpu)?;
    let channels = channels(nodes).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = (0..nodes)
        .map(|i| {
            tokio::spawn(resilient_node(
                i,
                channels[i].clone(),
                Duration::from_secs(5),
                stop_rx.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_nodes().await < nodes {
        if Instant::now() > deadline {
            bail!("the first master never saw all {nodes} nodes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        master.kill();
        // The restarted master reuses this data dir (its CA signed the nodes'
        // certificates): the old handle must not delete it when replaced.
        master.keep_dir = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        master = Master::start(&dir, "5s", 3, "2s", cpu)?;
        let listening = t0.elapsed();
        loop {
            if count_nodes().await >= nodes {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("not repopulated within 30s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        println!("repopulate: nodes={nodes} full view after {:.0}ms from master start ({:.0}ms of which to listen)", took.as_secs_f64() * 1000.0, listening.as_secs_f64() * 1000.0);
        times.push(took);
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    drop(master);
    Ok(())
}

/// A TCP listener that accepts and never answers: a frozen agent's probe address.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn frozen_listener(address: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(address).with_context(|| format!("bind {address}"))?;
    Ok(listener)
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

async fn detect(
    cpu: Option<u32>,
    runs: usize,
    interval_ms: u64,
    missed: u32,
    probe_ms: u64,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-detect-{}", std::process::id()));
    let _master = Master::start(
        &dir,
        &format!("{interval_ms}ms"),
        missed,
        &format!("{probe_ms}ms"),
        cpu,
    )?;
    let interval = Duration::from_millis(interval_ms);
    let bound = interval * missed + Duration::from_millis(probe_ms);
    let mut keep = Vec::new();
    for (kind, frozen) in [
        ("frozen (SIGSTOP-like: probe times out)", true),
        ("dead (stream closed, connection refused)", false),
    ] {
        let mut took = Vec::new();
        for run in 0..runs {
            let i = 50_000 + run + if frozen { 0 } else { 1000 };
            let address = format!("127.0.0.62:{}", 21000 + i % 10000);
            let listener = if frozen {
                Some(frozen_listener(&address)?)
            } else {
                None
            };
            let mut client = NodesClient::new(node_channel(i).await?);
            client
                .register(register_request(i, address.clone()))
                .await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut replies = client
                .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            for _ in 0..5 {
                tokio::time::sleep(interval).await;
                tx.send(heartbeat(i)).await?;
                replies.next().await;
            }
            let last_ms = unix_ms();
            if !frozen {
                drop(tx);
                drop(replies);
            } else {
                // A frozen agent keeps its stream open and sends nothing.
                keep.push((tx, replies));
            }
            let name = node_name(i);
            // The master's own record of the transition is the measurement; polling
            // only waits for it.
            let mut poller = operator()?;
            let unhealthy_at = loop {
                let status = poller
                    .status(wire::StatusRequest { service: None })
                    .await?
                    .into_inner();
                if let Some(e) = status
                    .events
                    .iter()
                    .rev()
                    .find(|e| e.node == name && e.message.contains("-> unhealthy"))
                {
                    break e.at_ms;
                }
                if unix_ms() - last_ms > (bound * 10).as_millis() as i64 {
                    bail!("{name} never became unhealthy");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            took.push(Duration::from_millis((unhealthy_at - last_ms).max(0) as u64));
            drop(listener);
        }
        let mean = took.iter().sum::<Duration>() / took.len().max(1) as u32;
        let max = took.iter().max().copied().unwrap_or_default();
        if frozen {
            println!(
                "detect: {kind}: mean {:.0}ms max {:.0}ms vs bound {:.0}ms (missed {missed} x {interval_ms}ms + probe {probe_ms}ms): {:+.1}%",
                mean.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0,
                bound.as_secs_f64() * 1000.0,
                100.0 * (mean.as_secs_f64() / bound.as_secs_f64() - 1.0)
            );
        } else {
            println!(
                "detect: {kind}: mean {:.1}ms max {:.1}ms after the agent died (probe timeout {probe_ms}ms)",
                mean.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}

async fn agent_rss(cpu: Option<u32>) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mcp-sim-agent-{}", std::process::id()));
    let _master = Master::start(&dir, "1s", 3, "1s", cpu)?;
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let config = agent_dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"idle\"\nmaster = \"{MASTER}\"\nlisten = \"127.0.0.62:9444\"\ndata_dir = \"{}\"\nsrv_root = \"{}\"\nruntime = \"exec\"\n",
            agent_dir.join("data").display(),
            agent_dir.join("srv").display()
        ),
    )?;
    let bin = mcp_local_fleet::Binaries::find()?.path("mcp-agent");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let registered = state_of("idle").await;
    println!("agent-rss: idle mcp-agent (exec runtime, {registered}, heartbeating every 1s) RSS {:.1}MiB", mib(rss(child.id())));
    mcp_local_fleet::send_signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
            } => heartbeats(cli.master_cpu, nodes, rate, seconds).await,
            Cmd::Memory { nodes } => memory(cli.master_cpu, nodes).await,
            Cmd::Repopulate { nodes } => repopulate(cli.master_cpu, nodes).await,
            Cmd::Detect {
                runs,
                interval_ms,
                missed,
                probe_timeout_ms,
            } => detect(cli.master_cpu, runs, interval_ms, missed, probe_timeout_ms).await,
            Cmd::AgentRss => agent_rss(cli.master_cpu).await,
        }
    })
}
