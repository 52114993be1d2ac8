//! The embedded DNS end to end (SPEC §8, §11): the seed fleet's master answers the
//! internal zone on `<master ip>:5353`, checked with the real `dig`: A and SRV of a
//! deployed exec service, the A following a move, NXDOMAIN after `mcp remove`, and
//! the same answers after a master SIGKILL and restart, without a deploy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

const SERVICE: &str = "dns-hello";
const NAME: &str = "dns-hello.svc.mcp.metacircular.net";
const SRV: &str = "_http._tcp.dns-hello.svc.mcp.metacircular.net";

/// Ends what the test started even when it fails: the service's exec instances.
struct Cleanup {
    binary: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        purge_exec(SERVICE, &self.binary);
    }
}

/// `dig @SERVER -p 5353 ARGS` (one try, one second), its stdout; None without dig.
fn dig(server: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["-p", "5353", "+tries=1", "+time=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `+short` answer lines, sorted.
fn short(server: &str, name: &str, kind: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["+short", name, kind];
    args.extend_from_slice(extra);
    let mut lines: Vec<String> = dig(server, &args)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The status dig read from the header (`NOERROR`, `NXDOMAIN`...).
fn status(server: &str, name: &str, kind: &str) -> String {
    let out = dig(server, &["+noall", "+comments", name, kind]).unwrap_or_default();
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string()
}

/// Waits until `check` gives `want` (10 s at most); the last value otherwise.
fn settle<T: PartialEq + Clone>(want: &T, mut check: impl FnMut() -> T) -> T {
    let mut last = check();
    let got = eventually(Duration::from_secs(10), || {
        last = check();
        (last == *want).then(|| last.clone())
    });
    got.unwrap_or(last)
}

#[test]
fn dig_follows_deploy_move_remove_and_a_master_restart() {
    if Command::new("dig").arg("-v").output().is_err() {
        assert!(!in_ci(), "dig (bind9-dnsutils) is missing in CI");
        eprintln!("skipped: no dig (apt-get install bind9-dnsutils)");
        return;
    }
    let binary = fixture(None);
    let _cleanup = Cleanup {
        binary: binary.clone(),
    };
    purge_exec(SERVICE, &binary);
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::seed_at(tmp.path(), "exec", 121);
    spec.heartbeat_interval = "300ms".to_string();
    spec.probe_timeout = "300ms".to_string();
    let mut fleet = Fleet::start(spec).unwrap();
    let master = "127.0.0.121";
    let dir = tmp.path();

    // Deployed on rift: A → 127.0.0.121, SRV → the published port, over UDP and TCP.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(dir, SERVICE, &binary, "rift", "")],
    );
    let a = settle(&vec!["127.0.0.121".to_string()], || {
        short(master, NAME, "A", &[])
    });
    assert_eq!(a, ["127.0.0.121"], "{}", fleet.log("master"));
    let address = address_of(&fleet, SERVICE);
    let port = address.rsplit(':').next().unwrap().to_string();
    let want_srv = vec![format!("0 0 {port} {NAME}.")];
    assert_eq!(
        settle(&want_srv, || short(master, SRV, "SRV", &[])),
        want_srv
    );
    assert_eq!(short(master, SRV, "SRV", &["+tcp"]), want_srv);
    assert_eq!(short(master, NAME, "A", &["+tcp"]), ["127.0.0.121"]);
    assert_eq!(
        status(master, "nope.svc.mcp.metacircular.net", "A"),
        "NXDOMAIN"
    );
    assert_eq!(status(master, "example.org", "A"), "REFUSED");
    let soa = short(master, "svc.mcp.metacircular.net", "SOA", &[]);
    assert_eq!(soa.len(), 1, "{soa:?}");
    // `mcp status SERVICE` shows the service's names as the zone holds them.
    let shown = fleet.mcp_json(&["status", SERVICE]).unwrap();
    let names: Vec<&str> = shown["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        names.contains(&format!("{NAME} A 127.0.0.121").as_str()),
        "{shown}"
    );
    assert!(
        names.contains(&format!("{SRV} SRV 0 0 {port} {NAME}").as_str()),
        "{shown}"
    );

    // Moved to orion: the A follows, the SRV names the new port.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(dir, SERVICE, &binary, "orion", "")],
    );
    let a = settle(&vec!["127.0.0.122".to_string()], || {
        short(master, NAME, "A", &[])
    });
    assert_eq!(a, ["127.0.0.122"], "{}", fleet.log("master"));
    let address = address_of(&fleet, SERVICE);
    assert!(address.starts_with("127.0.0.122:"), "{address}");
    let port = address.rsplit(':').next().unwrap().to_string();
    let want_srv = vec![format!("0 0 {port} {NAME}.")];
    assert_eq!(
        settle(&want_srv, || short(master, SRV, "SRV", &[])),
        want_srv
    );

    // The master killed and started again: the same answers, no deploy.
    fleet.signal("master", libc::SIGKILL).unwrap();
    fleet.start_master().unwrap();
    let a = settle(&vec!["127.0.0.122".to_string()], || {
        short(master, NAME, "A", &[])
    });
    assert_eq!(a, ["127.0.0.122"], "{}", fleet.log("master"));
    assert_eq!(
        settle(&want_srv, || short(master, SRV, "SRV", &[])),
        want_srv
    );
    let soa_after = short(master, "svc.mcp.metacircular.net", "SOA", &[]);
    let serial = |s: &[String]| -> u64 {
        s.first()
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        serial(&soa_after) >= serial(&soa),
        "the serial went back: {soa:?} then {soa_after:?}"
    );

    // Removed: NXDOMAIN for both names.
    mcp_ok(&fleet, &["remove", SERVICE]);
    let gone = settle(&"NXDOMAIN".to_string(), || status(master, NAME, "A"));
    assert_eq!(gone, "NXDOMAIN");
    assert_eq!(status(master, SRV, "SRV"), "NXDOMAIN");
}
