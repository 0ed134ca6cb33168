#!/usr/bin/env bash
# The admin plane's cost and speed.
#
#   bench/admin_bench.sh BUILD_DIR overhead [--runs N] [--count N] [--mix M] [--connections C]
#   bench/admin_bench.sh BUILD_DIR million [--count N]
#
# overhead: ringway-load -> ringwayd -> ringway-sink, N runs of each mode,
#   alternating: "plain", and "observed" with /metrics scraped and `status`
#   asked every second (and `showmessage` of a message held on a down
#   destination) during the load. Per run the delivered rate (messages /
#   time from the load's start to the sink having them all); medians per
#   mode, their ratio, and the latency of each observation under load.
#   Defaults: 5 runs, 120000 messages of 4 KiB, 50 connections.
# million: COUNT messages (default 1,000,000 of 1 KiB) queued for a
#   destination that is down, then the latency of `showmessage`,
#   `workqueue` and `status` with all of them in place.
#
# Observations go over the control socket from a Python client speaking
# its JSON lines (no shell process start in the figures), and over HTTP
# for /metrics.
set -euo pipefail
usage() { sed -n '/^#   bench\/admin_bench.sh/p' "$0" | sed 's/^# *//' >&2; exit 2; }
[[ $# -ge 2 ]] || usage
build=$(realpath "$1")
mode=$2
shift 2
runs=5 count="" mix="" conns=50
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) runs=$2; shift ;;
    --count) count=$2; shift ;;
    --mix) mix=$2; shift ;;
    --connections) conns=$2; shift ;;
    *) usage ;;
    esac
    shift
done
rwd=$build/admin/ringwayd
load=$build/bench/ringway-load
sinkb=$build/bench/ringway-sink
[[ -x $rwd && -x $load && -x $sinkb ]] || { echo "admin_bench: build ringwayd, ringway-load and ringway-sink first" >&2; exit 2; }
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d "${TMPDIR:-/tmp}/rw_adminb.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
die() { echo "admin_bench: $*" >&2; exit 1; }
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
listening() { ss -ltn | grep -q "127.0.0.1:$1 "; }
wait_listening() { for _ in $(seq 1 1200); do listening "$1" && return 0; sleep 0.05; done; return 1; }
received() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['received'])" "$1" 2>/dev/null || echo 0; }

# config DIR PORT SINK_PORT DOWN_PORT METRICS_PORT SPOOL_SIZE
config() {
    cat >"$1/ringway.toml" <<EOT
[runtime]
pin = false
mail_log = ""
drain_timeout_ms = 2000
[spool]
path = "$1/spool.img"
size = "$6"
[[listener]]
name = "bench"
address = "127.0.0.1"
port = $2
max_connections = 100000
max_connections_per_ip = 100000
[smtp]
hostname = "mx.ringway.bench.test"
relay_networks = ["127.0.0.0/8"]
credentials_file = "$1/credentials"
[control]
socket = "$1/ringway.sock"
config_dir = "$1/config"
[metrics]
listen = "127.0.0.1:$5"
[conservation]
spool_tarpit_percent = 0
spool_refuse_percent = 0
[delivery]
max_connections_per_destination = 50
destination_pause_ms = 3600000
first_retry_ms = 3600000
max_retry_ms = 3600000
[[route]]
domain = "down.bench.test"
hosts = ["127.0.0.1:$4"]
[[route]]
domain = "*"
hosts = ["127.0.0.1:$3"]
EOT
}

echo "machine: $(nproc) CPUs, kernel $(uname -r); commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u +%FT%RZ)"

if [[ $mode == overhead ]]; then
    count=${count:-120000} mix=${mix:-4k}
    echo "load: ringway-load -n $count --mix $mix -c $conns, 1 recipient; ringwayd relays to ringway-sink; $runs runs per mode, alternating"
    : >"$work/rates"
    : >"$work/lat"
    for run in $(seq 1 "$runs"); do
        order=(plain observed)
        ((run % 2 == 0)) && order=(observed plain)
        for m in "${order[@]}"; do
            d=$work/$m$run
            mkdir -p "$d"
            port=$(port_free) sink_port=$(port_free) down=$(port_free) mport=$(port_free)
            config "$d" "$port" "$sink_port" "$down" "$mport" 2G
            "$sinkb" --listen "127.0.0.1:$sink_port" --stats "$d/stats.json" --report "$d/report.json" \
                >/dev/null 2>"$d/sink.err" &
            sink_pid=$!
            pids+=("$sink_pid")
            (cd "$d" && exec "$rwd" --config "$d/ringway.toml") >"$d/ringwayd.log" 2>&1 &
            rw_pid=$!
            pids+=("$rw_pid")
            wait_listening "$sink_port" || die "sink: $(cat "$d/sink.err")"
            wait_listening "$port" || die "ringwayd: $(tail -5 "$d/ringwayd.log")"
            # Ten messages held on a down destination, for showmessage.
            "$load" -q -s "127.0.0.1:$port" -n 10 -c 1 --to "held{n}@down.bench.test" --accepted-log "$d/held.log" \
                >/dev/null
            obs_pid=""
            if [[ $m == observed ]]; then
                python3 "$here/admin_observe.py" poll "$d/ringway.sock" "127.0.0.1:$mport" "$d/held.log" \
                    "$d/stop" >>"$work/lat" &
                obs_pid=$!
                for _ in $(seq 1 600); do [[ -e $d/stop.ready ]] && break; sleep 0.05; done
                [[ -e $d/stop.ready ]] || die "the observer did not start"
            fi
            t0=$(date +%s.%N)
            "$load" -q -s "127.0.0.1:$port" -n "$count" -c "$conns" --mix "$mix" --json >"$d/load.json"
            deadline=$(($(date +%s) + 300))
            while (($(received "$d/stats.json") < count)); do
                (($(date +%s) < deadline)) || die "$m run $run: not all delivered within 300 s"
                sleep 0.02
            done
            t2=$(date +%s.%N)
            if [[ -n $obs_pid ]]; then
                touch "$d/stop"
                wait "$obs_pid"
            fi
            kill "$rw_pid"
            wait "$rw_pid" || die "ringwayd exited with $?: $(tail -5 "$d/ringwayd.log")"
            kill "$sink_pid"
            wait "$sink_pid" || true
            rate=$(python3 -c "print(f'{$count/($t2-$t0):.0f}')")
            echo "run $run $m: delivered $rate msg/s"
            echo "$m $rate" >>"$work/rates"
            rm -rf "$d"
        done
    done
    python3 - "$work/rates" "$work/lat" <<'EOF'
import statistics, sys
rates = {}
for l in open(sys.argv[1]):
    m, r = l.split()
    rates.setdefault(m, []).append(float(r))
p, o = statistics.median(rates["plain"]), statistics.median(rates["observed"])
print(f"median delivered: plain {p:.0f} msg/s, observed {o:.0f} msg/s; observed/plain {o / p:.3f} "
      f"({(o / p - 1) * 100:+.1f} %)")
lat = {}
for l in open(sys.argv[2]):
    k, v = l.split()
    lat.setdefault(k, []).append(float(v))
for k in sorted(lat):
    v = sorted(lat[k])
    print(f"{k:<12} under load: n={len(v)} median {statistics.median(v):.2f} ms, p90 {v[int(len(v) * 0.9)]:.2f} ms, "
          f"max {v[-1]:.2f} ms")
EOF
    exit 0
fi

[[ $mode == million ]] || usage
count=${count:-1000000} mix=${mix:-1k}
d=$work/million
mkdir -p "$d"
port=$(port_free) sink_port=$(port_free) down=$(port_free) mport=$(port_free)
config "$d" "$port" "$sink_port" "$down" "$mport" "$(((count * 3 + 1023) / 1024 + 512))M"
(cd "$d" && exec "$rwd" --config "$d/ringway.toml") >"$d/ringwayd.log" 2>&1 &
rw_pid=$!
pids+=("$rw_pid")
wait_listening "$port" || die "ringwayd: $(tail -5 "$d/ringwayd.log")"
echo "queue: $count messages (--mix $mix) for one destination that is down"
"$load" -q -s "127.0.0.1:$port" -n "$count" -c "$conns" --mix "$mix" --to "user{n}@down.bench.test" \
    --accepted-log "$d/accepted.log" --json >"$d/load.json"
python3 -c "import json,sys;r=json.load(open(sys.argv[1]));print(f\"accepted {r['accepted']} of $count\")" "$d/load.json"
python3 "$here/admin_observe.py" once "$d/ringway.sock" "$d/accepted.log"
kill "$rw_pid"
wait "$rw_pid" || die "ringwayd exited with $?"
