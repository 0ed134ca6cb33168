#!/usr/bin/env bash
# Memory per queued message: ringwayd accepts COUNT messages for a
# destination that is down (its route points at a closed port), so all of
# them stay queued; the daemon's resident memory is read before and after,
# and again after a restart that recovers the whole queue from the spool.
# Then the destination comes back (the route points at a ringway-sink) and
# a third start delivers the backlog: the drain rate.
#
#   bench/queue_memory.sh BUILD_DIR [--count N] [--mix M] [--rcpts R] [--connections C] [--spool-size SIZE] [--keep]
#
# Defaults: 1,000,000 messages of 1 KiB, 1 recipient, 50 connections, a
# spool file sized for the count. Prints RSS (VmRSS from /proc) at each
# step, bytes per queued message, the accept rate and the recovery time.
# Exit status 1 when a message was not accepted or the recovered queue is
# not the accepted one.
set -euo pipefail
usage() { sed -n '/^#   bench\/queue_memory.sh/p' "$0" | sed 's/^# *//' >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
build=$(realpath "$1")
shift
count=1000000 mix=1k rcpts=1 conns=50 spool_size="" keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --count) count=$2; shift ;;
    --mix) mix=$2; shift ;;
    --rcpts) rcpts=$2; shift ;;
    --connections) conns=$2; shift ;;
    --spool-size) spool_size=$2; shift ;;
    --keep) keep=1 ;;
    *) usage ;;
    esac
    shift
done
rwd=$build/admin/ringwayd
load=$build/bench/ringway-load
sink=$build/bench/ringway-sink
[[ -x $rwd && -x $load && -x $sink ]] || { echo "queue_memory: build ringwayd, ringway-load and ringway-sink first" >&2; exit 2; }
# About 2.5 KiB of spool per 1 KiB message (body, envelope, one deferral
# record, alignment), with room to spare.
[[ -n $spool_size ]] || spool_size="$(((count * 3 + 1023) / 1024 + 512))M"

work=$(mktemp -d "${TMPDIR:-/tmp}/rw_qmem.XXXXXX")
rw_pid="" sink_pid=""
cleanup() {
    [[ -n $rw_pid ]] && kill -KILL "$rw_pid" 2>/dev/null
    [[ -n $sink_pid ]] && kill -KILL "$sink_pid" 2>/dev/null
    if ((keep)); then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
die() { echo "queue_memory: $*" >&2; exit 1; }
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

port=$(port_free)
dead=$(port_free)  # nothing listens there: the destination is down
cat >"$work/ringway.toml" <<EOT
[runtime]
pin = false
mail_log = ""
drain_timeout_ms = 2000

[spool]
path = "$work/spool.img"
size = "$spool_size"

[[listener]]
name = "bench"
address = "127.0.0.1"
port = $port
max_connections = 100000
max_connections_per_ip = 100000

[smtp]
hostname = "mx.ringway.bench.test"
relay_networks = ["127.0.0.0/8"]

[control]
socket = "$work/ringway.sock"

[delivery]
# The destination refuses the first connection and then rests for an hour:
# everything waits for it in its queue (the retry schedule itself is short,
# so once the destination is back nothing waits for a retry time).
destination_pause_ms = 3600000
first_retry_ms = 10
max_retry_ms = 10

[[route]]
domain = "*"
hosts = ["127.0.0.1:$dead"]
EOT

start() {  # log file
    log=$work/$1
    local t0
    t0=$(date +%s.%N)
    (cd "$work" && exec "$rwd" --config "$work/ringway.toml") >"$log" 2>&1 &
    rw_pid=$!
    # The listening sockets exist from the start (connections wait in the
    # backlog); the greeting comes once the spool is recovered.
    start_s=$(python3 - "$port" "$rw_pid" "$t0" <<'PY'
import os, socket, sys, time
port, pid, t0 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
while time.time() - t0 < 120:
    os.kill(pid, 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            if c.recv(512).startswith(b"220"):
                print(f"{time.time() - t0:.2f}")
                sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit(1)
PY
) || { cat "$log" >&2; die "no greeting from ringwayd"; }
}
stop() {
    kill -TERM "$rw_pid"
    for _ in $(seq 1 600); do kill -0 "$rw_pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$rw_pid" 2>/dev/null && die "ringwayd did not stop within 30 s of SIGTERM"
    wait "$rw_pid" || die "ringwayd exited with status $? on SIGTERM"
    rw_pid=""
}

echo "machine: $(nproc) CPUs, kernel $(uname -r); commit ${RINGWAY_COMMIT:-$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo ?)}; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "queue: $count messages (--mix $mix, $rcpts recipient(s)) for one destination that is down; spool file $spool_size"
start first.log
sleep 1
rss0=$(rss_kib "$rw_pid")
"$load" -q --json -s "127.0.0.1:$port" -c "$conns" --per-conn 0 -n "$count" --mix "$mix" --rcpts "$rcpts" \
    --seed 1 >"$work/load.json" 2>"$work/load.err" || true
read -r accepted rate < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["accepted"], round(r["msg_per_s"]))' "$work/load.json") ||
    { cat "$work/load.err" >&2; die "no report from ringway-load"; }
sleep 2  # let the delivery side take in the last messages
rss1=$(rss_kib "$rw_pid")
stop
start second.log
recover_s=$start_s
sleep 2
rss2=$(rss_kib "$rw_pid")
# jemalloc returns freed pages to the kernel after ~10 s (dirty_decay_ms):
# the start-up's transient allocations (a cross-core hand-over per
# recovered message) are gone by then.
sleep 13
rss3=$(rss_kib "$rw_pid")
stop
# The destination is back: a sink where the dead port was.
sink_port=$(port_free)
"$sink" --listen "127.0.0.1:$sink_port" --cores 1 --no-pin --stats "$work/sink.stats" >/dev/null 2>"$work/sink.err" &
sink_pid=$!
sed -i "s/127.0.0.1:$dead/127.0.0.1:$sink_port/" "$work/ringway.toml"
t_drain=$(date +%s.%N)
start third.log
drain=$(python3 - "$work/sink.stats" "$accepted" "$t_drain" <<'PY'
import json, sys, time
stats, want, t0 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
got = 0
while time.time() - t0 < 900:
    try:
        got = json.load(open(stats))["received"]
    except (OSError, ValueError, KeyError):
        pass
    if got >= want:
        break
    time.sleep(0.05)
el = time.time() - t0
print(f"{got} {el:.2f} {got / el:.0f}")
PY
)
stop
kill -INT "$sink_pid"; wait "$sink_pid" || true; sink_pid=""
# Each shard says "shard=N recovered messages=M ... took_ms=T" at start.
recovered=$(sed -n 's/.*recovered messages=\([0-9]*\).*/\1/p' "$work/second.log" | awk '{s += $1} END {print s + 0}')
took_ms=$(sed -n 's/.*recovered messages=.*took_ms=\([0-9.]*\).*/\1/p' "$work/second.log" | sort -n | tail -n 1)
python3 - "$count" "$accepted" "$rate" "$rss0" "$rss1" "$rss2" "$rss3" "$recover_s" "$recovered" "$took_ms" $drain <<'PY'
import sys
count, accepted, rate, rss0, rss1, rss2, rss3 = map(int, sys.argv[1:8])
recover_s = float(sys.argv[8])
recovered = int(sys.argv[9])
took_ms = float(sys.argv[10])
drained, drain_s, drain_rate = int(sys.argv[11]), float(sys.argv[12]), int(sys.argv[13])
print(f"accepted {accepted} of {count} at {rate} msg/s")
print(f"RSS after start (empty queue):           {rss0 / 1024:8.1f} MiB")
print(f"RSS with the {accepted} queued:        {rss1 / 1024:8.1f} MiB  = {(rss1 - rss0) * 1024 / max(1, accepted):6.0f} bytes per queued message")
print(f"RSS 2 s after a restart recovered them:  {rss2 / 1024:8.1f} MiB  = {(rss2 - rss0) * 1024 / max(1, accepted):6.0f} bytes per queued message")
print(f"RSS 15 s after a restart recovered them: {rss3 / 1024:8.1f} MiB  = {(rss3 - rss0) * 1024 / max(1, accepted):6.0f} bytes per queued message")
print(f"restart: {recovered} messages recovered (slowest shard {took_ms:.0f} ms), "
      f"first greeting {recover_s:.2f} s after the start")
print(f"drain: {drained} of {accepted} delivered in {drain_s:.1f} s from the start with the destination back "
      f"= {drain_rate} msg/s")
sys.exit(0 if accepted == count and recovered == accepted and drained == accepted else 1)
PY
