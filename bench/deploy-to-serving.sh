#!/usr/bin/env bash
# `mcp deploy` of a one-container service whose image is present, against
# `docker run -d` of the same image with a published port, side by side in one
# hyperfine run. Starts its own single-node fleet (release binaries) on
# 127.0.0.31 the way a user does (`mcp-master init`, the join token in agent.toml,
# a user from `mcp-master hash-password`, `mcp login`: every call is mutual TLS
# with a bearer token) and stops it afterwards.
# Usage: bench/deploy-vs-docker-run.sh [RUNS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-30}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bins -q
tests/fixtures/hello-http/build.sh >/dev/null
bin="$(cd "$target/release" && pwd)"
dir="$(mktemp -d /tmp/mcp-bench.XXXXXX)"
cleanup() {
    [ -f "$dir/agent.pid" ] && kill "$(cat "$dir/agent.pid")" 2>/dev/null || true
    [ -f "$dir/master.pid" ] && kill "$(cat "$dir/master.pid")" 2>/dev/null || true
    docker rm -f mcp.bench-hello.web.bench bench-docker >/dev/null 2>&1 || true
    sleep 0.3
    rm -rf "$dir"
}
trap cleanup EXIT
join_token="$("$bin/mcp-master" init --data-dir "$dir/master" 2>/dev/null)"
[ -n "$join_token" ] || { echo "deploy-vs-docker-run: mcp-master init printed no join token" >&2; exit 1; }
hash="$(echo bench-password | "$bin/mcp-master" hash-password)"
cat >"$dir/master.toml" <<CONF
node = "bench"
listen = "127.0.0.31:9443"
data_dir = "$dir/master"
domain = "metacircular.net"
heartbeat_interval = "5s"
[users.bench]
password_hash = "$hash"
role = "admin"
CONF
cat >"$dir/agent.toml" <<CONF
name = "bench"
master = "127.0.0.31:9443"
listen = "127.0.0.31:9444"
data_dir = "$dir/agent"
srv_root = "$dir/srv"
runtime = "docker"
join_token = "$join_token"
CONF
cat >"$dir/mcp.toml" <<CONF
master = "127.0.0.31:9443"
ca_cert = "$dir/master/ca.pem"
token_file = "$dir/token"
CONF
cat >"$dir/bench-hello.toml" <<CONF
name = "bench-hello"
[[components]]
name = "web"
image = "mcp-test/hello:1"
[[components.routes]]
name = "http"
port = 8080
backend_tls = false
CONF
RUST_LOG=warn "$bin/mcp-master" --config "$dir/master.toml" 2>"$dir/master.log" & echo $! >"$dir/master.pid"
sleep 0.3
RUST_LOG=warn "$bin/mcp-agent" --config "$dir/agent.toml" 2>"$dir/agent.log" & echo $! >"$dir/agent.pid"
mcp="$bin/mcp --config $dir/mcp.toml"
for _ in $(seq 50); do echo bench-password | $mcp -q login --user bench --password-stdin 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do $mcp node list --json 2>/dev/null | grep -q '"healthy"' && break; sleep 0.1; done
$mcp node list --json | grep -q '"healthy"' || { echo "deploy-vs-docker-run: the node did not register; logs in $dir" >&2; cat "$dir"/*.log >&2; exit 1; }
hyperfine --warmup 3 --runs "$runs" --export-markdown "$dir/result.md" \
    --prepare "$mcp -q remove bench-hello >/dev/null 2>&1 || true" \
    -n "mcp deploy" "$mcp -q deploy $dir/bench-hello.toml" \
    --prepare "docker rm -f bench-docker >/dev/null 2>&1 || true" \
    -n "docker run -d" "docker run -d --name bench-docker -p 127.0.0.31:0:8080 -e MCP_SERVICE=bench mcp-test/hello:1"
cat "$dir/result.md"
