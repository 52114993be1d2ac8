//! End to end, on the real binaries: deploy a service through master and agent, reach
//! it on its published port, stop/start/restart it, SIGKILL the agent while it serves
//! and check the restarted agent adopts it (exactly one copy), then remove it and find
//! nothing left. Once per runtime: Docker, Podman (through its Docker API), exec.
//! An update whose new instance cannot start brings the previous one back, on the same
//! address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// What the scenario needs to know of a runtime.
struct Runtime {
    name: &'static str,
    socket: Option<PathBuf>,
}

/// Instances of `service` as the runtime shows them (container IDs or process PIDs).
fn instances(runtime: &Runtime, service: &str, binary: &Path) -> Vec<String> {
    match runtime.name {
        "exec" => processes_of(service, binary)
            .into_iter()
            .map(|p| p.to_string())
            .collect(),
        _ => containers(service, runtime.socket.as_deref()),
    }
}

fn definition(dir: &Path, service: &str, runtime: &Runtime, binary: &Path) -> PathBuf {
    let component = if runtime.name == "exec" {
        format!("driver = \"exec\"\ncommand = [\"{}\"]\n", binary.display())
    } else {
        format!("image = \"mcp-test/hello:1\"\nvolumes = [\"/srv/{service}/data:/data\"]\n")
    };
    write_definition(dir, service, &component, "")
}

/// An update of `definition` whose instance is created but cannot start: a program
/// that does not exist (exec), a mount under the image's only file (containers).
fn broken_definition(dir: &Path, service: &str, runtime: &Runtime) -> PathBuf {
    let component = if runtime.name == "exec" {
        "driver = \"exec\"\ncommand = [\"/nonexistent/mcp-e2e-hello\"]\n".to_string()
    } else {
        format!("image = \"mcp-test/hello:1\"\nvolumes = [\"/srv/{service}/data:/hello/data\"]\n")
    };
    write_definition(dir, service, &component, "-broken")
}

fn write_definition(dir: &Path, service: &str, component: &str, suffix: &str) -> PathBuf {
    let text = format!(
        "name = \"{service}\"\n\n[[components]]\nname = \"web\"\n{component}restart = \"unless-stopped\"\n\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
    );
    let path = dir.join(format!("{service}{suffix}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn scenario(runtime: Runtime, node: &str, ip: &str) {
    let binary = fixture(
        runtime
            .socket
            .as_deref()
            .filter(|_| runtime.name == "podman"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::single(tmp.path(), node, ip, runtime.name);
    spec.runtime_socket = runtime.socket.clone();
    let mut fleet = Fleet::start(spec).unwrap();
    let service = format!("e2e-{}", runtime.name);
    let def = definition(tmp.path(), &service, &runtime, &binary);
    let def = def.to_str().unwrap();
    let hello = format!("hello from {service} on {node}");

    // Deploy and reach it.
    mcp_ok(&fleet, &["deploy", def]);
    let address = address_of(&fleet, &service);
    assert!(
        address.starts_with(&format!("{ip}:")),
        "published on the node's address: {address}"
    );
    assert!(
        serves(&address, &hello),
        "{service} should answer on {address}"
    );
    let ps = fleet.mcp_json(&["ps"]).unwrap();
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == service.as_str())
        .unwrap();
    assert_eq!(row["state"], "running");
    assert_eq!(row["node"], node);
    assert!(row["started_at"].is_string(), "started_at: {row}");
    assert_eq!(instances(&runtime, &service, &binary).len(), 1);

    // Deploy is idempotent: the same instance stays.
    let before = instances(&runtime, &service, &binary);
    mcp_ok(&fleet, &["deploy", def]);
    assert_eq!(
        instances(&runtime, &service, &binary),
        before,
        "a repeated deploy keeps the instance"
    );

    // An update that fails after the old instance was removed brings it back.
    let broken = broken_definition(tmp.path(), &service, &runtime);
    let out = fleet.mcp(&["deploy", broken.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a broken update deployed: {text}");
    assert!(
        text.contains("step start failed") && text.contains("previous definition was restored"),
        "{text}"
    );
    assert_eq!(address_of(&fleet, &service), address, "same address");
    assert!(
        serves(&address, &hello),
        "the previous instance serves again"
    );
    assert_eq!(instances(&runtime, &service, &binary).len(), 1);

    // Stop, start, restart.
    mcp_ok(&fleet, &["stop", &service]);
    assert!(silent(&address), "stopped service still answers");
    let status = fleet.mcp_json(&["status", &service]).unwrap();
    assert_eq!(status["services"][0]["desired"], "stopped");
    assert_eq!(status["services"][0]["drift"], false, "{status}");
    mcp_ok(&fleet, &["start", &service]);
    assert!(serves(&address, &hello));
    mcp_ok(&fleet, &["restart", &service]);
    assert!(serves(&address, &hello));
    let logs = mcp_ok(&fleet, &["logs", &service, "--tail", "50"]);
    assert!(logs.contains("listening on"), "logs: {logs}");
    follow_logs_sees_a_request(&fleet, &service, &address);

    // Drift: the container stopped behind MCP's back shows in `mcp status`; `start`
    // brings it back. (The exec supervisor restarts its process itself.)
    if runtime.name != "exec" {
        let id = instances(&runtime, &service, &binary).remove(0);
        let mut docker = std::process::Command::new("docker");
        if let Some(sock) = &runtime.socket {
            docker.env("DOCKER_HOST", format!("unix://{}", sock.display()));
        }
        let out = docker.args(["stop", "-t", "5", &id]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = fleet.mcp_json(&["status", &service]).unwrap();
        let s = &status["services"][0];
        assert_eq!(s["drift"], true, "{status}");
        assert_eq!(s["components"][0]["desired"], "running");
        assert_eq!(s["components"][0]["observed"], "exited");
        mcp_ok(&fleet, &["start", &service]);
        assert!(serves(&address, &hello));
        let status = fleet.mcp_json(&["status", &service]).unwrap();
        assert_eq!(status["services"][0]["drift"], false, "{status}");
    }

    // SIGKILL the agent: the service keeps serving; the restarted agent adopts it.
    let before = instances(&runtime, &service, &binary);
    fleet.signal(node, libc::SIGKILL).unwrap();
    assert!(
        serves(&address, &hello),
        "the service must outlive its agent"
    );
    fleet.start_agent(node).unwrap();
    fleet
        .wait_registered(&[node.to_string()], Duration::from_secs(20))
        .unwrap();
    let list = fleet.mcp_json(&["list"]).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service.as_str())
        .unwrap();
    assert_eq!(entry["running"], 1, "adopted after agent restart: {entry}");
    mcp_ok(&fleet, &["deploy", def]);
    assert_eq!(
        instances(&runtime, &service, &binary),
        before,
        "exactly the one adopted instance"
    );
    assert!(serves(&address, &hello));

    // Remove: nothing left behind.
    mcp_ok(&fleet, &["remove", &service]);
    assert!(silent(&address));
    assert!(
        eventually(Duration::from_secs(10), || instances(
            &runtime, &service, &binary
        )
        .is_empty()
        .then_some(()))
        .is_some(),
        "instances left after remove"
    );
    assert_eq!(
        db_rows(&fleet, node, &service),
        0,
        "agent.db rows left after remove"
    );
    let port: std::net::SocketAddr = address.parse().unwrap();
    assert!(
        std::net::TcpListener::bind(port).is_ok(),
        "port {port} still held after remove"
    );
    let list = fleet.mcp_json(&["list"]).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != service.as_str()),
        "{list}"
    );
    fleet.stop();
}

/// `mcp logs -f` shows a request made after it started.
fn follow_logs_sees_a_request(fleet: &Fleet, service: &str, address: &str) {
    let (mut child, rx) = follow_logs(fleet, service);
    // Drain what was there before, then make one request and wait for its line.
    let mut before = 0;
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(700)) {
        before += usize::from(line.contains("\"GET /"));
    }
    assert!(http_get(address).is_some());
    let seen = eventually(Duration::from_secs(10), || {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.contains("\"GET /"))
    });
    mcp_local_fleet::send_signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    assert!(
        seen.is_some(),
        "logs -f did not show the new request ({before} before)"
    );
}

#[test]
fn docker_lifecycle() {
    scenario(
        Runtime {
            name: "docker",
            socket: None,
        },
        "dk1",
        "127.0.0.21",
    );
}

#[test]
fn exec_lifecycle() {
    scenario(
        Runtime {
            name: "exec",
            socket: None,
        },
        "ex1",
        "127.0.0.22",
    );
}

/// Starts a private Podman API service for the test; stops it on drop.
struct PodmanService {
    dir: PathBuf,
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let script = repo_root().join("tests/fixtures/podman-service.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("--stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_lifecycle() {
    if std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_err()
    {
        let message = "podman is not installed: the Podman lifecycle test cannot run";
        if in_ci() {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
        return;
    }
    // Short path: the socket path must fit in sockaddr_un.
    let dir = PathBuf::from(format!("/tmp/mcp-pm-{}", std::process::id()));
    let service = PodmanService { dir: dir.clone() };
    let script = repo_root().join("tests/fixtures/podman-service.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman service did not start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    scenario(
        Runtime {
            name: "podman",
            socket: Some(dir.join("podman.sock")),
        },
        "pm1",
        "127.0.0.23",
    );
    drop(service);
}
