# Shared by bench/deploy-to-serving.sh and bench/deploy-to-public-serving.sh
# (sourced, not run): the fleet they start the way a user does, the bounded
# pollers their measured commands end with, and the Swarm they compare against.
#
# The sourcing script sets, before calling these:
#   me        its name, for messages          log      the fleet's RUST_LOG
#   SERVICE   the mcp service it deploys      NODE     the node it runs on
# and defines usage, die (exit 1) and missing (exit 2); serving_args sets
# bin_dir and the options, serving_setup dir, mcp, pids and the Swarm state.

# serving_args SMOKE_RUNS RUNS "$@": the options both scripts take
# ([--smoke] [--bin-dir DIR] [--keep] [RUNS]); sets smoke, keep, bin_dir
# (absolute), runs and warmup (3; none with --smoke, whose default is SMOKE_RUNS).
# Needs usage (exit 2 unless given a status).
serving_args() {
    local smoke_runs=$1 default_runs=$2
    shift 2
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
        runs="${runs:-$smoke_runs}" warmup=0
    else
        runs="${runs:-$default_runs}" warmup=3
    fi
    [[ "$runs" =~ ^[1-9][0-9]*$ ]] && [ "$runs" -le 1000 ] || { echo "$me: RUNS must be 1 to 1000, not '$runs'" >&2; exit 2; }
    # A --bin-dir is taken from where we were started.
    if [ -n "$bin_dir" ]; then
        [[ "$bin_dir" = /* ]] || bin_dir="$PWD/$bin_dir"
    fi
}

# serving_binaries ROOT BINARY...: without --bin-dir, `cargo build --release
# --bins` and bin_dir=$CARGO_TARGET_DIR/release (else ROOT/target/release); each
# BINARY must be there. Then the hello-http fixture (`mcp-test/hello:1`).
serving_binaries() {
    local root=$1 b target
    shift
    if [ -z "$bin_dir" ]; then
        command -v cargo >/dev/null 2>&1 || missing "'cargo' not found (or give --bin-dir DIR)"
        (cd "$root" && cargo build --release --bins -q) || die "cargo build --release --bins failed"
        target="${CARGO_TARGET_DIR:-target}"
        [[ "$target" = /* ]] || target="$root/$target"
        bin_dir="$target/release"
    fi
    for b in "$@"; do
        [ -x "$bin_dir/$b" ] || missing "$bin_dir/$b not found (cargo build --release --bins, or --bin-dir DIR)"
    done
    "$root/tests/fixtures/hello-http/build.sh" >/dev/null 2>&1 || die "tests/fixtures/hello-http/build.sh failed"
}

# serving_tools TOOL...: each must be on PATH, and the engine must answer.
serving_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || missing "'$t' not found"
    done
    docker info >/dev/null 2>&1 || missing "the Docker engine does not answer (docker info)"
}

# serving_lock: one run of these benchmarks at a time on this machine (they
# would measure each other, and share the engine's swarm): a lock on this file,
# waited for at most 10 min. Sets SECONDS to 0 once it is held.
serving_lock() {
    exec 9<"${BASH_SOURCE[0]}"
    if ! flock -n 9; then
        echo "$me: another run of a deploy benchmark is under way; waiting (at most 10 min)" >&2
        flock -w 600 9 || die "another run of a deploy benchmark still runs after 10 min"
    fi
    SECONDS=0
}

# serving_free ADDR...: nothing may already listen where we will.
serving_free() {
    local a
    for a in "$@"; do
        if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
            die "something already listens on $a"
        fi
    done
}

# serving_setup PREFIX: dir (a new /tmp/PREFIX.XXXXXX), mcp (the CLI on
# $dir/mcp.toml), the Swarm state, and on any exit the cleanup: the service
# $SERVICE through the master while it runs, the processes by pid, then whatever
# is left of the containers (node $NODE's of $SERVICE, bench-docker, the Swarm
# service bench-swarm and the swarm if ours), and the directory unless --keep.
serving_setup() {
    dir="$(mktemp -d "/tmp/$1.XXXXXX")"
    pids=()           # in reverse start order
    swarm_ours=0      # we ran `docker swarm init`
    gwbridge_ours=0   # and docker_gwbridge did not exist before
    swarm_skip=""     # why there is no Swarm row
    mcp="$bin_dir/mcp --config $dir/mcp.toml"
    trap serving_cleanup EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
}

serving_cleanup() {
    local rc=$? left
    trap - EXIT INT TERM
    if [ -n "${hyperfine_pid:-}" ]; then
        kill -TERM "$hyperfine_pid" 2>/dev/null || true
        wait "$hyperfine_pid" 2>/dev/null || true
    fi
    if [ -f "$dir/token" ]; then timeout 15 $mcp -q remove "$SERVICE" >/dev/null 2>&1 || true; fi
    serving_stop
    left="$(docker ps -aq --filter "label=mcp.node=$NODE" --filter "label=mcp.service=$SERVICE" 2>/dev/null || true)"
    [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
    docker rm -f bench-docker >/dev/null 2>&1 || true
    serving_swarm_down bench-swarm
    if [ "$keep" = 1 ]; then echo "$me: kept $dir" >&2; else rm -rf "$dir"; fi
    exit "$rc"
}

# serving_helpers: writes the two pollers into $dir.
#   until-200 [--not] CURL-ARGS... URL: polls (every 10 ms, each try `curl -s
#     --max-time 1`) until the URL answers 200 (with --not: until it no longer
#     does); bounded: 30 s, 3000 tries.
#   until-closed HOST PORT [SWARM-SERVICE]: polls until nothing accepts on
#     HOST:PORT (and no task container of the Swarm service is left); bounded: 30 s.
serving_helpers() {
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
}

# serving_start NAME PROGRAM CONFIG ADDR: $bin_dir/PROGRAM in the background,
# its log in $dir/NAME.log, waiting (at most 10 s) until it accepts on ADDR.
serving_start() {
    local name=$1 program=$2 config=$3 addr=$4 pid
    # Without the lock's descriptor: a process left behind must not hold it.
    RUST_LOG="$log" "$bin_dir/$program" --config "$config" >"$dir/$name.log" 2>&1 9<&- &
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

# serving_stop: what serving_start started, by pid: SIGTERM, at most 5 s, SIGKILL.
serving_stop() {
    local p alive
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# serving_login MCP NODES: `mcp login` as user bench (password bench-password),
# then waits (at most 10 s) until NODES nodes are healthy.
serving_login() {
    local mcp=$1 nodes=$2 healthy=0
    for _ in $(seq 50); do echo bench-password | $mcp -q login --user bench --password-stdin 2>/dev/null && break; sleep 0.1; done
    [ -f "$dir/token" ] || die "mcp login failed; logs in $dir with --keep"
    for _ in $(seq 100); do
        healthy="$($mcp node list --json 2>/dev/null | grep -o '"healthy"' | wc -l)" || true
        [ "$healthy" -ge "$nodes" ] && return 0
        sleep 0.1
    done
    cat "$dir"/*.log >&2
    die "$healthy of $nodes nodes registered (logs above)"
}

# serving_swarm_up: a swarm this engine manages. If `docker info` says it is
# inactive, `docker swarm init` on loopback only (serving_swarm_down leaves it);
# otherwise the swarm there is used as it is. Sets swarm_skip to why not, if not.
serving_swarm_up() {
    local state out
    state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)"
    if [ "$state" = inactive ]; then
        docker network inspect docker_gwbridge >/dev/null 2>&1 || gwbridge_ours=1
        if out="$(timeout 60 docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 2>&1)"; then
            swarm_ours=1
        else
            swarm_skip="docker swarm init failed: $(echo "$out" | head -1)"
            gwbridge_ours=0
        fi
    elif [ "$state" != active ]; then
        swarm_skip="the swarm is $state"
    elif [ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]; then
        swarm_skip="this engine is a swarm worker, not a manager"
    fi
}

# serving_swarm_down SERVICE: removes the Swarm service, and the swarm if
# serving_swarm_up made it (and docker_gwbridge if that did not exist before).
serving_swarm_down() {
    docker service rm "$1" >/dev/null 2>&1 || true
    if [ "$swarm_ours" = 1 ]; then
        docker swarm leave --force >/dev/null 2>&1 || echo "$me: docker swarm leave --force failed" >&2
        if [ "$gwbridge_ours" = 1 ]; then
            docker network rm docker_gwbridge >/dev/null 2>&1 || true
        fi
    fi
}

# serving_hyperfine ARGS...: hyperfine with $warmup and $runs, exporting
# $dir/result.md and $dir/result.json; in the background, waited for, so that a
# SIGTERM or SIGINT to the script is handled at once (the cleanup stops hyperfine
# first) rather than when hyperfine ends.
serving_hyperfine() {
    hyperfine --warmup "$warmup" --runs "$runs" --export-markdown "$dir/result.md" \
        --export-json "$dir/result.json" "$@" 9<&- &
    hyperfine_pid=$!
    local rc=0
    wait "$hyperfine_pid" || rc=$?
    hyperfine_pid=""
    return "$rc"
}

# serving_ratios TABLE GOAL_DOCKER GOAL_SWARM: the means of `mcp deploy` over
# `docker run -d` and over `docker service create` from hyperfine's markdown
# table (the unit is the same on every row), each against its goal (at most
# that many times the other; an empty GOAL_SWARM: none).
serving_ratios() {
    awk -F'|' -v gd="$2" -v gs="$3" '
        /^\| `/ { name = $2; gsub(/^ *`|` *$/, "", name); split($3, m, " "); mean[name] = m[1] }
        END {
            if (mean["docker run -d"] > 0)
                printf "mcp deploy / docker run -d: %.2fx (goal: at most %sx: %s)\n", mean["mcp deploy"] / mean["docker run -d"], gd, (mean["mcp deploy"] <= gd * mean["docker run -d"]) ? "met" : "not met"
            if (mean["docker service create"] > 0 && gs == "")
                printf "mcp deploy / docker service create: %.2fx\n", mean["mcp deploy"] / mean["docker service create"]
            else if (mean["docker service create"] > 0)
                printf "mcp deploy / docker service create: %.2fx (goal: at most %sx: %s)\n", mean["mcp deploy"] / mean["docker service create"], gs, (mean["mcp deploy"] <= gs * mean["docker service create"]) ? "met" : "not met"
        }' "$1"
}
