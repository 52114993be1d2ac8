#!/usr/bin/env bash
# mc-proxy against nginx and haproxy from Debian, side by side (issue 8).
#
# Starts, on loopback only:
#   127.0.0.191:8443          mc-proxy (one listener; routes l7.bench.test as l7, l4.bench.test as l4)
#   127.0.0.192:8443 / :8444  nginx: `http` with `ssl` (l7) / `stream` with `ssl_preread` (l4)
#   127.0.0.193:8443 / :8444  haproxy: `mode http` with `ssl crt` (l7) / `mode tcp` with `req.ssl_sni` (l4)
#   127.0.0.194:8080 / :8443  the backend, one nginx: a small body over plain HTTP (the
#                             l7 routes' backend) and over TLS with its own certificate
#                             (the l4 routes' backend, and a large file at /big)
# with the same routes, certificates (ECDSA P-256, made here by openssl), backend and
# limits (10,000 connections, or fewer if the open-files limit is lower; 10 s
# handshake; 10 min idle), each proxy with one worker
# and one thread pinned to CPU 0 (taskset -c 0), the backend and the load generators
# (wrk, h2load, curl, a small Python TLS client for latency; one thread each) on CPU 1. Every proxy is checked before it is
# measured (the body and the forwarded headers through l7, the backend's certificate
# through l4). Prints one markdown table (a row per measurement; mc-proxy, nginx,
# haproxy, direct; mc-proxy over the better of nginx and haproxy) and the commands.
#
# Hostnames: nothing is added to /etc/hosts. Each tool connects to an address while
# sending the route's name as SNI and Host: curl --resolve NAME:PORT:IP, h2load
# --connect-to=IP:PORT, openssl s_client -connect IP:PORT -servername NAME, the
# Python client connects to the IP with server_hostname=NAME, and wrk runs a Lua
# script replacing wrk.resolve (wrk takes SNI and Host from the URL and resolves its
# host itself; the script makes it connect to $WRK_CONNECT instead).
#
# Usage: bench/proxy-vs-nginx-haproxy.sh [--smoke] [--duration SECS] [--mc-proxy PATH]
#            [--size MIB] [--connections N] [--skip-l7] [--keep]
#   --smoke        each row for about 1 s with small transfers (CI: well under a minute)
#   --duration     seconds per load run (default 10; --smoke: 1)
#   --mc-proxy     the binary, not built; default: `cargo build --release -p
#                  mc-proxy` and $CARGO_TARGET_DIR/release/mc-proxy (else
#                  target/release/mc-proxy)
#   --size         MiB for the large L4 transfer (default 1024; --smoke: 8)
#   --connections  concurrent connections for the keep-alive L7 rows (default 64)
#   --skip-l7      leave the L7 rows out (marked skipped)
#   --keep         keep the temporary directory (configs, logs) and print its path
# Exit status: 0 every row measured; 1 a row failed or a proxy answered wrongly (said
# on stderr, and FAILED in its cell); 2 bad usage or a missing tool or binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

me=proxy-vs-nginx-haproxy
usage() { sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "$me: $*" >&2; exit 1; }
missing() { echo "$me: $*" >&2; exit 2; }

smoke=0 duration="" size="" conns=64 skip_l7=0 keep=0 mc_proxy="" build=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --duration) duration="${2:?--duration SECS}"; shift ;;
        --mc-proxy) mc_proxy="${2:?--mc-proxy PATH}"; shift ;;
        --size) size="${2:?--size MIB}"; shift ;;
        --connections) conns="${2:?--connections N}"; shift ;;
        --skip-l7) skip_l7=1 ;;
        --keep) keep=1 ;;
        -h | --help) usage 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
# A --mc-proxy PATH is taken from where we were started; the default from the repository.
if [ -n "$mc_proxy" ]; then
    [[ "$mc_proxy" = /* ]] || mc_proxy="$PWD/$mc_proxy"
else
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" = /* ]] || target="$root/$target"
    mc_proxy="$target/release/mc-proxy"
    build=1
fi
cd "$root"
if [ "$smoke" = 1 ]; then
    duration="${duration:-1}" size="${size:-8}" samples=40 warmup=0
else
    duration="${duration:-10}" size="${size:-1024}" samples=1000 warmup=1
fi
for v in duration size conns; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$me: --$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[ "$duration" -le 600 ] || { echo "$me: --duration at most 600" >&2; exit 2; }

# --- tools -------------------------------------------------------------------
for t in nginx haproxy wrk h2load curl openssl taskset timeout flock awk sort getconf; do
    command -v "$t" >/dev/null 2>&1 || missing "'$t' not found (apt-get install nginx libnginx-mod-stream haproxy wrk nghttp2-client curl openssl python3)"
done
python="$(command -v python3)" || missing "'python3' not found (apt-get install python3)"
"$python" -c 'import ssl' 2>/dev/null || missing "$python has no ssl module"
stream_so=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$stream_so" ] || missing "$stream_so not found (apt-get install libnginx-mod-stream)"
if [ -n "$build" ]; then
    command -v cargo >/dev/null 2>&1 || missing "'cargo' not found (or give --mc-proxy PATH)"
    cargo build --release -q -p mc-proxy || die "cargo build --release -p mc-proxy failed"
fi
[ -x "$mc_proxy" ] || missing "mc-proxy binary '$mc_proxy' not found or not executable (cargo build --release -p mc-proxy, or --mc-proxy PATH)"
PROXY_CPU=0 LOAD_CPU=1
if [ "$(nproc)" -lt 2 ]; then
    [ "$smoke" = 1 ] || die "needs 2 CPUs (proxies on CPU 0, backend and load on CPU 1); $(nproc) available"
    echo "$me: warning: one CPU available; --smoke pins everything to CPU 0" >&2
    LOAD_CPU=0
fi
CLK_TCK="$(getconf CLK_TCK)"

IP_MC=127.0.0.191 IP_NGINX=127.0.0.192 IP_HAPROXY=127.0.0.193 IP_BACKEND=127.0.0.194
L7_PORT=8443 L4_PORT_PEER=8444 BACKEND_PLAIN=8080 BACKEND_TLS=8443
L7_NAME=l7.bench.test L4_NAME=l4.bench.test
BODY="mcp-bench-backend-ok"
# The connection cap, the same for all three: 10,000 (mc-proxy's default) when the
# descriptor limit allows it (two sockets per connection, and some to spare: haproxy
# refuses to start without them), else what fits, rounded down to 500.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
[ "$nofile" = unlimited ] && nofile=1048576
MAX_CONNS=10000
if [ $((MAX_CONNS * 2 + 200)) -gt "$nofile" ]; then
    MAX_CONNS=$(((nofile - 200) / 2 / 500 * 500))
    [ "$MAX_CONNS" -ge 500 ] || die "the open-files limit ($nofile) is too low"
    echo "$me: note: open-files limit $nofile: connection cap $MAX_CONNS for all three proxies" >&2
fi

# One run at a time on this machine (the addresses are fixed, and two runs would
# measure each other): wait for another run's lock on this script, bounded. (Our
# children inherit it, so it is held until the last of them is gone.)
exec 9<"$root/bench/proxy-vs-nginx-haproxy.sh"
if ! flock -n 9; then
    echo "$me: another run of this script is under way; waiting (at most 10 min)" >&2
    flock -w 600 9 || die "another run of this script still runs after 10 min"
fi
SECONDS=0

# Nothing may already listen where we will (else we would measure someone else).
for a in $IP_MC:$L7_PORT $IP_NGINX:$L7_PORT $IP_NGINX:$L4_PORT_PEER $IP_HAPROXY:$L7_PORT \
    $IP_HAPROXY:$L4_PORT_PEER $IP_BACKEND:$BACKEND_PLAIN $IP_BACKEND:$BACKEND_TLS; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
        die "something already listens on $a (another run of this script?)"
    fi
done

# --- processes and cleanup -----------------------------------------------------
dir="$(mktemp -d /tmp/mcp-proxy-bench.XXXXXX)"
pids=()     # every long-running process this script started, in start order
load_pid="" # the load generator running now, if any
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    [ -n "$load_pid" ] && kill -TERM "$load_pid" 2>/dev/null
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}" $load_pid; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$keep" = 1 ]; then echo "$me: kept $dir" >&2; else rm -rf "$dir"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# A process's children (pids), from /proc (no procps needed).
children() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == p) print pid }'
}
# user+system CPU ticks of the given processes, summed.
cpu_ticks() {
    local t=0 p v
    for p in "$@"; do
        v="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null)" && [ -n "$v" ] || return 1
        t=$((t + v))
    done
    echo "$t"
}
# A /proc/PID/status field in kB, summed over the given processes.
status_kb() {
    local field=$1 t=0 p v
    shift
    for p in "$@"; do
        v="$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null)" && [ -n "$v" ] || return 1
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# start NAME CPU CMD...: in the background, pinned, its output in $dir/NAME.log.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    eval "pid_$name=$!"
}
wait_listening() { # NAME PID ADDR...
    local name=$1 pid=$2 a
    shift 2
    for a in "$@"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || { cat "$dir/$name.log" >&2; die "$name exited at start (log above)"; }
            (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null && continue 2
            sleep 0.05
        done
        cat "$dir/$name.log" >&2
        die "$name does not listen on $a after 5 s (log above)"
    done
}
# nginx's worker processes (worker_processes 1: exactly one).
nginx_workers() {
    local w
    for _ in $(seq 100); do
        w="$(children "$1")"
        [ -n "$w" ] && { echo "$w"; return; }
        sleep 0.05
    done
    die "nginx $1 started no worker"
}

# bounded SECS CMD...: run a load generator (pinned by the caller), killable by our traps.
bounded() {
    local secs=$1
    shift
    timeout -k 5 "$secs" "$@" &
    load_pid=$!
    local rc=0
    wait "$load_pid" || rc=$?
    load_pid=""
    return "$rc"
}
commands=()
# note_cmd ARG...: remember a command, quoted for a shell where needed.
note_cmd() {
    local a line=""
    for a in "$@"; do
        if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then line+=" $a"; else line+=" '${a//\'/\'\\\'\'}'"; fi
    done
    commands+=("${line# }")
}

# --- certificates ----------------------------------------------------------------
cert_dir="$dir/certs"
mkdir -p "$cert_dir"
mkca() { # NAME CN
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$cert_dir/$1-ca.key" -out "$cert_dir/$1-ca.pem" >/dev/null 2>&1 || die "openssl: making CA $1 failed"
}
mkleaf() { # NAME CA DNSNAME
    printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$3" >"$cert_dir/$1.ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$3" \
        -keyout "$cert_dir/$1.key" -out "$cert_dir/$1.csr" >/dev/null 2>&1 || die "openssl: key for $1 failed"
    openssl x509 -req -in "$cert_dir/$1.csr" -CA "$cert_dir/$2-ca.pem" -CAkey "$cert_dir/$2-ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$cert_dir/$1.ext" \
        -out "$cert_dir/$1.pem" >/dev/null 2>&1 || die "openssl: signing $1 failed"
    cat "$cert_dir/$1.pem" "$cert_dir/$1.key" >"$cert_dir/$1.haproxy.pem"
}
mkca public "bench public CA"     # what clients of the proxies trust (L7)
mkca internal "bench internal CA" # what clients of the backend trust (L4, direct)
mkleaf l7 public "$L7_NAME"       # the proxies' L7 certificate, the same for all three
mkleaf backend internal "$L4_NAME"
fingerprint() { openssl x509 -noout -fingerprint -sha256 -in "$1" | sed 's/.*=//'; }
fp_l7="$(fingerprint "$cert_dir/l7.pem")"
fp_backend="$(fingerprint "$cert_dir/backend.pem")"

# The large file: sparse, so it costs no disk; read from the page cache.
truncate -s "${size}M" "$dir/big.bin"
big_bytes=$((size * 1024 * 1024))

# --- the backend (nginx, CPU 1) --------------------------------------------------------
user_line="user $(id -un) $(id -gn);" # only meaningful as root; ignored (a warning) otherwise
nginx_common() { # PREFIX
    cat <<CONF
$user_line
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $((2 * MAX_CONNS)); }
CONF
}
nginx_http_common() { # PREFIX
    cat <<CONF
    access_log off;
    default_type text/plain;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_timeout 10m;
    keepalive_requests 100000000;
CONF
}
b="$dir/backend"
mkdir -p "$b/tmp"
{
    nginx_common "$b"
    cat <<CONF
http {
$(nginx_http_common "$b")
    sendfile on;
    server {
        listen $IP_BACKEND:$BACKEND_PLAIN;
        location / {
            add_header X-Bench-Forwarded "\$http_x_forwarded_for|\$http_x_forwarded_proto|\$http_x_forwarded_host";
            return 200 "$BODY\n";
        }
    }
    server {
        listen $IP_BACKEND:$BACKEND_TLS ssl http2;
        ssl_certificate $cert_dir/backend.pem;
        ssl_certificate_key $cert_dir/backend.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { return 200 "$BODY\n"; }
        location = /big { alias $dir/big.bin; }
    }
}
CONF
} >"$b/nginx.conf"
start backend "$LOAD_CPU" nginx -p "$b" -c "$b/nginx.conf" -e "$b/error.log" -g 'daemon off;'
wait_listening backend "$pid_backend" "$IP_BACKEND:$BACKEND_PLAIN" "$IP_BACKEND:$BACKEND_TLS"

# --- mc-proxy (CPU 0) ------------------------------------------------------------
m="$dir/mc-proxy"
mkdir -p "$m"
cat >"$m/proxy.toml" <<CONF
listen = "$IP_MC:$L7_PORT"
admin_socket = "$m/admin.sock"
data_dir = "$m/data"
max_connections = $MAX_CONNS
handshake_timeout = "10s"
idle_timeout = "10m"
CONF
RUST_LOG=warn start mc "$PROXY_CPU" "$mc_proxy" --config "$m/proxy.toml"
wait_listening mc "$pid_mc" "$IP_MC:$L7_PORT"
for _ in $(seq 100); do [ -S "$m/admin.sock" ] && break; sleep 0.05; done
route_l7=(route add --socket "$m/admin.sock" --hostname "$L7_NAME" --backend "$IP_BACKEND:$BACKEND_PLAIN"
    --mode l7 --cert "$cert_dir/l7.pem" --key "$cert_dir/l7.key" --backend-plain)
route_l4=(route add --socket "$m/admin.sock" --hostname "$L4_NAME" --backend "$IP_BACKEND:$BACKEND_TLS" --mode l4)
"$mc_proxy" "${route_l7[@]}" >"$m/route.log" 2>&1 || { cat "$m/route.log" >&2; die "mc-proxy route add $L7_NAME (l7) failed (above)"; }
"$mc_proxy" "${route_l4[@]}" >>"$m/route.log" 2>&1 || { cat "$m/route.log" >&2; die "mc-proxy route add $L4_NAME (l4) failed (above)"; }
note_cmd mc-proxy "${route_l7[@]}"
note_cmd mc-proxy "${route_l4[@]}"

# --- nginx (CPU 0) -----------------------------------------------------------------
n="$dir/nginx"
mkdir -p "$n/tmp"
{
    echo "load_module $stream_so;"
    nginx_common "$n"
    cat <<CONF
http {
$(nginx_http_common "$n")
    client_header_timeout 10s;
    send_timeout 10m;
    upstream l7_backend {
        server $IP_BACKEND:$BACKEND_PLAIN;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 10m;
    }
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen $IP_NGINX:$L7_PORT ssl http2 default_server;
        ssl_reject_handshake on;
    }
    server {
        listen $IP_NGINX:$L7_PORT ssl http2;
        server_name $L7_NAME;
        ssl_certificate $cert_dir/l7.pem;
        ssl_certificate_key $cert_dir/l7.key;
        location / {
            proxy_pass http://l7_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_read_timeout 10m;
            proxy_send_timeout 10m;
        }
    }
}
stream {
    map \$ssl_preread_server_name \$l4_backend {
        $L4_NAME $IP_BACKEND:$BACKEND_TLS;
    }
    server {
        listen $IP_NGINX:$L4_PORT_PEER;
        ssl_preread on;
        preread_timeout 10s;
        proxy_pass \$l4_backend;
        proxy_timeout 10m;
    }
}
CONF
} >"$n/nginx.conf"
start nginx "$PROXY_CPU" nginx -p "$n" -c "$n/nginx.conf" -e "$n/error.log" -g 'daemon off;'
wait_listening nginx "$pid_nginx" "$IP_NGINX:$L7_PORT" "$IP_NGINX:$L4_PORT_PEER"
nginx_worker_pids="$(nginx_workers "$pid_nginx")"
# shellcheck disable=SC2206
pids+=($nginx_worker_pids) # so cleanup reaches them even if the master died

# --- haproxy (CPU 0) --------------------------------------------------------------
h="$dir/haproxy"
mkdir -p "$h"
cat >"$h/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn $MAX_CONNS
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    maxconn $MAX_CONNS
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout tunnel 10m
    timeout http-request 10s
    timeout http-keep-alive 10m
frontend l7
    mode http
    bind $IP_HAPROXY:$L7_PORT ssl crt $cert_dir/l7.haproxy.pem alpn h2,http/1.1 strict-sni
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    use_backend l7_backend if { ssl_fc_sni -i $L7_NAME }
backend l7_backend
    mode http
    server backend $IP_BACKEND:$BACKEND_PLAIN
frontend l4
    mode tcp
    bind $IP_HAPROXY:$L4_PORT_PEER
    tcp-request inspect-delay 10s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend l4_backend if { req.ssl_sni -i $L4_NAME }
backend l4_backend
    mode tcp
    server backend $IP_BACKEND:$BACKEND_TLS
CONF
haproxy -c -q -f "$h/haproxy.cfg" >"$h/check.log" 2>&1 || { cat "$h/check.log" >&2; die "haproxy -c rejects the generated config (above)"; }
start haproxy "$PROXY_CPU" haproxy -db -f "$h/haproxy.cfg"
wait_listening haproxy "$pid_haproxy" "$IP_HAPROXY:$L7_PORT" "$IP_HAPROXY:$L4_PORT_PEER"

# Which processes are each proxy, for CPU and RSS.
cpu_pids_mc="$pid_mc" cpu_pids_nginx="$pid_nginx $nginx_worker_pids" cpu_pids_haproxy="$pid_haproxy"
rss_pids_mc="$pid_mc" rss_pids_nginx="$nginx_worker_pids" rss_pids_haproxy="$pid_haproxy"

targets=(mc nginx haproxy direct)
declare -A l7_ip=([mc]=$IP_MC [nginx]=$IP_NGINX [haproxy]=$IP_HAPROXY)
declare -A l4_addr=([mc]=$IP_MC:$L7_PORT [nginx]=$IP_NGINX:$L4_PORT_PEER [haproxy]=$IP_HAPROXY:$L4_PORT_PEER
    [direct]=$IP_BACKEND:$BACKEND_TLS)
declare -A label=([mc]=mc-proxy [nginx]=nginx [haproxy]=haproxy [direct]=direct)

# --- results -----------------------------------------------------------------------
declare -A cell    # cell[row,target] = value (a number), "FAILED", "skipped" or "—"
declare -A added   # added[row,target] = proxy minus direct, for the latency rows
failures=()
fail_rows() { # TARGET REASON ROW...: those cells FAILED, said once
    local t=$1 reason=$2 r
    shift 2
    for r in "$@"; do cell[$r,$t]=FAILED; done
    failures+=("${label[$t]}: $reason ($# row(s))")
    echo "$me: FAILED: ${label[$t]}: $reason" >&2
}
# Latency with unit (wrk: 812.00us, 1.20ms, 2.00s) to ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (match(v, /us$/)) printf "%.3f", substr(v, 1, RSTART - 1) / 1000;
        else if (match(v, /ms$/)) printf "%.3f", substr(v, 1, RSTART - 1);
        else if (match(v, /m$/)) printf "%.3f", substr(v, 1, RSTART - 1) * 60000;
        else if (match(v, /s$/)) printf "%.3f", substr(v, 1, RSTART - 1) * 1000;
        else exit 1 }'
}
# The p-th percentile (0-100) of the numbers in a file, nearest rank.
percentile() {
    sort -n "$2" | awk -v p="$1" '{ v[NR] = $1 } END {
        if (NR == 0) exit 1; i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'
}
is_num() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
per_req_us() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }
tcp_active_opens() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]+$/ { print $6 }' /proc/net/snmp; }

wrk_lua="$dir/connect.lua"
cat >"$wrk_lua" <<'LUA'
-- wrk takes SNI and Host from the URL and resolves its host itself; connect to
-- $WRK_CONNECT (IP:PORT) instead, keeping the URL's name for SNI and Host.
local target = os.getenv("WRK_CONNECT")
wrk.resolve = function(host, service)
    local ip, port = target:match("^(.+):(%d+)$")
    wrk.addrs = wrk.lookup(ip, port)
end
LUA

lat_py="$dir/latency.py"
cat >"$lat_py" <<'PY'
"""Milliseconds per HTTP/1.1 request over TLS, one line each: --new N requests each
on its own connection (connect, full handshake: no session is resumed, Connection:
close) or --open N on one connection opened before the clock starts. The certificate
is verified for --name against --ca; every response must be 200 with --body."""
import argparse, socket, ssl, sys, time

p = argparse.ArgumentParser()
p.add_argument("--name", required=True)
p.add_argument("--connect", required=True)
p.add_argument("--ca", required=True)
p.add_argument("--body", required=True)
g = p.add_mutually_exclusive_group(required=True)
g.add_argument("--new", type=int)
g.add_argument("--open", type=int)
a = p.parse_args()
ip, port = a.connect.rsplit(":", 1)
port = int(port)
ctx = ssl.create_default_context(cafile=a.ca)
want = a.body.encode()


def request(close):
    extra = b"Connection: close\r\n" if close else b""
    return b"GET / HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (a.name.encode(), port, extra)


def response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed before the response's headers")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        sys.exit("status line %r" % lines[0])
    length = [int(l.split(b":", 1)[1]) for l in lines[1:] if l.lower().startswith(b"content-length:")]
    if not length:
        sys.exit("no Content-Length")
    while len(body) < length[0]:
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed in the body")
        body += d
    if body.strip() != want or len(body) != length[0]:
        sys.exit("body %r" % body[:200])


def connect():
    raw = socket.create_connection((ip, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname=a.name)  # the handshake happens here


out = []
if a.new is not None:
    req = request(True)
    for _ in range(a.new):
        t0 = time.perf_counter_ns()
        s = connect()
        s.sendall(req)
        response(s)
        out.append(time.perf_counter_ns() - t0)
        s.close()
else:
    req = request(False)
    s = connect()
    s.sendall(req)
    response(s)
    for _ in range(a.open):
        t0 = time.perf_counter_ns()
        s.sendall(req)
        response(s)
        out.append(time.perf_counter_ns() - t0)
    s.close()
sys.stdout.write("".join("%.3f\n" % (ns / 1e6) for ns in out))
PY

# --- checks: each proxy answers correctly before it is measured --------------------
declare -A l7_ok l4_ok tls_info
# "TLSv1.3 TLS_AES_256_GCM_SHA384, ALPN h2" from openssl s_client's output.
tls_summary() {
    awk '/^New, / { sub(/,$/, "", $2); s = $2 " " $NF } /^ALPN protocol:/ { a = ", ALPN " $3 } END { print s a }'
}
check_l7() { # TARGET
    local t=$1 ip=${l7_ip[$1]} out hdr v
    for v in 1.1 2; do
        out="$dir/check-$t-$v"
        if ! timeout 15 taskset -c "$LOAD_CPU" curl -sS --max-time 10 --http"$v" --cacert "$cert_dir/public-ca.pem" \
            --resolve "$L7_NAME:$L7_PORT:$ip" -D "$out.hdr" -o "$out.body" -w '%{http_version}' \
            "https://$L7_NAME:$L7_PORT/" >"$out.ver" 2>"$out.err"; then
            echo "$me: ${label[$t]} l7 (HTTP/$v): curl: $(cat "$out.err")" >&2
            return 1
        fi
        [ "$(cat "$out.body")" = "$BODY" ] || { echo "$me: ${label[$t]} l7 (HTTP/$v): body '$(head -c 200 "$out.body")', expected '$BODY'" >&2; return 1; }
        [ "$(cat "$out.ver")" = "$v" ] || { echo "$me: ${label[$t]} l7: asked for HTTP/$v, got HTTP/$(cat "$out.ver")" >&2; return 1; }
        hdr="$(tr -d '\r' <"$out.hdr" | awk -F': ' 'tolower($1) == "x-bench-forwarded" { print $2 }')"
        # X-Forwarded-For|X-Forwarded-Proto|X-Forwarded-Host as the backend saw them.
        [[ "$hdr" =~ ^127\.[0-9.]+\|https\|$L7_NAME(:$L7_PORT)?$ ]] || { echo "$me: ${label[$t]} l7 (HTTP/$v): the backend saw X-Forwarded-For|Proto|Host = '$hdr'" >&2; return 1; }
    done
    # (With h2 the server's first frames follow the handshake: binary, so to a file.)
    timeout 15 openssl s_client -connect "$ip:$L7_PORT" -servername "$L7_NAME" -alpn h2,http/1.1 </dev/null >"$out.s_client" 2>&1 || true
    [ "$(openssl x509 -noout -fingerprint -sha256 <"$out.s_client" 2>/dev/null | sed 's/.*=//')" = "$fp_l7" ] || { echo "$me: ${label[$t]} l7: the certificate served is not the l7 one" >&2; return 1; }
    tls_info[$t,l7]="$(tls_summary <"$out.s_client")"
}
check_l4() { # TARGET
    local t=$1 a=${l4_addr[$1]} v
    timeout 15 openssl s_client -connect "$a" -servername "$L4_NAME" </dev/null >"$dir/check-$t-l4.s_client" 2>&1 || true
    [ "$(openssl x509 -noout -fingerprint -sha256 <"$dir/check-$t-l4.s_client" 2>/dev/null | sed 's/.*=//')" = "$fp_backend" ] || { echo "$me: ${label[$t]} l4: the certificate seen through $a is not the backend's" >&2; return 1; }
    tls_info[$t,l4]="$(tls_summary <"$dir/check-$t-l4.s_client")"
    v="$(timeout 15 taskset -c "$LOAD_CPU" curl -sS --http1.1 --max-time 10 --cacert "$cert_dir/internal-ca.pem" \
        --resolve "$L4_NAME:${a#*:}:${a%:*}" "https://$L4_NAME:${a#*:}/" 2>&1)" || { echo "$me: ${label[$t]} l4: curl: $v" >&2; return 1; }
    [ "$v" = "$BODY" ] || { echo "$me: ${label[$t]} l4: body '$v', expected '$BODY'" >&2; return 1; }
}
for t in "${targets[@]}"; do
    if [ "$t" != direct ] && [ "$skip_l7" = 0 ]; then
        if check_l7 "$t"; then l7_ok[$t]=1; else l7_ok[$t]=0; fi
    fi
    if check_l4 "$t"; then l4_ok[$t]=1; else l4_ok[$t]=0; fi
done

# --- rows ----------------------------------------------------------------------------
R_H1_RPS="L7 HTTP/1.1 keep-alive: requests/s"
R_H1_P50="L7 HTTP/1.1 keep-alive: p50 latency, ms"
R_H1_P99="L7 HTTP/1.1 keep-alive: p99 latency, ms"
R_H1_CPU="L7 HTTP/1.1 keep-alive: proxy CPU per request, µs"
R_H2_RPS="L7 HTTP/2: requests/s"
R_H2_P50="L7 HTTP/2: p50 latency, ms"
R_H2_P99="L7 HTTP/2: p99 latency, ms"
R_H2_CPU="L7 HTTP/2: proxy CPU per request, µs"
R_NC_RPS="L7 new TLS connections/s (one request each)"
R_NC_CPU="L7 new TLS connections: proxy CPU per connection, µs"
R_L4_MBS="L4 large transfer: MB/s"
R_L4_CPU="L4 large transfer: proxy CPU per GiB, ms"
R_L4_NP50="L4 new connection + request: p50, ms (added over direct)"
R_L4_NP99="L4 new connection + request: p99, ms (added over direct)"
R_L4_KP50="L4 request on an open connection: p50, ms (added over direct)"
R_L4_KP99="L4 request on an open connection: p99, ms (added over direct)"
R_RSS="proxy RSS after the run (VmRSS), MiB"
R_HWM="proxy peak RSS (VmHWM), MiB"
rows=("$R_H1_RPS" "$R_H1_P50" "$R_H1_P99" "$R_H1_CPU" "$R_H2_RPS" "$R_H2_P50" "$R_H2_P99" "$R_H2_CPU"
    "$R_NC_RPS" "$R_NC_CPU" "$R_L4_MBS" "$R_L4_CPU" "$R_L4_NP50" "$R_L4_NP99" "$R_L4_KP50" "$R_L4_KP99"
    "$R_RSS" "$R_HWM")
# Rows where more is better (the ratio is then mc-proxy / the larger peer; else / the smaller).
declare -A higher_better=(["$R_H1_RPS"]=1 ["$R_H2_RPS"]=1 ["$R_NC_RPS"]=1 ["$R_L4_MBS"]=1)

cpu_pids() { local v="cpu_pids_$1"; echo "${!v}"; }

# wrk through TARGET; sets REQS RPS P50 P99 TICKS or returns 1 (reason on stderr).
# ARGS: TARGET URL-IP:PORT URL EXTRA-WRK-ARGS...
run_wrk() {
    local t=$1 connect=$2 url=$3 out="$dir/wrk-$1-$RANDOM" t0 opens0
    shift 3
    local cmd=(wrk -t1 -d"${duration}s" --latency -s "$wrk_lua" "$@" "$url")
    if [ "$warmup" = 1 ]; then
        WRK_CONNECT=$connect bounded 60 taskset -c "$LOAD_CPU" wrk -t1 -d1s -s "$wrk_lua" "$@" "$url" >/dev/null 2>&1 || true
    fi
    if [ "$t" != direct ]; then t0="$(cpu_ticks $(cpu_pids "$t"))" || { echo "${label[$t]} is not running" >&2; return 1; }; fi
    opens0="$(tcp_active_opens)"
    WRK_CONNECT=$connect bounded $((duration + 60)) taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || { echo "wrk exited $?: $(tail -3 "$out")" >&2; return 1; }
    OPENS=$(($(tcp_active_opens) - opens0))
    TICKS=""
    if [ "$t" != direct ]; then TICKS="$(cpu_ticks $(cpu_pids "$t"))" || { echo "${label[$t]} died during the run" >&2; return 1; }; TICKS=$((TICKS - t0)); fi
    note_cmd "WRK_CONNECT=$connect" taskset -c "$LOAD_CPU" "${cmd[@]}"
    REQS="$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$out")"
    RPS="$(awk '$1 == "Requests/sec:" { print $2 }' "$out")"
    P50="$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")" || true
    P99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")" || true
    local non2xx errors
    non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
    errors="$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")"
    is_num "${REQS:-}" && [ "$REQS" -gt 0 ] || { echo "no requests completed: $(grep -v '^ *[0-9]*%' "$out" | tr '\n' ' ' | head -c 400)" >&2; return 1; }
    [ -z "$non2xx" ] || { echo "$non2xx responses of $REQS not 2xx/3xx" >&2; return 1; }
    # A few read errors at the end of a Connection: close run are wrk's own; more is a proxy problem.
    [ "${errors:-0}" -le $((REQS / 100)) ] || { echo "$errors socket errors for $REQS requests: $(grep 'Socket errors' "$out")" >&2; return 1; }
    is_num "$RPS" && is_num "$P50" && is_num "$P99" || { echo "unparsable wrk output: $(tr '\n' ' ' <"$out" | head -c 400)" >&2; return 1; }
}

# h2load through TARGET; sets REQS RPS P50 P99 TICKS or returns 1.
run_h2load() {
    local t=$1 ip=$2 out="$dir/h2load-$1" t0
    local cmd=(h2load -t1 -c"$conns" -m10 -D"$duration" --connect-to="$ip:$L7_PORT" --log-file="$out.log"
        "https://$L7_NAME:$L7_PORT/")
    if [ "$warmup" = 1 ]; then
        bounded 60 taskset -c "$LOAD_CPU" h2load -t1 -c"$conns" -m10 -D1 --connect-to="$ip:$L7_PORT" "https://$L7_NAME:$L7_PORT/" >/dev/null 2>&1 || true
    fi
    t0="$(cpu_ticks $(cpu_pids "$t"))" || { echo "${label[$t]} is not running" >&2; return 1; }
    bounded $((duration + 60)) taskset -c "$LOAD_CPU" "${cmd[@]}" >"$out" 2>&1 || { echo "h2load exited $?: $(tail -3 "$out")" >&2; return 1; }
    TICKS="$(cpu_ticks $(cpu_pids "$t"))" || { echo "${label[$t]} died during the run" >&2; return 1; }
    TICKS=$((TICKS - t0))
    note_cmd taskset -c "$LOAD_CPU" "${cmd[@]}"
    grep -q '^Application protocol: h2$' "$out" || { echo "not HTTP/2: $(grep -i 'protocol' "$out" | tr '\n' ' ')" >&2; return 1; }
    local line succeeded failed ok2xx
    line="$(grep '^requests:' "$out")" || { echo "unparsable h2load output: $(tr '\n' ' ' <"$out" | head -c 400)" >&2; return 1; }
    succeeded="$(awk '{ for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' <<<"$line")"
    failed="$(awk '{ s = 0; for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) s += $i; print s }' <<<"$line")"
    ok2xx="$(awk '/^status codes:/ { print $3 }' "$out")"
    RPS="$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) print $i }' "$out")"
    REQS="$succeeded"
    is_num "${REQS:-}" && [ "$REQS" -gt 0 ] || { echo "no requests succeeded: $line" >&2; return 1; }
    [ "$failed" = 0 ] || { echo "$line" >&2; return 1; }
    [ "$ok2xx" = "$REQS" ] || { echo "$(grep '^status codes' "$out") for $REQS requests" >&2; return 1; }
    awk -F'\t' '$2 != 200 { bad++ } { print $3 / 1000 > "'"$out.ms"'" } END { exit bad > 0 }' "$out.log" || { echo "non-200 statuses in the log" >&2; return 1; }
    P50="$(percentile 50 "$out.ms")" P99="$(percentile 99 "$out.ms")"
    is_num "$RPS" && is_num "$P50" && is_num "$P99" || { echo "unparsable h2load output: $(tr '\n' ' ' <"$out" | head -c 400)" >&2; return 1; }
    P50="$(printf '%.3f' "$P50")" P99="$(printf '%.3f' "$P99")"
}

# --- L7 rows -------------------------------------------------------------------------
l7_rows=("$R_H1_RPS" "$R_H1_P50" "$R_H1_P99" "$R_H1_CPU" "$R_H2_RPS" "$R_H2_P50" "$R_H2_P99" "$R_H2_CPU" "$R_NC_RPS" "$R_NC_CPU")
for r in "${l7_rows[@]}"; do cell[$r,direct]="—"; done
nc_conns=16
for t in mc nginx haproxy; do
    if [ "$skip_l7" = 1 ]; then
        for r in "${l7_rows[@]}"; do cell[$r,$t]=skipped; done
        continue
    fi
    if [ "${l7_ok[$t]}" != 1 ]; then
        fail_rows "$t" "does not answer correctly over l7 (see above)" "${l7_rows[@]}"
        continue
    fi
    ip=${l7_ip[$t]}
    echo "$me: ${label[$t]}: l7 HTTP/1.1 keep-alive" >&2
    if run_wrk "$t" "$ip:$L7_PORT" "https://$L7_NAME:$L7_PORT/" -c"$conns" 2>"$dir/err"; then
        cell[$R_H1_RPS,$t]=$RPS cell[$R_H1_P50,$t]=$P50 cell[$R_H1_P99,$t]=$P99
        cell[$R_H1_CPU,$t]="$(per_req_us "$TICKS" "$REQS")"
    else
        fail_rows "$t" "$(cat "$dir/err")" "$R_H1_RPS" "$R_H1_P50" "$R_H1_P99" "$R_H1_CPU"
    fi
    echo "$me: ${label[$t]}: l7 HTTP/2" >&2
    if run_h2load "$t" "$ip" 2>"$dir/err"; then
        cell[$R_H2_RPS,$t]=$RPS cell[$R_H2_P50,$t]=$P50 cell[$R_H2_P99,$t]=$P99
        cell[$R_H2_CPU,$t]="$(per_req_us "$TICKS" "$REQS")"
    else
        fail_rows "$t" "$(cat "$dir/err")" "$R_H2_RPS" "$R_H2_P50" "$R_H2_P99" "$R_H2_CPU"
    fi
    echo "$me: ${label[$t]}: l7 new connections" >&2
    if run_wrk "$t" "$ip:$L7_PORT" "https://$L7_NAME:$L7_PORT/" -c"$nc_conns" -H 'Connection: close' 2>"$dir/err"; then
        # Each request must have had its own connection: count the connects made.
        if [ "$OPENS" -lt $((REQS * 9 / 10)) ]; then
            fail_rows "$t" "$REQS requests over only $OPENS new connections: 'Connection: close' not honoured" "$R_NC_RPS" "$R_NC_CPU"
        else
            cell[$R_NC_RPS,$t]=$RPS cell[$R_NC_CPU,$t]="$(per_req_us "$TICKS" "$REQS")"
        fi
    else
        fail_rows "$t" "$(cat "$dir/err")" "$R_NC_RPS" "$R_NC_CPU"
    fi
done
# direct for the keep-alive HTTP/1.1 row: the backend itself over plain HTTP (what the
# proxies talk to), so it shows whether the backend could be the bottleneck.
if [ "$skip_l7" = 0 ]; then
    echo "$me: direct: backend plain HTTP/1.1 keep-alive" >&2
    if run_wrk direct "$IP_BACKEND:$BACKEND_PLAIN" "http://$L7_NAME:$BACKEND_PLAIN/" -c"$conns" 2>"$dir/err"; then
        cell[$R_H1_RPS,direct]=$RPS cell[$R_H1_P50,direct]=$P50 cell[$R_H1_P99,direct]=$P99
    else
        fail_rows direct "$(cat "$dir/err")" "$R_H1_RPS" "$R_H1_P50" "$R_H1_P99"
    fi
fi

# --- L4 rows -------------------------------------------------------------------------
l4_rows=("$R_L4_MBS" "$R_L4_CPU" "$R_L4_NP50" "$R_L4_NP99" "$R_L4_KP50" "$R_L4_KP99")
cell[$R_L4_CPU,direct]="—"
for t in "${targets[@]}"; do
    if [ "${l4_ok[$t]}" != 1 ]; then
        if [ "$t" = direct ]; then
            fail_rows "$t" "does not answer correctly over l4 (see above)" "$R_L4_MBS" "$R_L4_NP50" "$R_L4_NP99" "$R_L4_KP50" "$R_L4_KP99"
        else
            fail_rows "$t" "does not answer correctly over l4 (see above)" "${l4_rows[@]}"
        fi
        continue
    fi
    port=${l4_addr[$t]#*:} ip=${l4_addr[$t]%:*}
    big_rows=("$R_L4_MBS")
    [ "$t" = direct ] || big_rows+=("$R_L4_CPU")
    curl_base=(curl -sS --fail --http1.1 --cacert "$cert_dir/internal-ca.pem" --resolve "$L4_NAME:$port:$ip")
    echo "$me: ${label[$t]}: l4 large transfer (${size} MiB)" >&2
    t0=0
    if [ "$t" != direct ] && ! t0="$(cpu_ticks $(cpu_pids "$t"))"; then
        fail_rows "$t" "not running" "${l4_rows[@]}"
        continue
    fi
    cmd=("${curl_base[@]}" --max-time $((size / 10 + 60)) -o /dev/null -w '%{size_download} %{speed_download}\n' "https://$L4_NAME:$port/big")
    if bounded $((size / 10 + 70)) taskset -c "$LOAD_CPU" "${cmd[@]}" >"$dir/big-$t" 2>&1; then
        read -r got speed <"$dir/big-$t"
        if [ "$got" = "$big_bytes" ]; then
            cell[$R_L4_MBS,$t]="$(awk -v s="$speed" 'BEGIN { printf "%.0f", s / 1e6 }')"
            if [ "$t" != direct ]; then
                if t1="$(cpu_ticks $(cpu_pids "$t"))"; then
                    cell[$R_L4_CPU,$t]="$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v b="$big_bytes" 'BEGIN { printf "%.0f", d / hz * 1000 / (b / 1073741824) }')"
                else
                    fail_rows "$t" "died during the transfer" "$R_L4_CPU"
                fi
            fi
        else
            fail_rows "$t" "received $got bytes of $big_bytes" "${big_rows[@]}"
        fi
    else
        fail_rows "$t" "curl: $(cat "$dir/big-$t")" "${big_rows[@]}"
    fi
    note_cmd taskset -c "$LOAD_CPU" "${cmd[@]}"
    # Latency: $samples sequential requests, each on a new connection (TCP connect, a
    # full handshake, Connection: close) / all on one connection, from a small Python
    # client (one SSLContext for all: curl's per-connection set-up of about 3 ms would
    # drown what a proxy adds).
    echo "$me: ${label[$t]}: l4 latency" >&2
    for kind in new open; do
        if [ "$kind" = new ]; then rp50=$R_L4_NP50 rp99=$R_L4_NP99; else rp50=$R_L4_KP50 rp99=$R_L4_KP99; fi
        cmd=("$python" "$lat_py" --name "$L4_NAME" --connect "$ip:$port" --ca "$cert_dir/internal-ca.pem"
            --body "$BODY" --"$kind" "$samples")
        if bounded 130 taskset -c "$LOAD_CPU" "${cmd[@]}" >"$dir/lat-$t-$kind.ms" 2>"$dir/err" &&
            [ "$(wc -l <"$dir/lat-$t-$kind.ms")" = "$samples" ]; then
            note_cmd taskset -c "$LOAD_CPU" "${cmd[@]}"
            cell[$rp50,$t]="$(percentile 50 "$dir/lat-$t-$kind.ms")"
            cell[$rp99,$t]="$(percentile 99 "$dir/lat-$t-$kind.ms")"
        else
            fail_rows "$t" "latency client: $(tail -3 "$dir/err")" "$rp50" "$rp99"
        fi
    done
done
for r in "$R_L4_NP50" "$R_L4_NP99" "$R_L4_KP50" "$R_L4_KP99"; do
    for t in mc nginx haproxy; do
        if is_num "${cell[$r,direct]:-}" && is_num "${cell[$r,$t]:-}"; then
            added[$r,$t]="$(awk -v a="${cell[$r,$t]}" -v d="${cell[$r,direct]}" 'BEGIN { printf "%.3f", a - d }')"
        fi
    done
done

# --- memory --------------------------------------------------------------------------
for r in "$R_RSS" "$R_HWM"; do cell[$r,direct]="—"; done
for t in mc nginx haproxy; do
    v="rss_pids_$t"
    # shellcheck disable=SC2086
    if rss="$(status_kb VmRSS ${!v})" && hwm="$(status_kb VmHWM ${!v})"; then
        cell[$R_RSS,$t]="$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
        cell[$R_HWM,$t]="$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')"
    else
        fail_rows "$t" "not running at the end (died during the run?)" "$R_RSS" "$R_HWM"
    fi
done

# --- the table -----------------------------------------------------------------------
mc_version="(tree at git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates/mc-proxy 2>/dev/null || echo ', crates/mc-proxy modified'))"
fmt_cell() { # ROW TARGET
    local v="${cell[$1,$2]:-}" a="${added[$1,$2]:-}"
    [ -n "$v" ] || { echo "FAILED"; return; }
    if [ -n "$a" ]; then printf '%s (%+.3f)' "$v" "$a"; else echo "$v"; fi
}
ratio() { # ROW
    local r=$1 mc n hp
    if [ -n "${added[$r,mc]:-}" ]; then mc=${added[$r,mc]} n=${added[$r,nginx]:-} hp=${added[$r,haproxy]:-}
    else mc=${cell[$r,mc]:-} n=${cell[$r,nginx]:-} hp=${cell[$r,haproxy]:-}; fi
    is_num "${mc#-}" && is_num "${n#-}" && is_num "${hp#-}" || { echo "—"; return; }
    awk -v m="$mc" -v n="$n" -v h="$hp" -v hi="${higher_better[$r]:-0}" 'BEGIN {
        b = hi ? (n > h ? n : h) : (n < h ? n : h);
        if (b <= 0 || m < 0) print "—"; else printf "%.2f×\n", m / b }'
}
{
    echo
    echo "mc-proxy vs nginx vs haproxy: ${duration} s per load run, ${size} MiB L4 transfer, ${samples} latency samples, $(nproc) CPUs$([ "$smoke" = 1 ] && echo ', --smoke'); took ${SECONDS} s"
    echo
    echo "| measurement | mc-proxy | nginx | haproxy | direct | mc-proxy / best peer |"
    echo "|---|---:|---:|---:|---:|---:|"
    for r in "${rows[@]}"; do
        echo "| $r | $(fmt_cell "$r" mc) | $(fmt_cell "$r" nginx) | $(fmt_cell "$r" haproxy) | $(fmt_cell "$r" direct) | $(ratio "$r") |"
    done
    echo
    echo "direct: for the L7 HTTP/1.1 row, the backend over plain HTTP/1.1 (what the proxies forward"
    echo "to); for L4, the backend's TLS port. Latency cells: the value (the added time over direct)."
    echo "Keep-alive L7: $conns connections (HTTP/2: × 10 streams); new connections: $nc_conns connections."
    echo "CPU: utime+stime from /proc/PID/stat over the measured run (nginx: master and worker);"
    echo "RSS: mc-proxy's and haproxy's process, nginx's worker."
    echo
    echo "TLS negotiated (openssl s_client):"
    for t in "${targets[@]}"; do
        [ "$t" = direct ] || [ -z "${tls_info[$t,l7]:-}" ] || echo "- ${label[$t]} l7: ${tls_info[$t,l7]}"
        [ -z "${tls_info[$t,l4]:-}" ] || echo "- ${label[$t]} l4: ${tls_info[$t,l4]}"
    done
    echo
    echo "Versions: mc-proxy $mc_version, $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{ print "haproxy " $3 }'), $(wrk -v 2>&1 | head -1 | awk '{ print "wrk " $2 }'), $(h2load --version | head -1), $(curl --version | head -1 | awk '{ print $1 " " $2 }')"
    echo
    echo "Commands (the proxies' configs are written by bench/proxy-vs-nginx-haproxy.sh):"
    echo
    echo '```sh'
    echo "taskset -c $LOAD_CPU nginx -p BACKEND -c BACKEND/nginx.conf -g 'daemon off;'   # the backend"
    echo "taskset -c $PROXY_CPU $mc_proxy --config proxy.toml"
    echo "taskset -c $PROXY_CPU nginx -p NGINX -c NGINX/nginx.conf -g 'daemon off;'"
    echo "taskset -c $PROXY_CPU haproxy -db -f haproxy.cfg"
    printf '%s\n' "${commands[@]}" | sed "s|$dir|\$TMP|g"
    echo '```'
} | sed "s|$dir|\$TMP|g"

if [ ${#failures[@]} -gt 0 ]; then
    echo >&2
    echo "$me: FAILED:" >&2
    printf '  %s\n' "${failures[@]}" >&2
    for t in backend mc nginx haproxy; do
        [ -s "$dir/$t.log" ] && { echo "--- $t.log (last lines)" >&2; tail -5 "$dir/$t.log" >&2; }
    done
    for f in "$dir"/backend/error.log "$dir"/nginx/error.log; do
        [ -s "$f" ] && { echo "--- $f (last lines)" >&2; tail -5 "$f" >&2; }
    done
    exit 1
fi
