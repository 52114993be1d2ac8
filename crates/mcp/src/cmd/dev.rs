//! `mcp dev`: the whole seed fleet on this machine, from the real binaries and config
//! files (SPEC §11), until interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_local_fleet::{Fleet, FleetSpec};

use crate::error::CliError;
use crate::Ctx;

/// Options of `mcp dev`.
pub struct DevOptions {
    pub dir: PathBuf,
    pub runtime: Option<String>,
    pub deploy: Vec<PathBuf>,
    pub heartbeat_interval: Option<String>,
    pub probe_timeout: Option<String>,
}

/// Does a Docker Engine API answer `/_ping` on this socket?
fn answers(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

/// The Podman sockets to try: rootful, then the user's rootless one
/// (`$XDG_RUNTIME_DIR/podman/podman.sock`).
fn podman_sockets() -> Vec<PathBuf> {
    let mut sockets = vec![PathBuf::from("/run/podman/podman.sock")];
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        sockets.push(PathBuf::from(dir).join("podman/podman.sock"));
    }
    sockets
}

/// Docker when its socket answers, else Podman (rootful, then rootless), else the
/// exec driver.
fn pick_runtime() -> (String, Option<PathBuf>) {
    let docker = PathBuf::from("/var/run/docker.sock");
    if answers(&docker) {
        return ("docker".to_string(), Some(docker));
    }
    if let Some(socket) = podman_sockets().into_iter().find(|s| answers(s)) {
        return ("podman".to_string(), Some(socket));
    }
    ("exec".to_string(), None)
}

/// `--runtime podman`: the Podman socket that answers [default: the rootful one].
fn podman_socket() -> PathBuf {
    podman_sockets()
        .into_iter()
        .find(|s| answers(s))
        .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock"))
}

pub async fn run(ctx: &Ctx, options: DevOptions) -> Result<(), CliError> {
    for d in [&options.heartbeat_interval, &options.probe_timeout]
        .into_iter()
        .flatten()
    {
        mcp_types::parse_duration(d)
            .map_err(|e| CliError::usage(format!("duration {d:?}: {e}")))?;
    }
    std::fs::create_dir_all(&options.dir)
        .map_err(|e| CliError::failed(format!("create {}: {e}", options.dir.display())))?;
    let dir = options
        .dir
        .canonicalize()
        .map_err(|e| CliError::failed(format!("resolve {}: {e}", options.dir.display())))?;
    let (runtime, socket) = match options.runtime.as_deref() {
        None => pick_runtime(),
        Some("docker") => (
            "docker".to_string(),
            Some(PathBuf::from("/var/run/docker.sock")),
        ),
        Some("podman") => ("podman".to_string(), Some(podman_socket())),
        Some("exec") => ("exec".to_string(), None),
        Some(other) => {
            return Err(CliError::usage(format!(
                "--runtime: expected docker, podman or exec, not {other:?}"
            )))
        }
    };
    let mut spec = FleetSpec::seed(&dir, &runtime);
    spec.runtime_socket = socket;
    // Services outlive `mcp dev` by design: its agents adopt them next time.
    spec.remove_on_drop = false;
    if let Some(d) = options.heartbeat_interval {
        spec.heartbeat_interval = d;
    }
    if let Some(d) = options.probe_timeout {
        spec.probe_timeout = d;
    }
    let say = |text: &str| {
        if !ctx.quiet {
            println!("{text}");
        }
    };
    say(&format!(
        "mcp dev: starting the seed fleet in {} (runtime {runtime})",
        dir.display()
    ));
    let mut fleet = tokio::task::spawn_blocking(move || Fleet::start(spec))
        .await
        .map_err(|e| CliError::failed(format!("start the fleet: {e}")))?
        .map_err(|e| CliError::failed(format!("start the fleet: {e:#}")))?;
    let show = |fleet: &Fleet, args: &[&str]| {
        let out = fleet.mcp(args);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        out.status.success()
    };
    if !ctx.quiet {
        show(&fleet, &["node", "list"]);
    }
    if !options.deploy.is_empty() {
        let mut args = vec!["deploy".to_string()];
        args.extend(options.deploy.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if show(&fleet, &args) {
            for line in try_lines(&fleet, &dir) {
                say(&line);
            }
        }
    }
    say(&format!(
        "mcp dev: running. Use `mcp --config {}/mcp.toml ...`; logs in {}/logs; Ctrl-C stops everything.",
        dir.display(),
        dir.display()
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::failed(format!("watch SIGTERM: {e}")))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let mut exited = Vec::new();
        if let Some(master) = fleet.master.as_mut() {
            if let Ok(Some(status)) = master.child.try_wait() {
                exited.push(("master".to_string(), status));
            }
        }
        for (name, proc) in fleet.agents.iter_mut() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                exited.push((name.clone(), status));
            }
        }
        for (name, status) in exited {
            eprintln!("mcp dev: {name} exited ({status}); the others keep running. Start it again by hand with the `# ...` command line at the start of its run in {}/logs/{name}.log, or restart mcp dev.", dir.display());
            if name == "master" {
                fleet.master = None;
            } else {
                fleet.agents.remove(&name);
            }
        }
    }
    say("mcp dev: stopping");
    tokio::task::spawn_blocking(move || fleet.stop())
        .await
        .map_err(|e| CliError::failed(format!("stop the fleet: {e}")))?;
    Ok(())
}

/// What to try after `--deploy`: a `curl` through the edge for each public l7 route
/// (trusting the embedded public CA), an `openssl s_client` for each l4 route (the
/// service's own certificate, from the fleet CA), else a plain route's address.
fn try_lines(fleet: &Fleet, dir: &Path) -> Vec<String> {
    let out = fleet.mcp(&["--json", "route", "list"]);
    let routes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let edge = fleet
        .spec
        .edges()
        .next()
        .map(|e| fleet.spec.proxy_address(e));
    let mut lines = Vec::new();
    if let Some(edge) = edge {
        let (ip, port) = edge.rsplit_once(':').unwrap_or((edge.as_str(), "443"));
        for r in &routes {
            let host = r["hostname"].as_str().unwrap_or_default();
            if host.is_empty() || host.starts_with('*') {
                continue;
            }
            if r["mode"] == "l4" {
                lines.push(format!(
                    "try: openssl s_client -connect {edge} -servername {host} -CAfile {}/master/ca.pem </dev/null",
                    dir.display()
                ));
            } else {
                lines.push(format!(
                    "try: curl --cacert {}/public-ca.pem --resolve {host}:{port}:{ip} https://{host}:{port}/",
                    dir.display()
                ));
            }
        }
    }
    if lines.is_empty() {
        lines.push("try the routes above, e.g. curl http://<address>/".to_string());
    }
    lines
}
