//! `agent-rss`: the RSS of a real `mcp-agent` process (the binary itself, spawned
//! directly: its own pid, no wrapper), enrolled with the join token and registered
//! with a real master, once per runtime (exec, docker): idle, then with one
//! service deployed through the master and answering on its published port. With
//! the exec runtime the instance's supervisor (`mcp-agent supervise`, a process
//! of its own) is reported beside it.

use std::io::{Read as _, Write as _};

use super::*;

/// The agent's address (127.0.0.62:9444; the master is on 127.0.0.61).
const AGENT: &str = "127.0.0.62:9444";
/// Samples of the RSS per state, one a second; the figure is the last (VmRSS),
/// the peak is VmHWM.
const SAMPLES: u32 = 5;

pub(crate) async fn agent_rss(cpu: Option<u32>, runtimes: &[String]) -> anyhow::Result<()> {
    for runtime in runtimes {
        if runtime != "exec" && runtime != "docker" {
            bail!("agent-rss: runtime must be exec or docker, not {runtime}");
        }
    }
    let hello = hello_fixture(runtimes.iter().any(|r| r == "docker"))?;
    let dir = std::env::temp_dir().join(format!("mcp-sim-agent-{}", std::process::id()));
    let _master = Master::start(&dir, "1s", 3, "1s", cpu)?;
    let bins = mcp_local_fleet::Binaries::find()?;
    let (join_token, _) = master_secrets(&bins.path("mcp-master"), &dir)?;
    for runtime in runtimes {
        one_runtime(&dir, &bins.path("mcp-agent"), &join_token, runtime, &hello).await?;
    }
    Ok(())
}

/// Builds tests/fixtures/hello-http (and, for Docker, imports `mcp-test/hello:1`);
/// returns the static binary's path.
fn hello_fixture(image: bool) -> anyhow::Result<PathBuf> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hello-http/build.sh");
    let mut command = Command::new("bash");
    command.arg(&script);
    if !image {
        command.arg("--no-image");
    }
    let out = command
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim();
    if path.is_empty() {
        bail!("{} printed no path", script.display());
    }
    Ok(PathBuf::from(path))
}

/// Stops the agent (SIGTERM, then SIGKILL after 10 s) on every way out.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        mcp_local_fleet::send_signal(self.0.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        mcp_local_fleet::send_signal(self.0.id(), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

async fn one_runtime(
    dir: &Path,
    bin: &Path,
    join_token: &str,
    runtime: &str,
    hello: &Path,
) -> anyhow::Result<()> {
    let node = format!("rss-{runtime}");
    let agent_dir = dir.join(&node);
    std::fs::create_dir_all(&agent_dir)?;
    let config = agent_dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{node}\"\nmaster = \"{MASTER}\"\nlisten = \"{AGENT}\"\ndata_dir = \"{}\"\nsrv_root = \"{}\"\nruntime = \"{runtime}\"\njoin_token = \"{join_token}\"\n",
            agent_dir.join("data").display(),
            agent_dir.join("srv").display()
        ),
    )?;
    let log = std::fs::File::create(agent_dir.join("agent.log"))?;
    let agent = Agent(
        Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?,
    );
    let pid = agent.0.id();
    let log_path = agent_dir.join("agent.log");
    let died = |what: &str| {
        anyhow::anyhow!(
            "agent-rss: the {runtime} agent {what}; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of(&node).await != "healthy" {
        if !alive(pid) {
            return Err(died("exited"));
        }
        if Instant::now() > deadline {
            return Err(died("did not register as healthy within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = sample(pid).await;
    if !alive(pid) {
        return Err(died("exited while measured"));
    }
    println!(
        "agent-rss: mcp-agent pid {pid}, {runtime} runtime, registered, heartbeating every 1s, idle: RSS {:.1}MiB ({})",
        mib(idle),
        split(pid)
    );

    let service = format!("rss-hello-{runtime}");
    let toml = match runtime {
        "exec" => format!(
            "name = \"{service}\"\nnode = \"{node}\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n",
            hello.display()
        ),
        _ => format!(
            "name = \"{service}\"\nnode = \"{node}\"\n[[components]]\nname = \"web\"\nimage = \"mcp-test/hello:1\"\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
        ),
    };
    let started = Instant::now();
    let deployed = deploy(&service, &toml).await;
    let measured = match deployed {
        Ok(address) => {
            let page = http_get(&address);
            if !page.contains(&format!("hello from {service} on {node}")) {
                Err(anyhow::anyhow!(
                    "agent-rss: {service} at {address} answered {page:?}"
                ))
            } else {
                let answered = started.elapsed();
                let with = sample(pid).await;
                let supervisors = supervisors(pid);
                let extra = if supervisors.is_empty() {
                    String::new()
                } else {
                    let sizes: Vec<String> = supervisors
                        .iter()
                        .map(|p| format!("pid {p} {:.1}MiB ({})", mib(rss(*p)), split(*p)))
                        .collect();
                    format!(
                        "; its supervisor (mcp-agent supervise): {}",
                        sizes.join(", ")
                    )
                };
                println!(
                    "agent-rss: mcp-agent pid {pid}, {runtime} runtime, one service ({service}, answering on {address} {} ms after deploy): RSS {:.1}MiB ({}), peak {:.1}MiB{extra}",
                    answered.as_millis(),
                    mib(with),
                    split(pid),
                    mib(status_field(pid, "VmHWM"))
                );
                Ok(())
            }
        }
        Err(e) => Err(e),
    };
    // Removed through the master whatever happened, so nothing of ours is left.
    if let Ok(mut client) = operator() {
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            client.remove(wire::ServiceRequest {
                service: service.clone(),
            }),
        )
        .await;
    }
    if runtime == "docker" {
        remove_containers(&node);
    }
    drop(agent);
    measured
}

/// Whether the process is still there (and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// VmRSS after SAMPLES seconds (a sample a second: the last).
async fn sample(pid: u32) -> u64 {
    let mut last = 0;
    for _ in 0..SAMPLES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = rss(pid);
    }
    last
}

/// A `/proc/PID/status` field in kB (`VmHWM`, `RssAnon`, `RssFile`), in bytes.
fn status_field(pid: u32, field: &str) -> u64 {
    let prefix = format!("{field}:");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// What the RSS is made of: the process's own memory (anonymous: heap, stacks)
/// and the pages of files it maps (mostly the binary's code, clean, shared with
/// every process of the same binary, and given back under memory pressure).
fn split(pid: u32) -> String {
    format!(
        "anonymous {:.1}MiB, file-backed {:.1}MiB",
        mib(status_field(pid, "RssAnon")),
        mib(status_field(pid, "RssFile"))
    )
}

/// The agent's exec supervisors: processes whose command line is
/// `<mcp-agent> supervise DIR`, started by the agent (they are put in a session
/// of their own, so not by parent: by the agent's executable).
fn supervisors(agent: u32) -> Vec<u32> {
    let Ok(exe) = std::fs::read_link(format!("/proc/{agent}/exe")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == agent || std::fs::read_link(format!("/proc/{pid}/exe")).ok() != Some(exe.clone())
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"supervise".as_slice()) {
            found.push(pid);
        }
    }
    found
}

/// Deploys one definition through the master; returns its route's published
/// address once the master lists it.
async fn deploy(service: &str, toml: &str) -> anyhow::Result<String> {
    let mut client = operator()?;
    let mut stream = tokio::time::timeout(
        Duration::from_secs(60),
        client.deploy(wire::DeployRequest {
            definitions: vec![wire::Definition {
                file: format!("{service}.toml"),
                toml: toml.to_string(),
            }],
        }),
    )
    .await
    .context("deploy: no answer in 60 s")??
    .into_inner();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = tokio::time::timeout(left, stream.next())
            .await
            .context("deploy: not done in 120 s")?
        else {
            break;
        };
        let event = event.with_context(|| format!("deploy {service}"))?;
        if let Some(wire::deploy_event::Event::Failed(f)) = event.event {
            bail!("deploy {service}: {}", f.message);
        }
    }
    let services = client
        .list(wire::ListRequest {})
        .await
        .context("list")?
        .into_inner()
        .services;
    services
        .iter()
        .filter(|s| s.name == service)
        .flat_map(|s| s.components.iter())
        .flat_map(|c| c.routes.iter())
        .map(|r| r.address.clone())
        .find(|a| !a.is_empty())
        .with_context(|| format!("deploy {service}: no published address listed"))
}

/// The body of `GET /` on `address`, retried for at most 10 s until it answers.
fn http_get(address: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let addr: std::net::SocketAddr = address
                .parse()
                .map_err(|_| std::io::Error::other("not an address"))?;
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: rss\r\n\r\n")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            Ok(reply) if reply.starts_with("HTTP/1.") => return reply,
            _ if Instant::now() > deadline => return String::new(),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Containers the docker agent left for `node` (none after a remove; a failed
/// deploy's, by label).
fn remove_containers(node: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=mcp.node={node}")])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
