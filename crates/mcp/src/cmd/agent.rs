//! `mcp agent upgrade`: a rolling upgrade of the agents through the system's OpenSSH
//! `ssh` and `scp` (SPEC §9), so the operator's keys, ssh-agent and `~/.ssh/config`
//! apply. One node at a time: copy the binary to `<agent_path>.new`, check its
//! SHA-256 on the node, keep `<agent_path>.prev`, move the new one into place, run
//! the node's restart command, and wait until the master lists the node healthy with
//! the new `binary_sha256`. Otherwise put the previous binary back, restart it,
//! confirm it runs again, and stop the rollout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcp_proto::master::v1::{ListNodesRequest, Node};
use mcp_types::Arch;

use crate::client::{self, Master};
use crate::error::CliError;
use crate::output::{self, short_sha, UpgradeReport};
use crate::Ctx;

/// What `mcp agent upgrade` was asked.
pub struct UpgradeOptions {
    /// In rollout order; empty: every registered node.
    pub nodes: Vec<String>,
    /// One binary for every node.
    pub binary: Option<PathBuf>,
    pub binary_amd64: Option<PathBuf>,
    pub binary_arm64: Option<PathBuf>,
    /// How long a restarted agent has to register with the new binary.
    pub wait: Duration,
}

const DEFAULT_AGENT_PATH: &str = "/srv/mcp/mcp-agent";
const DEFAULT_RESTART: &str = "systemctl restart mcp-agent.service";
const DEFAULT_LOGS: &str = "journalctl -u mcp-agent.service -n 20 --no-pager";

/// `ssh -o ConnectTimeout` (after the node's own options, which may override it).
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// Bounds one ssh or scp run: a node that hangs never holds the rollout forever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a shared connection outlives its last use should `ssh -O exit` not
/// reach it (the CLI killed, say).
const CONTROL_PERSIST_SECS: u32 = 60;
/// Lines of the agent's log quoted when an upgrade fails.
const LOG_LINES: usize = 20;

const UPGRADED: &str = "upgraded";
const UNCHANGED: &str = "unchanged";
const ROLLED_BACK: &str = "rolled back";
const NOT_TRIED: &str = "not tried";

/// The Rust target an arch's agent is built for.
fn triple(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64-unknown-linux-gnu",
        Arch::Arm64 => "aarch64-unknown-linux-gnu",
    }
}

/// One node of the rollout and how to reach it.
struct Target {
    name: String,
    arch: Arch,
    /// The binary_sha256 it reported (empty: not registered).
    from: String,
    remote: Remote,
    agent_path: String,
    restart: String,
    logs: String,
}

/// A binary to install and its SHA-256.
struct Binary {
    path: PathBuf,
    sha256: String,
}

pub async fn upgrade(ctx: &Ctx, options: UpgradeOptions) -> Result<(), CliError> {
    let mut master = client::master(ctx).await?;
    let nodes = list_nodes(&mut master).await?;
    let control = ControlDir::create();
    let targets = plan(ctx, &options.nodes, &nodes, control.path())?;
    if targets.is_empty() {
        return Err(CliError::failed("no node to upgrade: none is registered"));
    }
    let binaries = binaries(ctx, &options, &targets).await?;
    let say = |message: String| {
        if !ctx.quiet {
            eprintln!("{message}");
        }
    };
    for (arch, binary) in &binaries {
        say(format!(
            "{arch}: {} ({})",
            short_sha(&binary.sha256),
            binary.path.display()
        ));
    }
    let mut reports: Vec<UpgradeReport> = Vec::new();
    let mut stopped: Option<(String, String)> = None;
    for target in &targets {
        let Some(binary) = binaries.get(&target.arch) else {
            continue;
        };
        let mut report = UpgradeReport {
            node: target.name.clone(),
            from: target.from.clone(),
            to: binary.sha256.clone(),
            result: NOT_TRIED,
            reason: String::new(),
        };
        if let Some((node, _)) = &stopped {
            report.reason = format!("the rollout stopped at {node}");
        } else if target.from == binary.sha256 {
            report.result = UNCHANGED;
            say(format!(
                "{}: unchanged, already runs {}",
                target.name,
                short_sha(&binary.sha256)
            ));
        } else {
            let step = upgrade_one(&mut master, target, binary, options.wait, &say).await;
            target.remote.close().await;
            match step {
                Step::Upgraded => report.result = UPGRADED,
                Step::NotTried(reason) => {
                    say(format!("{}: not tried: {reason}", target.name));
                    report.reason = reason;
                }
                Step::Stop { result, reason } => {
                    say(format!("{}: {result}: {reason}", target.name));
                    report.result = result;
                    report.reason = reason.clone();
                    stopped = Some((target.name.clone(), reason));
                }
            }
        }
        reports.push(report);
    }
    if ctx.json {
        ctx.print_json(&output::upgrade_json(&reports));
    } else if !ctx.quiet {
        print!("{}", output::upgrade_table(&reports));
    }
    if let Some((node, reason)) = stopped {
        return Err(CliError::failed(format!(
            "agent upgrade stopped at node {node}: {reason}"
        )));
    }
    let missed: Vec<String> = reports
        .iter()
        .filter(|r| r.result == NOT_TRIED)
        .map(|r| format!("{} ({})", r.node, r.reason))
        .collect();
    if !missed.is_empty() {
        return Err(CliError::failed(format!(
            "not upgraded: {}",
            missed.join("; ")
        )));
    }
    Ok(())
}

/// How one node's upgrade ended.
enum Step {
    Upgraded,
    /// Nothing on the node changed (it could not be reached); the rollout goes on.
    NotTried(String),
    /// The rollout stops here.
    Stop {
        result: &'static str,
        reason: String,
    },
}

async fn upgrade_one(
    master: &mut Master,
    target: &Target,
    binary: &Binary,
    wait: Duration,
    say: &impl Fn(String),
) -> Step {
    let started = Instant::now();
    let node = &target.name;
    let path = &target.agent_path;
    let new = format!("{path}.new");
    let prev = format!("{path}.prev");
    let stop = |reason: String| Step::Stop {
        result: NOT_TRIED,
        reason,
    };
    say(format!(
        "{node}: {} -> {} ({}) over ssh {}",
        short_sha(&target.from),
        short_sha(&binary.sha256),
        target.arch,
        target.remote.destination
    ));
    // Reach the node first: nothing is copied to a node that does not answer.
    let on_disk = match target
        .remote
        .run(&format!("sha256sum -- {}", sh(path)))
        .await
    {
        Ok(out) => match parse_sha256sum(&out) {
            Some(sha) => sha,
            None => return Step::NotTried(format!("sha256sum {path} printed {out:?}")),
        },
        Err(RemoteError::Unreachable(why)) => return Step::NotTried(why),
        Err(RemoteError::Failed(why)) => {
            return Step::NotTried(format!("no agent at {path}: {why}"))
        }
    };
    if !target.from.is_empty() && on_disk != target.from {
        say(format!(
            "{node}: note: {path} on disk is {}, the running agent {}; {prev} keeps the file on disk",
            short_sha(&on_disk),
            short_sha(&target.from)
        ));
    }
    if let Err(e) = target.remote.copy(&binary.path, &new).await {
        return stop(format!("copy to {new}: {}", e.text()));
    }
    if let Err(e) = target
        .remote
        .run(&install_command(path, &binary.sha256))
        .await
    {
        return stop(format!("install {path} (keeping {prev}): {}", e.text()));
    }
    say(format!(
        "{node}: copied, SHA-256 checked on the node and installed in {:.1}s (previous kept as {prev}); restarting",
        started.elapsed().as_secs_f64()
    ));
    let restarted = Instant::now();
    let failure = match target.remote.run(&target.restart).await {
        Err(e) => format!("restart `{}`: {}", target.restart, e.text()),
        Ok(_) => {
            say(format!(
                "{node}: restarted in {:.1}s; waiting up to {} for it to register with {}",
                restarted.elapsed().as_secs_f64(),
                mcp_types::duration::format_duration(wait),
                short_sha(&binary.sha256)
            ));
            match wait_for(master, node, Some(&binary.sha256), restarted, wait).await {
                Ok(()) => {
                    say(format!(
                        "{node}: upgraded in {:.1}s (registered {:.1}s after the restart began)",
                        started.elapsed().as_secs_f64(),
                        restarted.elapsed().as_secs_f64()
                    ));
                    return Step::Upgraded;
                }
                Err(last) => format!(
                    "the new agent did not register with binary {} within {} (last seen: {last})",
                    short_sha(&binary.sha256),
                    mcp_types::duration::format_duration(wait)
                ),
            }
        }
    };
    say(format!("{node}: {failure}; rolling back"));
    // What the failed agent said, before the previous one writes over it.
    let logged = match target.remote.run(&target.logs).await {
        Ok(out) => tail(&strip_ansi(&out), LOG_LINES),
        Err(e) => format!("(its log could not be read: {})", e.text()),
    };
    let back = match target.remote.run(&rollback_command(path)).await {
        Err(e) => format!("restoring {prev} failed: {}", e.text()),
        Ok(_) => {
            let restarted = Instant::now();
            match target.remote.run(&target.restart).await {
                Err(e) => format!("restored {prev}, but its restart failed: {}", e.text()),
                Ok(_) => {
                    let old = (!target.from.is_empty()).then_some(target.from.as_str());
                    match wait_for(master, node, old, restarted, wait).await {
                        Ok(()) => format!(
                            "the previous agent ({}) runs again",
                            short_sha(&target.from)
                        ),
                        Err(last) => format!(
                            "restored and restarted {prev}, but it did not register within {} (last seen: {last})",
                            mcp_types::duration::format_duration(wait)
                        ),
                    }
                }
            }
        }
    };
    let mut reason = format!("{failure}; {back}");
    if !logged.trim().is_empty() {
        reason.push_str("\nthe agent logged:\n");
        reason.push_str(logged.trim_end());
    }
    Step::Stop {
        result: ROLLED_BACK,
        reason,
    }
}

/// Waits until the master lists `node` healthy, having heard from it since `since`,
/// with `sha` (any binary when None). Err: what it last saw.
async fn wait_for(
    master: &mut Master,
    node: &str,
    sha: Option<&str>,
    since: Instant,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let last = match master.list_nodes(ListNodesRequest {}).await {
            Ok(reply) => match reply
                .into_inner()
                .nodes
                .into_iter()
                .find(|n| n.name == node)
            {
                Some(n) => {
                    let fresh = u128::from(n.last_heartbeat_ms_ago) <= since.elapsed().as_millis();
                    if n.state == "healthy" && fresh && sha.is_none_or(|s| n.binary_sha256 == s) {
                        return Ok(());
                    }
                    format!(
                        "{} with binary {}, last heard {} ms ago",
                        n.state,
                        short_sha(&n.binary_sha256),
                        n.last_heartbeat_ms_ago
                    )
                }
                None => "not registered".to_string(),
            },
            Err(status) => format!("list nodes: {}", status.message()),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list_nodes(master: &mut Master) -> Result<Vec<Node>, CliError> {
    Ok(master
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes)
}

/// The nodes to upgrade, in order, with their settings from the CLI config.
fn plan(
    ctx: &Ctx,
    named: &[String],
    nodes: &[Node],
    control: Option<&Path>,
) -> Result<Vec<Target>, CliError> {
    let mut names: Vec<String> = Vec::new();
    let wanted: Vec<String> = if named.is_empty() {
        nodes.iter().map(|n| n.name.clone()).collect()
    } else {
        named.to_vec()
    };
    for name in wanted {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut targets = Vec::new();
    for name in names {
        let node = nodes.iter().find(|n| n.name == name);
        let settings = ctx.config.nodes.get(&name);
        if node.is_none() && settings.is_none() {
            return Err(CliError::usage(format!(
                "node {name} is neither registered with the master nor in the CLI config's [nodes.{name}]"
            )));
        }
        let settings = settings.cloned().unwrap_or_default();
        let arch = match settings
            .arch
            .as_deref()
            .or(node.map(|n| n.arch.as_str()).filter(|a| !a.is_empty()))
        {
            Some(arch) => arch
                .parse::<Arch>()
                .map_err(|e| CliError::usage(format!("node {name}: {e}")))?,
            None => {
                return Err(CliError::usage(format!(
                    "node {name}: arch unknown; set arch in [nodes.{name}] of the CLI config"
                )))
            }
        };
        targets.push(Target {
            arch,
            from: node.map(|n| n.binary_sha256.clone()).unwrap_or_default(),
            remote: Remote {
                destination: settings.ssh.clone().unwrap_or_else(|| name.clone()),
                port: settings.ssh_port.unwrap_or(22),
                options: settings
                    .ssh_options
                    .as_ref()
                    .map(|w| w.to_vec())
                    .unwrap_or_default(),
                control: control.map(|dir| dir.join("%C")),
            },
            agent_path: settings
                .agent_path
                .clone()
                .unwrap_or_else(|| DEFAULT_AGENT_PATH.to_string()),
            restart: settings
                .restart
                .clone()
                .unwrap_or_else(|| DEFAULT_RESTART.to_string()),
            logs: settings
                .logs
                .clone()
                .unwrap_or_else(|| DEFAULT_LOGS.to_string()),
            name,
        });
    }
    Ok(targets)
}

/// The binary for each arch of the rollout: given, or built with cargo.
async fn binaries(
    ctx: &Ctx,
    options: &UpgradeOptions,
    targets: &[Target],
) -> Result<BTreeMap<Arch, Binary>, CliError> {
    let mut archs: Vec<Arch> = targets.iter().map(|t| t.arch).collect();
    archs.sort();
    archs.dedup();
    let mut binaries = BTreeMap::new();
    for arch in archs {
        let (path, flag) = match (&options.binary, arch) {
            (Some(path), _) => (Some(path.clone()), "--binary"),
            (None, Arch::Amd64) => (options.binary_amd64.clone(), "--binary-amd64"),
            (None, Arch::Arm64) => (options.binary_arm64.clone(), "--binary-arm64"),
        };
        let path = match path {
            Some(path) => path,
            None if options.binary_amd64.is_some() || options.binary_arm64.is_some() => {
                let nodes: Vec<&str> = targets
                    .iter()
                    .filter(|t| t.arch == arch)
                    .map(|t| t.name.as_str())
                    .collect();
                return Err(CliError::usage(format!(
                    "{flag} is needed for {} ({arch})",
                    nodes.join(", ")
                )));
            }
            None => build(ctx, arch).await?,
        };
        check_elf(&path, arch, flag)?;
        let sha256 = mcp_pki::digest::sha256_file(&path)
            .map_err(|e| CliError::usage(format!("read {}: {e}", path.display())))?;
        binaries.insert(arch, Binary { path, sha256 });
    }
    Ok(binaries)
}

/// Refuses an ELF file built for another arch (anything else, a script say, is the
/// operator's to judge).
fn check_elf(path: &Path, arch: Arch, flag: &str) -> Result<(), CliError> {
    use std::io::Read as _;
    let mut head = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut head));
    let n = read.map_err(|e| CliError::usage(format!("{flag} {}: {e}", path.display())))?;
    if n < head.len() || &head[..4] != b"\x7fELF" {
        return Ok(());
    }
    // e_machine, little-endian (EI_DATA = 1) on both arches.
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let built_for = match machine {
        62 => Some(Arch::Amd64),
        183 => Some(Arch::Arm64),
        _ => None,
    };
    if built_for == Some(arch) {
        return Ok(());
    }
    let what = built_for.map_or_else(|| format!("ELF machine {machine}"), |a| a.to_string());
    Err(CliError::usage(format!(
        "{flag} {} is built for {what}, but a node of the rollout is {arch}",
        path.display()
    )))
}

/// `cargo build --release -p mcp-agent --target <triple>` in the current directory
/// (the MCP source tree); the binary it wrote.
async fn build(ctx: &Ctx, arch: Arch) -> Result<PathBuf, CliError> {
    let triple = triple(arch);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = tokio::process::Command::new(&cargo);
    command.args([
        "build",
        "--release",
        "-p",
        "mcp-agent",
        "--bin",
        "mcp-agent",
        "--target",
        triple,
        "--message-format=json-render-diagnostics",
    ]);
    // Cross builds link with Debian's cross gcc unless the operator chose a linker.
    let host = match std::env::consts::ARCH {
        "x86_64" => Some(Arch::Amd64),
        "aarch64" => Some(Arch::Arm64),
        _ => None,
    };
    if host != Some(arch) {
        let (var, linker) = match arch {
            Arch::Amd64 => (
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
                "x86_64-linux-gnu-gcc",
            ),
            Arch::Arm64 => (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            ),
        };
        if std::env::var_os(var).is_none() {
            command.env(var, linker);
        }
    }
    if !ctx.quiet {
        eprintln!("building mcp-agent for {triple} (cargo build --release -p mcp-agent --target {triple})");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if ctx.quiet {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true);
    let out = command.output().await.map_err(|e| {
        CliError::failed(format!(
            "run {}: {e}; pass --binary or --binary-amd64/--binary-arm64",
            Path::new(&cargo).display()
        ))
    })?;
    if !out.status.success() {
        return Err(CliError::failed(format!(
            "cargo build of mcp-agent for {triple} failed ({}){}; see README \"Cross-building the agent for arm64\", or pass --binary-{arch}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), LOG_LINES)
                .lines()
                .map(|l| format!("\n{l}"))
                .collect::<String>()
        )));
    }
    let mut executable = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "mcp-agent" {
            if let Some(path) = message["executable"].as_str() {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    executable.ok_or_else(|| {
        CliError::failed(format!(
            "cargo build for {triple} named no mcp-agent executable"
        ))
    })
}

/// Run on the node once `<path>.new` is copied, in one round trip: check its SHA-256
/// (a mismatch removes it and changes nothing else: exit 3), keep the binary in
/// place as `<path>.prev`, move the new one in (rename(2): atomic).
fn install_command(path: &str, sha256: &str) -> String {
    format!(
        "got=$(sha256sum -- {new} | cut -d ' ' -f 1); \
         if [ \"$got\" != {sha} ]; then rm -f -- {new}; \
         echo \"SHA-256 of the copy on the node is ${{got:-unreadable}}, not {sha}: removed it\" >&2; exit 3; fi; \
         chmod 0755 {new} && cp -p -- {path} {prev} && mv -f -- {new} {path}",
        new = sh(&format!("{path}.new")),
        prev = sh(&format!("{path}.prev")),
        path = sh(path),
        sha = sh(sha256),
    )
}

/// Run on the node to put `<path>.prev` back in place.
fn rollback_command(path: &str) -> String {
    format!("mv -f -- {} {}", sh(&format!("{path}.prev")), sh(path))
}

/// The hash `sha256sum` printed first, when it is one.
fn parse_sha256sum(out: &str) -> Option<String> {
    let sha = out.split_whitespace().next()?.to_ascii_lowercase();
    (sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sha)
}

/// A word for the node's POSIX shell.
fn sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `text` without its terminal escape sequences (`ESC [ ... letter`): agents log
/// in colour.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A private directory for the shared connections' sockets, removed when dropped.
struct ControlDir(Option<PathBuf>);

impl ControlDir {
    /// None when it cannot be made, or its sockets' paths would be too long for
    /// a Unix socket (then every step opens its own connection).
    fn create() -> ControlDir {
        use std::os::unix::fs::DirBuilderExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("mcp-upgrade-{}-{nanos:x}", std::process::id()));
        // ssh's %C is 40 characters; sun_path holds 108 bytes.
        let fits = dir.as_os_str().len() + 1 + 40 < 100;
        let made = fits && std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok();
        ControlDir(made.then_some(dir))
    }

    fn path(&self) -> Option<&Path> {
        self.0.as_deref()
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A node reached with the system's `ssh` and `scp`.
struct Remote {
    /// `user@host`, or a `~/.ssh/config` alias.
    destination: String,
    port: u16,
    /// The node's `ssh_options`, for both.
    options: Vec<String>,
    /// `ControlPath` of the one connection every step to the node shares (None:
    /// a connection per step).
    control: Option<PathBuf>,
}

enum RemoteError {
    /// ssh itself failed (exit 255, or it could not run): nothing ran on the node.
    Unreachable(String),
    /// The command ran on the node and failed.
    Failed(String),
}

impl RemoteError {
    fn text(&self) -> &str {
        match self {
            RemoteError::Unreachable(why) | RemoteError::Failed(why) => why,
        }
    }
}

impl Remote {
    /// The arguments both take: the port (`-p` for ssh, `-P` for scp), batch mode
    /// (never a prompt; first, so it holds), the node's options, and a connect
    /// timeout the options may override.
    fn args(&self, port_flag: &str) -> Vec<String> {
        let mut args = vec![
            port_flag.to_string(),
            self.port.to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
        ];
        args.extend(self.options.iter().cloned());
        args.push("-o".to_string());
        args.push(format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
        if let Some(control) = &self.control {
            args.extend([
                "-o".to_string(),
                "ControlMaster=auto".to_string(),
                "-o".to_string(),
                format!("ControlPath={}", control.display()),
                "-o".to_string(),
                format!("ControlPersist={CONTROL_PERSIST_SECS}"),
            ]);
        }
        args
    }

    /// Ends the shared connection, if one was opened.
    async fn close(&self) {
        if self.control.is_some() {
            let mut ssh = tokio::process::Command::new("ssh");
            ssh.args(self.args("-p"))
                .args(["-O", "exit", "--"])
                .arg(&self.destination);
            let _ = bounded(ssh, "ssh -O exit").await;
        }
    }

    /// Runs `command` through the node's shell; its stdout.
    async fn run(&self, command: &str) -> Result<String, RemoteError> {
        let mut ssh = tokio::process::Command::new("ssh");
        ssh.args(self.args("-p"))
            .arg("--")
            .arg(&self.destination)
            .arg(command);
        let out = bounded(ssh, "ssh").await?;
        let stderr = tail(String::from_utf8_lossy(&out.stderr).trim(), 5);
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Some(255) | None => Err(RemoteError::Unreachable(if stderr.is_empty() {
                format!("ssh {} ended with {}", self.destination, out.status)
            } else {
                stderr
            })),
            Some(code) => Err(RemoteError::Failed(format!(
                "exited {code}{}",
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ))),
        }
    }

    /// Copies a local file to `path` on the node.
    async fn copy(&self, local: &Path, path: &str) -> Result<(), RemoteError> {
        let mut scp = tokio::process::Command::new("scp");
        scp.args(self.args("-P"))
            .arg("-q")
            .arg("--")
            .arg(local)
            .arg(format!("{}:{path}", self.destination));
        let out = bounded(scp, "scp").await?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = tail(String::from_utf8_lossy(&out.stderr).trim(), 5);
        Err(RemoteError::Failed(format!(
            "scp ended with {}: {stderr}",
            out.status
        )))
    }
}

/// Runs a command (no stdin), within COMMAND_TIMEOUT.
async fn bounded(
    mut command: tokio::process::Command,
    name: &str,
) -> Result<std::process::Output, RemoteError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| RemoteError::Unreachable(format!("run {name}: {e}")))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(RemoteError::Unreachable(format!("{name}: {e}"))),
        Err(_) => Err(RemoteError::Failed(format!(
            "{name} did not finish within {}s",
            COMMAND_TIMEOUT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(sh("/srv/mcp/mcp-agent"), "'/srv/mcp/mcp-agent'");
        assert_eq!(sh("it's"), "'it'\\''s'");
    }

    #[test]
    fn sha256sum_output() {
        let sha = "a".repeat(64);
        assert_eq!(
            parse_sha256sum(&format!("{sha}  /srv/mcp/mcp-agent\n")),
            Some(sha)
        );
        assert_eq!(parse_sha256sum("sha256sum: nope"), None);
        assert_eq!(parse_sha256sum(""), None);
    }

    #[test]
    fn ssh_and_scp_arguments() {
        let remote = Remote {
            destination: "root@orion".to_string(),
            port: 2222,
            options: vec!["-i".to_string(), "/k".to_string()],
            control: None,
        };
        assert_eq!(
            remote.args("-P"),
            [
                "-P",
                "2222",
                "-o",
                "BatchMode=yes",
                "-i",
                "/k",
                "-o",
                "ConnectTimeout=10"
            ]
        );
        let shared = Remote {
            control: Some(PathBuf::from("/tmp/c/%C")),
            ..remote
        };
        assert_eq!(
            shared.args("-p")[8..],
            [
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPath=/tmp/c/%C",
                "-o",
                "ControlPersist=60"
            ]
        );
    }

    #[test]
    fn elf_of_another_arch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elf = |machine: u16| {
            let mut head = b"\x7fELF\x02\x01\x01".to_vec();
            head.resize(18, 0);
            head.extend_from_slice(&machine.to_le_bytes());
            head.resize(64, 0);
            head
        };
        let amd64 = dir.path().join("amd64");
        std::fs::write(&amd64, elf(62)).unwrap();
        let arm64 = dir.path().join("arm64");
        std::fs::write(&arm64, elf(183)).unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!/bin/sh\nexit 1\n").unwrap();
        assert!(check_elf(&amd64, Arch::Amd64, "--binary").is_ok());
        assert!(check_elf(&arm64, Arch::Arm64, "--binary").is_ok());
        assert!(check_elf(&script, Arch::Arm64, "--binary").is_ok());
        let e = check_elf(&amd64, Arch::Arm64, "--binary-arm64").unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.message.contains("built for amd64"), "{}", e.message);
    }

    #[test]
    fn colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m started"),
            "2026  INFO started"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    /// The node's side of install and rollback, run here by `sh`.
    #[test]
    fn install_and_rollback_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp agent's");
        let path_text = path.display().to_string();
        let new = dir.path().join("mcp agent's.new");
        let prev = dir.path().join("mcp agent's.prev");
        let sh_c = |command: &str| {
            std::process::Command::new("sh")
                .args(["-c", command])
                .output()
                .unwrap()
        };
        std::fs::write(&path, "old").unwrap();
        std::fs::write(&new, "new").unwrap();
        let new_sha = mcp_pki::digest::sha256_file(&new).unwrap();
        // A copy that does not match: removed, nothing else touched.
        let out = sh_c(&install_command(&path_text, &"0".repeat(64)));
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("removed it"));
        assert!(!new.exists() && !prev.exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        // A good one: in place, the old one kept.
        std::fs::write(&new, "new").unwrap();
        let out = sh_c(&install_command(&path_text, &new_sha));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&prev).unwrap(), "old");
        assert!(!new.exists());
        // Rolled back.
        let out = sh_c(&rollback_command(&path_text));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
