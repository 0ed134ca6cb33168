#!/usr/bin/env bash
# Does delivery keep up with acceptance? Postfix's smtp-source (connection
# reuse, -d) sends N messages of SIZE bytes over S sessions to ringwayd,
# which relays everything to a ringway-sink. Per run: the accept rate
# (messages / smtp-source's wall time), the delivered rate (messages / time
# from the load's start until the sink has them all) and their ratio, then
# medians. The sink's stats file is rewritten every 200 ms and polled every
# 50 ms, so the delivered time is known to about 0.25 s: use runs of
# several seconds.
#
#   bench/source_relay.sh [BUILD_DIR] [RUNS] [MESSAGES] [SIZE] [SESSIONS]
#
# Defaults: build/release, 3 runs, 20000 messages of 102400 bytes, 20
# sessions; a fresh sparse 6G spool file per run.
set -euo pipefail
build=$(realpath "${1:-build/release}")
runs=${2:-3}
msgs=${3:-20000}
size=${4:-102400}
sessions=${5:-20}
command -v smtp-source >/dev/null || { echo "smtp-source missing: apt-get install postfix" >&2; exit 1; }
for b in admin/ringwayd bench/ringway-sink; do
    [[ -x $build/$b ]] || { echo "$build/$b missing: scripts/build.sh release ringwayd ringway-sink" >&2; exit 1; }
done
work=$(mktemp -d "$PWD/source_relay.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { ss -ltn | grep -q "127.0.0.1:$1 "; }
wait_listening() { for _ in $(seq 1 600); do listening "$1" && return 0; sleep 0.05; done; return 1; }
received() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['received'])" "$1" 2>/dev/null || echo 0; }

echo "machine: $(nproc) CPUs, kernel $(uname -r); commit ${RINGWAY_COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)}; $(date -u +%FT%RZ)"
echo "load: smtp-source -d -s $sessions -m $msgs -l $size, 1 recipient; ringwayd relays all to ringway-sink; $runs run(s)"
results=()
for run in $(seq 1 "$runs"); do
    d=$work/run$run
    mkdir -p "$d"
    sink_port=$(port_free) rw_port=$(port_free)
    "$build/bench/ringway-sink" --listen "127.0.0.1:$sink_port" --stats "$d/stats.json" --report "$d/report.json" \
        >/dev/null 2>"$d/sink.err" &
    sink_pid=$!
    pids+=("$sink_pid")
    cat >"$d/ringway.toml" <<EOT
[runtime]
pin = false
mail_log = ""
[spool]
path = "$d/spool.img"
size = "6G"
[[listener]]
name = "bench"
address = "127.0.0.1"
port = $rw_port
max_connections_per_ip = 100000
[smtp]
hostname = "mx.ringway.bench.test"
relay_networks = ["127.0.0.0/8"]
credentials_file = "$d/credentials"
[control]
socket = "$d/ringway.sock"
[delivery]
max_connections_per_destination = 50
[[route]]
domain = "*"
hosts = ["127.0.0.1:$sink_port"]
EOT
    (cd "$d" && exec "$build/admin/ringwayd" --config "$d/ringway.toml") >"$d/ringwayd.log" 2>&1 &
    rw_pid=$!
    pids+=("$rw_pid")
    wait_listening "$sink_port" || { cat "$d/sink.err" >&2; exit 1; }
    wait_listening "$rw_port" || { cat "$d/ringwayd.log" >&2; exit 1; }
    t0=$(date +%s.%N)
    smtp-source -d -s "$sessions" -m "$msgs" -l "$size" -f load@src.bench.test -t sink@dst.bench.test \
        "127.0.0.1:$rw_port"
    t1=$(date +%s.%N)
    deadline=$(($(date +%s) + 300))
    while (($(received "$d/stats.json") < msgs)); do
        (($(date +%s) < deadline)) || { echo "run $run: not all delivered within 300 s" >&2; exit 1; }
        sleep 0.05
    done
    t2=$(date +%s.%N)
    kill "$rw_pid"
    wait "$rw_pid" || { echo "ringwayd exited with $?" >&2; tail -20 "$d/ringwayd.log" >&2; exit 1; }
    kill "$sink_pid"
    wait "$sink_pid" || true
    r=$(python3 -c "n=$msgs;a=$t1-$t0;d=$t2-$t0;print(f'{n/a:.0f} {n/d:.0f} {a/d*100:.1f}')")
    read -r acc del pct <<<"$r"
    echo "run $run: accepted $acc msg/s, delivered $del msg/s: $pct % of the accept rate"
    results+=("$r")
    rm -rf "$d"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
m = [statistics.median(c) for c in zip(*rows)]
print(f"median: accepted {m[0]:.0f} msg/s, delivered {m[1]:.0f} msg/s, delivered/accepted {m[2]:.1f} %")'
