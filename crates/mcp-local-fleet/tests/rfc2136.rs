//! The `rfc2136` DNS backend end to end (SPEC §8): the seed fleet (real binaries, exec
//! runtime, 127.0.0.141-144) with `[dns] backend = "rfc2136"` pointed at a real BIND
//! started by the test (mcp-master's tests/rfc2136_named), checked with the real
//! `dig`: deploy, move, remove, and a master SIGKILL and restart that leaves the
//! records in place while it settles, then removes a stale MCP record and duplicates
//! nothing. A record made by hand with `nsupdate` survives all of it. Without bind9
//! the test says why and passes, unless CI is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../mcp-master/tests/rfc2136_named/mod.rs"]
mod rfc2136_named;

use std::path::PathBuf;
use std::time::Duration;

use rfc2136_named::{Named, ZONE};
use support::*;

const SERVICE: &str = "rfc-hello";

/// Ends what the test started even when it fails: the service's exec instances
/// (the fleet and named have their own guards).
struct Cleanup {
    binary: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        purge_exec(SERVICE, &self.binary);
    }
}

/// Waits until `check` gives `want` (15 s at most); the last value otherwise.
fn settle<T: PartialEq + Clone>(want: &T, mut check: impl FnMut() -> T) -> T {
    let mut last = check();
    let got = eventually(Duration::from_secs(15), || {
        last = check();
        (last == *want).then(|| last.clone())
    });
    got.unwrap_or(last)
}

fn port_of(fleet: &mcp_local_fleet::Fleet) -> String {
    let address = address_of(fleet, SERVICE);
    address.rsplit(':').next().unwrap().to_string()
}

#[test]
fn bind_follows_deploy_move_remove_and_a_master_restart() {
    let named = match Named::start() {
        Ok(n) => n,
        Err(why) => {
            assert!(!in_ci(), "CI must run this test: {why}");
            eprintln!("skipped: {why}");
            return;
        }
    };
    let binary = fixture(None);
    let _cleanup = Cleanup {
        binary: binary.clone(),
    };
    purge_exec(SERVICE, &binary);
    let name = format!("{SERVICE}.{ZONE}");
    let srv = format!("_http._tcp.{name}");
    let hand = format!("hand.{ZONE}");
    named.nsupdate(&format!("update add {hand} 60 A 10.9.9.9"));

    let tmp = tempfile::tempdir().unwrap();
    let mut spec = mcp_local_fleet::FleetSpec::seed_at(tmp.path(), "exec", 141);
    spec.heartbeat_interval = "300ms".to_string();
    spec.probe_timeout = "300ms".to_string();
    spec.master_extra = format!(
        "[dns]\nbackend = \"rfc2136\"\nserver = \"{}\"\nzone = \"{ZONE}.\"\ntsig_key_name = \"mcp\"\ntsig_secret_file = \"{}\"\nttl = \"30s\"\n",
        named.server(),
        named.key_file("mcp").display()
    );
    let mut fleet = mcp_local_fleet::Fleet::start(spec).unwrap();
    let dir = tmp.path();

    // Deployed on rift: A, SRV to the published port, and MCP's TXT.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(dir, SERVICE, &binary, "rift", "")],
    );
    let a = settle(&vec!["127.0.0.141".to_string()], || named.dig(&name, "A"));
    assert_eq!(a, ["127.0.0.141"], "{}", fleet.log("master"));
    let want_srv = vec![format!("0 0 {} {name}.", port_of(&fleet))];
    assert_eq!(settle(&want_srv, || named.dig(&srv, "SRV")), want_srv);
    assert_eq!(named.dig(&name, "TXT"), ["\"heritage=mcp\""]);

    // Moved to orion: the A follows, the SRV names the new port.
    mcp_ok(
        &fleet,
        &["deploy", &exec_on(dir, SERVICE, &binary, "orion", "")],
    );
    let a = settle(&vec!["127.0.0.142".to_string()], || named.dig(&name, "A"));
    assert_eq!(a, ["127.0.0.142"], "{}", fleet.log("master"));
    let want_srv = vec![format!("0 0 {} {name}.", port_of(&fleet))];
    assert_eq!(settle(&want_srv, || named.dig(&srv, "SRV")), want_srv);

    // The master killed. While it is away a stale MCP record appears (as one a
    // previous master left behind): the records stay while the new master settles,
    // then the stale one goes, and nothing is duplicated.
    fleet.signal("master", libc::SIGKILL).unwrap();
    let stale = format!("stale.{ZONE}");
    named.nsupdate(&format!(
        "update add {stale} 30 A 127.0.0.144\nupdate add {stale} 30 TXT \"heritage=mcp\""
    ));
    let before_restart = named.zone();
    fleet.start_master().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        named.dig(&name, "A"),
        ["127.0.0.142"],
        "kept while settling"
    );
    let gone = settle(&"NXDOMAIN".to_string(), || named.status(&stale));
    assert_eq!(gone, "NXDOMAIN", "{}", fleet.log("master"));
    assert_eq!(named.dig(&name, "A"), ["127.0.0.142"]);
    assert_eq!(named.dig(&srv, "SRV"), want_srv);
    assert_eq!(named.dig(&name, "TXT"), ["\"heritage=mcp\""]);
    let after_restart = named.zone();
    let expected: Vec<String> = before_restart
        .into_iter()
        .filter(|l| !l.starts_with(&format!("{stale}.")))
        .collect();
    assert_eq!(after_restart, expected, "only the stale name changed");

    // Removed: both names are gone, the hand-made record stays.
    mcp_ok(&fleet, &["remove", SERVICE]);
    let gone = settle(&"NXDOMAIN".to_string(), || named.status(&name));
    assert_eq!(gone, "NXDOMAIN", "{}", fleet.log("master"));
    assert_eq!(named.status(&srv), "NXDOMAIN");
    assert_eq!(named.dig(&hand, "A"), ["10.9.9.9"]);
    assert!(
        named.zone().iter().all(|l| !l.contains("heritage=mcp")),
        "no MCP record left:\n{}",
        named.zone().join("\n")
    );
    fleet.stop();
}
