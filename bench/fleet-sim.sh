#!/usr/bin/env bash
# The fleet simulator's figures for BENCHMARKS.md: simulated agents (one process,
# pinned to CPU 1) against a real mcp-master process (pinned to CPU 0), plus the
# idle RSS of a real mcp-agent. Usage: bench/fleet-sim.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bins -q
sim="$target/release/mcp-fleet-sim"
ulimit -n "$(ulimit -Hn)"
pin() { if command -v taskset >/dev/null; then taskset -c 1 "$@"; else "$@"; fi; }
cpu=(); command -v taskset >/dev/null && cpu=(--master-cpu 0)
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 20000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 30000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 10000 --rate 20000 --seconds 10
pin "$sim" "${cpu[@]}" memory --nodes 1000,10000
pin "$sim" "${cpu[@]}" repopulate --nodes 1000
pin "$sim" "${cpu[@]}" detect --runs 10 --interval-ms 100 --missed 3 --probe-timeout-ms 100
pin "$sim" "${cpu[@]}" detect --runs 5 --interval-ms 1000 --missed 3 --probe-timeout-ms 500
"$sim" agent-rss
