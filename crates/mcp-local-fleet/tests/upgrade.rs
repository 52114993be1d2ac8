//! `mcp agent upgrade` (SPEC §9) over real SSH: the seed fleet on 127.0.0.174-177
//! (exec driver), with one OpenSSH server per node (Debian's `sshd`, on the node's
//! own address and port, host and client keys made here) and, as the stand-in for
//! `systemctl restart mcp-agent.service`, a restart script that stops the node's
//! agent by its pid file and starts `<dir>/<node>/mcp-agent` again, detached (under
//! `qemu-aarch64` when it is an aarch64 binary). The agents of rift, orion and
//! hyperborea are handed over to that script first, each from its own copy of the
//! binary (its `agent_path`).
//!
//! Then: a rolling upgrade of rift, orion and hyperborea (rift and orion to a copy of
//! the debug agent with bytes appended, a new SHA-256; hyperborea to a real aarch64
//! agent, cross-built, run under qemu-user, that registers as arm64) while a bounded
//! request loop against an exec service on each node counts no failure and no exec
//! process changes PID; a second run is `unchanged`; a node whose ssh port is closed
//! is `not tried`; a broken binary (a script that exits 1) on orion is rolled back,
//! orion registers again on its previous binary, the rollout stops before hyperborea
//! and exits 1 naming orion with what the broken agent logged.
//!
//! Without the aarch64 cross toolchain or qemu-user the arm64 part is skipped with a
//! reason (hyperborea then gets the amd64 binary), except in CI, where it must run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The test's seed fleet: 127.0.0.174-177; the benchmark's: 127.0.0.195-198.
const FIRST_IP: u8 = 174;
const BENCH_FIRST_IP: u8 = 195;
/// The nodes upgraded, in rollout order, and their services.
const NODES: [&str; 3] = ["rift", "orion", "hyperborea"];
const ARM_TRIPLE: &str = "aarch64-unknown-linux-gnu";

fn ip(first: u8, i: u8) -> String {
    format!("127.0.0.{}", first + i)
}

/// Each node's sshd listens on its own address and port.
fn ssh_port(first: u8, i: u8) -> u16 {
    22000 + u16::from(first + i)
}

fn service_of(node: &str) -> String {
    format!("upg-{node}")
}

fn have(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Skips (or, in CI, fails) the test when `what` is missing.
fn missing(what: &str) {
    assert!(
        !in_ci(),
        "upgrade test: {what} is missing (CI must have it)"
    );
    eprintln!("SKIP agent upgrade test: {what} is missing");
}

/// The cross-built debug agent for aarch64, in the target directory the fleet's
/// binaries came from (cached: a second run builds nothing). Err: why it cannot be.
fn arm64_agent(bin_dir: &Path) -> Result<PathBuf, String> {
    for tool in ["aarch64-linux-gnu-gcc", "qemu-aarch64"] {
        if have(tool).is_none() {
            return Err(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/usr/aarch64-linux-gnu/lib").is_dir() {
        return Err("the aarch64 C library (libc6-dev-arm64-cross) is not installed".into());
    }
    let target_dir = bin_dir.parent().unwrap();
    let path = target_dir.join(ARM_TRIPLE).join("debug/mcp-agent");
    let started = Instant::now();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "-p", "mcp-agent", "--bin", "mcp-agent", "--target"])
        .arg(ARM_TRIPLE)
        .arg("--target-dir")
        .arg(target_dir)
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run cargo: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("target may not be installed") {
            return Err(format!(
                "the Rust target {ARM_TRIPLE} is not installed (rustup target add {ARM_TRIPLE})"
            ));
        }
        panic!("cross build of mcp-agent for {ARM_TRIPLE} failed: {stderr}");
    }
    eprintln!(
        "aarch64 mcp-agent ready in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(path)
}

/// The fleet's debug agent with `tag` appended: another SHA-256, the same program.
fn retagged(agent: &Path, dir: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(agent).unwrap();
    bytes.extend_from_slice(format!("\nmcp upgrade test {tag}\n").as_bytes());
    let path = dir.join(format!("mcp-agent-{tag}"));
    std::fs::write(&path, bytes).unwrap();
    chmod_x(&path);
    path
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn sha256(path: &Path) -> String {
    mcp_pki::digest::sha256_file(path).unwrap()
}

/// The test's `systemctl restart mcp-agent.service` for `node`: stops the agent in
/// DIR/pids/<node>.pid (only while it still is that node's agent: the PID may have
/// been reused), then starts DIR/<node>/mcp-agent detached, its output appended to
/// DIR/logs/<node>.log, and records its PID.
fn restart_script(dir: &Path, node: &str, qemu: Option<&Path>) -> PathBuf {
    let qemu = qemu.map(|q| q.display().to_string()).unwrap_or_default();
    let text = format!(
        r##"#!/bin/sh
# mcp agent upgrade test: restart {node}'s agent in place (stand-in for systemctl).
set -u
dir='{dir}'
node='{node}'
bin="$dir/$node/mcp-agent"
config="$dir/$node/agent.toml"
pidfile="$dir/pids/$node.pid"
log="$dir/logs/$node.log"
alive() {{
    [ -r "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}}
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$config"; then
        kill -TERM "$pid" 2>/dev/null
        i=0
        while alive "$pid" && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
    fi
fi
# e_machine 183: an aarch64 binary, run under qemu-user.
if [ "$(od -An -tu1 -j18 -N1 "$bin" | tr -d ' ')" = 183 ] && [ -n '{qemu}' ]; then
    set -- '{qemu}' -L /usr/aarch64-linux-gnu "$bin"
else
    set -- "$bin"
fi
echo "# restart.sh: $* --config $config" >> "$log"
setsid nohup "$@" --config "$config" >> "$log" 2>&1 < /dev/null &
echo $! > "$pidfile"
"##,
        dir = dir.display(),
    );
    let path = dir.join(node).join("restart.sh");
    std::fs::write(&path, text).unwrap();
    chmod_x(&path);
    path
}

/// Stops, when dropped, the agents the restart scripts started (they are no child of
/// this process): SIGTERM, then SIGKILL after 5 s.
struct DetachedAgents {
    dir: PathBuf,
}

impl DetachedAgents {
    fn pid(&self, node: &str) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join("pids").join(format!("{node}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let config = self.dir.join(node).join("agent.toml");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(&config.display().to_string());
        (ours && alive(pid)).then_some(pid)
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

impl Drop for DetachedAgents {
    fn drop(&mut self) {
        let pids: Vec<u32> = NODES.iter().filter_map(|n| self.pid(n)).collect();
        for pid in &pids {
            mcp_local_fleet::send_signal(*pid, libc::SIGTERM);
        }
        let gone = eventually(Duration::from_secs(5), || {
            pids.iter().all(|p| !alive(*p)).then_some(())
        });
        if gone.is_none() {
            for pid in &pids {
                mcp_local_fleet::send_signal(*pid, libc::SIGKILL);
            }
        }
    }
}

/// The OpenSSH servers of the test, one per node, killed when dropped.
struct Sshd {
    children: Vec<Child>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Host keys, the client key, and one `sshd -D -e -f CONF` per (ip, port), each
/// accepting only the client key. Returns the servers and the client key.
fn start_sshd(dir: &Path, sshd: &Path, listen: &[(String, u16)]) -> (Sshd, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let keygen = |file: &Path| {
        let out = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "mcp-upgrade-test",
                "-f",
            ])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen: {out:?}");
    };
    let host_key = dir.join("host_ed25519");
    let client_key = dir.join("id_ed25519");
    keygen(&host_key);
    keygen(&client_key);
    std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys")).unwrap();
    // sshd insists on its privilege separation directory.
    if !Path::new("/run/sshd").is_dir() {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("internal-sftp");
    let mut servers = Sshd {
        children: Vec::new(),
    };
    for (ip, port) in listen {
        let conf = dir.join(format!("sshd-{ip}.conf"));
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {ip}:{port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nSubsystem sftp {sftp}\n\
                 LogLevel ERROR\n",
                host_key.display(),
                dir.join(format!("sshd-{ip}.pid")).display(),
                dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("sshd-{ip}.log"))).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        servers.children.push(child);
        let address = format!("{ip}:{port}");
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(&address).ok().map(|_| ())
        });
        assert!(
            up.is_some(),
            "sshd on {address} did not listen: {}",
            std::fs::read_to_string(dir.join(format!("sshd-{ip}.log"))).unwrap_or_default()
        );
    }
    (servers, client_key)
}

/// Every exec process of the services: the instances and their supervisors.
fn exec_pids(binary: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut pids = BTreeMap::new();
    for node in NODES {
        let service = service_of(node);
        let mut all = processes_of(&service, binary);
        all.extend(supervisors_of(&service));
        all.sort();
        pids.insert(service, all);
    }
    pids
}

/// GETs every address in turn until stopped (or 10 minutes, or a million requests),
/// counting the answers that are not the hello page.
struct Requests {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Requests {
    fn start(addresses: Vec<String>) -> Requests {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(600);
                for _ in 0..1_000_000u32 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    for address in &addresses {
                        match http_get(address) {
                            Some(body) if body.contains("hello") => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push(format!("{address}: {other:?}")),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Requests {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    /// (answered, failures so far).
    fn counts(&self) -> (u64, Vec<String>) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
        )
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Ends the exec instances of the services even when the test fails.
struct Cleanup {
    binary: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for node in NODES {
            purge_exec(&service_of(node), &self.binary);
        }
    }
}

/// The JSON documents on `mcp --json`'s stdout: the report, then an error object
/// when it failed.
fn json_docs(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(stdout)))
}

fn results(report: &serde_json::Value) -> Vec<(String, String)> {
    report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn node_list(fleet: &Fleet) -> BTreeMap<String, serde_json::Value> {
    fleet
        .mcp_json(&["node", "list"])
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n.clone()))
        .collect()
}

/// The tools the test drives; None (after saying why) when one is missing outside CI.
fn tools() -> Option<PathBuf> {
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if !sshd.is_file() {
        missing("/usr/sbin/sshd (openssh-server)");
        return None;
    }
    for tool in [
        "ssh",
        "scp",
        "ssh-keygen",
        "sha256sum",
        "setsid",
        "nohup",
        "od",
    ] {
        if have(tool).is_none() {
            missing(tool);
            return None;
        }
    }
    Some(sshd)
}

/// A seed fleet whose rift, orion and hyperborea agents run from their own
/// agent_path under their restart scripts, an sshd per node, and the CLI config
/// that reaches them (svc's ssh port answers nothing). Dropped in field order: the
/// sshd servers, the detached agents, the fleet, its directory.
struct Rig {
    _sshd: Sshd,
    agents: DetachedAgents,
    fleet: Fleet,
    bin: mcp_local_fleet::Binaries,
    dir: PathBuf,
    config: PathBuf,
    tmp: tempfile::TempDir,
}

impl Rig {
    /// `arm64`: hyperborea is configured as an arm64 node (and its restart script
    /// runs an aarch64 binary under `qemu`).
    fn start(sshd: &Path, first: u8, qemu: Option<&Path>, arm64: bool) -> Rig {
        let bin = mcp_local_fleet::Binaries::find().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = FleetSpec::seed_at(&tmp.path().join("fleet"), "exec", first);
        // hyperborea reports what its binary is built for, not a configured arch.
        for node in &mut spec.nodes {
            node.arch = None;
        }
        let mut fleet = Fleet::start(spec).unwrap();
        let dir = fleet.spec.dir.canonicalize().unwrap();

        // Hand rift, orion and hyperborea over to their restart scripts, each agent
        // now running from its own agent_path, DIR/<node>/mcp-agent.
        let agents = DetachedAgents { dir: dir.clone() };
        let mut restart = BTreeMap::new();
        for node in NODES {
            let mut proc = fleet.agents.remove(node).unwrap();
            mcp_local_fleet::send_signal(proc.pid(), libc::SIGTERM);
            proc.child.wait().unwrap();
            std::fs::copy(bin.path("mcp-agent"), dir.join(node).join("mcp-agent")).unwrap();
            let script = restart_script(&dir, node, qemu);
            let out = Command::new(&script).output().unwrap();
            assert!(out.status.success(), "{}: {out:?}", script.display());
            restart.insert(node, script);
        }
        let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        fleet
            .wait_registered(&names, Duration::from_secs(30))
            .unwrap();

        let listen: Vec<(String, u16)> =
            (0..3).map(|i| (ip(first, i), ssh_port(first, i))).collect();
        let (sshd, key) = start_sshd(&tmp.path().join("ssh"), sshd, &listen);
        let options = format!(
            "[\"-F\", \"/dev/null\", \"-i\", \"{}\", \"-o\", \"IdentitiesOnly=yes\", \"-o\", \"StrictHostKeyChecking=no\", \"-o\", \"UserKnownHostsFile=/dev/null\", \"-o\", \"LogLevel=ERROR\"]",
            key.display()
        );
        let mut cli = std::fs::read_to_string(dir.join("mcp.toml")).unwrap();
        for (i, node) in NODES.iter().enumerate() {
            let i = u8::try_from(i).unwrap();
            cli.push_str(&format!(
                "[nodes.{node}]\nssh = \"{}\"\nssh_port = {}\nssh_options = {options}\nagent_path = \"{}\"\nrestart = \"{}\"\nlogs = \"tail -n 5 {}\"\n",
                ip(first, i),
                ssh_port(first, i),
                dir.join(node).join("mcp-agent").display(),
                restart[node].display(),
                dir.join("logs").join(format!("{node}.log")).display(),
            ));
            if *node == "hyperborea" && arm64 {
                cli.push_str("arch = \"arm64\"\n");
            }
        }
        cli.push_str(&format!(
            "[nodes.svc]\nssh = \"{}\"\nssh_port = 1\nssh_options = {options}\n",
            ip(first, 3)
        ));
        let config = dir.join("upgrade.toml");
        std::fs::write(&config, cli).unwrap();
        Rig {
            _sshd: sshd,
            agents,
            fleet,
            bin,
            dir,
            config,
            tmp,
        }
    }

    /// `mcp --json agent upgrade ARGS` with the rig's CLI config; its progress is
    /// echoed.
    fn upgrade(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config".to_string(), self.config.display().to_string()];
        all.extend(["--json", "agent", "upgrade"].map(String::from));
        all.extend(args.iter().map(|a| a.to_string()));
        let started = Instant::now();
        let out = Command::new(self.bin.path("mcp"))
            .args(&all)
            .env_remove("MCP_MASTER")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "mcp {} ({:.1}s, exit {:?}):\n{}",
            all[2..].join(" "),
            started.elapsed().as_secs_f64(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn nodes(&self) -> BTreeMap<String, serde_json::Value> {
        node_list(&self.fleet)
    }

    fn logs(&self) -> String {
        NODES
            .iter()
            .map(|n| self.fleet.log(n))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn rolling_upgrade_over_ssh_with_an_arm64_node_and_a_rollback() {
    let Some(sshd) = tools() else {
        return;
    };
    let bin = mcp_local_fleet::Binaries::find().unwrap();
    let debug_agent = bin.path("mcp-agent");
    // The arm64 agent first (the slow part, before anything runs).
    let arm64 = match arm64_agent(&bin.dir) {
        Ok(path) => Some(path),
        Err(why) => {
            assert!(!in_ci(), "the arm64 part must run in CI: {why}");
            eprintln!("SKIP the arm64 part (hyperborea gets the amd64 binary): {why}");
            None
        }
    };
    let qemu = arm64.as_ref().and_then(|_| have("qemu-aarch64"));

    let binary = fixture(None);
    let _cleanup = Cleanup {
        binary: binary.clone(),
    };
    for node in NODES {
        purge_exec(&service_of(node), &binary);
    }
    let rig = Rig::start(&sshd, FIRST_IP, qemu.as_deref(), arm64.is_some());
    let (fleet, dir) = (&rig.fleet, &rig.dir);
    let old_sha = sha256(&debug_agent);
    let listed = rig.nodes();
    for node in NODES {
        assert_eq!(listed[node]["binary_sha256"], old_sha.as_str(), "{node}");
    }
    assert_eq!(listed["hyperborea"]["arch"], "amd64");

    // One exec service per node, answering throughout.
    let mut addresses = Vec::new();
    for node in NODES {
        let service = service_of(node);
        let file = exec_on(dir, &service, &binary, node, "");
        mcp_ok(fleet, &["deploy", &file]);
        let address = address_of(fleet, &service);
        assert!(serves(&address, "hello"), "{service} on {address}");
        addresses.push(address);
    }
    let pids_before = exec_pids(&binary);
    for (service, pids) in &pids_before {
        assert_eq!(pids.len(), 2, "{service}: instance and supervisor {pids:?}");
    }

    // The new binaries.
    let amd64 = retagged(&debug_agent, rig.tmp.path(), "amd64");
    let new_sha = sha256(&amd64);
    let hyperborea_binary = arm64.clone().unwrap_or_else(|| amd64.clone());
    let hyperborea_sha = sha256(&hyperborea_binary);
    assert_ne!(new_sha, old_sha);

    let requests = Requests::start(addresses.clone());
    std::thread::sleep(Duration::from_millis(300));

    // The rolling upgrade.
    let mut args = vec!["rift", "orion", "hyperborea"];
    let (amd64_arg, arm64_arg) = (
        amd64.display().to_string(),
        hyperborea_binary.display().to_string(),
    );
    if arm64.is_some() {
        args.extend(["--binary-amd64", &amd64_arg, "--binary-arm64", &arm64_arg]);
    } else {
        args.extend(["--binary", &amd64_arg]);
    }
    let out = rig.upgrade(&args);
    assert!(
        out.status.success(),
        "rollout failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        rig.logs()
    );
    let docs = json_docs(&out.stdout);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(
        results(&docs[0]),
        NODES.map(|n| (n.to_string(), "upgraded".to_string()))
    );
    let want = |node: &str| {
        if node == "hyperborea" {
            hyperborea_sha.clone()
        } else {
            new_sha.clone()
        }
    };
    for (report, node) in docs[0].as_array().unwrap().iter().zip(NODES) {
        assert_eq!(report["from"], old_sha.as_str(), "{node}");
        assert_eq!(report["to"], want(node).as_str(), "{node}");
    }
    let listed = rig.nodes();
    for node in NODES {
        assert_eq!(listed[node]["binary_sha256"], want(node).as_str(), "{node}");
        assert_eq!(listed[node]["state"], "healthy", "{node}");
        assert_eq!(
            sha256(&dir.join(node).join("mcp-agent.prev")),
            old_sha,
            "{node}: .prev"
        );
    }
    if arm64.is_some() {
        assert_eq!(listed["hyperborea"]["arch"], "arm64");
        let pid = rig.agents.pid("hyperborea").unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("qemu-aarch64"),
            "hyperborea's agent is not under qemu: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    let table = fleet.mcp(&["node", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&new_sha[..12]), "{table}");

    // Again: nothing to do.
    let out = rig.upgrade(&args);
    assert!(out.status.success());
    assert_eq!(
        results(&json_docs(&out.stdout)[0]),
        NODES.map(|n| (n.to_string(), "unchanged".to_string()))
    );

    // svc's ssh answers nothing: not tried, with the reason, exit 1.
    let out = rig.upgrade(&["svc", "--binary", &amd64_arg]);
    assert_eq!(out.status.code(), Some(1));
    let docs = json_docs(&out.stdout);
    assert_eq!(results(&docs[0]), pairs(&[("svc", "not tried")]));
    let reason = docs[0][0]["reason"].as_str().unwrap();
    assert!(reason.contains("ssh"), "{reason}");
    assert_eq!(rig.nodes()["svc"]["binary_sha256"], old_sha.as_str());

    // A broken binary on orion: rolled back, orion on its previous binary, the
    // rollout stops before hyperborea.
    let broken = rig.tmp.path().join("broken-agent");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho \"broken agent: cannot start\" >&2\nexit 1\n",
    )
    .unwrap();
    chmod_x(&broken);
    let broken_arg = broken.display().to_string();
    let mut args = vec!["orion", "hyperborea", "--wait", "8s"];
    if arm64.is_some() {
        args.extend(["--binary-amd64", &broken_arg, "--binary-arm64", &arm64_arg]);
    } else {
        args.extend(["--binary", &broken_arg]);
    }
    let out = rig.upgrade(&args);
    assert_eq!(out.status.code(), Some(1));
    let docs = json_docs(&out.stdout);
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(
        results(&docs[0]),
        pairs(&[("orion", "rolled back"), ("hyperborea", "not tried")])
    );
    let error = docs[1]["error"].as_str().unwrap();
    assert!(error.contains("node orion"), "{error}");
    assert!(error.contains("broken agent: cannot start"), "{error}");
    assert!(error.contains("runs again"), "{error}");
    assert_eq!(docs[1]["code"], 1);
    let listed = rig.nodes();
    assert_eq!(listed["orion"]["state"], "healthy");
    assert_eq!(listed["orion"]["binary_sha256"], new_sha.as_str());
    assert_eq!(sha256(&dir.join("orion").join("mcp-agent")), new_sha);
    assert_eq!(
        listed["hyperborea"]["binary_sha256"],
        hyperborea_sha.as_str()
    );

    // Served throughout, by the same processes.
    std::thread::sleep(Duration::from_millis(300));
    let (answered, failures) = requests.counts();
    drop(requests);
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(answered > 100, "only {answered} requests answered");
    assert_eq!(
        exec_pids(&binary),
        pids_before,
        "an exec process was replaced"
    );
    eprintln!("{answered} requests answered, none failed");
}

/// BENCHMARKS.md "Agent upgrade: a three-node rollout": rift, orion and hyperborea
/// (all amd64 here: no cross build, no qemu) upgraded in turn between two tagged
/// copies of the agent in MCP_BIN_DIR (the release build), `MCP_UPGRADE_RUNS`
/// rollouts (default 10), each timed as the operator sees it (`mcp agent upgrade`
/// from start to exit).
#[test]
#[ignore = "benchmark: MCP_BIN_DIR=<target>/release, --run-ignored only"]
fn bench_three_node_rollout() {
    let Some(sshd) = tools() else {
        return;
    };
    let runs: usize = std::env::var("MCP_UPGRADE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let rig = Rig::start(&sshd, BENCH_FIRST_IP, None, false);
    let agent = rig.bin.path("mcp-agent");
    let binaries = [
        retagged(&agent, rig.tmp.path(), "a"),
        retagged(&agent, rig.tmp.path(), "b"),
    ];
    eprintln!(
        "agent binary: {} ({} bytes)",
        agent.display(),
        std::fs::metadata(&agent).unwrap().len()
    );
    let mut times = Vec::new();
    for run in 0..runs {
        let binary = binaries[run % 2].display().to_string();
        let started = Instant::now();
        let out = rig.upgrade(&["rift", "orion", "hyperborea", "--binary", &binary]);
        let took = started.elapsed().as_secs_f64();
        assert!(out.status.success(), "run {run}: {}", rig.logs());
        assert_eq!(
            results(&json_docs(&out.stdout)[0]),
            NODES.map(|n| (n.to_string(), "upgraded".to_string()))
        );
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "three-node rollout, {runs} runs: median {:.2}s, mean {mean:.2}s, min {:.2}s, max {:.2}s",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
