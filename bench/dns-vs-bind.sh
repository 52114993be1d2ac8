#!/usr/bin/env bash
# The master's embedded DNS server against BIND (issue 10, "Benchmark").
#
# Starts, on loopback only:
#   127.0.0.116:5300  the embedded server: the master's own server code
#                     (mcp_master::dns::embedded::serve) in the dns_bench example, with
#                     a zone of N services (default 10,000), each an A record and an
#                     `_http._tcp` SRV record, as the control loop derives them
#   127.0.0.1:PORT    BIND (Debian's named, one worker: -n 1) with a temporary config
#                     serving the same zone from the file dns_bench writes (named
#                     listens only on addresses of an interface: 127.0.0.1, on the
#                     first free port from 53117)
# both pinned to the last CPU (taskset), dnsperf (one thread) pinned to CPU 0, with
# the same query file (each service's A and SRV, one unknown name in ten: NXDOMAIN;
# shuffled), one server under load at a time, in one run. Both are checked with dig
# (A, SRV, NXDOMAIN, REFUSED) before they are measured. Two measurements per server:
#   throughput  dnsperf as fast as the server answers (-c 16 -q 500), for --duration s:
#               queries per second, mean latency, queries lost
#   latency     a fixed rate (--rate, default 20,000 qps) well below both servers'
#               saturation, for --duration s, every answer's latency (dnsperf -v):
#               p50, p99, p99.9 and max
# Prints one markdown table and the commands.
#
# Usage: bench/dns-vs-bind.sh [--smoke] [--duration SECS] [--services N] [--rate QPS]
#            [--bench PATH] [--keep]
#   --smoke     200 services, 1 s per measurement at 2,000 qps (CI: a few seconds)
#   --duration  seconds per measurement (default 10; --smoke: 1)
#   --services  services in the zone (default 10000; --smoke: 200)
#   --rate      the latency measurement's rate (default 20000; --smoke: 2000)
#   --bench     the dns_bench binary, not built; default: `cargo build --release
#               -p mcp-master --example dns_bench` and
#               $CARGO_TARGET_DIR/release/examples/dns_bench (else target/release/...)
#   --keep      keep the temporary directory (zone, queries, configs, logs)
# Exit status: 0 both measured and answering right; 1 a server failed to start or
# answered wrongly; 2 bad usage or a missing tool or binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

me=dns-vs-bind
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

smoke=0 duration="" services="" rate="" bench="" keep=0 build=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --duration) duration="${2:?--duration SECS}"; shift ;;
        --services) services="${2:?--services N}"; shift ;;
        --rate) rate="${2:?--rate QPS}"; shift ;;
        --bench) bench="${2:?--bench PATH}"; shift ;;
        --keep) keep=1 ;;
        -h | --help) usage 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
if [ -n "$bench" ]; then
    [[ "$bench" = /* ]] || bench="$PWD/$bench"
else
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" = /* ]] || target="$root/$target"
    bench="$target/release/examples/dns_bench"
    build=1
fi
if [ "$smoke" = 1 ]; then
    duration="${duration:-1}" services="${services:-200}" rate="${rate:-2000}"
else
    duration="${duration:-10}" services="${services:-10000}" rate="${rate:-20000}"
fi
for v in duration services rate; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$me: --$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[ "$duration" -le 600 ] || { echo "$me: --duration at most 600" >&2; exit 2; }
[ "$services" -le 60000 ] || { echo "$me: --services at most 60000" >&2; exit 2; }

for tool in named dnsperf dig taskset ss flock awk sort; do
    command -v "$tool" >/dev/null 2>&1 || missing "$tool not found (apt-get install bind9 bind9-dnsutils dnsperf util-linux iproute2)"
done
if [ -n "$build" ]; then
    command -v cargo >/dev/null 2>&1 || missing "'cargo' not found (or give --bench PATH)"
    (cd "$root" && cargo build --release -q -p mcp-master --example dns_bench) || die "cargo build --release -p mcp-master --example dns_bench failed"
fi
[ -x "$bench" ] || missing "$bench not found: cargo build --release -p mcp-master --example dns_bench"
named_bin="$(command -v named)"

# One run at a time (two would share the addresses and measure each other): wait
# for another run's lock on this script, bounded.
exec 9<"${BASH_SOURCE[0]}"
if ! flock -n 9; then
    echo "$me: waiting for another run of this script" >&2
    flock -w 600 9 || die "another run of this script still runs after 10 min"
fi
started=$SECONDS

cpus="$(nproc)"
load_cpu=0
server_cpu=$((cpus - 1))
[ "$cpus" -ge 2 ] || { [ "$smoke" = 1 ] || missing "needs 2 CPUs (one for the servers, one for dnsperf); this machine has $cpus"; }

zone=svc.mcp.metacircular.net
emb_ip=127.0.0.116 emb_port=5300 bind_ip=127.0.0.1 bind_port=""
for p in $(seq 53117 53199); do
    if ! ss -Hlnu "sport = :$p" | grep -q . && ! ss -Hlnt "sport = :$p" | grep -q .; then
        bind_port=$p
        break
    fi
done
[ -n "$bind_port" ] || die "no free port in 53117-53199 on 127.0.0.1 for named"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/$me.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$keep" = 1 ]; then echo "$me: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# Answers within 10 s, or says what the log says.
wait_answer() { # ip port name log
    for _ in $(seq 1 100); do
        if dig @"$1" -p "$2" +short +tries=1 +time=1 "$3" A 2>/dev/null | grep -Eq '^[0-9]+(\.[0-9]+){3}$'; then
            return 0
        fi
        sleep 0.1
    done
    echo "$me: nothing answers on $1:$2; its log:" >&2
    tail -20 "$4" >&2
    exit 1
}

# --- the embedded server ---------------------------------------------------
taskset -c "$server_cpu" "$bench" --listen "$emb_ip:$emb_port" --services "$services" \
    --origin "$zone" --zone-file "$tmp/zone.db" --queries "$tmp/queries.txt" \
    >"$tmp/embedded.log" 2>&1 &
pids+=($!)
wait_answer "$emb_ip" "$emb_port" "s00000.$zone" "$tmp/embedded.log"

# --- BIND --------------------------------------------------------------------
cat >"$tmp/named.conf" <<EOF
options {
    directory "$tmp";
    pid-file "$tmp/named.pid";
    session-keyfile "$tmp/session.key";
    listen-on port $bind_port { $bind_ip; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    allow-transfer { none; };
    notify no;
    querylog no;
};
controls { };
logging { category default { default_stderr; }; };
zone "$zone" {
    type primary;
    file "$tmp/zone.db";
};
EOF
taskset -c "$server_cpu" "$named_bin" -g -n 1 -c "$tmp/named.conf" >"$tmp/named.log" 2>&1 &
pids+=($!)
wait_answer "$bind_ip" "$bind_port" "s00000.$zone" "$tmp/named.log"

# --- both answer the same -----------------------------------------------------
check() { # what got want
    [ "$2" = "$3" ] || die "$1: got '$2', want '$3'"
}
for server in "$emb_ip $emb_port" "$bind_ip $bind_port"; do
    read -r ip port <<<"$server"
    q() { dig @"$ip" -p "$port" +tries=1 +time=2 "$@" 2>/dev/null; }
    check "$ip A" "$(q +short "s00001.$zone" A)" "10.0.0.1"
    check "$ip SRV" "$(q +short "_http._tcp.s00001.$zone" SRV)" "0 0 40001 s00001.$zone."
    check "$ip SRV over TCP" "$(q +tcp +short "_http._tcp.s00001.$zone" SRV)" "0 0 40001 s00001.$zone."
    status() { q +noall +comments "$@" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }
    check "$ip unknown name" "$(status "missing-5.$zone" A)" "NXDOMAIN"
    check "$ip outside the zone" "$(status example.org A)" "REFUSED"
done

# --- measurements ---------------------------------------------------------------
field() { # label file: the number after "label:"
    sed -n "s/^ *$1: *\([0-9.]*\).*/\1/p" "$2" | head -1
}
throughput() { # ip port out
    taskset -c "$load_cpu" dnsperf -s "$1" -p "$2" -d "$tmp/queries.txt" -l "$duration" \
        -c 16 -q 500 -T 1 >"$3" 2>&1 || die "dnsperf against $1:$2 failed: $(tail -5 "$3")"
}
latency() { # ip port out
    taskset -c "$load_cpu" dnsperf -s "$1" -p "$2" -d "$tmp/queries.txt" -l "$duration" \
        -Q "$rate" -c 4 -T 1 -v >"$3" 2>&1 || die "dnsperf -v against $1:$2 failed: $(tail -5 "$3")"
}
# p50 p99 p99.9 max of the answers' latencies, in microseconds.
percentiles() { # file
    awk '$1 == ">" { print $NF * 1000000 }' "$1" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- - - -"; exit }
            split("0.5 0.99 0.999", q, " ")
            for (i = 1; i <= 3; i++) { k = int(q[i] * NR + 0.999999); if (k < 1) k = 1; printf "%.0f ", v[k] }
            printf "%.0f\n", v[NR]
        }'
}

rows=()
for who in embedded bind; do
    ip="$emb_ip" port="$emb_port"
    [ "$who" = bind ] && ip="$bind_ip" port="$bind_port"
    throughput "$ip" "$port" "$tmp/$who.throughput"
    latency "$ip" "$port" "$tmp/$who.latency"
    qps="$(field "Queries per second" "$tmp/$who.throughput")"
    mean="$(field "Average Latency (s)" "$tmp/$who.throughput")"
    lost="$(sed -n 's/^ *Queries lost: *\([0-9]*\) (\([0-9.]*%\)).*/\1 (\2)/p' "$tmp/$who.throughput")"
    size="$(sed -n 's/^ *Average packet size: *request \([0-9]*\), response \([0-9]*\).*/\2/p' "$tmp/$who.throughput")"
    read -r p50 p99 p999 pmax < <(percentiles "$tmp/$who.latency")
    lat_qps="$(field "Queries per second" "$tmp/$who.latency")"
    name="embedded (mcp-master)"; [ "$who" = bind ] && name="BIND $("$named_bin" -v | awk '{print $2}') (-n 1)"
    rows+=("| $name | $(printf '%.0f' "$qps") | $(awk -v m="$mean" 'BEGIN{printf "%.0f", m*1000000}') | $lost | $(printf '%.0f' "$lat_qps") | $p50 | $p99 | $p999 | $pmax | $size |")
    eval "qps_$who=$qps"
done

echo
echo "## $me: $services services ($((services * 2)) records), $duration s per measurement, $(date -u +%Y-%m-%d); took $((SECONDS - started)) s"
echo
echo "| server | qps (saturated) | mean latency at saturation (µs) | lost | qps (paced) | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | mean response (bytes) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
awk -v e="$qps_embedded" -v b="$qps_bind" 'BEGIN { printf "embedded / BIND throughput: %.2f\n", e / b }'
echo
echo "servers on CPU $server_cpu (one at a time under load), dnsperf on CPU $load_cpu"
echo "throughput: dnsperf -s IP -p PORT -d queries.txt -l $duration -c 16 -q 500 -T 1"
echo "latency:    dnsperf -s IP -p PORT -d queries.txt -l $duration -Q $rate -c 4 -T 1 -v"
