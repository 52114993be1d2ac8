//! Capability negotiation (SPEC §9) on the real binaries: the seed fleet on
//! 127.0.0.71-74 (exec driver) with orion's and the edge svc's agents replaced by
//! `mcp-agent-without-rpc`, the real agent built with the `test-without-rpc`
//! feature, which leaves RPCs out of what it reports at registration while still
//! serving them. So whatever the master sends anyway would succeed; the test shows
//! it sends nothing: `mcp stop` and `mcp remove` exit 1 with the SPEC §9 message and
//! the service keeps running, the loop's removal of a moved copy is refused with it
//! (the old copy stays), a frozen orion is judged unhealthy without a Probe, and the
//! edge's route stays pending with the message in `mcp route list --json` and in
//! `mcp status` events, never `Unimplemented`; what the agents do report still works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_local_fleet::Proc;
use support::*;

/// orion's agent reports neither of these; svc's lacks SetupEdgeRoute.
const ORION_DROPS: &str = "Stop,Remove,Probe";
const SVC_DROPS: &str = "SetupEdgeRoute";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The exact SPEC §9 refusal.
fn lacks(node: &str, rpc: &str) -> String {
    format!(
        "node {node} runs mcp-agent {VERSION}, which lacks {rpc}; run `mcp agent upgrade {node}`"
    )
}

/// `mcp-agent-without-rpc` beside the fleet's other binaries. Built here, into the
/// target directory they came from (only mcp-agent itself is compiled again with the
/// feature, and nothing when it is fresh; `target/*/mcp-agent` is left as it is).
/// With MCP_BIN_DIR, it must already be there.
fn agent_without_rpc(bin_dir: &Path) -> PathBuf {
    let path = bin_dir.join("mcp-agent-without-rpc");
    if std::env::var_os("MCP_BIN_DIR").is_some() {
        assert!(
            path.is_file(),
            "{} is missing: cargo build -p mcp-agent --features test-without-rpc --bin mcp-agent-without-rpc",
            path.display()
        );
        return path;
    }
    let profile = bin_dir.file_name().unwrap().to_string_lossy().into_owned();
    let target_dir = bin_dir.parent().unwrap();
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args([
            "build",
            "-p",
            "mcp-agent",
            "--features",
            "test-without-rpc",
            "--bin",
            "mcp-agent-without-rpc",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(repo_root())
        .stdin(Stdio::null());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let out = build.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build mcp-agent-without-rpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Restarts `node`'s agent as `binary`, reporting every RPC but `drops`, and waits
/// until the master has its new registration.
fn run_without(fleet: &mut Fleet, node: &str, binary: &Path, drops: &str) {
    fleet.signal(node, libc::SIGTERM).unwrap();
    let dir = fleet.spec.dir.clone();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("logs").join(format!("{node}.log")))
        .unwrap();
    let child = Command::new(binary)
        .arg("--config")
        .arg(dir.join(node).join("agent.toml"))
        .env("MCP_AGENT_DROP_RPCS", drops)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(
        dir.join("pids").join(format!("{node}.pid")),
        child.id().to_string(),
    )
    .unwrap();
    // The fleet stops it like any of its processes, a failed test included.
    fleet.agents.insert(
        node.to_string(),
        Proc {
            name: node.to_string(),
            child,
        },
    );
    let dropped: Vec<&str> = drops.split(',').collect();
    let registered = eventually(Duration::from_secs(20), || {
        let nodes = fleet.mcp_json(&["node", "list"]).ok()?;
        let n = nodes
            .as_array()?
            .iter()
            .find(|n| n["name"] == node)?
            .clone();
        let rpcs: Vec<&str> = n["rpcs"]
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        (n["state"] == "healthy"
            && rpcs.contains(&"Deploy")
            && !dropped.iter().any(|d| rpcs.contains(d)))
        .then_some(())
    });
    assert!(
        registered.is_some(),
        "{node} did not register without {drops}: {}",
        fleet.log(node)
    );
}

/// Runs `mcp` and expects exit 1 with exactly the SPEC §9 message.
fn refused(fleet: &Fleet, args: &[&str], message: &str) {
    let out = fleet.mcp(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "mcp {}: {stderr}",
        args.join(" ")
    );
    assert!(
        stderr.contains(message),
        "mcp {}: {stderr:?} lacks {message:?}",
        args.join(" ")
    );
    assert!(!stderr.contains("nimplemented"), "{stderr}");
}

#[test]
fn the_master_never_sends_an_rpc_the_agent_lacks() {
    let binary = fixture(None);
    let services = ["cap-web", "cap-pub"];
    let _cleanup = Cleanup {
        services: services.map(String::from).into(),
        programs: vec![binary.clone()],
    };
    for service in services {
        purge_exec(service, &binary);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::seed_at(&tmp.path().join("fleet"), "exec", 71);
    spec.heartbeat_interval = "300ms".to_string();
    spec.missed_heartbeats = 3;
    spec.probe_timeout = "500ms".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let without = agent_without_rpc(&fleet.bin.dir);
    run_without(&mut fleet, "orion", &without, ORION_DROPS);
    run_without(&mut fleet, "svc", &without, SVC_DROPS);
    let defs = tmp.path();

    // Deploy and Restart orion reports; Stop and Remove it does not: refused, and the
    // service runs on as it did.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(defs, "cap-web", &binary, "orion", "")],
    );
    let address = address_of(&fleet, "cap-web");
    assert!(serves(&address, "hello"), "cap-web does not serve");
    refused(&fleet, &["stop", "cap-web"], &lacks("orion", "Stop"));
    refused(&fleet, &["remove", "cap-web"], &lacks("orion", "Remove"));
    let list = fleet.mcp_json(&["list"]).unwrap();
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "cap-web")
        .unwrap();
    assert_eq!(web["state"], "running", "{web}");
    assert_eq!(processes_of("cap-web", &binary).len(), 1);
    assert!(serves(&address, "hello"), "cap-web stopped serving");
    mcp_ok(&fleet, &["restart", "cap-web"]);
    assert!(
        serves(&address_of(&fleet, "cap-web"), "hello"),
        "cap-web does not serve after a restart"
    );

    // A move to rift: the loop would remove the older copy from orion, which lacks
    // Remove; the refusal is an event and the old copy stays.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(defs, "cap-web", &binary, "rift", "")],
    );
    let remove = lacks("orion", "Remove");
    let seen = eventually(Duration::from_secs(10), || {
        events_of(&fleet)
            .into_iter()
            .find(|e| e.starts_with("orion: reconcile: remove cap-web") && e.contains(&remove))
    });
    assert!(
        seen.is_some(),
        "no refused removal: {:#?}",
        events_of(&fleet)
    );
    assert_eq!(
        processes_of("cap-web", &binary).len(),
        2,
        "the copy on orion was removed anyway"
    );

    // Frozen orion: no Probe to send, so missing heartbeats alone make it unhealthy,
    // with the message as the reason; it heals at its next heartbeat.
    fleet.signal("orion", libc::SIGSTOP).unwrap();
    let probe = lacks("orion", "Probe");
    let unhealthy = eventually(Duration::from_secs(10), || {
        events_of(&fleet)
            .into_iter()
            .find(|e| e.starts_with("orion: ") && e.contains("-> unhealthy") && e.contains(&probe))
    });
    fleet.signal("orion", libc::SIGCONT).unwrap();
    assert!(unhealthy.is_some(), "{:#?}", events_of(&fleet));
    fleet
        .wait_registered(&["orion".to_string()], Duration::from_secs(10))
        .unwrap();

    // The edge lacks SetupEdgeRoute: the route stays pending with the message, in the
    // route table and the events, and the edge agent never got the call (it would
    // have set the route up).
    let host = "cap-pub.metacircular.net";
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &exec_on(
                defs,
                "cap-pub",
                &binary,
                "rift",
                &format!("public = true\nhostname = \"{host}\"\n"),
            ),
        ],
    );
    let setup = lacks("svc", "SetupEdgeRoute");
    let route = eventually(Duration::from_secs(10), || {
        route_of(&fleet, host).filter(|r| r["error"].as_str().is_some_and(|e| e.contains(&setup)))
    });
    let route = route.unwrap_or_else(|| panic!("{:?}", route_of(&fleet, host)));
    assert_eq!(route["state"], "pending", "{route}");
    assert!(
        events_of(&fleet).iter().any(|e| e
            .starts_with("svc: reconcile: route cap-pub.metacircular.net")
            && e.contains(&setup)),
        "{:#?}",
        events_of(&fleet)
    );
    let routes = fleet.mcp_json(&["route", "list"]).unwrap().to_string();
    let status = fleet.mcp_json(&["status"]).unwrap().to_string();
    for text in [&routes, &status] {
        assert!(!text.contains("nimplemented"), "{text}");
    }
    assert!(
        !fleet.log("svc").contains("edge route set up"),
        "the edge was sent SetupEdgeRoute"
    );
}
