//! CI smoke test of `bench/deploy-to-serving.sh` (127.0.0.31:9443 and 9444, the
//! service's port on 127.0.0.31 that the agent picks, fixed ports 127.0.0.31:18031
//! and 18032 on every address for the Swarm service): see `support/bench.rs` for
//! what the run must print.

#[path = "support/bench.rs"]
mod bench;

#[test]
fn deploy_to_serving_smoke_run_prints_every_row() {
    let stdout = bench::smoke_run_prints_every_row("deploy-to-serving", &[]);
    assert!(
        stdout.contains("deploy-to-serving: 2 runs each after 0 warm-up"),
        "not the smoke run's two runs:\n{stdout}"
    );
}
