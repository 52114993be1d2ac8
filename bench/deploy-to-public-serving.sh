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
# shellcheck source=bench/lib/serving.sh
. "$root/bench/lib/serving.sh"

me=deploy-to-public-serving
usage() { sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

serving_args 1 20 "$@"
cd "$root"

serving_tools docker hyperfine curl flock awk timeout cc
serving_binaries "$root" mcp mcp-master mcp-agent mc-proxy

IP=127.0.0.185 EDGE_IP=127.0.0.186
DOCKER_PORT=18185 SWARM_PORT=18186
SERVICE=bench-public HOST=bench-public.metacircular.net
NODE=pubbench EDGE=pubbench-edge
IMAGE=mcp-test/hello:1

# One run of a deploy benchmark at a time on this machine (fixed addresses and
# names, one swarm; two runs would measure each other).
serving_lock
serving_free $IP:9443 $IP:9444 $EDGE_IP:9444 $EDGE_IP:8443 $IP:$DOCKER_PORT 127.0.0.1:$SWARM_PORT

# --- the temporary directory, and the cleanup on any exit ------------------------
serving_setup mcp-public-bench

# --- the pollers the measured commands end with ---------------------------------
serving_helpers

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
# pids is kept in reverse start order: agents stop first, mc-proxy last.
serving_start mc-proxy mc-proxy "$dir/$EDGE/proxy.toml" "$EDGE_IP:8443"
serving_start master mcp-master "$dir/master.toml" "$IP:9443"
serving_start agent mcp-agent "$dir/$NODE/agent.toml" "$IP:9444"
serving_start edge-agent mcp-agent "$dir/$EDGE/agent.toml" "$EDGE_IP:9444"
ca="$dir/master/public-ca.pem"
[ -f "$ca" ] || die "no public CA at $ca"
serving_login "$mcp" 2

public_url=(--cacert "$ca" --resolve "$HOST:8443:$EDGE_IP" "https://$HOST:8443/")
# A first deploy, checked: the hostname answers with the service's page.
$mcp -q deploy "$dir/public.toml" || die "mcp deploy failed; logs in $dir with --keep"
"$dir/until-200" "${public_url[@]}" || die "the public route does not answer; logs in $dir with --keep"
page="$(curl -s --max-time 2 "${public_url[@]}")"
[[ "$page" == "hello from $SERVICE on $NODE"* ]] || die "the public route answered '$page'"
$mcp -q remove "$SERVICE" || die "mcp remove failed"

# --- Swarm -----------------------------------------------------------------------
serving_swarm_up
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
serving_hyperfine "${args[@]}" \
    || die "hyperfine failed (a command did not finish; logs in $dir with --keep)"
echo
cat "$dir/result.md"
echo
serving_ratios "$dir/result.md" 1.3 0.3
echo "$me: took $SECONDS s"
