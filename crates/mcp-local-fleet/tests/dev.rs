//! `mcp dev` as an operator runs it (SPEC §11): the seed fleet from the real binaries
//! and config files at the documented paths; a process killed by hand is reported and
//! the rest keep running; an interrupt stops everything it started. Then the soak
//! benchmark's smoke mode, on the same addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn pid_of(dir: &std::path::Path, process: &str) -> u32 {
    std::fs::read_to_string(dir.join("pids").join(format!("{process}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn mcp_dev_runs_the_seed_fleet() {
    let _addresses = dev_addresses();
    let bin = mcp_local_fleet::Binaries::find().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    let (mut dev, _rx, erx) = start_dev(&dir, "exec");

    // The documented files.
    for path in [
        "master/master.toml",
        "rift/agent.toml",
        "orion/agent.toml",
        "hyperborea/agent.toml",
        "svc/agent.toml",
        "mcp.toml",
        "logs/master.log",
        "logs/rift.log",
        "pids/master.pid",
        "pids/svc.pid",
        "svc/proxy.toml",
        "public-ca.pem",
        "master/public-ca.pem",
        "logs/mc-proxy.log",
        "pids/mc-proxy.pid",
        "admin-password",
        "viewer-password",
    ] {
        assert!(dir.join(path).is_file(), "{path} missing");
    }
    assert_ne!(
        std::fs::read(dir.join("admin-password")).unwrap(),
        std::fs::read(dir.join("viewer-password")).unwrap(),
        "admin and viewer share a password"
    );
    let hyperborea = std::fs::read_to_string(dir.join("hyperborea/agent.toml")).unwrap();
    assert!(
        hyperborea.contains("arch = \"arm64\"")
            && hyperborea.contains("pi-pool")
            && hyperborea.contains("127.0.0.13:9444"),
        "{hyperborea}"
    );

    // svc's mc-proxy (SPEC §11): on 127.0.0.14:8443, its admin socket at
    // DIR/svc/admin.sock (0600), which the edge agent is configured with; an
    // unknown name gets `unrecognized_name`.
    let socket = dir.join("svc/admin.sock");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin socket mode {mode:o}");
    }
    let svc = std::fs::read_to_string(dir.join("svc/agent.toml")).unwrap();
    assert!(svc.contains(&socket.display().to_string()), "{svc}");
    let list = Command::new(bin.path("mc-proxy"))
        .args(["route", "list", "--json", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let hello = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            "127.0.0.14:8443",
            "-servername",
            "nothing.metacircular.net",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&hello.stderr);
    assert!(said.contains("unrecognized name"), "{said}");
    let first_line = std::fs::read_to_string(dir.join("logs/mc-proxy.log")).unwrap();
    assert!(
        first_line.starts_with('#')
            && first_line
                .lines()
                .next()
                .unwrap()
                .contains("mc-proxy --config"),
        "{first_line}"
    );

    // The CLI works at once with the written config.
    let config = dir.join("mcp.toml");
    let out = Command::new(bin.path("mcp"))
        .arg("--config")
        .arg(&config)
        .args(["--json", "node", "list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hyperborea", "orion", "rift", "svc"]);

    // Kill one agent by hand: mcp dev says so and keeps the others running.
    let orion = pid_of(&dir, "orion");
    mcp_local_fleet::send_signal(orion, libc::SIGKILL);
    let said = eventually(Duration::from_secs(5), || {
        erx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.contains("orion exited"))
    });
    assert!(said.is_some(), "mcp dev did not report the dead agent");
    let others: Vec<u32> = ["master", "rift", "hyperborea", "svc", "mc-proxy"]
        .iter()
        .map(|p| pid_of(&dir, p))
        .collect();
    assert!(
        others.iter().all(|p| alive(*p)),
        "the other processes keep running"
    );

    // Interrupt: everything it started stops.
    mcp_local_fleet::send_signal(dev.child.id(), libc::SIGINT);
    let status = eventually(Duration::from_secs(15), || {
        dev.child.try_wait().ok().flatten()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "mcp dev did not exit cleanly: {status:?}"
    );
    assert!(
        others.iter().all(|p| !alive(*p)),
        "processes left running after mcp dev stopped"
    );

    // The soak benchmark still runs (a smoke of it, on the same addresses, so after
    // this fleet is gone): a broken benchmark script fails here, not months later.
    let soak = Command::new("bash")
        .arg(repo_root().join("bench/soak.sh"))
        .args(["--smoke", "exec"])
        .env("MCP_BIN_DIR", &bin.dir)
        .output()
        .unwrap();
    assert!(
        soak.status.success(),
        "bench/soak.sh --smoke exec failed:\n{}{}",
        String::from_utf8_lossy(&soak.stdout),
        String::from_utf8_lossy(&soak.stderr)
    );
    assert!(String::from_utf8_lossy(&soak.stdout).contains("no leak"));
}
