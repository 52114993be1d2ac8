//! Shared pieces of the end-to-end tests: the test image and binary, HTTP checks,
//! and process inspection.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub use mcp_local_fleet::{eventually, Fleet, FleetSpec};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the static hello-http server and imports `mcp-test/hello:1` into Docker (and
/// through `podman_sock` when given); returns the binary's path.
pub fn fixture(podman_sock: Option<&Path>) -> PathBuf {
    PathBuf::from(build_fixture("hello-http", podman_sock))
}

/// Runs tests/fixtures/`name`/build.sh (with `--podman-sock` when given) and returns
/// the last line it prints.
fn build_fixture(name: &str, podman_sock: Option<&Path>) -> String {
    let script = repo_root().join(format!("tests/fixtures/{name}/build.sh"));
    let mut command = Command::new("bash");
    command.arg(&script);
    if let Some(sock) = podman_sock {
        command.arg("--podman-sock").arg(sock);
    }
    let out = command.output().expect("run build.sh");
    assert!(
        out.status.success(),
        "{name}/build.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{name}/build.sh printed nothing"))
        .trim()
        .to_string()
}

/// The command of examples/public-tls.toml and public-l4.toml (also the default of
/// `mcp-test/tls:1`): a TLS server on `MCP_ADDR:MCP_PORT_HTTPS` with the service's
/// internal certificate, answering any GET with a status page that holds
/// [`TLS_PAGE`]. The same for a container (which mounts `/srv/<service>/certs` at
/// `/certs`) and the exec driver (which starts it in `<srv_root>/<service>`).
pub const TLS_COMMAND: [&str; 3] = [
    "sh",
    "-c",
    "exec openssl s_server -quiet -accept ${MCP_ADDR:-0.0.0.0}:${MCP_PORT_HTTPS:-8443} \
     -cert certs/cert.pem -key certs/key.pem -www",
];

/// A string in every page the TLS server answers with.
pub const TLS_PAGE: &str = "Ciphers supported in s_server binary";

/// Builds `mcp-test/tls:1` (the host's openssl and sh, serving TLS with the service's
/// internal certificate) with tests/fixtures/tls-hello/build.sh and imports it into
/// Docker (and through `podman_sock` when given); returns the image reference.
pub fn tls_image(podman_sock: Option<&Path>) -> String {
    build_fixture("tls-hello", podman_sock)
}

/// GET / on `address`; the body, or None when nothing answers.
pub fn http_get(address: &str) -> Option<String> {
    let addr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// Waits until `address` answers with a body containing `want`.
pub fn serves(address: &str, want: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        http_get(address).filter(|b| b.contains(want))
    })
    .is_some()
}

/// Waits until nothing answers on `address`.
pub fn silent(address: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        http_get(address).is_none().then_some(())
    })
    .is_some()
}

/// The published address of a service's first route, from `mcp list --json`.
pub fn address_of(fleet: &Fleet, service: &str) -> String {
    let list = fleet.mcp_json(&["list"]).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("{service} not in {list}"));
    entry["routes"][0]["address"].as_str().unwrap().to_string()
}

/// Runs the CLI and asserts its exit code, returning stdout.
pub fn mcp_ok(fleet: &Fleet, args: &[&str]) -> String {
    let out = fleet.mcp(args);
    assert!(
        out.status.success(),
        "mcp {} exited {:?}\nstdout: {}\nstderr: {}\nagent logs: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fleet
            .spec
            .nodes
            .iter()
            .map(|n| fleet.log(&n.name))
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// PIDs of processes whose environment holds `MCP_SERVICE=<service>` and whose
/// command is `program`.
pub fn processes_of(service: &str, program: &Path) -> Vec<u32> {
    let needle = format!("MCP_SERVICE={service}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if first != program.as_os_str().as_encoded_bytes() {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Container IDs carrying `mcp.service=<service>` on the engine behind `docker_host`.
pub fn containers(service: &str, docker_host: Option<&Path>) -> Vec<String> {
    let mut command = Command::new("docker");
    if let Some(sock) = docker_host {
        command.env("DOCKER_HOST", format!("unix://{}", sock.display()));
    }
    let out = command
        .args([
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=mcp.service={service}"),
        ])
        .output()
        .expect("run docker ps");
    assert!(
        out.status.success(),
        "docker ps: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Rows left for `service` in the agent database of `node`.
pub fn db_rows(fleet: &Fleet, node: &str, service: &str) -> i64 {
    let db = fleet.spec.dir.join(node).join("data/agent.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    let services: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM services WHERE name = ?1",
            [service],
            |r| r.get(0),
        )
        .unwrap();
    let ports: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM ports WHERE service = ?1",
            [service],
            |r| r.get(0),
        )
        .unwrap();
    services + ports
}

/// True in CI, where a test that cannot run must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// Removes containers a crashed earlier run may have left for these services.
pub fn purge(services: &[&str]) {
    for service in services {
        for id in containers(service, None) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

/// Ends exec-driver processes a crashed earlier run may have left for `service`:
/// first their supervisors (so nothing restarts them), then the processes.
pub fn purge_exec(service: &str, program: &Path) {
    for pid in supervisors_of(service) {
        mcp_local_fleet::send_signal(pid, libc::SIGKILL);
    }
    for pid in processes_of(service, program) {
        mcp_local_fleet::send_signal(pid, libc::SIGKILL);
    }
}

/// PIDs of the exec supervisors (`mcp-agent supervise DIR`) of `service`'s instances.
pub fn supervisors_of(service: &str) -> Vec<u32> {
    let needle = format!("mcp.{service}.");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" supervise ") && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// An `mcp dev` a test started. Dropped (a failed assertion included), it interrupts
/// `mcp dev`, kills it if it has not stopped within 15 s, kills every process it
/// recorded in `DIR/pids` that still runs from DIR, and removes the instances its
/// agents ran.
pub struct DevGuard {
    pub child: Child,
    pub dir: PathBuf,
    /// The runtime `mcp dev` was given.
    pub runtime: String,
}

impl Drop for DevGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            mcp_local_fleet::send_signal(self.child.id(), libc::SIGINT);
            let stopped = eventually(Duration::from_secs(15), || {
                self.child.try_wait().ok().flatten()
            });
            if stopped.is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let dir = self.dir.to_string_lossy().into_owned();
        for entry in std::fs::read_dir(self.dir.join("pids"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(pid) = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            else {
                continue;
            };
            // Only a process still running from DIR: the PID may have been reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                mcp_local_fleet::send_signal(pid, libc::SIGKILL);
            }
        }
        for problem in mcp_local_fleet::remove_instances(&FleetSpec::seed(&self.dir, &self.runtime))
        {
            eprintln!("DevGuard: {problem}");
        }
    }
}

/// Starts `mcp logs -f SERVICE` against the fleet; its stdout lines arrive on the
/// receiver (read by a thread, so the CLI never blocks on a full pipe).
pub fn follow_logs(
    fleet: &Fleet,
    service: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(fleet.bin.path("mcp"))
        .arg("--config")
        .arg(fleet.spec.dir.join("mcp.toml"))
        .args(["logs", "-f", service])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The address of the fleet's edge (its first edge's mc-proxy).
pub fn edge_ip(fleet: &Fleet) -> String {
    fleet.spec.edges().next().expect("an edge").ip.clone()
}

/// Ends what a test started even when it fails: the exec instances of its services.
pub struct Cleanup {
    pub services: Vec<String>,
    pub programs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for service in &self.services {
            for program in &self.programs {
                purge_exec(service, program);
            }
        }
    }
}

/// `curl` through the edge trusting the embedded public CA (`DIR/public-ca.pem`):
/// (HTTP status, body); status 0 when the request failed.
pub fn curl(fleet: &Fleet, host: &str, extra: &[&str]) -> (u16, String) {
    curl_ca(fleet, &fleet.spec.dir.join("public-ca.pem"), host, extra)
}

/// `curl` through the edge trusting `ca`: (HTTP status, body and `[code
/// version]`); status 0 when the request failed.
pub fn curl_ca(fleet: &Fleet, ca: &Path, host: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:8443:{}", edge_ip(fleet)))
        .args(extra)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("https://{host}:8443/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = tail
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        (code, format!("{body} [{tail}]"))
    } else {
        (code, format!("{body} [{tail}] {stderr}"))
    }
}

/// The certificate the edge presents for `host`, as `openssl x509 -text` prints it,
/// and `openssl s_client`'s own output.
pub fn edge_cert(fleet: &Fleet, host: &str, ca: &Path) -> (String, String) {
    let edge = format!("{}:8443", edge_ip(fleet));
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &edge,
            "-servername",
            host,
            "-CAfile",
        ])
        .arg(ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let client = String::from_utf8_lossy(&out.stdout).to_string();
    let text = openssl_x509(&client, &["-text"]);
    (text, client)
}

/// `openssl x509 -noout ARGS` of the first certificate in `pem`: what it prints.
pub fn openssl_x509(pem: &str, args: &[&str]) -> String {
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let _ = x509.stdin.take().unwrap().write_all(pem.as_bytes());
    }
    String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).to_string()
}

/// The route of `host` in `mcp route list --json`.
pub fn route_of(fleet: &Fleet, host: &str) -> Option<serde_json::Value> {
    fleet
        .mcp_json(&["route", "list"])
        .ok()?
        .as_array()?
        .iter()
        .find(|r| r["hostname"] == host)
        .cloned()
}

/// A bounded loop of requests through the edge in a thread, counting failures
/// (anything but 200) until stopped or `max` requests.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Requests trusting the embedded public CA (`DIR/public-ca.pem`).
    pub fn start(fleet: &Fleet, host: &str) -> Load {
        Load::start_ca(fleet, host, &fleet.spec.dir.join("public-ca.pem"))
    }

    /// Requests trusting `ca`.
    pub fn start_ca(fleet: &Fleet, host: &str, ca: &Path) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let ca = ca.to_path_buf();
        let edge = edge_ip(fleet);
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f, e) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let host = host.to_string();
        let thread = std::thread::spawn(move || {
            for _ in 0..20_000 {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let out = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                    .arg(&ca)
                    .arg("--resolve")
                    .arg(format!("{host}:8443:{edge}"))
                    .args(["-w", "%{http_code}"])
                    .arg(format!("https://{host}:8443/"))
                    .output();
                match out {
                    Ok(out) if out.stdout == b"200" => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(out) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut e) = e.lock() {
                            e.push(format!(
                                "{} {}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ));
                        }
                    }
                    Err(_) => {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            stop,
            ok,
            failed,
            errors,
            thread: Some(thread),
        }
    }

    /// (ok, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }

    /// Waits until at least `n` more requests succeeded.
    pub fn advance(&self, n: u64) {
        let start = self.counts().0;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.counts().0 < start + n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.counts().0 >= start + n,
            "the load stalled: {:?}",
            self.counts()
        );
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `DIR/<file>` and returns its path: `service` with one exec component `web`
/// running `binary`, whose route `http` is plain HTTP on 8080; `top` follows the
/// name (e.g. `node = "orion"`), `route` the route's keys (e.g. `public = true`).
pub fn exec_definition(
    dir: &Path,
    file: &str,
    service: &str,
    binary: &Path,
    top: &str,
    route: &str,
) -> String {
    let text = format!(
        "name = \"{service}\"\n{top}\n\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n{route}",
        binary.display()
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// [`exec_definition`] placed on `node`, in `DIR/<service>-<node>.toml`.
pub fn exec_on(dir: &Path, service: &str, binary: &Path, node: &str, route: &str) -> String {
    let file = format!("{service}-{node}.toml");
    exec_definition(
        dir,
        &file,
        service,
        binary,
        &format!("node = \"{node}\""),
        route,
    )
}

/// The master's events from `mcp status --json`, each as `node: message`.
pub fn events_of(fleet: &Fleet) -> Vec<String> {
    let status = fleet.mcp_json(&["status"]).unwrap();
    status["events"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["node"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Holds the addresses `mcp dev` uses (127.0.0.11-14, the embedded DNS's port) for
/// one test at a time, across test processes: an exclusive `flock` on a file in the
/// temporary directory, released when dropped (or when the process dies).
pub struct DevAddresses(std::fs::File);

#[allow(unsafe_code)]
pub fn dev_addresses() -> DevAddresses {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("mcp-dev-127.0.0.11.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: flock on a descriptor this File owns; no memory is touched.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    DevAddresses(file)
}

/// Starts `mcp dev --runtime RUNTIME --dir DIR` with fast heartbeats and waits until
/// it says it runs; its stdout and stderr lines arrive on the receivers. The guard
/// stops it and what it started.
pub fn start_dev(
    dir: &Path,
    runtime: &str,
) -> (
    DevGuard,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let bin = mcp_local_fleet::Binaries::find().unwrap();
    let child = Command::new(bin.path("mcp"))
        .args([
            "dev",
            "--runtime",
            runtime,
            "--heartbeat-interval",
            "200ms",
            "--probe-timeout",
            "300ms",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stops mcp dev and whatever it started even when an assertion fails.
    let mut dev = DevGuard {
        child,
        dir: dir.to_path_buf(),
        runtime: runtime.to_string(),
    };
    let lines = |stream: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        rx
    };
    let stdout = lines(Box::new(dev.child.stdout.take().unwrap()));
    let stderr = lines(Box::new(dev.child.stderr.take().unwrap()));
    let ready = eventually(Duration::from_secs(30), || {
        stdout
            .recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.contains("mcp dev: running"))
    });
    assert!(
        ready.is_some(),
        "mcp dev did not come up; logs: {}",
        std::fs::read_to_string(dir.join("logs/master.log")).unwrap_or_default()
    );
    (dev, stdout, stderr)
}
