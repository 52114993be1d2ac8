#!/usr/bin/env bash
# Deploy to serving: from `mcp deploy` of a one-container service (image present,
# one route, not public) until the service answers on its published port, against
# `docker run -d` until the container's published port answers, and against Docker
# Swarm's `docker service create --publish mode=host` until its published port
# answers, on the same engine, side by side in one hyperfine run.
#
# Starts its own one-node fleet the way a user does (`mcp-master init`, the join
# token in agent.toml, a user from `mcp-master hash-password`, `mcp login`; every
# call is mutual TLS with a bearer token; runtime docker), on loopback only:
#   127.0.0.31:9443    the master        127.0.0.31:9444  the agent (node servebench)
#   127.0.0.31:PORT    the mcp service's published port (the agent picks it; read
#                      from `mcp --json deploy`, which lists it)
#   127.0.0.31:18031   `docker run -d -p`   0.0.0.0:18032  the Swarm service (mode=host)
# Each measured command starts the thing and then polls it (every 10 ms, each try
# `curl -s --max-time 1`, for at most 30 s) until it answers 200; each run is
# preceded by removing what the previous one made and waiting until its port is
# closed. Swarm: if `docker info` says the swarm is inactive, the script runs
# `docker swarm init` (loopback only) and `docker swarm leave --force` at exit; the
# service uses the local image (`--no-resolve-image`: nothing is pulled) and
# publishes with `mode=host` (docker-proxy on the node, as `docker run -p`; the
# ingress routing mesh is the public benchmark's business). Prints hyperfine's
# markdown table, the ratios (goal: `mcp deploy` at most 1.0x `docker run -d`)
# and, with python3, each row's median.
#
# Usage: bench/deploy-to-serving.sh [--smoke] [--bin-dir DIR] [--keep] [RUNS]
#   RUNS          timed runs of each command (default 30, after 3 warm-up runs)
#   --smoke       2 runs of each, no warm-up (CI); a swarm that cannot be initialised
#                 (or an engine that is a swarm worker) is then a skipped row, said
#                 why, instead of an error
#   --bin-dir DIR mcp, mcp-master and mcp-agent from DIR (e.g. the debug build), not
#                 built; default: `cargo build --release --bins` and
#                 $CARGO_TARGET_DIR/release (else target/release)
#   --keep        keep the temporary directory (configs, logs) and print its path
#   RUST_LOG      the fleet's log level (default warn); logs in the temp dir
# Exit status: 0 measured; 1 a step or a command failed (said on stderr); 2 bad
# usage or a missing tool or binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib/serving.sh
. "$root/bench/lib/serving.sh"

me=deploy-to-serving
usage() { sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

serving_args 2 30 "$@"
cd "$root"

serving_tools docker hyperfine curl flock awk sed timeout cc
serving_binaries "$root" mcp mcp-master mcp-agent

IP=127.0.0.31
DOCKER_PORT=18031 SWARM_PORT=18032
SERVICE=bench-serve NODE=servebench
IMAGE=mcp-test/hello:1

# One run of a deploy benchmark at a time on this machine (fixed addresses and
# names, one swarm; two runs would measure each other).
serving_lock
serving_free $IP:9443 $IP:9444 $IP:$DOCKER_PORT 127.0.0.1:$SWARM_PORT

# --- the temporary directory, and the cleanup on any exit ------------------------
serving_setup mcp-serving-bench

serving_helpers
# The measured mcp command: `mcp --json deploy` (which lists the deployed
# service), the route's published address (the agent picks the port) read from
# it into $dir/mcp-addr, then until-200 on it; in the shell hyperfine runs every
# command with, like the docker rows (no extra bash start).
mcp_deployed="a=\$($mcp --json deploy $dir/serve.toml | sed -n 's/^ *\"address\": \"\([^\"]*\)\".*/\\1/p' | head -1) && [ -n \"\$a\" ] && echo \"\$a\" >$dir/mcp-addr && $dir/until-200 http://\$a/"
# And before each: `mcp remove`, then until-closed on the last address.
cat >"$dir/mcp-removed" <<SH
#!/usr/bin/env bash
$mcp -q remove "\$1" >/dev/null 2>&1
[ -s "$dir/mcp-addr" ] || exit 0
addr="\$(cat "$dir/mcp-addr")"
exec "$dir/until-closed" "\${addr%:*}" "\${addr##*:}"
SH
chmod +x "$dir/mcp-removed"

# --- the fleet -------------------------------------------------------------------
join_token="$("$bin_dir/mcp-master" init --data-dir "$dir/master" 2>"$dir/init.log")" || { cat "$dir/init.log" >&2; die "mcp-master init failed"; }
[ -n "$join_token" ] || die "mcp-master init printed no join token"
hash="$(echo bench-password | "$bin_dir/mcp-master" hash-password)"
cat >"$dir/master.toml" <<CONF
node = "$NODE"
listen = "$IP:9443"
data_dir = "$dir/master"
domain = "metacircular.net"
heartbeat_interval = "5s"
[users.bench]
password_hash = "$hash"
role = "admin"
CONF
cat >"$dir/agent.toml" <<CONF
name = "$NODE"
master = "$IP:9443"
listen = "$IP:9444"
data_dir = "$dir/agent"
srv_root = "$dir/srv"
runtime = "docker"
join_token = "$join_token"
CONF
chmod 600 "$dir/agent.toml"
cat >"$dir/mcp.toml" <<CONF
master = "$IP:9443"
ca_cert = "$dir/master/ca.pem"
token_file = "$dir/token"
CONF
cat >"$dir/serve.toml" <<CONF
name = "$SERVICE"

[[components]]
name = "web"
image = "$IMAGE"

[[components.routes]]
name = "http"
port = 8080
backend_tls = false
CONF

log="${RUST_LOG:-warn}"
serving_start master mcp-master "$dir/master.toml" "$IP:9443"
serving_start agent mcp-agent "$dir/agent.toml" "$IP:9444"
serving_login "$mcp" 1

# A first deploy, checked: the published port answers with the service's page.
sh -c "$mcp_deployed" || die "mcp deploy, or its port, failed; logs in $dir with --keep"
page="$(curl -s --max-time 2 "http://$(cat "$dir/mcp-addr")/")"
[[ "$page" == "hello from $SERVICE on $NODE"* ]] || die "the service answered '$page'"
"$dir/mcp-removed" "$SERVICE" || die "mcp remove, or its port closing, failed"

# --- Swarm -----------------------------------------------------------------------
serving_swarm_up
swarm_cmd="docker service create --detach --no-resolve-image --name bench-swarm --stop-grace-period 0s --publish published=$SWARM_PORT,target=8080,mode=host $IMAGE >/dev/null && $dir/until-200 http://127.0.0.1:$SWARM_PORT/"
if [ -z "$swarm_skip" ]; then
    # Checked once before it is measured.
    bash -c "$swarm_cmd" 2>"$dir/swarm.log" || { cat "$dir/swarm.log" >&2; die "docker service create of $IMAGE did not answer on 127.0.0.1:$SWARM_PORT (log above)"; }
    docker service rm bench-swarm >/dev/null 2>&1 || true
    "$dir/until-closed" 127.0.0.1 "$SWARM_PORT" bench-swarm || die "the Swarm probe service did not go"
elif [ "$smoke" = 1 ]; then
    echo "$me: docker service create: skipped ($swarm_skip)"
else
    die "Swarm: $swarm_skip"
fi

# --- measure -------------------------------------------------------------------------
args=(
    --prepare "$dir/mcp-removed $SERVICE"
    -n "mcp deploy" "$mcp_deployed"
    --prepare "docker rm -f bench-docker >/dev/null 2>&1; $dir/until-closed $IP $DOCKER_PORT"
    -n "docker run -d" "docker run -d --name bench-docker -p $IP:$DOCKER_PORT:8080 -e MCP_SERVICE=bench $IMAGE >/dev/null && $dir/until-200 http://$IP:$DOCKER_PORT/"
)
if [ -z "$swarm_skip" ]; then
    args+=(
        --prepare "docker service rm bench-swarm >/dev/null 2>&1; $dir/until-closed 127.0.0.1 $SWARM_PORT bench-swarm"
        -n "docker service create" "$swarm_cmd"
    )
fi
echo "$me: $runs runs each after $warmup warm-up; fleet: $bin_dir; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
serving_hyperfine "${args[@]}" \
    || die "hyperfine failed (a command did not finish; logs in $dir with --keep)"
echo
cat "$dir/result.md"
echo
serving_ratios "$dir/result.md" 1.0 ""
# Medians beside the means (a loaded machine's outliers move a mean more).
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json, sys
print("medians: " + ", ".join("%s %.1f ms" % (r["command"], r["median"] * 1000) for r in json.load(open(sys.argv[1]))["results"]))' "$dir/result.json"
fi
echo "$me: load average after: $(cut -d' ' -f1-3 /proc/loadavg); took $SECONDS s"
