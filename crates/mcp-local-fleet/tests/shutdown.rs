//! SIGTERM ends the master and agents within seconds (SPEC §13) even with
//! long-lived streams open: heartbeats and `mcp logs -f`, proxied by the master
//! from the agent. Each releases its listen port, and the `logs -f` client sees
//! its stream end rather than hang.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use mcp_local_fleet::NodeSpec;
use support::*;

const SERVICE: &str = "shut-web";
const BOUND: Duration = Duration::from_secs(5);

/// Starts `mcp logs -f SERVICE` and waits until it has printed a line, so the
/// stream is open end to end.
fn follow(fleet: &Fleet) -> Child {
    let (child, rx) = follow_logs(fleet, SERVICE);
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "logs -f printed nothing"
    );
    // Keep draining in the background so the CLI never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    child
}

/// Sends SIGTERM to `name` and returns how long it took to exit (SIGKILL after
/// 15 s so a hung process never outlives the test).
fn terminate(fleet: &mut Fleet, name: &str) -> Duration {
    let proc = if name == "master" {
        fleet.master.take()
    } else {
        fleet.agents.remove(name)
    };
    let mut proc = proc.expect("the process is running");
    let started = Instant::now();
    mcp_local_fleet::send_signal(proc.child.id(), libc::SIGTERM);
    loop {
        if let Ok(Some(_)) = proc.child.try_wait() {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn port_free(address: &str) -> bool {
    std::net::TcpListener::bind(address).is_ok()
}

/// Ends the `logs -f` client whatever happens.
struct Reap(Child);

impl Reap {
    /// Has the client exited (its stream ended) within `within`?
    fn exits_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ends the service's processes whatever happens (the exec supervisor outlives
/// its agent by design).
struct Purge(std::path::PathBuf);

impl Drop for Purge {
    fn drop(&mut self) {
        purge_exec(SERVICE, &self.0);
    }
}

#[test]
fn sigterm_ends_master_and_agents_with_streams_open() {
    let binary = fixture(None);
    purge_exec(SERVICE, &binary);
    let _purge = Purge(binary.clone());
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = FleetSpec::single(tmp.path(), "sd1", "127.0.0.95", "exec");
    spec.nodes.push(NodeSpec::worker("sd2", "127.0.0.96"));
    let mut fleet = Fleet::start(spec).unwrap();
    let definition = tmp.path().join("shut-web.toml");
    std::fs::write(
        &definition,
        format!(
            "name = \"{SERVICE}\"\n[[components]]\nname = \"web\"\ndriver = \"exec\"\ncommand = [\"{}\"]\n[[components.routes]]\nname = \"http\"\nport = 8080\nbackend_tls = false\n",
            binary.display()
        ),
    )
    .unwrap();
    mcp_ok(&fleet, &["deploy", definition.to_str().unwrap()]);
    let list = fleet.mcp_json(&["list"]).unwrap();
    let node = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == SERVICE)
        .and_then(|s| s["node"].as_str())
        .unwrap_or_else(|| panic!("where does {SERVICE} run? {list}"))
        .to_string();
    let agent_address = {
        let spec = fleet.spec.nodes.iter().find(|n| n.name == node).unwrap();
        format!("{}:{}", spec.ip, fleet.spec.agent_port)
    };

    // The agent, with the master's proxied `logs -f` stream open on it.
    let mut logs = Reap(follow(&fleet));
    let took = terminate(&mut fleet, &node);
    eprintln!("agent {node} exited {took:?} after SIGTERM with a logs -f stream open");
    assert!(
        took < BOUND,
        "agent {node} took {took:?} to exit on SIGTERM"
    );
    assert!(port_free(&agent_address), "{agent_address} is still bound");
    assert!(
        logs.exits_within(BOUND),
        "logs -f still runs though its agent is gone"
    );

    // The master, with a `logs -f` stream and the other agents' heartbeat streams
    // open. The agent comes back first so that there is something to follow.
    fleet.start_agent(&node).unwrap();
    fleet
        .wait_registered(std::slice::from_ref(&node), Duration::from_secs(20))
        .unwrap();
    let mut logs = Reap(follow(&fleet));
    let master_address = fleet.spec.master_address();
    let took = terminate(&mut fleet, "master");
    eprintln!("the master exited {took:?} after SIGTERM with logs -f and heartbeat streams open");
    assert!(took < BOUND, "the master took {took:?} to exit on SIGTERM");
    assert!(
        port_free(&master_address),
        "{master_address} is still bound"
    );
    assert!(
        logs.exits_within(BOUND),
        "logs -f still runs though the master is gone"
    );
    for log in ["master", node.as_str()] {
        let text = fleet.log(log);
        assert!(!text.contains("panicked"), "{log}: {text}");
    }

    // The master again, so the service can be removed; then the rest stops.
    fleet.start_master().unwrap();
    fleet
        .wait_registered(
            &["sd1".to_string(), "sd2".to_string()],
            Duration::from_secs(20),
        )
        .unwrap();
    mcp_ok(&fleet, &["remove", SERVICE]);
    let took = terminate(&mut fleet, "sd1");
    assert!(took < BOUND, "agent sd1 took {took:?}");
    fleet.stop();
}
