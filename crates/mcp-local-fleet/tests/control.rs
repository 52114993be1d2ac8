//! The master's control loop end to end, on the real binaries with the exec driver:
//! a deploy, stop and start never make a healthy node look dead (no `probing`); a
//! service moved away from a frozen (SIGSTOP) node runs exactly once, the newest copy,
//! after the node thaws; a master killed in the middle of a deploy and started again
//! never ends up with two copies of the service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// Ends what a test started even when it fails: the exec instances of its services.
struct Cleanup {
    services: Vec<String>,
    binary: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for service in &self.services {
            purge_exec(service, &self.binary);
        }
    }
}

fn definition(dir: &Path, service: &str, binary: &Path, extra: &str) -> String {
    exec_definition(dir, &format!("{service}.toml"), service, binary, extra, "")
}

/// The nodes of every copy of `service` the master knows, from `mcp status`, sorted.
fn copies(fleet: &Fleet, service: &str) -> Vec<String> {
    let status = fleet.mcp_json(&["status"]).unwrap();
    let mut nodes: Vec<String> = status["services"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|s| s["name"] == service)
        .map(|s| s["node"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn lifecycle_never_probes_and_a_move_from_a_frozen_node_converges() {
    let binary = fixture(None);
    let _cleanup = Cleanup {
        services: vec!["ctl-move".to_string()],
        binary: binary.clone(),
    };
    purge_exec("ctl-move", &binary);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::seed_at(tmp.path(), "exec", 81);
    spec.heartbeat_interval = "200ms".to_string();
    spec.missed_heartbeats = 3;
    spec.probe_timeout = "300ms".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let dir = tmp.path();

    // Deploy, stop, start, redeploy: heartbeat streams stay up, nobody is probed.
    let on_orion = definition(dir, "ctl-move", &binary, "node = \"orion\"");
    mcp_ok(&fleet, &["deploy", &on_orion]);
    mcp_ok(&fleet, &["stop", "ctl-move"]);
    mcp_ok(&fleet, &["start", "ctl-move"]);
    mcp_ok(&fleet, &["restart", "ctl-move"]);
    mcp_ok(&fleet, &["deploy", &on_orion]);
    std::thread::sleep(Duration::from_millis(600));
    let seen = events_of(&fleet);
    assert!(
        !seen.iter().any(|e| e.contains("probing")),
        "a healthy node was probed: {seen:#?}"
    );
    assert_eq!(copies(&fleet, "ctl-move"), ["orion"]);
    let served = processes_of("ctl-move", &binary);
    assert_eq!(served.len(), 1, "{served:?}");

    // Freeze orion and move the service to rift: the deploy completes, the old copy
    // waits on the frozen node.
    fleet.signal("orion", libc::SIGSTOP).unwrap();
    let on_rift = definition(dir, "ctl-move", &binary, "node = \"rift\"");
    mcp_ok(&fleet, &["deploy", &on_rift]);
    // Every command reaches the newest copy, wherever the stale one is.
    mcp_ok(&fleet, &["stop", "ctl-move"]);
    mcp_ok(&fleet, &["start", "ctl-move"]);
    // Thaw it: within a few heartbeats exactly one copy runs, on rift.
    fleet.signal("orion", libc::SIGCONT).unwrap();
    let one = eventually(Duration::from_secs(10), || {
        (copies(&fleet, "ctl-move") == ["rift"] && processes_of("ctl-move", &binary).len() == 1)
            .then_some(())
    });
    assert!(
        one.is_some(),
        "copies {:?}, processes {:?}; events {:#?}",
        copies(&fleet, "ctl-move"),
        processes_of("ctl-move", &binary),
        events_of(&fleet)
    );
    let address = address_of(&fleet, "ctl-move");
    assert!(address.starts_with("127.0.0.81:"), "{address}");
    assert!(serves(&address, "hello"), "nothing serves on {address}");
    mcp_ok(&fleet, &["remove", "ctl-move"]);
    assert!(copies(&fleet, "ctl-move").is_empty());
    assert!(processes_of("ctl-move", &binary).is_empty());
}

#[test]
fn a_deploy_right_after_a_master_restart_never_duplicates() {
    let binary = fixture(None);
    let _cleanup = Cleanup {
        services: vec!["ctl-dup".to_string()],
        binary: binary.clone(),
    };
    purge_exec("ctl-dup", &binary);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::seed_at(tmp.path(), "exec", 91);
    spec.heartbeat_interval = "300ms".to_string();
    spec.probe_timeout = "300ms".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let def = definition(tmp.path(), "ctl-dup", &binary, "");
    for round in 0..5 {
        // Kill the master while a deploy of an unplaced service runs...
        let bin = mcp_local_fleet::Binaries::find().unwrap();
        let mut deploy = std::process::Command::new(bin.path("mcp"))
            .arg("--config")
            .arg(tmp.path().join("mcp.toml"))
            .args(["deploy", &def])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 * round));
        fleet.signal("master", libc::SIGKILL).unwrap();
        let _ = deploy.wait();
        // ...start it again and deploy the same definition at once.
        fleet.start_master().unwrap();
        mcp_ok(&fleet, &["deploy", &def]);
        let one = eventually(Duration::from_secs(10), || {
            (copies(&fleet, "ctl-dup").len() == 1 && processes_of("ctl-dup", &binary).len() == 1)
                .then_some(())
        });
        assert!(
            one.is_some(),
            "round {round}: copies {:?}, processes {:?}; events {:#?}",
            copies(&fleet, "ctl-dup"),
            processes_of("ctl-dup", &binary),
            events_of(&fleet)
        );
    }
    mcp_ok(&fleet, &["remove", "ctl-dup"]);
    let none = eventually(Duration::from_secs(10), || {
        processes_of("ctl-dup", &binary).is_empty().then_some(())
    });
    assert!(none.is_some(), "a copy was left behind");
}
