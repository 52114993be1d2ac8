//! CI smoke test of `bench/batch-deploy.sh` (127.0.7.20-24, fixed ports 9443,
//! 9444 and 18701-18704): the script run with `--smoke` (4 services on 4 workers,
//! one run of each command) against this build's binaries (`--bin-dir`, so CI builds
//! no release) must exit 0 and print hyperfine's table with a row, and a number, for
//! `mcp deploy DIR`, the sequential `docker run -d` and the parallel one, and the
//! ratio, so the benchmark keeps working as the deploy path changes. Needs Docker,
//! hyperfine and curl. Runs of the script take turns (a lock on the script file). It cleans up on
//! exit (the fleet by pid, its containers); on our deadline it gets SIGTERM, then
//! its process group SIGKILL.

#[path = "support/bench.rs"]
mod bench;

#[test]
fn batch_deploy_smoke_run_prints_every_row_and_the_ratio() {
    let stdout = bench::smoke_run("batch-deploy", &[]);
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
        let s = bench::mean(&stdout, row).unwrap_or_else(|| panic!("no row '{row}'\n{context}"));
        assert!(s > 0.0, "row '{row}': mean {s}\n{context}");
    }
    assert!(
        stdout.contains("mcp deploy DIR / docker run -d x4: "),
        "no ratio\n{context}"
    );
}
