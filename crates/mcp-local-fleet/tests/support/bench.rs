//! The CI smoke run of a deploy benchmark (`bench/deploy-to-serving.sh`,
//! `bench/deploy-to-public-serving.sh`): the script run with `--smoke` against
//! this build's binaries (`--bin-dir`, so CI builds no release) must exit 0 and
//! print hyperfine's table with a row, and a number, for each of `mcp deploy`,
//! `docker run -d` and `docker service create`, and the ratios, so the benchmark
//! keeps working as the deploy path changes. The Swarm row may be missing only
//! when the script says the swarm could not be set up (`docker service create:
//! skipped (...)`). Needs Docker, hyperfine and curl (`.ci/run` installs them): a
//! missing one fails the run (exit 2, said why). Runs of these scripts take
//! turns (a lock on bench/lib/serving.sh). A script cleans up on exit (the fleet
//! by pid, its containers, the Swarm service, the swarm if it initialised it); on
//! our deadline it gets SIGTERM, then its process group SIGKILL.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mcp_local_fleet::Binaries;

/// A smoke run takes about 30 s on an idle 2-CPU machine; the script may first
/// wait (at most 10 min) for another run of a deploy benchmark to finish.
const DEADLINE: Duration = Duration::from_secs(900);

/// The mean of a row of hyperfine's markdown table: `| `name` | 360.0 ± 1.2 | ...`.
pub fn mean(stdout: &str, name: &str) -> Option<f64> {
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

/// Runs `bench/<name>.sh --smoke --bin-dir <this build>` (the named binaries
/// must be built) and returns its stdout once it exited 0 within the deadline.
pub fn smoke_run(name: &str, binaries: &[&str]) -> String {
    let bin = Binaries::find().expect("the binaries");
    for b in binaries {
        assert!(
            bin.path(b).is_file(),
            "{b} not found in {}: run `cargo build --workspace --bins` first",
            bin.dir.display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    mcp_local_fleet::run_bench_script(
        &root,
        &format!("bench/{name}.sh"),
        &[
            "--smoke".as_ref(),
            "--bin-dir".as_ref(),
            bin.dir.as_os_str(),
        ],
        &["MCP_MASTER"],
        DEADLINE,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `bench/<name>.sh --smoke --bin-dir <this build>` and checks what it
/// printed (see the module's doc); returns its stdout.
pub fn smoke_run_prints_every_row(name: &str, binaries: &[&str]) -> String {
    let stdout = smoke_run(name, binaries);
    let context = format!("stdout:\n{stdout}");
    // "<name>: ... took 31 s": the run after any wait for another.
    let took: u64 = stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{name}: ")))
        .find_map(|l| l.split("took ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'took N s' line\n{context}"));
    assert!(
        took < 120,
        "the smoke run took {took} s, meant to be well under two minutes\n{context}"
    );
    assert!(
        stdout.contains("| Command | Mean ["),
        "no table header\n{context}"
    );
    let skipped = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name}: docker service create: skipped (")));
    let mut rows = vec!["mcp deploy", "docker run -d"];
    match skipped {
        Some(line) => eprintln!("{line}"),
        None => rows.push("docker service create"),
    }
    for row in &rows {
        let ms = mean(&stdout, row).unwrap_or_else(|| panic!("no row '{row}'\n{context}"));
        assert!(ms > 0.0, "row '{row}': mean {ms}\n{context}");
    }
    assert!(
        stdout.contains("mcp deploy / docker run -d: "),
        "no ratio against docker run -d\n{context}"
    );
    if skipped.is_none() {
        assert!(
            stdout.contains("mcp deploy / docker service create: "),
            "no ratio against docker service create\n{context}"
        );
    }
    stdout
}
