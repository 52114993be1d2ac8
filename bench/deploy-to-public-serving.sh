#!/usr/bin/env bash
# Deploy to public serving: from `mcp deploy` of a public l7 service (image
# present) until its hostname answers 200 through the edge's mc-proxy, against
# `docker run -d` until the container's published port answers, and against
# Docker Swarm's `docker service create` until its published port answers, on the
# same engine, side by side in one hyperfine run.
#
# Starts its own fleet the way a user does (`mcp-master init`, the join token in
# each agent.toml, a user from `mcp-master hash-password`, `mcp login`; runtime
# docker), on loopback only:
#   127.0.0.185:9443   the master            127.0.0.185:9444  the worker's agent (node pubbench)
#   127.0.0.186:9444   the edge's agent      127.0.0.186:8443  its mc-proxy (admin socket in the temp dir)
#   127.0.0.185:18185  `docker run -d -p`    :18186            the Swarm service's published port
# Each measured command starts the thing and then polls it (every 10 ms, each try
# `curl -s --max-time 1`, for at most 30 s) until it answers 200; each run is
# preceded by removing what the previous one made and waiting until it is gone.
# The public route is reached as a client on the internet would: curl trusting
# the master's public CA (<master data_dir>/public-ca.pem), the hostname resolved
# to the edge (--resolve). Swarm: if `docker info` says the swarm is inactive, the
# script runs `docker swarm init` (loopback only) and `docker swarm leave --force`
# at exit; the service uses the local image (`--no-resolve-image`: nothing is
# pulled) and publishes through the ingress routing mesh, or, when the mesh does
# not answer (a kernel without IPVS), with `mode=host` (said in the output).
# Prints hyperfine's markdown table and the two ratios against the goals (at most
# 1.3x `docker run -d`, at most 0.3x `docker service create`).
#
# Usage: bench/deploy-to-public-serving.sh [--smoke] [--bin-dir DIR] [--keep] [RUNS]
#   RUNS          timed runs of each command (default 20, after 3 warm-up runs)
#   --smoke       1 run of each, no warm-up (CI); a swarm that cannot be initialised
#                 (or an engine that is a swarm worker) is then a skipped row, said
#                 why, instead of an error
#   --bin-dir DIR mcp, mcp-master, mcp-agent and mc-proxy from DIR (e.g. the debug
#                 build), not built; default: `cargo build --release --bins` and
#                 $CARGO_TARGET_DIR/release (else target/release)
#   --keep        keep the temporary directory (configs, logs) and print its path
#   RUST_LOG      the fleet's log level (default warn); logs in the temp dir
# Exit status: 0 measured; 1 a step or a command failed (said on stderr); 2 bad
# usage or a missing tool or binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

me=deploy-to-public-serving
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

smoke=0 keep=0 bin_dir="" runs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --bin-dir) bin_dir="${2:?--bin-dir DIR}"; shift ;;
        --keep) keep=1 ;;
        -h | --help) usage 0 ;;
        -*) echo "$me: unknown argument '$1'" >&2; usage ;;
        *) [ -z "$runs" ] || usage; runs="$1" ;;
    esac
    shift
done
if [ "$smoke" = 1 ]; then
    runs="${runs:-1}" warmup=0
else
    runs="${runs:-20}" warmup=3
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] && [ "$runs" -le 1000 ] || { echo "$me: RUNS must be 1 to 1000, not '$runs'" >&2; exit 2; }
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
for b in mcp mcp-master mcp-agent mc-proxy; do
    [ -x "$bin_dir/$b" ] || missing "$bin_dir/$b not found (cargo build --release --bins, or --bin-dir DIR)"
done
tests/fixtures/hello-http/build.sh >/dev/null 2>&1 || die "tests/fixtures/hello-http/build.sh failed"

IP=127.0.0.185 EDGE_IP=127.0.0.186
DOCKER_PORT=18185 SWARM_PORT=18186
SERVICE=bench-public HOST=bench-public.metacircular.net
NODE=pubbench EDGE=pubbench-edge
IMAGE=mcp-test/hello:1

# One run at a time on this machine (fixed addresses and names; two runs would
# measure each other): wait for another run's lock on this script, bounded.
exec 9<"$root/bench/$me.sh"
if ! flock -n 9; then
    echo "$me: another run of this script is under way; waiting (at most 10 min)" >&2
    flock -w 600 9 || die "another run of this script still runs after 10 min"
fi
SECONDS=0

# Nothing may already listen where we will.
for a in $IP:9443 $IP:9444 $EDGE_IP:9444 $EDGE_IP:8443 $IP:$DOCKER_PORT 127.0.0.1:$SWARM_PORT; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
        die "something already listens on $a"
    fi
done

# --- cleanup, on any exit ------------------------------------------------------
dir="$(mktemp -d /tmp/mcp-public-bench.XXXXXX)"
pids=()           # agents, then the master, then mc-proxy
swarm_ours=0      # we ran `docker swarm init`
gwbridge_ours=0   # and docker_gwbridge did not exist before
mcp="$bin_dir/mcp --config $dir/mcp.toml"
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    # The service through the master while it runs, then the processes, then
    # whatever is left of the containers.
    if [ -f "$dir/token" ]; then timeout 15 $mcp -q remove "$SERVICE" >/dev/null 2>&1 || true; fi
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    local left
    left="$(docker ps -aq --filter "label=mcp.node=$NODE" --filter "label=mcp.service=$SERVICE" 2>/dev/null || true)"
    [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
    docker rm -f bench-docker >/dev/null 2>&1 || true
    docker service rm bench-swarm >/dev/null 2>&1 || true
    if [ "$swarm_ours" = 1 ]; then
        docker swarm leave --force >/dev/null 2>&1 || echo "$me: docker swarm leave --force failed" >&2
        if [ "$gwbridge_ours" = 1 ]; then
            docker network rm docker_gwbridge >/dev/null 2>&1 || true
        fi
    fi
    if [ "$keep" = 1 ]; then echo "$me: kept $dir" >&2; else rm -rf "$dir"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- helpers the measured commands run -----------------------------------------
# until-200 [--not] CURL-ARGS... URL: polls until the URL answers 200 (with --not:
# until it no longer does); bounded: 30 s, 3000 tries.
cat >"$dir/until-200" <<'SH'
#!/usr/bin/env bash
want=0 not=""
[ "$1" = --not ] && { want=1 not="--not "; shift; }
end=$((SECONDS + 30))
for _ in $(seq 3000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@")" = 200 ]
    [ $? = "$want" ] && exit 0
    [ "$SECONDS" -lt "$end" ] || break
    sleep 0.01
done
echo "until-200 ${not}gave up after 30 s: curl $*" >&2
exit 1
SH
# until-closed HOST PORT [SWARM-SERVICE]: polls until nothing accepts on HOST:PORT
# (and no task container of the Swarm service is left), bounded: 30 s.
cat >"$dir/until-closed" <<'SH'
#!/usr/bin/env bash
end=$((SECONDS + 30))
for _ in $(seq 3000); do
    if ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then
        [ -z "${3:-}" ] && exit 0
        [ -z "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$3")" ] && exit 0
    fi
    [ "$SECONDS" -lt "$end" ] || break
    sleep 0.01
done
echo "until-closed: $1:$2 ${3:-} still there after 30 s" >&2
exit 1
SH
chmod +x "$dir/until-200" "$dir/until-closed"

# --- the fleet -------------------------------------------------------------------
join_token="$("$bin_dir/mcp-master" init --data-dir "$dir/master" 2>"$dir/init.log")" || { cat "$dir/init.log" >&2; die "mcp-master init failed"; }
[ -n "$join_token" ] || die "mcp-master init printed no join token"
hash="$(echo bench-password | "$bin_dir/mcp-master" hash-password)"
mkdir -p "$dir/$NODE" "$dir/$EDGE/proxy"
cat >"$dir/master.toml" <<CONF
node = "$NODE"
listen = "$IP:9443"
data_dir = "$dir/master"
domain = "metacircular.net"
allowed_domains = ["metacircular.net"]
heartbeat_interval = "5s"
bootstrap_nodes = [{ name = "$NODE", address = "$IP:9444" }, { name = "$EDGE", address = "$EDGE_IP:9444" }]
[users.bench]
password_hash = "$hash"
role = "admin"
CONF
cat >"$dir/$NODE/agent.toml" <<CONF
name = "$NODE"
role = "worker"
master = "$IP:9443"
listen = "$IP:9444"
data_dir = "$dir/$NODE/data"
srv_root = "$dir/srv/$NODE"
runtime = "docker"
join_token = "$join_token"
CONF
cat >"$dir/$EDGE/agent.toml" <<CONF
name = "$EDGE"
role = "edge"
master = "$IP:9443"
listen = "$EDGE_IP:9444"
data_dir = "$dir/$EDGE/data"
srv_root = "$dir/srv/$EDGE"
runtime = "docker"
join_token = "$join_token"
proxy_admin_socket = "$dir/$EDGE/admin.sock"
public_address = "$EDGE_IP:8443"
CONF
cat >"$dir/$EDGE/proxy.toml" <<CONF
listen = "$EDGE_IP:8443"
admin_socket = "$dir/$EDGE/admin.sock"
data_dir = "$dir/$EDGE/proxy"
drain_timeout = "1s"
CONF
chmod 600 "$dir/$NODE/agent.toml" "$dir/$EDGE/agent.toml"
cat >"$dir/mcp.toml" <<CONF
master = "$IP:9443"
ca_cert = "$dir/master/ca.pem"
token_file = "$dir/token"
CONF
cat >"$dir/public.toml" <<CONF
name = "$SERVICE"

[[components]]
name = "web"
image = "$IMAGE"

[[components.routes]]
name = "https"
port = 8080
mode = "l7"
public = true
hostname = "$HOST"
backend_tls = false
CONF

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
# pids is kept in reverse start order: agents stop first, mc-proxy last.
start mc-proxy mc-proxy "$dir/$EDGE/proxy.toml" "$EDGE_IP:8443"
start master mcp-master "$dir/master.toml" "$IP:9443"
start agent mcp-agent "$dir/$NODE/agent.toml" "$IP:9444"
start edge-agent mcp-agent "$dir/$EDGE/agent.toml" "$EDGE_IP:9444"
ca="$dir/master/public-ca.pem"
[ -f "$ca" ] || die "no public CA at $ca"
for _ in $(seq 50); do echo bench-password | $mcp -q login --user bench --password-stdin 2>/dev/null && break; sleep 0.1; done
[ -f "$dir/token" ] || die "mcp login failed; logs in $dir with --keep"
healthy=0
for _ in $(seq 100); do
    healthy="$($mcp node list --json 2>/dev/null | grep -o '"healthy"' | wc -l)" || true
    [ "$healthy" -ge 2 ] && break
    sleep 0.1
done
[ "$healthy" -ge 2 ] || { cat "$dir"/*.log >&2; die "the nodes did not both register (logs above)"; }

public_url=(--cacert "$ca" --resolve "$HOST:8443:$EDGE_IP" "https://$HOST:8443/")
# A first deploy, checked: the hostname answers with the service's page.
$mcp -q deploy "$dir/public.toml" || die "mcp deploy failed; logs in $dir with --keep"
"$dir/until-200" "${public_url[@]}" || die "the public route does not answer; logs in $dir with --keep"
page="$(curl -s --max-time 2 "${public_url[@]}")"
[[ "$page" == "hello from $SERVICE on $NODE"* ]] || die "the public route answered '$page'"
$mcp -q remove "$SERVICE" || die "mcp remove failed"

# --- Swarm -----------------------------------------------------------------------
swarm_skip=""
swarm_state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)"
if [ "$swarm_state" = inactive ]; then
    docker network inspect docker_gwbridge >/dev/null 2>&1 || gwbridge_ours=1
    if out="$(timeout 60 docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 2>&1)"; then
        swarm_ours=1
    else
        swarm_skip="docker swarm init failed: $(echo "$out" | head -1)"
        gwbridge_ours=0
    fi
elif [ "$swarm_state" != active ]; then
    swarm_skip="the swarm is $swarm_state"
elif [ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]; then
    swarm_skip="this engine is a swarm worker, not a manager"
fi
swarm_publish=""
swarm_cmd() { # the measured Swarm command, publishing with $1 (empty: ingress)
    echo "docker service create --detach --no-resolve-image --name bench-swarm --stop-grace-period 0s --publish published=$SWARM_PORT,target=8080$1 $IMAGE >/dev/null && $dir/until-200 http://127.0.0.1:$SWARM_PORT/"
}
if [ -z "$swarm_skip" ]; then
    # The routing mesh first (Swarm's default), bounded: 10 s.
    if docker service create --detach --no-resolve-image --name bench-swarm --stop-grace-period 0s \
        --publish "published=$SWARM_PORT,target=8080" "$IMAGE" >/dev/null 2>"$dir/swarm.log" \
        && timeout 10 "$dir/until-200" "http://127.0.0.1:$SWARM_PORT/" 2>/dev/null; then
        swarm_publish="ingress"
    fi
    docker service rm bench-swarm >/dev/null 2>&1 || true
    "$dir/until-closed" 127.0.0.1 "$SWARM_PORT" bench-swarm || die "the Swarm probe service did not go"
    if [ -z "$swarm_publish" ]; then
        if docker service create --detach --no-resolve-image --name bench-swarm --stop-grace-period 0s \
            --publish "published=$SWARM_PORT,target=8080,mode=host" "$IMAGE" >/dev/null 2>>"$dir/swarm.log" \
            && "$dir/until-200" "http://127.0.0.1:$SWARM_PORT/" 2>>"$dir/swarm.log"; then
            swarm_publish="host"
            echo "$me: note: Swarm's ingress routing mesh did not answer on 127.0.0.1:$SWARM_PORT within 10 s (no IPVS in this kernel?); publishing with mode=host (docker-proxy on the node, as docker run)"
        fi
        docker service rm bench-swarm >/dev/null 2>&1 || true
        "$dir/until-closed" 127.0.0.1 "$SWARM_PORT" bench-swarm || die "the Swarm probe service did not go"
    fi
    if [ -z "$swarm_publish" ]; then
        cat "$dir/swarm.log" >&2
        die "docker service create of $IMAGE did not answer on 127.0.0.1:$SWARM_PORT, with the routing mesh or mode=host (log above)"
    fi
fi
if [ -n "$swarm_skip" ]; then
    [ "$smoke" = 1 ] || die "Swarm: $swarm_skip"
    echo "$me: docker service create: skipped ($swarm_skip)"
fi

# --- measure -------------------------------------------------------------------------
args=(
    --prepare "$mcp -q remove $SERVICE >/dev/null 2>&1; $dir/until-200 --not ${public_url[*]}"
    -n "mcp deploy" "$mcp -q deploy $dir/public.toml && $dir/until-200 ${public_url[*]}"
    --prepare "docker rm -f bench-docker >/dev/null 2>&1; $dir/until-closed $IP $DOCKER_PORT"
    -n "docker run -d" "docker run -d --name bench-docker -p $IP:$DOCKER_PORT:8080 -e MCP_SERVICE=bench $IMAGE >/dev/null && $dir/until-200 http://$IP:$DOCKER_PORT/"
)
if [ -z "$swarm_skip" ]; then
    mode=""
    [ "$swarm_publish" = host ] && mode=",mode=host"
    args+=(
        --prepare "docker service rm bench-swarm >/dev/null 2>&1; $dir/until-closed 127.0.0.1 $SWARM_PORT bench-swarm"
        -n "docker service create" "$(swarm_cmd "$mode")"
    )
fi
echo "$me: $runs runs each after $warmup warm-up; fleet: $bin_dir; swarm publish: ${swarm_publish:-skipped}"
hyperfine --warmup "$warmup" --runs "$runs" --export-markdown "$dir/result.md" "${args[@]}" \
    || die "hyperfine failed (a command did not finish; logs in $dir with --keep)"
echo
cat "$dir/result.md"
echo
# Ratios of the means (the table's unit is the same on every row).
awk -F'|' '
    /^\| `/ { name = $2; gsub(/^ *`|` *$/, "", name); split($3, m, " "); mean[name] = m[1] }
    END {
        if (mean["docker run -d"] > 0)
            printf "mcp deploy / docker run -d: %.2fx (goal: at most 1.3x: %s)\n", mean["mcp deploy"] / mean["docker run -d"], (mean["mcp deploy"] <= 1.3 * mean["docker run -d"]) ? "met" : "not met"
        if (mean["docker service create"] > 0)
            printf "mcp deploy / docker service create: %.2fx (goal: at most 0.3x: %s)\n", mean["mcp deploy"] / mean["docker service create"], (mean["mcp deploy"] <= 0.3 * mean["docker service create"]) ? "met" : "not met"
    }' "$dir/result.md"
echo "$me: took $SECONDS s"
