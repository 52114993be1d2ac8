//! The suite's smoke run of `cargo bench -p mcp-placement` (benches/placement.rs):
//! the same code with every run count divided by 10,000, so a measurement that no
//! longer runs fails CI. The figures it prints mean nothing.

#[path = "../benches/placement.rs"]
#[allow(dead_code)]
mod bench;

#[test]
fn placement_benchmark_runs_every_measurement() {
    bench::run(10_000);
}
