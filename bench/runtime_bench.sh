#!/usr/bin/env bash
# Runtime benchmark: the ping-pong echo server on the Ringway runtime against
# the same server written plainly on epoll, both on one pinned core, driven by
# the same epoll client on the other core, for 1, 64 and 1000 connections.
# Runs alternate (uring, epoll, uring, ...) so drift on a shared machine hits
# both; prints the median and spread of requests/s and p99 per server.
#
#   bench/runtime_bench.sh [BUILD_DIR] [REPEATS] [SECONDS]
set -euo pipefail
build=${1:-build/release}
reps=${2:-5}
secs=${3:-3}
server=$build/bench/echo_server
client=$build/bench/echo_client
[[ -x $server && -x $client ]] || { echo "build first: $server / $client missing" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"  # 1000 connections need more than the usual 1024
ncpu=$(nproc)
srv_cpu=0
cli_cpu=$(( ncpu > 1 ? 1 : 0 ))
port=$(( 20000 + RANDOM % 20000 ))
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run_one() {  # mode conns
    local mode=$1 conns=$2
    taskset -c $srv_cpu "$server" --mode "$mode" --port $port --cores 1 &
    local pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.05
    done
    taskset -c $cli_cpu "$client" --port $port --conns "$conns" --seconds "$secs" --warmup 1 |
        sed "s/^{/{\"mode\":\"$mode\",/" >>"$out"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    port=$((port + 1))
}

for conns in 1 64 1000; do
    for _ in $(seq 1 "$reps"); do
        run_one uring "$conns"
        run_one epoll "$conns"
    done
done

echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo ?) kernel $(uname -r) cpus $ncpu; $reps runs x ${secs}s each, server on CPU $srv_cpu, client on CPU $cli_cpu"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'conns':>6} {'server':>6} {'median req/s':>13} {'min..max req/s':>20} {'median p99 us':>14} {'ratio uring/epoll':>18}")
for conns in sorted({r['conns'] for r in rows}):
    med = {}
    for mode in ('uring', 'epoll'):
        rs = [r for r in rows if r['conns'] == conns and r['mode'] == mode]
        rps = [r['rps'] for r in rs]
        p99 = statistics.median(r['p99_us'] for r in rs)
        med[mode] = statistics.median(rps)
        ratio = f"{med['uring']/med['epoll']:.2f}" if mode == 'epoll' else ''
        print(f"{conns:>6} {mode:>6} {med[mode]:>13.0f} {min(rps):>9.0f}..{max(rps):<10.0f} {p99:>14.1f} {ratio:>18}")
PY
