#!/usr/bin/env bash
# The fleet simulator's figures for BENCHMARKS.md: simulated agents (one process,
# pinned to CPU 1) against a real mcp-master process (pinned to CPU 0), plus the
# RSS of a real mcp-agent.
#
# Usage: bench/fleet-sim.sh [--smoke] [--bin-dir DIR] [--dns-load]
#   --smoke       every measurement at a toy size, seconds each (CI runs it:
#                 crates/mcp-fleet-sim/tests/bench_smoke.rs); the figures mean nothing
#   --bin-dir DIR use the mcp, mcp-master, mcp-agent and mcp-fleet-sim in DIR (e.g. a
#                 debug build), not built; default: `cargo build --release` of them
#   --dns-load    only the heartbeat run at 1,000 nodes and 20,000/s, twice, the
#                 master answering its internal zone with the embedded DNS server on
#                 $DNS_ADDR both times: first with no DNS load, then while dnsperf
#                 (pinned to CPU 1 with the simulator) sends $DNS_QPS queries a second
#                 to it for $DNS_SECONDS s. The simulated agents report no services, so
#                 the zone is empty and every answer is NXDOMAIN. Both runs measure only
#                 once the master's zone is published (the end of its start-up grace).
#                 HB_RATE (default 20000) is the heartbeat rate offered in both runs.
#                 dnsperf runs at the idle scheduling class (chrt --idle), so it only
#                 takes CPU 1 time the simulator leaves; DNS_PRIORITY=normal runs it
#                 at the default class as before.
#
# Each heartbeat line also says how busy each CPU was while measuring, the
# simulator's own CPU, and how late its runtime woke (sim_lag): when CPU 1 is full,
# the latency measured is partly the simulator's own queueing, not the master's.
# Needs: taskset (util-linux) for pinning (without it nothing is pinned: said so);
# for --dns-load also dnsperf and dig. Exit 2 when something it needs is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
die() { echo "fleet-sim.sh: $*" >&2; exit 2; }
smoke=0 dns_load=0 bin_dir=""
while (($#)); do
    case "$1" in
        --smoke) smoke=1 ;;
        --dns-load) dns_load=1 ;;
        --bin-dir) bin_dir="${2:-}"; [[ -n "$bin_dir" ]] || die "--bin-dir needs a directory"; shift ;;
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
if [[ -z "$bin_dir" ]]; then
    command -v cargo >/dev/null || die "cargo not found (or give --bin-dir DIR)"
    cargo build --release -q -p mcp -p mcp-master -p mcp-agent -p mcp-fleet-sim --bins \
        || die "cargo build --release failed"
    bin_dir="${CARGO_TARGET_DIR:-target}/release"
fi
bin_dir="$(cd "$bin_dir" && pwd)" || die "no directory $bin_dir"
for b in mcp mcp-master mcp-agent mcp-fleet-sim; do
    [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b not found (cargo build --bins, or --bin-dir DIR)"
done
export MCP_BIN_DIR="$bin_dir"
sim="$bin_dir/mcp-fleet-sim"
ulimit -n "$(ulimit -Hn)"
cpu=()
if command -v taskset >/dev/null; then
    pin() { taskset -c 1 "$@"; }
    cpu=(--master-cpu 0)
else
    echo "fleet-sim.sh: taskset not found: nothing is pinned, the figures are not comparable" >&2
    pin() { "$@"; }
fi
if ((smoke)); then
    HB=(--nodes 50 --rate 500 --seconds 1)
else
    HB=(--nodes 1000 --rate "${HB_RATE:-20000}" --seconds 10)
fi
if ((dns_load)); then
    DNS_ADDR="${DNS_ADDR:-127.0.0.178:53178}" DNS_QPS="${DNS_QPS:-20000}" DNS_SECONDS="${DNS_SECONDS:-20}"
    ((smoke)) && DNS_QPS=500 DNS_SECONDS=6
    dns_ip="${DNS_ADDR%:*}" dns_port="${DNS_ADDR##*:}"
    command -v dnsperf >/dev/null || die "--dns-load needs dnsperf (apt install dnsperf)"
    command -v dig >/dev/null || die "--dns-load needs dig (apt install bind9-dnsutils)"
    work="$(mktemp -d)"
    perf_pid="" sim_pid=""
    trap '[[ -n "$perf_pid" ]] && kill "$perf_pid" 2>/dev/null; [[ -n "$sim_pid" ]] && kill "$sim_pid" 2>/dev/null; rm -rf "$work"' EXIT
    # Names the zone (svc.mcp.sim.test: domain "sim.test") would hold for 10,000
    # services, A and SRV, none of which the simulated fleet runs.
    for i in $(seq -w 0 9999); do
        echo "s$i.svc.mcp.sim.test A"
        echo "_http._tcp.s$i.svc.mcp.sim.test SRV"
    done >"$work/queries"
    dnsargs=(--master-dns "$DNS_ADDR")
    # dnsperf shares CPU 1 with the simulator (CPU 0 is the master's): at the idle
    # scheduling class it gets only the time the simulator leaves, so the load
    # generator cannot starve the simulator's side of each heartbeat (it did at the
    # default class, which is what the heartbeat tail then measured).
    if [[ "${DNS_PRIORITY:-idle}" == idle ]] && command -v chrt >/dev/null; then
        idle=(chrt --idle 0)
    else
        idle=(nice -n 0)
    fi
    echo "dnsperf runs as: ${idle[*]} (DNS_PRIORITY=${DNS_PRIORITY:-idle}; DNS_PRIORITY=normal for the default class)"
    echo "== heartbeats, embedded DNS on $DNS_ADDR, no DNS load"
    pin "$sim" "${cpu[@]}" "${dnsargs[@]}" heartbeats "${HB[@]}"
    echo "== heartbeats, embedded DNS on $DNS_ADDR, dnsperf -Q $DNS_QPS -l $DNS_SECONDS against it"
    pin "$sim" "${cpu[@]}" "${dnsargs[@]}" heartbeats "${HB[@]}" &
    sim_pid=$!
    # Start the load once the master answers from its zone (not SERVFAIL: the zone
    # is published after the master's start-up grace of 10 s; bounded: 60 s). The
    # simulator waits for the same, then 2 s, then measures.
    answered=0
    for _ in $(seq 600); do
        if out="$(dig +tries=1 +time=1 -p "$dns_port" @"$dns_ip" s00000.svc.mcp.sim.test A 2>/dev/null)" \
            && grep -q 'status:' <<<"$out" && ! grep -q 'status: SERVFAIL' <<<"$out"; then
            answered=1
            echo "dig: $(grep -o 'status: [A-Z]*' <<<"$out")"
            break
        fi
        kill -0 "$sim_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ((answered)); then
        echo "dnsperf: started at unix ms $(date +%s%3N)"
        pin "${idle[@]}" dnsperf -s "$dns_ip" -p "$dns_port" -d "$work/queries" -Q "$DNS_QPS" -c 4 -T 1 \
            -l "$DNS_SECONDS" >"$work/dnsperf.out" 2>&1 &
        perf_pid=$!
    else
        echo "fleet-sim.sh: the master's DNS server did not answer on $DNS_ADDR" >&2
    fi
    sim_rc=0
    wait "$sim_pid" || sim_rc=$?
    sim_pid=""
    if [[ -n "$perf_pid" ]]; then
        wait "$perf_pid" || true
        perf_pid=""
        grep -E 'Queries (sent|completed|lost)|Response codes|Queries per second|Average Latency|Latency StdDev|Run time' "$work/dnsperf.out" || cat "$work/dnsperf.out"
    fi
    ((answered)) || exit 1
    exit "$sim_rc"
fi
if ((smoke)); then
    pin "$sim" "${cpu[@]}" heartbeats "${HB[@]}"
    pin "$sim" "${cpu[@]}" memory --nodes 50
    pin "$sim" "${cpu[@]}" repopulate --nodes 50
    pin "$sim" "${cpu[@]}" detect --runs 2 --interval-ms 100 --missed 3 --probe-timeout-ms 100
    pin "$sim" "${cpu[@]}" deploys --nodes 20 --services 100
    "$sim" agent-rss
    exit 0
fi
pin "$sim" "${cpu[@]}" heartbeats "${HB[@]}"
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 30000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 40000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 10000 --rate 20000 --seconds 10
pin "$sim" "${cpu[@]}" memory --nodes 1000,10000
pin "$sim" "${cpu[@]}" repopulate --nodes 1000
pin "$sim" "${cpu[@]}" deploys --nodes 1000 --services 10000
pin "$sim" "${cpu[@]}" detect --runs 10 --interval-ms 100 --missed 3 --probe-timeout-ms 100
pin "$sim" "${cpu[@]}" detect --runs 5 --interval-ms 1000 --missed 3 --probe-timeout-ms 500
"$sim" agent-rss
