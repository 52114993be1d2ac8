//! Node and master certificates renew at two thirds of their lifetime without a
//! restart, end to end on the real binaries: with `node_cert_ttl = "6s"`, after
//! 15 s (two lifetimes and a half) the agents still heartbeat and answer, their
//! certificate files have changed, and new connections both ways use the renewed
//! certificates (the first ones expired long ago). A restarted agent loads its
//! renewed pair; one down past its certificate's end enrolls again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mcp_local_fleet::NodeSpec;
use support::*;

const NODES: [&str; 2] = ["rn1", "rn2"];
const EXPIRED: &str = "the node certificate expired while the agent was down";

fn node_cert(fleet: &Fleet, node: &str) -> String {
    std::fs::read_to_string(fleet.spec.dir.join(node).join("data/node.pem")).unwrap()
}

/// Every node healthy, each heard from within `within`.
fn heartbeating(fleet: &Fleet, within: Duration) -> Result<(), String> {
    let nodes = fleet
        .mcp_json(&["node", "list"])
        .map_err(|e| format!("{e:#}"))?;
    for name in NODES {
        let node = nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == name)
            .ok_or_else(|| format!("{name} missing: {nodes}"))?;
        let ago = node["last_heartbeat_ms_ago"].as_u64().unwrap_or(u64::MAX);
        if node["state"] != "healthy" || ago > within.as_millis() as u64 {
            return Err(format!("{name} is not heartbeating: {node}"));
        }
    }
    Ok(())
}

#[test]
fn node_and_master_certificates_renew_without_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::single(tmp.path(), NODES[0], "127.0.0.91", "exec");
    spec.nodes.push(NodeSpec::worker(NODES[1], "127.0.0.92"));
    spec.master_extra = "node_cert_ttl = \"6s\"\n".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let ca_pem = std::fs::read_to_string(fleet.spec.dir.join("master/ca.pem")).unwrap();
    let ca = mcp_pki::cert::cert_from_pem(&ca_pem).unwrap();
    let first: Vec<String> = NODES.iter().map(|n| node_cert(&fleet, n)).collect();

    std::thread::sleep(Duration::from_secs(15));

    // Still heartbeating on the streams opened at start.
    heartbeating(&fleet, Duration::from_secs(2)).unwrap();
    for (node, first) in NODES.iter().zip(&first) {
        let now = node_cert(&fleet, node);
        assert_ne!(&now, first, "{node}'s certificate file was not renewed");
        let der = mcp_pki::cert::cert_from_pem(&now).unwrap();
        assert!(mcp_pki::cert::cert_is_for(&der, node));
        assert!(
            mcp_pki::cert::chains_to(&der, &ca),
            "{node}'s certificate on disk is valid now and from the fleet CA"
        );
        let log = fleet.log(node);
        assert!(
            log.contains("node certificate: certificate renewed"),
            "{node}: {log}"
        );
        let key = fleet.spec.dir.join(node).join("data/node-key.pem");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The CLI dials afresh: the master presents a renewed certificate (its first
    // expired 9 s ago) ...
    assert!(fleet
        .log("master")
        .contains("the master's certificate: certificate renewed"));
    mcp_ok(&fleet, &["node", "list"]);
    // ... and the master reaches the agents over new connections (ListServices).
    mcp_ok(&fleet, &["list"]);

    // A restarted master: the agents reconnect and register with their renewed
    // certificates, which it verifies afresh.
    fleet.signal("master", libc::SIGTERM).unwrap();
    fleet.start_master().unwrap();
    fleet
        .wait_registered(&names, Duration::from_secs(20))
        .unwrap();
    heartbeating(&fleet, Duration::from_secs(2)).unwrap();
    let log = fleet.log("master");
    assert!(!log.contains("certificate expired"), "{log}");

    // An agent restarted at once loads the renewed pair from its data dir (a key
    // that is not the certificate's would be refused).
    fleet.signal(NODES[0], libc::SIGTERM).unwrap();
    fleet.start_agent(NODES[0]).unwrap();
    fleet
        .wait_registered(&names[..1], Duration::from_secs(20))
        .unwrap();
    assert!(!fleet.log(NODES[0]).contains(EXPIRED));

    // An agent down past its certificate's end enrolls again with its join token.
    fleet.signal(NODES[1], libc::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    fleet.start_agent(NODES[1]).unwrap();
    fleet
        .wait_registered(&names[1..], Duration::from_secs(20))
        .unwrap();
    assert!(
        fleet.log(NODES[1]).contains(EXPIRED),
        "{}",
        fleet.log(NODES[1])
    );
    fleet.stop();
}
