#!/usr/bin/env bash
# A batch deploy: `mcp deploy DIR` of N one-container services (image present)
# until every one answers, against N sequential `docker run -d` of the same image
# with a published port until every one answers, on the same engine, side by side
# in one hyperfine run. The master places the whole batch, then deploys to the
# workers at the same time (one service at a time per worker, as the agent deploys).
# A third row, N `docker run -d` all at once, is the engine's own ceiling: no
# orchestrator on this engine can start the batch faster.
#
# Starts its own fleet the way a user does (`mcp-master init`, the join token in
# each agent.toml, a user from `mcp-master hash-password`, `mcp login`; runtime
# docker), on loopback only:
#   127.0.7.21:9443          the master
#   127.0.7.21-2W:9444       the agents of workers bb1..bbW (bb1 is the master's node)
#   127.0.7.20:18701-187NN   the `docker run -d -p` containers (both docker rows)
# Each measured command starts the services and then polls every one of them
# (every 10 ms, each try `curl -s --max-time 1`, for at most 30 s) until it answers
# 200; each run is preceded by removing what the previous one made. `mcp deploy`
# learns the published addresses from its own `--json` output (the table of what
# runs where it ends with).
# Prints hyperfine's markdown table and the ratios against the sequential
# `docker run -d` (goal: at most 0.5x for `mcp deploy DIR`).
#
# Usage: bench/batch-deploy.sh [--smoke] [--bin-dir DIR] [--keep] [--workers W] [--services N] [RUNS]
#   RUNS          timed runs of each command (default 5, after 1 warm-up run)
#   --smoke       4 services, 1 run of each, no warm-up (CI)
#   --workers W   worker nodes, 1 to 9 (default 4)
#   --services N  services in the batch, 1 to 99 (default 20)
#   --bin-dir DIR mcp, mcp-master and mcp-agent from DIR (e.g. the debug build), not
#                 built; default: `cargo build --release --bins` and
#                 $CARGO_TARGET_DIR/release (else target/release)
#   --keep        keep the temporary directory (configs, logs) and print its path
#   RUST_LOG      the fleet's log level (default warn); logs in the temp dir
# Exit status: 0 measured; 1 a step or a command failed (said on stderr); 2 bad
# usage or a missing tool or binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

me=batch-deploy
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

smoke=0 keep=0 bin_dir="" runs="" workers=4 services=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --bin-dir) bin_dir="${2:?--bin-dir DIR}"; shift ;;
        --workers) workers="${2:?--workers W}"; shift ;;
        --services) services="${2:?--services N}"; shift ;;
        --keep) keep=1 ;;
        -h | --help) usage 0 ;;
        -*) echo "$me: unknown argument '$1'" >&2; usage ;;
        *) [ -z "$runs" ] || usage; runs="$1" ;;
    esac
    shift
done
if [ "$smoke" = 1 ]; then
    runs="${runs:-1}" warmup=0 services="${services:-4}"
else
    runs="${runs:-5}" warmup=1 services="${services:-20}"
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] && [ "$runs" -le 100 ] || { echo "$me: RUNS must be 1 to 100, not '$runs'" >&2; exit 2; }
[[ "$workers" =~ ^[1-9]$ ]] || { echo "$me: --workers must be 1 to 9, not '$workers'" >&2; exit 2; }
[[ "$services" =~ ^[1-9][0-9]?$ ]] || { echo "$me: --services must be 1 to 99, not '$services'" >&2; exit 2; }
# A --bin-dir is taken from where we were started.
if [ -n "$bin_dir" ]; then
    [[ "$bin_dir" = /* ]] || bin_dir="$PWD/$bin_dir"
fi
cd "$root"

for t in docker hyperfine curl flock awk timeout; do
    command -v "$t" >/dev/null 2>&1 || missing "'$t' not found"
done
docker info >/dev/null 2>&1 || missing "the Docker engine does not answer (docker info)"
if [ -z "$bin_dir" ]; then
    cargo build --release --bins -q || die "cargo build --release --bins failed"
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" = /* ]] || target="$root/$target"
    bin_dir="$target/release"
fi
for b in mcp mcp-master mcp-agent; do
    [ -x "$bin_dir/$b" ] || missing "$bin_dir/$b not found (cargo build --release --bins, or --bin-dir DIR)"
done
tests/fixtures/hello-http/build.sh >/dev/null 2>&1 || die "tests/fixtures/hello-http/build.sh failed"

MASTER_IP=127.0.7.21 DOCKER_IP=127.0.7.20 DOCKER_PORT0=18700
IMAGE=mcp-test/hello:1
node_ip() { echo "127.0.7.$((20 + $1))"; }
names=()
for i in $(seq "$services"); do names+=("$(printf 'bb-%02d' "$i")"); done

# One run at a time on this machine (fixed addresses and names; two runs would
# measure each other): wait for another run's lock on this script, bounded.
exec 9<"$root/bench/$me.sh"
if ! flock -n 9; then
    echo "$me: another run of this script is under way; waiting (at most 10 min)" >&2
    flock -w 600 9 || die "another run of this script still runs after 10 min"
fi
SECONDS=0

# Nothing may already listen where we will.
listening=("$MASTER_IP:9443")
for w in $(seq "$workers"); do listening+=("$(node_ip "$w"):9444"); done
for i in $(seq "$services"); do listening+=("$DOCKER_IP:$((DOCKER_PORT0 + i))"); done
for a in "${listening[@]}"; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
        die "something already listens on $a"
    fi
done

# --- cleanup, on any exit ------------------------------------------------------
dir="$(mktemp -d /tmp/mcp-batch-bench.XXXXXX)"
pids=()
mcp="$bin_dir/mcp --config $dir/mcp.toml"
docker_names() { for i in $(seq "$services"); do echo "bb-docker-$i"; done; }
cleanup() {
    local rc=$? p w left
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for w in $(seq "$workers"); do
        left="$(docker ps -aq --filter "label=mcp.node=bb$w" 2>/dev/null || true)"
        [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
    done
    docker rm -f $(docker_names) >/dev/null 2>&1 || true
    if [ "$keep" = 1 ]; then echo "$me: kept $dir" >&2; else rm -rf "$dir"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- the commands measured, and their preparations ---------------------------------
# until-all-200 ADDRESS...: polls every http://ADDRESS/ until it answers 200;
# bounded: 30 s in all, 3000 tries each.
cat >"$dir/until-all-200" <<'SH'
#!/usr/bin/env bash
end=$((SECONDS + 30))
for a in "$@"; do
    for _ in $(seq 3000); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$a/")" = 200 ] && continue 2
        [ "$SECONDS" -lt "$end" ] || break
        sleep 0.01
    done
    echo "until-all-200 gave up after 30 s: http://$a/" >&2
    exit 1
done
SH
# mcp-batch: the batch deployed, then every published address answering.
cat >"$dir/mcp-batch" <<SH
#!/usr/bin/env bash
set -euo pipefail
$mcp --json deploy "$dir/batch" >"$dir/deployed.json"
mapfile -t addresses < <(grep -oE '"address": ?"[^"]+"' "$dir/deployed.json" | sed -E 's/.*"([^"]+)"\$/\1/')
[ "\${#addresses[@]}" = $services ] || { echo "mcp-batch: \${#addresses[@]} addresses, not $services: \$(cat $dir/deployed.json)" >&2; exit 1; }
"$dir/until-all-200" "\${addresses[@]}"
SH
# mcp-clean: every service of the batch removed, at once.
cat >"$dir/mcp-clean" <<SH
#!/usr/bin/env bash
for s in ${names[*]}; do $mcp -q remove "\$s" >/dev/null 2>&1 & done
wait
SH
# docker-batch: N docker run -d, one after another, then every port answering.
cat >"$dir/docker-batch" <<SH
#!/usr/bin/env bash
set -euo pipefail
addresses=()
for i in \$(seq $services); do
    docker run -d --name "bb-docker-\$i" -p "$DOCKER_IP:\$(($DOCKER_PORT0 + i)):8080" -e MCP_SERVICE=bench $IMAGE >/dev/null
    addresses+=("$DOCKER_IP:\$(($DOCKER_PORT0 + i))")
done
"$dir/until-all-200" "\${addresses[@]}"
SH
# docker-parallel: N docker run -d all at once, then every port answering.
cat >"$dir/docker-parallel" <<SH
#!/usr/bin/env bash
set -euo pipefail
addresses=() started=()
for i in \$(seq $services); do
    docker run -d --name "bb-docker-\$i" -p "$DOCKER_IP:\$(($DOCKER_PORT0 + i)):8080" -e MCP_SERVICE=bench $IMAGE >/dev/null &
    started+=(\$!)
    addresses+=("$DOCKER_IP:\$(($DOCKER_PORT0 + i))")
done
for p in "\${started[@]}"; do wait "\$p"; done
"$dir/until-all-200" "\${addresses[@]}"
SH
chmod +x "$dir/until-all-200" "$dir/mcp-batch" "$dir/mcp-clean" "$dir/docker-batch" "$dir/docker-parallel"

# --- the fleet -------------------------------------------------------------------
join_token="$("$bin_dir/mcp-master" init --data-dir "$dir/master" 2>"$dir/init.log")" || { cat "$dir/init.log" >&2; die "mcp-master init failed"; }
[ -n "$join_token" ] || die "mcp-master init printed no join token"
hash="$(echo bench-password | "$bin_dir/mcp-master" hash-password)"
bootstrap=""
for w in $(seq "$workers"); do
    bootstrap+="${bootstrap:+, }{ name = \"bb$w\", address = \"$(node_ip "$w"):9444\" }"
done
cat >"$dir/master.toml" <<CONF
node = "bb1"
listen = "$MASTER_IP:9443"
data_dir = "$dir/master"
domain = "metacircular.net"
heartbeat_interval = "5s"
bootstrap_nodes = [$bootstrap]
[users.bench]
password_hash = "$hash"
role = "admin"
CONF
for w in $(seq "$workers"); do
    mkdir -p "$dir/bb$w"
    cat >"$dir/bb$w/agent.toml" <<CONF
name = "bb$w"
role = "worker"
master = "$MASTER_IP:9443"
listen = "$(node_ip "$w"):9444"
data_dir = "$dir/bb$w/data"
srv_root = "$dir/srv/bb$w"
runtime = "docker"
join_token = "$join_token"
CONF
    chmod 600 "$dir/bb$w/agent.toml"
done
cat >"$dir/mcp.toml" <<CONF
master = "$MASTER_IP:9443"
ca_cert = "$dir/master/ca.pem"
token_file = "$dir/token"
CONF
mkdir -p "$dir/batch"
for s in "${names[@]}"; do
    cat >"$dir/batch/$s.toml" <<CONF
name = "$s"

[[components]]
name = "web"
image = "$IMAGE"

[[components.routes]]
name = "http"
port = 8080
backend_tls = false
CONF
done

log="${RUST_LOG:-warn}"
# start NAME PROGRAM CONFIG ADDR: in the background, its log in $dir/NAME.log,
# waiting (at most 10 s) until it accepts on ADDR.
start() {
    local name=$1 program=$2 config=$3 addr=$4 pid
    RUST_LOG="$log" "$bin_dir/$program" --config "$config" >"$dir/$name.log" 2>&1 &
    pid=$!
    pids=("$pid" "${pids[@]}")
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || { cat "$dir/$name.log" >&2; die "$name exited at start (log above)"; }
        (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && return 0
        sleep 0.05
    done
    cat "$dir/$name.log" >&2
    die "$name does not listen on $addr after 10 s (log above)"
}
start master mcp-master "$dir/master.toml" "$MASTER_IP:9443"
for w in $(seq "$workers"); do
    start "bb$w" mcp-agent "$dir/bb$w/agent.toml" "$(node_ip "$w"):9444"
done
for _ in $(seq 50); do echo bench-password | $mcp -q login --user bench --password-stdin 2>/dev/null && break; sleep 0.1; done
[ -f "$dir/token" ] || die "mcp login failed; logs in $dir with --keep"
healthy=0
for _ in $(seq 100); do
    healthy="$($mcp node list --json 2>/dev/null | grep -o '"healthy"' | wc -l)" || true
    [ "$healthy" -ge "$workers" ] && break
    sleep 0.1
done
[ "$healthy" -ge "$workers" ] || { cat "$dir"/*.log >&2; die "the $workers nodes did not all register (logs above)"; }

# A first batch, checked: every service answers, spread over the workers.
"$dir/mcp-batch" || die "the first mcp deploy of the batch failed; logs in $dir with --keep"
spread="$(grep -oE '"node": ?"bb[0-9]+"' "$dir/deployed.json" | sort -u | wc -l)"
[ "$spread" -eq "$((workers < services ? workers : services))" ] \
    || die "the batch ran on $spread nodes, not on all $workers: $(cat "$dir/deployed.json")"
"$dir/mcp-clean"

# --- measure -------------------------------------------------------------------------
load="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "$me: $services services, $workers workers; $runs runs each after $warmup warm-up; fleet: $bin_dir; load average before: $load"
hyperfine --warmup "$warmup" --runs "$runs" --export-markdown "$dir/result.md" \
    --prepare "$dir/mcp-clean" \
    -n "mcp deploy DIR" "$dir/mcp-batch" \
    --prepare "docker rm -f $(docker_names | tr '\n' ' ')>/dev/null 2>&1 || true" \
    -n "docker run -d x$services" "$dir/docker-batch" \
    --prepare "docker rm -f $(docker_names | tr '\n' ' ')>/dev/null 2>&1 || true" \
    -n "docker run -d x$services in parallel" "$dir/docker-parallel" \
    || die "hyperfine failed (a command did not finish; logs in $dir with --keep)"
echo
cat "$dir/result.md"
echo
awk -F'|' -v n="$services" '
    /^\| `/ { name = $2; gsub(/^ *`|` *$/, "", name); split($3, m, " "); mean[name] = m[1] }
    END {
        d = mean["docker run -d x" n]
        p = mean["docker run -d x" n " in parallel"]
        if (d > 0)
            printf "mcp deploy DIR / docker run -d x%d: %.2fx (goal: at most 0.5x: %s)\n", n, mean["mcp deploy DIR"] / d, (mean["mcp deploy DIR"] <= 0.5 * d) ? "met" : "not met"
        if (d > 0 && p > 0)
            printf "docker run -d x%d in parallel / docker run -d x%d: %.2fx (the engine'"'"'s ceiling)\n", n, n, p / d
    }' "$dir/result.md"
echo "$me: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$me: took $SECONDS s"
