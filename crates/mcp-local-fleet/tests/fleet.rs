//! The fleet, end to end on the real binaries: four agents on their own loopback
//! addresses register with the right roles, arches and pools; each placement mode
//! lands where SPEC §4 says; a service that fits nowhere gets every node's reason;
//! frozen (SIGSTOP) and killed (SIGKILL) agents become unhealthy within their bounds
//! and heal; a killed master comes back to the full view while services keep serving;
//! the edge node never gets a container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const SERVICES: &[&str] = &[
    "fl-pinned",
    "fl-pool",
    "fl-core",
    "fl-any1",
    "fl-any2",
    "fl-arm",
    "fl-app",
    "fl-db",
    "fl-mover",
];

fn write(dir: &Path, name: &str, extra: &str) -> String {
    write_image(dir, name, "mcp-test/hello:1", extra)
}

/// A definition with `image`: hyperborea, which reports arm64, runs only an image
/// labelled for it (`mcp-test/hello-arm64:1`, SPEC §3).
fn write_image(dir: &Path, name: &str, image: &str, extra: &str) -> String {
    let text = format!(
        "name = \"{name}\"\n{extra}\n[[components]]\nname = \"web\"\nimage = \"{image}\"\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const ARM64: &str = "mcp-test/hello-arm64:1";

fn node_of(fleet: &Fleet, service: &str) -> String {
    let list = fleet.mcp_json(&["list"]).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service);
    entry
        .map(|e| e["node"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn state_of(fleet: &Fleet, node: &str) -> String {
    let nodes = fleet.mcp_json(&["node", "list"]).unwrap();
    let entry = nodes.as_array().unwrap().iter().find(|n| n["name"] == node);
    entry
        .map(|e| e["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| "absent".to_string())
}

/// Time until `node` reaches `state`, polling `mcp node list`.
fn time_to_state(fleet: &Fleet, node: &str, state: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    eventually(within, || {
        (state_of(fleet, node) == state).then(|| start.elapsed())
    })
}

#[test]
fn fleet_registers_places_detects_failures_and_survives_the_master() {
    fixture(None);
    purge(SERVICES);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::seed_at(tmp.path(), "docker", 51);
    spec.heartbeat_interval = "200ms".to_string();
    spec.missed_heartbeats = 3;
    spec.probe_timeout = "300ms".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let dir = tmp.path();

    // Registration: roles, arches, pools, real resources.
    let nodes = fleet.mcp_json(&["node", "list"]).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    let get = |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap().clone();
    assert_eq!(get("rift")["role"], "worker");
    assert_eq!(get("orion")["arch"], "amd64");
    assert_eq!(get("hyperborea")["arch"], "arm64");
    assert_eq!(get("hyperborea")["pools"], serde_json::json!(["pi-pool"]));
    assert_eq!(get("svc")["role"], "edge");
    for n in nodes {
        assert_eq!(n["state"], "healthy");
        assert!(n["memory"]["total"].as_u64().unwrap() > 0, "{n}");
        assert!(n["disk"]["free"].as_u64().unwrap() > 0, "{n}");
        assert!(n["version"].as_str().unwrap().starts_with("0."), "{n}");
    }

    // Each placement mode.
    mcp_ok(
        &fleet,
        &["deploy", &write(dir, "fl-pinned", "node = \"orion\"")],
    );
    assert_eq!(node_of(&fleet, "fl-pinned"), "orion");
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &write_image(dir, "fl-pool", ARM64, "node = \"pi-pool\""),
        ],
    );
    assert_eq!(node_of(&fleet, "fl-pool"), "hyperborea");
    mcp_ok(
        &fleet,
        &["deploy", &write(dir, "fl-core", "tier = \"core\"")],
    );
    assert_eq!(node_of(&fleet, "fl-core"), "rift");
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &write_image(dir, "fl-arm", ARM64, "[resources]\narch = [\"arm64\"]"),
        ],
    );
    assert_eq!(node_of(&fleet, "fl-arm"), "hyperborea");
    mcp_ok(
        &fleet,
        &[
            "deploy",
            &write(dir, "fl-any1", ""),
            &write(dir, "fl-any2", ""),
        ],
    );
    for s in ["fl-any1", "fl-any2"] {
        let node = node_of(&fleet, s);
        assert!(
            ["rift", "orion", "hyperborea"].contains(&node.as_str()),
            "{s} on {node}"
        );
    }
    // A redeploy stays where it runs.
    let before = node_of(&fleet, "fl-any1");
    mcp_ok(&fleet, &["deploy", &write(dir, "fl-any1", "")]);
    assert_eq!(node_of(&fleet, "fl-any1"), before);

    // depends_on orders a batch: given app before db, db is deployed first.
    let app = write(dir, "fl-app", "depends_on = [\"fl-db\"]");
    let db = write(dir, "fl-db", "");
    mcp_ok(&fleet, &["deploy", &app, &db]);
    let status = fleet.mcp_json(&["status"]).unwrap();
    let order: Vec<&str> = status["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("deploy fl-db") || m.starts_with("deploy fl-app"))
        .collect();
    // (hyperborea may refuse the amd64 image and a service be placed again: a
    // second event of its own, after the first ones.)
    let first = |service: &str| order.iter().position(|m| m.starts_with(service));
    assert!(
        first("deploy fl-db").is_some_and(|db| first("deploy fl-app").is_some_and(|app| db < app)),
        "{order:?}"
    );
    let out = fleet.mcp(&[
        "deploy",
        &write(dir, "fl-orphan", "depends_on = [\"fl-nothing\"]"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown dependency is an invalid deploy"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fl-nothing"));

    // A move: the service starts on the new node, then leaves the old one.
    mcp_ok(
        &fleet,
        &["deploy", &write(dir, "fl-mover", "node = \"orion\"")],
    );
    assert_eq!(node_of(&fleet, "fl-mover"), "orion");
    mcp_ok(
        &fleet,
        &["deploy", &write(dir, "fl-mover", "node = \"rift\"")],
    );
    assert_eq!(node_of(&fleet, "fl-mover"), "rift");
    let moved = containers("fl-mover", None);
    assert_eq!(moved.len(), 1, "exactly one copy after the move");
    let label = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"mcp.node\"}}",
            &moved[0],
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "rift");
    assert!(serves(
        &address_of(&fleet, "fl-mover"),
        "hello from fl-mover on rift"
    ));

    // Fits nowhere: every node and its reason.
    let out = fleet.mcp(&[
        "deploy",
        &write(dir, "fl-huge", "[resources]\nmemory = \"64TiB\""),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node can run \"fl-huge\""), "{err}");
    for n in ["rift", "orion", "hyperborea"] {
        assert!(
            err.contains(&format!("{n}: memory 64TiB requested")),
            "{n} missing in {err}"
        );
    }
    assert!(err.contains("svc: role edge"), "{err}");
    // Pinned to the edge node: refused, never a fallback.
    let out = fleet.mcp(&["deploy", &write(dir, "fl-edge", "node = \"svc\"")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("role edge"));
    // The edge node never got a container.
    let edge = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=mcp.node=svc"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&edge.stdout).trim().is_empty(),
        "containers on the edge node"
    );

    // SIGSTOP: unhealthy within missed_heartbeats x interval + probe_timeout; SIGCONT heals.
    let bound = Duration::from_millis(3 * 200 + 300);
    let pid = fleet.agents["orion"].pid();
    mcp_local_fleet::send_signal(pid, libc::SIGSTOP);
    let took = time_to_state(&fleet, "orion", "unhealthy", bound * 4);
    mcp_local_fleet::send_signal(pid, libc::SIGCONT);
    let took = took.expect("a frozen agent must become unhealthy");
    assert!(
        took <= bound + Duration::from_millis(500),
        "frozen agent found after {took:?}, bound {bound:?}"
    );
    assert!(
        time_to_state(&fleet, "orion", "healthy", Duration::from_secs(5)).is_some(),
        "SIGCONT must heal"
    );
    // Unhealthy nodes get no placements: a service pinned there is refused meanwhile.

    // SIGKILL: the broken heartbeat stream triggers a probe at once.
    fleet.signal("hyperborea", libc::SIGKILL).unwrap();
    let took = time_to_state(&fleet, "hyperborea", "unhealthy", Duration::from_secs(5))
        .expect("a dead agent must become unhealthy");
    assert!(
        took <= Duration::from_millis(300 + 400),
        "dead agent found after {took:?}"
    );
    let out = fleet.mcp(&["deploy", &write(dir, "fl-pool2", "node = \"pi-pool\"")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no placement on an unhealthy node"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("hyperborea: unhealthy"));
    fleet.start_agent("hyperborea").unwrap();
    assert!(time_to_state(&fleet, "hyperborea", "healthy", Duration::from_secs(5)).is_some());
    let events = fleet.mcp_json(&["status"]).unwrap();
    let messages: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["node"], e["message"]))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("orion") && m.contains("-> unhealthy")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("hyperborea") && m.contains("-> healthy")),
        "{messages:?}"
    );

    // SIGKILL the master: services keep serving; a new master gets the full view back.
    let before = fleet.mcp_json(&["list"]).unwrap();
    let address = address_of(&fleet, "fl-pinned");
    fleet.signal("master", libc::SIGKILL).unwrap();
    assert!(
        serves(&address, "hello from fl-pinned on orion"),
        "services must outlive the master"
    );
    assert_eq!(
        fleet.mcp(&["list"]).status.code(),
        Some(3),
        "no master: exit 3"
    );
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    fleet.start_master().unwrap();
    let names: Vec<String> = ["rift", "orion", "hyperborea", "svc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    fleet
        .wait_registered(&names, Duration::from_secs(10))
        .unwrap();
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(3), "view back after {took:?}");
    let after = fleet.mcp_json(&["list"]).unwrap();
    let where_ = |v: &serde_json::Value| {
        let mut pairs: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].to_string(), s["node"].to_string()))
            .collect();
        pairs.sort();
        pairs
    };
    assert_eq!(where_(&after), where_(&before), "what runs where is back");

    for s in SERVICES {
        mcp_ok(&fleet, &["remove", s]);
    }
    fleet.stop();
}
