//! CI smoke runs of `bench/fleet-sim.sh` against this build's binaries
//! (`--smoke --bin-dir`, so CI builds no release): every measurement at a toy size
//! must run and print its figure line, so the benchmark keeps working as the master
//! changes. The two runs take turns (the simulator's lock file): both start a master on the
//! simulator's fixed address (127.0.0.61:9443; nodes in 127.0.100.0/24, the agent
//! of agent-rss on 127.0.0.62, DNS on 127.0.0.178:53178). A run past its deadline
//! gets SIGTERM (the script and the simulator stop what they started), then its
//! process group SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mcp_local_fleet::Binaries;

/// A smoke run takes well under a minute on an idle 2-CPU machine.
const DEADLINE: Duration = Duration::from_secs(600);

/// Runs `bench/fleet-sim.sh --smoke --bin-dir <this build> EXTRA...`; returns its
/// stdout once it exited 0 within the deadline.
fn smoke(extra: &[&str]) -> String {
    let bin = Binaries::find().expect("the binaries");
    assert!(
        bin.path("mcp-fleet-sim").is_file(),
        "mcp-fleet-sim not found in {}: run `cargo build --workspace --bins` first",
        bin.dir.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--smoke".as_ref(),
        "--bin-dir".as_ref(),
        bin.dir.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    mcp_local_fleet::run_bench_script(&root, "bench/fleet-sim.sh", &args, &[], DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The number after `key=` on the line starting with `prefix`.
fn figure(stdout: &str, prefix: &str, key: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{stdout}"));
    let after = line
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    let number: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number in {line:?}"))
}

#[test]
fn every_measurement_runs_and_prints_its_figure() {
    let stdout = smoke(&[]);
    // 50 nodes at 500/s for 1 s: some heartbeats were answered, and timed.
    assert!(
        figure(&stdout, "heartbeats: nodes=50", "achieved") > 0.0,
        "{stdout}"
    );
    assert!(
        figure(&stdout, "heartbeats: nodes=50", "p99") > 0.0,
        "{stdout}"
    );
    assert!(
        figure(&stdout, "heartbeats: nodes=50", "sim_cpu") > 0.0,
        "{stdout}"
    );
    assert_eq!(
        figure(&stdout, "memory: nodes=50", "registered"),
        50.0,
        "{stdout}"
    );
    assert!(
        figure(&stdout, "memory: nodes=50", "master_rss") > 1.0,
        "{stdout}"
    );
    assert!(
        stdout.contains("repopulate: nodes=50 full view after "),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("detect: ")),
        "{stdout}"
    );
    assert!(
        figure(&stdout, "deploys: nodes=20", "services") == 100.0,
        "{stdout}"
    );
    // The agent's RSS is a real process's, not zero.
    let rss: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("agent-rss: "))
        .filter_map(|l| l.split("RSS ").nth(1))
        .filter_map(|r| r.split("MiB").next()?.parse().ok())
        .collect();
    assert!(
        !rss.is_empty() && rss.iter().all(|r| *r > 1.0),
        "agent RSS: {rss:?}\n{stdout}"
    );
}

#[test]
fn dns_load_runs_both_rows_and_dnsperf_is_answered() {
    let stdout = smoke(&["--dns-load"]);
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("heartbeats: nodes=50"))
        .count();
    assert_eq!(
        rows, 2,
        "one heartbeat row without and one with DNS load:\n{stdout}"
    );
    assert!(stdout.contains("dig: status: NXDOMAIN"), "{stdout}");
    let completed = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Queries completed:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no dnsperf 'Queries completed':\n{stdout}"));
    assert!(completed > 0, "dnsperf got no answers:\n{stdout}");
}
