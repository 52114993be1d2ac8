#!/usr/bin/env bash
# The fleet simulator's figures for BENCHMARKS.md: simulated agents (one process,
# pinned to CPU 1) against a real mcp-master process (pinned to CPU 0), plus the
# idle RSS of a real mcp-agent. Usage: bench/fleet-sim.sh [--dns-load]
#
# --dns-load: only the heartbeat run at 1,000 nodes and 20,000/s, twice, the master
# answering its internal zone with the embedded DNS server on $DNS_ADDR both times:
# first with no DNS load, then while dnsperf (pinned to CPU 1 with the simulator)
# sends $DNS_QPS queries a second to it for $DNS_SECONDS s. The simulated agents
# report no services, so the zone is empty and every answer is NXDOMAIN. Both runs
# measure only once the master's zone is published (the end of its start-up grace).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
dns_load=0
[[ "${1:-}" == --dns-load ]] && dns_load=1
if ((dns_load)); then
    cargo build --release -q -p mcp-master -p mcp-fleet-sim --bins
else
    cargo build --release --bins -q
fi
sim="$target/release/mcp-fleet-sim"
ulimit -n "$(ulimit -Hn)"
pin() { if command -v taskset >/dev/null; then taskset -c 1 "$@"; else "$@"; fi; }
cpu=(); command -v taskset >/dev/null && cpu=(--master-cpu 0)
if ((dns_load)); then
    DNS_ADDR="${DNS_ADDR:-127.0.0.178:53178}" DNS_QPS="${DNS_QPS:-20000}" DNS_SECONDS="${DNS_SECONDS:-20}"
    dns_ip="${DNS_ADDR%:*}" dns_port="${DNS_ADDR##*:}"
    command -v dnsperf >/dev/null && command -v dig >/dev/null || { echo "--dns-load needs dnsperf and dig" >&2; exit 1; }
    work="$(mktemp -d)"
    perf_pid=""
    trap '[[ -n "$perf_pid" ]] && kill "$perf_pid" 2>/dev/null; rm -rf "$work"' EXIT
    # Names the zone (svc.mcp.sim.test: domain "sim.test") would hold for 10,000
    # services, A and SRV, none of which the simulated fleet runs.
    for i in $(seq -w 0 9999); do
        echo "s$i.svc.mcp.sim.test A"
        echo "_http._tcp.s$i.svc.mcp.sim.test SRV"
    done >"$work/queries"
    dnsargs=(--master-dns "$DNS_ADDR")
    echo "== heartbeats, embedded DNS on $DNS_ADDR, no DNS load"
    pin "$sim" "${cpu[@]}" "${dnsargs[@]}" heartbeats --nodes 1000 --rate 20000 --seconds 10
    echo "== heartbeats, embedded DNS on $DNS_ADDR, dnsperf -Q $DNS_QPS -l $DNS_SECONDS against it"
    pin "$sim" "${cpu[@]}" "${dnsargs[@]}" heartbeats --nodes 1000 --rate 20000 --seconds 10 &
    sim_pid=$!
    # Start the load once the master answers from its zone (not SERVFAIL: the zone
    # is published after the master's start-up grace of 10 s; bounded: 60 s). The
    # simulator waits for the same, then 2 s, then measures for 10 s.
    answered=0
    for _ in $(seq 600); do
        if out="$(dig +tries=1 +time=1 -p "$dns_port" @"$dns_ip" s00000.svc.mcp.sim.test A 2>/dev/null)" \
            && grep -q 'status:' <<<"$out" && ! grep -q 'status: SERVFAIL' <<<"$out"; then
            answered=1
            echo "dig: $(grep -o 'status: [A-Z]*' <<<"$out")"
            break
        fi
        sleep 0.1
    done
    if ((answered)); then
        echo "dnsperf: started at unix ms $(date +%s%3N)"
        pin dnsperf -s "$dns_ip" -p "$dns_port" -d "$work/queries" -Q "$DNS_QPS" -c 4 -T 1 \
            -l "$DNS_SECONDS" >"$work/dnsperf.out" 2>&1 &
        perf_pid=$!
    else
        echo "the master's DNS server did not answer on $DNS_ADDR" >&2
    fi
    sim_rc=0
    wait "$sim_pid" || sim_rc=$?
    if [[ -n "$perf_pid" ]]; then
        wait "$perf_pid" || true
        perf_pid=""
        grep -E 'Queries (sent|completed|lost)|Response codes|Queries per second|Average Latency|Latency StdDev|Run time' "$work/dnsperf.out" || cat "$work/dnsperf.out"
    fi
    ((answered)) || exit 1
    exit "$sim_rc"
fi
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 20000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 1000 --rate 30000 --seconds 10
pin "$sim" "${cpu[@]}" heartbeats --nodes 10000 --rate 20000 --seconds 10
pin "$sim" "${cpu[@]}" memory --nodes 1000,10000
pin "$sim" "${cpu[@]}" repopulate --nodes 1000
pin "$sim" "${cpu[@]}" deploys --nodes 1000 --services 10000
pin "$sim" "${cpu[@]}" detect --runs 10 --interval-ms 100 --missed 3 --probe-timeout-ms 100
pin "$sim" "${cpu[@]}" detect --runs 5 --interval-ms 1000 --missed 3 --probe-timeout-ms 500
"$sim" agent-rss
