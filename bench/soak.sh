#!/usr/bin/env bash
# Soak: deploy and remove one service with one route CYCLES times on a local
# fleet started the way a user starts it (`mcp dev --runtime RUNTIME --dir DIR`),
# and compare what the master and each agent hold BEFORE and AFTER: child
# processes, exec supervisors, containers of the service, rows in each agent.db,
# files under each srv_root's */certs, listening TCP ports and open fds. Prints a
# table; exits 1 on any leak or failed cycle, 2 on bad usage or a fleet that
# does not start.
#
# Usage: bench/soak.sh [--smoke] [--keep] [CYCLES] [RUNTIME]   (or [--smoke] RUNTIME)
#   RUNTIME   exec (default) or docker
#   CYCLES    default 1000 for exec, 200 for docker; --smoke runs 3 (for CI)
#   --keep    keep the fleet's directory (logs, agent.db) afterwards
# Binaries: $MCP_BIN_DIR, else ${CARGO_TARGET_DIR:-target}/release when it holds
# mcp, mcp-master and mcp-agent, else .../debug, else built here (`cargo build
# --release --bins`). Needs 127.0.0.11-14 free (no other `mcp dev`),
# and sqlite3, ss, ps, cc (the hello-http fixture); for docker, the docker CLI
# and a running engine. A missing one: exit 2, said which.
#
# Bounded: every CLI call has a timeout, the fleet gets 60 s to start, the run
# stops after 20 failed cycles. It only stops processes it started, by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
keep=0
args=()
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "soak.sh: unknown option $a" >&2; exit 2 ;;
        *) args+=("$a") ;;
    esac
done
cycles="${args[0]:-}"
runtime="${args[1]:-exec}"
# `soak.sh --smoke docker`: a lone RUNTIME.
if [ "${#args[@]}" = 1 ] && ! [[ "$cycles" =~ ^[0-9]+$ ]]; then runtime="$cycles"; cycles=""; fi
case "$runtime" in
    exec) default_cycles=1000 ;;
    docker) default_cycles=200 ;;
    *) echo "soak.sh: RUNTIME must be exec or docker, not $runtime" >&2; exit 2 ;;
esac
if [ "$smoke" = 1 ]; then cycles="${cycles:-3}"; fi
cycles="${cycles:-$default_cycles}"
if ! [[ "$cycles" =~ ^[0-9]+$ ]] || [ "$cycles" -lt 1 ]; then
    echo "soak.sh: CYCLES must be a positive number, not $cycles" >&2
    exit 2
fi
for tool in sqlite3 ss ps timeout cc; do
    command -v "$tool" >/dev/null || { echo "soak.sh: $tool is required (apt-get install sqlite3 iproute2 procps build-essential)" >&2; exit 2; }
done
if [ "$runtime" = docker ]; then
    command -v docker >/dev/null || { echo "soak.sh: the docker CLI is required for RUNTIME docker" >&2; exit 2; }
    docker info >/dev/null 2>&1 || { echo "soak.sh: the Docker engine does not answer (docker info)" >&2; exit 2; }
fi

target="${CARGO_TARGET_DIR:-target}"
bin="${MCP_BIN_DIR:-}"
if [ -z "$bin" ]; then
    for profile in release debug; do
        if [ -x "$target/$profile/mcp" ] && [ -x "$target/$profile/mcp-master" ] && [ -x "$target/$profile/mcp-agent" ]; then
            bin="$target/$profile"
            break
        fi
    done
fi
# A fresh checkout: build them, as a user would.
if [ -z "$bin" ] && command -v cargo >/dev/null; then
    echo "soak.sh: no binaries in $target/release or $target/debug: cargo build --release --bins" >&2
    cargo build --release --bins -q || { echo "soak.sh: cargo build --release --bins failed" >&2; exit 2; }
    bin="$target/release"
fi
if [ -z "$bin" ] || [ ! -x "$bin/mcp" ]; then
    echo "soak.sh: no mcp binaries in $target/release or $target/debug: run \`cargo build --release --bins\` or set MCP_BIN_DIR" >&2
    exit 2
fi
bin="$(cd "$bin" && pwd)"
if ss -ltnH 'sport = :9443' | grep -q '127.0.0.11:9443'; then
    echo "soak.sh: 127.0.0.11:9443 is in use (another mcp dev?): stop it first" >&2
    exit 2
fi

dir="$(mktemp -d /tmp/mcp-soak.XXXXXX)"
service="soak-$$"
nodes=(rift orion hyperborea svc)
procs=(master "${nodes[@]}")
dev_pid=""

# Stops what this script started, by PID: mcp dev (SIGINT, then SIGKILL), the
# processes it recorded in DIR/pids if still running from DIR, exec instances
# under DIR (their supervisors lead their process groups) and the containers
# of this run's service.
cleanup() {
    set +e
    if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
        kill -INT "$dev_pid"
        for _ in $(seq 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$dev_pid" 2>/dev/null && kill -KILL "$dev_pid"
        wait "$dev_pid" 2>/dev/null
    fi
    for f in "$dir"/pids/*.pid; do
        [ -f "$f" ] || continue
        pid="$(cat "$f")"
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$dir"; then kill -KILL "$pid"; fi
    done
    for pid in $(supervisors_pids); do kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; done
    if [ "$runtime" = docker ]; then
        ids="$(docker ps -aq --filter "label=mcp.service=$service")"
        [ -n "$ids" ] && docker rm -f $ids >/dev/null
    fi
    if [ "$keep" = 1 ]; then echo "soak.sh: kept $dir"; else rm -rf "$dir"; fi
}

# PIDs of `mcp-agent supervise DIR/...` (exec instances of this fleet).
supervisors_pids() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qE "supervise $dir/" && echo "${p#/proc/}"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The service: one component, one plain-HTTP route.
if [ "$runtime" = exec ]; then
    hello="$(tests/fixtures/hello-http/build.sh --no-image | tail -1)"
    component="driver = \"exec\"
command = [\"$hello\"]"
else
    tests/fixtures/hello-http/build.sh >/dev/null
    component='image = "mcp-test/hello:1"'
fi
cat >"$dir/$service.toml" <<DEF
name = "$service"

[[components]]
name = "web"
$component

[[components.routes]]
name = "http"
port = 8080
backend_tls = false
DEF

echo "soak.sh: $cycles cycles, runtime $runtime, binaries $bin, fleet in $dir"
"$bin/mcp" dev --runtime "$runtime" --dir "$dir/fleet" >"$dir/dev.out" 2>"$dir/dev.err" &
dev_pid=$!
fleet="$dir/fleet"
for _ in $(seq 600); do
    grep -q "mcp dev: running" "$dir/dev.out" 2>/dev/null && break
    if ! kill -0 "$dev_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -q "mcp dev: running" "$dir/dev.out" 2>/dev/null; then
    echo "soak.sh: mcp dev did not come up within 60 s:" >&2
    cat "$dir/dev.out" "$dir/dev.err" >&2
    exit 2
fi
mcp() { timeout 60 "$bin/mcp" --config "$fleet/mcp.toml" -q "$@"; }

pid_of() { cat "$fleet/pids/$1.pid"; }

# One line per (process, metric): "process metric value".
measure() {
    local p pid node db n t
    for p in "${procs[@]}"; do
        pid="$(pid_of "$p")"
        if [ ! -d "/proc/$pid" ]; then echo "$p alive 0"; continue; fi
        echo "$p alive 1"
        echo "$p children $(ps --ppid "$pid" -o pid= | wc -l)"
        echo "$p fds $(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
        echo "$p listening $(ss -ltnpH 2>/dev/null | grep -c "pid=$pid," || true)"
    done
    for node in "${nodes[@]}"; do
        db="$fleet/$node/data/agent.db"
        n=0
        if [ -f "$db" ]; then
            for t in $(sqlite3 -readonly "$db" "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"); do
                n=$((n + $(sqlite3 -readonly "$db" "SELECT COUNT(*) FROM \"$t\"")))
            done
        fi
        echo "$node db_rows $n"
        echo "$node cert_files $(find "$fleet/srv/$node" -path '*/certs/*' -type f 2>/dev/null | wc -l)"
        if [ "$runtime" = docker ]; then
            echo "$node containers $(docker ps -aq --filter "label=mcp.service=$service" --filter "label=mcp.node=$node" | wc -l)"
        fi
    done
    echo "fleet supervisors $(supervisors_pids | wc -l)"
}

# Warm-up cycle: lazily opened files and connections belong to BEFORE.
mcp deploy "$dir/$service.toml" >/dev/null
mcp remove "$service" >/dev/null
sleep 1
measure >"$dir/before"

failures=0
completed=0
start=$(date +%s%N)
for i in $(seq "$cycles"); do
    if ! mcp deploy "$dir/$service.toml" >>"$dir/cycles.log" 2>&1; then
        failures=$((failures + 1)); echo "cycle $i: deploy failed" >>"$dir/failures"
    fi
    # DURING: what one deployed service holds, to show the counts see it.
    [ "$i" = 1 ] && measure >"$dir/during"
    if ! mcp remove "$service" >>"$dir/cycles.log" 2>&1; then
        failures=$((failures + 1)); echo "cycle $i: remove failed" >>"$dir/failures"
    fi
    completed=$i
    if [ "$failures" -ge 20 ]; then
        echo "soak.sh: stopping after $failures failures at cycle $i" >&2
        break
    fi
    if [ $((i % 50)) = 0 ]; then echo "soak.sh: $i/$cycles cycles"; fi
done
elapsed=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')

# AFTER: let teardown settle (up to 10 s) until nothing is above BEFORE.
slack_fds=4
leaks() {
    join <(sort "$dir/before" | awk '{print $1"/"$2, $3}') <(sort "$dir/after" | awk '{print $1"/"$2, $3}') |
        awk -v slack="$slack_fds" '{ allow = ($1 ~ /\/fds$/) ? slack : 0; if ($3 > $2 + allow || ($1 ~ /\/alive$/ && $3 != $2)) print }'
}
for _ in $(seq 20); do
    measure >"$dir/after"
    [ -z "$(leaks)" ] && break
    sleep 0.5
done

keyed() { sort "$1" | awk '{print $1"/"$2, $3}'; }
printf '%-12s %-12s %8s %8s %8s %8s\n' process metric before during after delta
join <(keyed "$dir/before") <(join <(keyed "$dir/during") <(keyed "$dir/after")) |
    while read -r key b d a; do
        printf '%-12s %-12s %8s %8s %8s %+8d\n' "${key%%/*}" "${key#*/}" "$b" "$d" "$a" $((a - b))
    done
awk -v c="$completed" -v f="$failures" -v e="$elapsed" \
    'BEGIN { printf "%d cycles (%d failed operations) in %.1f s: %.2f cycles/s\n", c, f, e, c / e }'
status=0
if [ "$failures" -gt 0 ]; then
    echo "FAIL: $failures deploy/remove operations failed:" && head -5 "$dir/failures"
    tail -5 "$dir/cycles.log"
    status=1
fi
found="$(leaks)"
if [ -n "$found" ]; then
    echo "LEAK (metric before after; fds allow +$slack_fds):"
    echo "$found"
    status=1
fi
[ "$status" = 0 ] && echo "no leak"
exit "$status"
