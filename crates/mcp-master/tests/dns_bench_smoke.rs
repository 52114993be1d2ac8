//! CI smoke test of `bench/dns-vs-bind.sh` (127.0.0.116:5300 and 127.0.0.1 on a free
//! port from 53117): the script run with `--smoke` against this build's `dns_bench`
//! example must exit 0 and print the table with a number in every cell of both
//! rows, so the benchmark keeps working as the server changes. Needs named, dig
//! (bind9, bind9-dnsutils) and dnsperf (`.ci/run` installs them); without them it
//! says so and passes, unless CI is set. Runs of the script take turns (a lock on
//! the script file); it kills what it started on exit; on our deadline it gets
//! SIGTERM, then SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The smoke run takes a few seconds; the script may first wait (at most 10 min)
/// for another run of itself to finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// The example cargo builds beside the tests: `<target>/<profile>/examples/dns_bench`.
fn bench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/<test>");
    profile.join("examples/dns_bench")
}

#[test]
fn bench_script_smoke_run_prints_both_rows() {
    let ci = std::env::var_os("CI").is_some();
    let tools = [
        "named", "dig", "dnsperf", "taskset", "ss", "flock", "timeout",
    ];
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("bash")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    let bench = bench_binary();
    if !absent.is_empty() || !bench.exists() {
        assert!(!ci, "missing in CI: {absent:?}, {}", bench.display());
        eprintln!(
            "skipped: missing {absent:?} or {} (cargo build -p mcp-master --example dns_bench)",
            bench.display()
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // coreutils' timeout: SIGTERM at the deadline (the script's trap kills what it
    // started, by pid), SIGKILL 15 s later.
    let run = Command::new("timeout")
        .args(["-k", "15", &DEADLINE.as_secs().to_string(), "bash"])
        .arg(root.join("bench/dns-vs-bind.sh"))
        .arg("--smoke")
        .arg("--bench")
        .arg(&bench)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run timeout bash bench/dns-vs-bind.sh");
    let status = run.status;
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.code() != Some(124),
        "the smoke run took over {DEADLINE:?}\n{context}"
    );
    assert!(status.success(), "the script failed: {status}\n{context}");
    for server in ["| embedded (mcp-master) |", "| BIND "] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(server))
            .unwrap_or_else(|| panic!("no row {server}\n{context}"));
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 10, "{line}\n{context}");
        for cell in &cells[1..] {
            let number = cell.split_whitespace().next().unwrap_or_default();
            assert!(
                number.parse::<f64>().is_ok(),
                "{server}: {cell:?} is not a number\n{context}"
            );
        }
    }
    assert!(
        stdout.contains("embedded / BIND throughput: "),
        "no ratio\n{context}"
    );
}
