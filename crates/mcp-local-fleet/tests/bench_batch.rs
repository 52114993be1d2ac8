//! CI smoke test of `bench/batch-deploy.sh` (127.0.7.20-24, fixed ports 9443,
//! 9444 and 18701-18704): the script run with `--smoke` (4 services on 4 workers,
//! one run of each command) against this build's binaries (`--bin-dir`, so CI builds
//! no release) must exit 0 and print hyperfine's table with a row, and a number, for
//! `mcp deploy DIR`, the sequential `docker run -d` and the parallel one, and the
//! ratio, so the benchmark keeps working as the deploy path changes. Needs Docker,
//! hyperfine and curl. Runs of the script take turns (a lock on the script file). It cleans up on
//! exit (the fleet by pid, its containers); on our deadline it gets SIGTERM, then
//! its process group SIGKILL.

use std::path::Path;
use std::time::Duration;

use mcp_local_fleet::Binaries;

/// The smoke run takes about 10 s on an idle 2-CPU machine; the script may first
/// wait (at most 10 min) for another run of itself to finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// The mean of a row of hyperfine's markdown table: `| `name` | 1.234 | ...`.
fn mean(stdout: &str, name: &str) -> Option<f64> {
    let prefix = format!("| `{name}` |");
    let line = stdout.lines().find(|l| l.starts_with(&prefix))?;
    line.trim_matches('|')
        .split('|')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn batch_deploy_smoke_run_prints_every_row_and_the_ratio() {
    let bin = Binaries::find().expect("the binaries");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stdout = mcp_local_fleet::run_bench_script(
        &root,
        "bench/batch-deploy.sh",
        &[
            "--smoke".as_ref(),
            "--bin-dir".as_ref(),
            bin.dir.as_os_str(),
        ],
        &["MCP_MASTER"],
        DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let context = format!("stdout:\n{stdout}");
    let took: u64 = stdout
        .split("batch-deploy: took ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'took N s' line\n{context}"));
    assert!(took < 120, "the smoke run took {took} s\n{context}");
    for row in [
        "mcp deploy DIR",
        "docker run -d x4",
        "docker run -d x4 in parallel",
    ] {
        let s = mean(&stdout, row).unwrap_or_else(|| panic!("no row '{row}'\n{context}"));
        assert!(s > 0.0, "row '{row}': mean {s}\n{context}");
    }
    assert!(
        stdout.contains("mcp deploy DIR / docker run -d x4: "),
        "no ratio\n{context}"
    );
}
