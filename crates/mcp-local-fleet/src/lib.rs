//! A real local fleet: writes the master's and each agent's config files, starts the
//! real binaries as separate processes on their own loopback addresses, and stops
//! them. Behind `mcp dev` and the process-level end-to-end tests, so both exercise
//! exactly what an operator runs.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where the `mcp`, `mcp-master` and `mcp-agent` binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// `MCP_BIN_DIR`, else the directory of the running executable (or its parent, for
    /// test binaries in `target/<profile>/deps`).
    pub fn find() -> anyhow::Result<Binaries> {
        if let Some(dir) = std::env::var_os("MCP_BIN_DIR") {
            return Ok(Binaries { dir: dir.into() });
        }
        let exe = std::env::current_exe().context("locate the running executable")?;
        let mut dir = exe
            .parent()
            .context("executable has no directory")?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        for name in ["mcp", "mcp-master", "mcp-agent"] {
            if !dir.join(name).is_file() {
                bail!(
                    "{} not found in {}: run `cargo build --workspace --bins` first, or set MCP_BIN_DIR",
                    name,
                    dir.display()
                );
            }
        }
        Ok(Binaries { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// One node of the fleet.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// "worker" or "edge".
    pub role: String,
    /// Its own loopback address, e.g. 127.0.0.11.
    pub ip: String,
    pub arch: Option<String>,
    pub pools: Vec<String>,
    /// More lines at the end of this node's `agent.toml`, after every key the
    /// fleet writes: tables such as `[acme]` belong here.
    pub agent_extra: String,
}

impl NodeSpec {
    pub fn worker(name: &str, ip: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            role: "worker".to_string(),
            ip: ip.to_string(),
            arch: None,
            pools: Vec::new(),
            agent_extra: String::new(),
        }
    }
}

/// The fleet to start.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub dir: PathBuf,
    /// The master runs beside this node (the first node by default).
    pub master_node: String,
    pub master_ip: String,
    pub nodes: Vec<NodeSpec>,
    /// "docker", "podman" or "exec".
    pub runtime: String,
    pub runtime_socket: Option<PathBuf>,
    pub heartbeat_interval: String,
    pub missed_heartbeats: u32,
    pub probe_timeout: String,
    pub domain: String,
    pub master_port: u16,
    pub agent_port: u16,
    /// List every node in the master's `bootstrap_nodes`.
    pub bootstrap: bool,
    /// More top-level `master.toml` lines, e.g. `service_cert_ttl = "6s"`.
    pub master_extra: String,
    /// Log in as admin once the master is up (off when an identity service issues
    /// the tokens).
    pub login: bool,
    /// When the `Fleet` is dropped, also remove the instances (containers, exec
    /// processes) its agents ran, so a test leaves nothing behind even when it
    /// fails. On by default; `mcp dev` turns it off, as its services outlive it by
    /// design.
    pub remove_on_drop: bool,
}

impl FleetSpec {
    /// One worker node that is also the master node.
    pub fn single(dir: &Path, node: &str, ip: &str, runtime: &str) -> FleetSpec {
        FleetSpec {
            dir: dir.to_path_buf(),
            master_node: node.to_string(),
            master_ip: ip.to_string(),
            nodes: vec![NodeSpec::worker(node, ip)],
            runtime: runtime.to_string(),
            runtime_socket: None,
            heartbeat_interval: "500ms".to_string(),
            missed_heartbeats: 3,
            probe_timeout: "500ms".to_string(),
            domain: "metacircular.net".to_string(),
            master_port: 9443,
            agent_port: 9444,
            bootstrap: false,
            master_extra: String::new(),
            login: true,
            remove_on_drop: true,
        }
    }

    /// The seed fleet of SPEC §11: rift (worker, master node), orion (worker),
    /// hyperborea (worker reporting arm64, pool `pi-pool`), svc (edge), on 127.0.0.11
    /// to 127.0.0.14.
    pub fn seed(dir: &Path, runtime: &str) -> FleetSpec {
        FleetSpec::seed_at(dir, runtime, 11)
    }

    /// The seed fleet on 127.0.0.`first` to 127.0.0.`first + 3` (tests run several).
    pub fn seed_at(dir: &Path, runtime: &str, first: u8) -> FleetSpec {
        let ip = |i: u8| format!("127.0.0.{}", first.saturating_add(i));
        let mut hyperborea = NodeSpec::worker("hyperborea", &ip(2));
        hyperborea.arch = Some("arm64".to_string());
        hyperborea.pools = vec!["pi-pool".to_string()];
        let svc = NodeSpec {
            role: "edge".to_string(),
            ..NodeSpec::worker("svc", &ip(3))
        };
        FleetSpec {
            nodes: vec![
                NodeSpec::worker("rift", &ip(0)),
                NodeSpec::worker("orion", &ip(1)),
                hyperborea,
                svc,
            ],
            heartbeat_interval: "2s".to_string(),
            probe_timeout: "1s".to_string(),
            bootstrap: true,
            ..FleetSpec::single(dir, "rift", &ip(0), runtime)
        }
    }

    pub fn master_address(&self) -> String {
        format!("{}:{}", self.master_ip, self.master_port)
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A running process of the fleet.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A running fleet. Dropping it stops every process it started.
pub struct Fleet {
    pub spec: FleetSpec,
    pub bin: Binaries,
    pub master: Option<Proc>,
    /// The node processes: each node's agent by node name, and each edge's
    /// mc-proxy (`mc-proxy`, or `mc-proxy-<node>` beside a second edge).
    pub agents: BTreeMap<String, Proc>,
}

/// The port mc-proxy listens on at an edge node's address (SPEC §11: no
/// root-only port).
pub const PROXY_PORT: u16 = 8443;

impl FleetSpec {
    /// The edge nodes, each with its mc-proxy.
    pub fn edges(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(|n| n.role == "edge")
    }

    /// The process name of an edge's mc-proxy: `mc-proxy` for the first edge.
    pub fn proxy_name(&self, edge: &str) -> String {
        match self.edges().next() {
            Some(first) if first.name != edge => format!("mc-proxy-{edge}"),
            _ => "mc-proxy".to_string(),
        }
    }

    /// Where an edge's mc-proxy listens.
    pub fn proxy_address(&self, edge: &NodeSpec) -> String {
        format!("{}:{PROXY_PORT}", edge.ip)
    }

    /// An edge's mc-proxy admin socket: `DIR/<node>/admin.sock`.
    pub fn proxy_admin_socket(&self, edge: &str) -> PathBuf {
        self.dir.join(edge).join("admin.sock")
    }
}

impl Fleet {
    /// Initialises the fleet's security once per DIR: the master's CA (`mcp-master
    /// init`) and each operator's own random password, in `DIR/<user>-password`
    /// (kept across runs). Returns (join token, user -> password).
    pub fn init(
        spec: &FleetSpec,
        bin: &Binaries,
    ) -> anyhow::Result<(String, BTreeMap<String, String>)> {
        let dir = &spec.dir;
        for sub in ["master", "logs", "pids", "srv"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        let master_dir = dir.join("master");
        let sub = if master_dir.join("ca.pem").exists() {
            "join-token"
        } else {
            "init"
        };
        let out = Command::new(bin.path("mcp-master"))
            .arg(sub)
            .arg("--data-dir")
            .arg(&master_dir)
            .output()
            .context("run mcp-master init")?;
        if !out.status.success() {
            bail!(
                "mcp-master {sub} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut passwords = BTreeMap::new();
        for (user, _) in USERS {
            let file = password_file(dir, user);
            let password = match std::fs::read_to_string(&file) {
                Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
                _ => {
                    let password = random_password()?;
                    write_private(&file, password.as_bytes())?;
                    password
                }
            };
            passwords.insert(user.to_string(), password);
        }
        Ok((token, passwords))
    }

    /// Writes every config file.
    /// `passwords` maps each of `USERS` to its password; each gets its own hash.
    pub fn write_configs(
        spec: &FleetSpec,
        bin: &Binaries,
        join_token: &str,
        passwords: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let dir = &spec.dir;
        let master = format!(
            "node = {}\nlisten = {}\ndata_dir = {}\ndomain = {}\nallowed_domains = [{}]\nheartbeat_interval = {}\nmissed_heartbeats = {}\nprobe_timeout = {}\n",
            quote(&spec.master_node),
            quote(&spec.master_address()),
            quote(&dir.join("master").display().to_string()),
            quote(&spec.domain),
            quote(&spec.domain),
            quote(&spec.heartbeat_interval),
            spec.missed_heartbeats,
            quote(&spec.probe_timeout),
        );
        let mut master = master;
        if spec.bootstrap {
            let nodes: Vec<String> = spec
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{{ name = {}, address = {} }}",
                        quote(&n.name),
                        quote(&format!("{}:{}", n.ip, spec.agent_port))
                    )
                })
                .collect();
            master.push_str(&format!("bootstrap_nodes = [{}]\n", nodes.join(", ")));
        }
        master.push_str(&spec.master_extra);
        if !master.ends_with('\n') {
            master.push('\n');
        }
        for (user, role) in USERS {
            let password = passwords
                .get(user)
                .with_context(|| format!("no password for user {user}"))?;
            let hash = hash_password(bin, password)?;
            master.push_str(&format!(
                "[users.{user}]\npassword_hash = {}\nrole = {}\n",
                quote(&hash),
                quote(role)
            ));
        }
        // The embedded DNS on the master's address (SPEC §11: 127.0.0.11:5353 in
        // `mcp dev`), unless master_extra configures its own [dns].
        if !spec.master_extra.lines().any(|l| l.trim() == "[dns]") {
            const DNS_PORT: u16 = 5353;
            master.push_str(&format!(
                "[dns]\nbackend = \"embedded\"\nlisten = {}\n",
                quote(&format!("{}:{DNS_PORT}", spec.master_ip))
            ));
        }
        std::fs::write(dir.join("master/master.toml"), master).context("write master.toml")?;
        for node in &spec.nodes {
            let node_dir = dir.join(&node.name);
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("create {}", node_dir.display()))?;
            let mut agent = format!(
                "name = {}\nrole = {}\nmaster = {}\nlisten = {}\ndata_dir = {}\nsrv_root = {}\nruntime = {}\n",
                quote(&node.name),
                quote(&node.role),
                quote(&spec.master_address()),
                quote(&format!("{}:{}", node.ip, spec.agent_port)),
                quote(&node_dir.join("data").display().to_string()),
                quote(&dir.join("srv").join(&node.name).display().to_string()),
                quote(&spec.runtime),
            );
            agent.push_str(&format!("join_token = {}\n", quote(join_token)));
            if let Some(socket) = &spec.runtime_socket {
                agent.push_str(&format!(
                    "runtime_socket = {}\n",
                    quote(&socket.display().to_string())
                ));
            }
            if let Some(arch) = &node.arch {
                agent.push_str(&format!("arch = {}\n", quote(arch)));
            }
            if node.role == "edge" {
                let socket = spec.proxy_admin_socket(&node.name);
                agent.push_str(&format!(
                    "proxy_admin_socket = {}\npublic_address = {}\n",
                    quote(&socket.display().to_string()),
                    quote(&spec.proxy_address(node)),
                ));
                let proxy = format!(
                    "# mc-proxy of edge node {} (SPEC §11), written by the local fleet.\n\
                     listen = {}\nadmin_socket = {}\ndata_dir = {}\ndrain_timeout = \"1s\"\n",
                    node.name,
                    quote(&spec.proxy_address(node)),
                    quote(&socket.display().to_string()),
                    quote(&node_dir.join("proxy").display().to_string()),
                );
                std::fs::write(node_dir.join("proxy.toml"), proxy)
                    .with_context(|| format!("write {}/proxy.toml", node.name))?;
            }
            if !node.pools.is_empty() {
                let pools: Vec<String> = node.pools.iter().map(|p| quote(p)).collect();
                agent.push_str(&format!("pools = [{}]\n", pools.join(", ")));
            }
            agent.push_str(&node.agent_extra);
            write_private(&node_dir.join("agent.toml"), agent.as_bytes())?;
        }
        let cli = format!(
            "master = {}\nca_cert = \"master/ca.pem\"\ntoken_file = \"token\"\n",
            quote(&spec.master_address())
        );
        std::fs::write(dir.join("mcp.toml"), cli).context("write mcp.toml")?;
        Ok(())
    }

    /// `mcp login` as `user` with that user's password, writing DIR/token.
    pub fn login(&self, user: &str) -> anyhow::Result<()> {
        let file = password_file(&self.spec.dir, user);
        let password =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        self.login_with(user, password.trim())
    }

    /// `mcp login` as `user` with `password`, writing DIR/token.
    pub fn login_with(&self, user: &str, password: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new(self.bin.path("mcp"))
            .arg("--config")
            .arg(self.spec.dir.join("mcp.toml"))
            .args(["-q", "login", "--user", user, "--password-stdin"])
            .env_remove("MCP_MASTER")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run mcp login")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(password.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "mcp login --user {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Writes the configs, starts the master and every agent, and waits until every
    /// node has registered.
    pub fn start(spec: FleetSpec) -> anyhow::Result<Fleet> {
        let bin = Binaries::find()?;
        let (token, passwords) = Fleet::init(&spec, &bin)?;
        Fleet::write_configs(&spec, &bin, &token, &passwords)?;
        let mut fleet = Fleet {
            spec,
            bin,
            master: None,
            agents: BTreeMap::new(),
        };
        fleet.start_master()?;
        // The embedded public CA's certificate, for clients of the edge (SPEC §11).
        let public_ca = fleet
            .spec
            .dir
            .join("master")
            .join(mcp_pki::ca::PUBLIC_CA_CERT);
        if public_ca.is_file() {
            std::fs::copy(&public_ca, fleet.spec.dir.join("public-ca.pem"))
                .context("copy public-ca.pem")?;
        }
        if fleet.spec.login {
            fleet.login("admin")?;
        }
        let edges: Vec<String> = fleet.spec.edges().map(|n| n.name.clone()).collect();
        for edge in &edges {
            fleet.start_proxy(edge)?;
        }
        let names: Vec<String> = fleet.spec.nodes.iter().map(|n| n.name.clone()).collect();
        for name in &names {
            fleet.start_agent(name)?;
        }
        fleet.wait_registered(&names, Duration::from_secs(20))?;
        Ok(fleet)
    }

    fn spawn(&self, name: &str, program: &str, config: PathBuf) -> anyhow::Result<Proc> {
        let log_path = self.spec.dir.join("logs").join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        // The log's first line is the command, to start the process again by hand.
        {
            use std::io::Write as _;
            let mut first = &log;
            writeln!(
                first,
                "# {} --config {}",
                self.bin.path(program).display(),
                config.display()
            )
            .with_context(|| format!("write {}", log_path.display()))?;
        }
        let child = Command::new(self.bin.path(program))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {program} for {name}"))?;
        std::fs::write(
            self.spec.dir.join("pids").join(format!("{name}.pid")),
            child.id().to_string(),
        )
        .context("write pid file")?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Starts the master and waits until it listens.
    pub fn start_master(&mut self) -> anyhow::Result<()> {
        let config = self.spec.dir.join("master/master.toml");
        let mut proc = self.spawn("master", "mcp-master", config)?;
        let address = self.spec.master_address();
        wait_listening(&mut proc, &address, || self.log("master"))?;
        self.master = Some(proc);
        Ok(())
    }

    /// Starts a node's agent and waits until it answers on its RPC address.
    pub fn start_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self
            .spec
            .nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no node {name}"))?;
        let address = format!("{}:{}", node.ip, self.spec.agent_port);
        let config = self.spec.dir.join(name).join("agent.toml");
        let mut proc = self.spawn(name, "mcp-agent", config)?;
        wait_listening(&mut proc, &address, || self.log(name))?;
        self.agents.insert(name.to_string(), proc);
        Ok(())
    }

    /// Starts an edge's mc-proxy (`DIR/<node>/proxy.toml`) and waits until it
    /// listens.
    pub fn start_proxy(&mut self, edge: &str) -> anyhow::Result<()> {
        let node = self
            .spec
            .edges()
            .find(|n| n.name == edge)
            .with_context(|| format!("no edge node {edge}"))?;
        let address = self.spec.proxy_address(node);
        let name = self.spec.proxy_name(edge);
        if !self.bin.path("mc-proxy").is_file() {
            bail!(
                "mc-proxy not found in {}: run `cargo build --workspace --bins` first, or set MCP_BIN_DIR",
                self.bin.dir.display()
            );
        }
        let config = self.spec.dir.join(edge).join("proxy.toml");
        let mut proc = self.spawn(&name, "mc-proxy", config)?;
        wait_listening(&mut proc, &address, || self.log(&name))?;
        self.agents.insert(name, proc);
        Ok(())
    }

    /// Sends `signal` to a process of the fleet ("master" or a node name) and, for
    /// SIGKILL and SIGTERM, reaps it.
    pub fn signal(&mut self, name: &str, signal: i32) -> anyhow::Result<()> {
        let proc = if name == "master" {
            self.master.as_mut()
        } else {
            self.agents.get_mut(name)
        };
        let proc = proc.with_context(|| format!("no process {name}"))?;
        send_signal(proc.child.id(), signal);
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            let _ = proc.child.wait();
            if name == "master" {
                self.master = None;
            } else {
                self.agents.remove(name);
            }
        }
        Ok(())
    }

    /// Runs the CLI against this fleet.
    pub fn mcp(&self, args: &[&str]) -> Output {
        let mut command = Command::new(self.bin.path("mcp"));
        command
            .arg("--config")
            .arg(self.spec.dir.join("mcp.toml"))
            .args(args)
            .env_remove("MCP_MASTER")
            .stdin(Stdio::null());
        match command.output() {
            Ok(output) => output,
            Err(e) => Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("cannot run mcp: {e}").into_bytes(),
            },
        }
    }

    /// Runs the CLI with `--json` and parses stdout, failing on a non-zero exit.
    pub fn mcp_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.mcp(&all);
        if !out.status.success() {
            bail!(
                "mcp {} exited {:?}: {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parse output of mcp {}", args.join(" ")))
    }

    /// Waits until `names` are registered and healthy.
    pub fn wait_registered(&self, names: &[String], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(nodes) = self.mcp_json(&["node", "list"]) {
                let healthy: Vec<&str> = nodes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|n| n["state"] == "healthy")
                    .filter_map(|n| n["name"].as_str())
                    .collect();
                if names.iter().all(|n| healthy.contains(&n.as_str())) {
                    return Ok(());
                }
                last = format!("healthy: {healthy:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "nodes {names:?} did not all register within {within:?} ({last}); logs in {}",
            self.spec.dir.join("logs").display()
        )
    }

    /// The text of a process's log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.spec.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// Stops every process: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let mut procs: Vec<Proc> = std::mem::take(&mut self.agents).into_values().collect();
        procs.extend(self.master.take());
        for proc in &procs {
            send_signal(proc.child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for mut proc in procs {
            loop {
                match proc.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = proc.child.kill();
                        let _ = proc.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
        if self.spec.remove_on_drop {
            for problem in remove_instances(&self.spec) {
                eprintln!("mcp-local-fleet: {problem}");
            }
        }
    }
}

/// Removes every instance the agents of `spec` ran: the containers labelled with one
/// of its nodes and a service its agents knew (from each `agent.db`, and each
/// `srv_root/<service>` directory), and every exec instance whose supervisor runs
/// from a directory under `spec.dir` (with its process group). Call it once the
/// agents are stopped. Returns what could not be done.
pub fn remove_instances(spec: &FleetSpec) -> Vec<String> {
    let mut problems = Vec::new();
    kill_exec_instances(&spec.dir, &mut problems);
    remove_exec_cgroups(spec, &mut problems);
    if spec.runtime != "exec" {
        for node in &spec.nodes {
            let services = known_services(spec, &node.name);
            if services.is_empty() {
                continue;
            }
            if let Err(e) = remove_containers(spec, &node.name, &services) {
                problems.push(format!(
                    "remove the containers of node {}: {e:#}",
                    node.name
                ));
            }
        }
    }
    problems
}

/// The services a node's agent knew: the rows of its `agent.db` and the directories
/// of its `srv_root`.
fn known_services(spec: &FleetSpec, node: &str) -> std::collections::BTreeSet<String> {
    let mut services = std::collections::BTreeSet::new();
    let db = spec.dir.join(node).join("data/agent.db");
    if db.is_file() {
        let rows = rusqlite::Connection::open(&db).and_then(|conn| {
            let mut statement = conn.prepare("SELECT name FROM services")?;
            let names = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(names)
        });
        services.extend(rows.unwrap_or_default());
    }
    if let Ok(entries) = std::fs::read_dir(spec.dir.join("srv").join(node)) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                services.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    services
}

/// `docker rm -f` of the containers labelled `mcp.node=<node>` whose `mcp.service`
/// is one of `services`, on the engine behind the fleet's runtime socket.
fn remove_containers(
    spec: &FleetSpec,
    node: &str,
    services: &std::collections::BTreeSet<String>,
) -> anyhow::Result<()> {
    let docker = || {
        let mut command = Command::new("docker");
        if let Some(socket) = &spec.runtime_socket {
            command.env("DOCKER_HOST", format!("unix://{}", socket.display()));
        }
        command.stdin(Stdio::null());
        command
    };
    let out = docker()
        .args(["ps", "-a", "--no-trunc", "--format"])
        .arg("{{.ID}} {{.Label \"mcp.service\"}}")
        .arg("--filter")
        .arg(format!("label=mcp.node={node}"))
        .output()
        .context("run docker ps")?;
    if !out.status.success() {
        bail!("docker ps: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, service)| services.contains(*service))
        .map(|(id, _)| id.to_string())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let out = docker()
        .args(["rm", "-f", "-v"])
        .args(&ids)
        .output()
        .context("run docker rm")?;
    if !out.status.success() {
        bail!("docker rm: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// SIGKILLs the process group of every `mcp-agent supervise DIR` with DIR under
/// `root`: the supervisor and the instance it runs (which stays in its group).
/// Removes the cgroups of the exec instances of `spec`'s agents (the paths their
/// `instance.json` records), once their processes are gone.
fn remove_exec_cgroups(spec: &FleetSpec, problems: &mut Vec<String>) {
    for node in &spec.nodes {
        let exec = spec.dir.join(&node.name).join("data/exec");
        let Ok(entries) = std::fs::read_dir(&exec) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("instance.json")) else {
                continue;
            };
            let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let dirs = spec["cgroup"]["dirs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for dir in dirs.iter().filter_map(|d| d["path"].as_str()) {
                // A killed process leaves its cgroup a moment after the signal.
                let gone = (0..50).any(|_| match std::fs::remove_dir(dir) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        false
                    }
                });
                if !gone {
                    problems.push(format!("remove cgroup {dir}"));
                }
            }
        }
    }
}

fn kill_exec_instances(root: &Path, problems: &mut Vec<String>) {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        problems.push("read /proc to find exec instances".to_string());
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args.windows(2).any(|pair| {
            pair[0] == b"supervise"
                && Path::new(std::ffi::OsStr::from_bytes(pair[1])).starts_with(&root)
        });
        if ours {
            // The supervisor leads its own process group (the agent starts it so).
            send_signal_group(pid, libc::SIGKILL);
            send_signal(pid, libc::SIGKILL);
        }
    }
}

/// Waits until `proc` accepts connections on `address` (20 s), failing early if it
/// exits; `log` tells why.
fn wait_listening(proc: &mut Proc, address: &str, log: impl Fn() -> String) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("{} exited at start ({status}): {}", proc.name, log());
        }
        if let Ok(addr) = address.parse() {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            send_signal(proc.child.id(), libc::SIGKILL);
            let _ = proc.child.wait();
            bail!(
                "{} did not listen on {address} within 20s: {}",
                proc.name,
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The operators of a local fleet and their roles; each has its own password.
pub const USERS: [(&str, &str); 2] = [("admin", "admin"), ("viewer", "viewer")];

/// Where `user`'s password is kept: `DIR/<user>-password`.
pub fn password_file(dir: &Path, user: &str) -> PathBuf {
    dir.join(format!("{user}-password"))
}

/// 128 random bits as 32 hex digits.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `mcp-master hash-password`: an argon2 hash of `password` with a fresh salt.
fn hash_password(bin: &Binaries, password: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(bin.path("mcp-master"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run mcp-master hash-password")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(password.as_bytes())
            .context("write the password to mcp-master hash-password")?;
    }
    let out = child
        .wait_with_output()
        .context("wait for mcp-master hash-password")?;
    if !out.status.success() {
        bail!(
            "mcp-master hash-password failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes a file only its owner can read (it holds a secret).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    mcp_pki::ca::write_file(path, data, 0o600)?;
    Ok(())
}

/// Sends a signal to a process this fleet started.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; pid is positive, so
            // only that one process is signalled.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// Sends a signal to the process group led by `pgid`, a process this fleet started.
#[allow(unsafe_code)]
fn send_signal_group(pgid: u32, signal: i32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        if pgid > 1 {
            // SAFETY: kill(2) has no memory-safety preconditions; -pgid names one
            // process group, never every process (pgid > 1).
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }
}

/// Polls `check` until it returns Some or `within` passes.
pub fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs a benchmark script the way its CI smoke test does: `bash SCRIPT ARGS`
/// from `root`, stdin closed, in a process group of its own, with `env_remove`
/// taken out of its environment, for at most `deadline`. Past it the script gets
/// SIGTERM (its trap stops what it started, by pid), 30 s to go, then its group
/// SIGKILL. `Ok(stdout)` when it exited 0; otherwise why, with both outputs.
pub fn run_bench_script(
    root: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
    env_remove: &[&str],
    deadline: Duration,
) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new("bash");
    command
        .arg(root.join(script))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for key in env_remove {
        command.env_remove(key);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("run bash {script}: {e}"))?;
    let pid = child.id();
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = child.stdout.take().map(|p| reader(Box::new(p)));
    let err = child.stderr.take().map(|p| reader(Box::new(p)));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() <= deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => break None,
        }
    };
    if status.is_none() {
        send_signal(pid, libc::SIGTERM);
        let grace = Instant::now();
        while child.try_wait().ok().flatten().is_none() && grace.elapsed().as_secs() < 30 {
            std::thread::sleep(Duration::from_millis(100));
        }
        send_signal_group(pid, libc::SIGKILL);
        let _ = child.wait();
    }
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (stdout, stderr) = (join(out), join(err));
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!(
            "{script} failed: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )),
        None => Err(format!(
            "{script} took over {deadline:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )),
    }
}
