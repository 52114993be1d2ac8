//! CI smoke test of `bench/deploy-to-public-serving.sh` (127.0.0.185-186, fixed
//! ports 9443, 9444, 8443, 18185 and 18186): see `support/bench.rs` for what the
//! run must print. The Swarm service publishes through the routing mesh, or with
//! `mode=host` where the mesh does not answer.

#[path = "support/bench.rs"]
mod bench;

#[test]
fn deploy_to_public_serving_smoke_run_prints_every_row() {
    let stdout = bench::smoke_run_prints_every_row("deploy-to-public-serving", &["mc-proxy"]);
    assert!(
        stdout.contains("swarm publish: "),
        "no line saying how Swarm publishes:\n{stdout}"
    );
}
