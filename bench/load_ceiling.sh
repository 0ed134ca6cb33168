#!/usr/bin/env bash
# The instrument's own ceiling: how fast the bundled load generator and sink
# move mail between themselves, against Postfix's smtp-source and smtp-sink
# doing the same, on the same machine, in the same run.
#
#   bench/load_ceiling.sh BUILD_DIR [RUNS] [MESSAGES]     (defaults: 5 runs, 20000)
#
# Pairings (client -> server), each with connection reuse and with one
# message per connection, 50 connections, 4 KiB messages, 1 recipient:
#   ringway-load -> ringway-sink   --cores 1 for both (and a second row with --cores 2)
#   smtp-source  -> smtp-sink      the Postfix tools: the reference
#   ringway-load -> smtp-sink      cross pairings: tell which side bounds
#   smtp-source  -> ringway-sink   each pairing
# Every run of every pairing alternates with the others. The rate is
# ringway-load's own msg/s (first connect to last reply) and, for
# smtp-source, which reports none, messages / wall-clock time of the process
# (started to exited), as bench/smtp_accept_bench.sh measures it: that adds
# the few ms smtp-source takes to start and exit. Wall-clock rates are shown
# for ringway-load too; they add its start-up (message bodies, io_uring
# set-up) and exit (its signal thread polls every 100 ms): ~0.1 s per run.
#
# The instrument must not lie, so every run is checked and the script fails
# if a check does not hold: ringway-load reports every message accepted;
# a fresh ringway-sink per run reports received == messages sent, and for
# ringway-load's mail ok == received with nothing missing, duplicated or
# corrupt (--expect on the load's accepted log); smtp-sink's own counter
# advances by the number of messages sent.
#
# The commit in the output is `git rev-parse --short HEAD`, or $RINGWAY_COMMIT
# when set (for a tree without git).
set -euo pipefail
usage() { echo "usage: $0 BUILD_DIR [RUNS] [MESSAGES]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 3 ]] || usage
build=$(realpath "$1")
runs=${2:-5}
msgs=${3:-20000}
[[ $runs =~ ^[1-9][0-9]*$ && $msgs =~ ^[1-9][0-9]*$ ]] || usage
conns=50
load=$build/bench/ringway-load
sink=$build/bench/ringway-sink
for b in "$load" "$sink"; do
    [[ -x $b ]] || { echo "$b missing: scripts/build.sh release ringway-load ringway-sink" >&2; exit 1; }
done
for b in smtp-source smtp-sink; do
    command -v "$b" >/dev/null || { echo "$b missing: apt-get install postfix" >&2; exit 1; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
commit=${RINGWAY_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')}

work=$(mktemp -d "$PWD/load_ceiling.XXXXXX")
chmod 755 "$work"
ssink_pid="" rsink_pid="" client_pid=""
cleanup() {
    local p
    for p in $client_pid $rsink_pid $ssink_pid; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "load_ceiling: FAILED: $*" >&2; exit 1; }
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])' "$1" "$2"; }

# ---- smtp-sink: one instance for the whole run; -c keeps a running count
# ("sess=N quit=N mesg=N", \r-separated) that we read to check each run.
ss_port=$(port_free)
smtp-sink -c -u postfix "127.0.0.1:$ss_port" 1000 >"$work/smtp-sink.out" 2>"$work/smtp-sink.err" &
ssink_pid=$!
wait_port "$ss_port" || { cat "$work/smtp-sink.err"; die "smtp-sink is not listening"; }
ss_count() {
    local n
    n=$(tr '\r' '\n' <"$work/smtp-sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
    echo "${n:-0}"
}

# ---- ringway-sink: a fresh one per run, so that its report is this run's.
rsink_port=""
rsink_start() {  # cores [expect-file]; sets rsink_pid, rsink_port
    rm -f "$work/rsink.port" "$work/rsink.json"
    local expect=()
    [[ -n ${2:-} ]] && expect=(--expect "$2")
    # --no-pin: scheduled like smtp-sink, which is not pinned either.
    "$sink" --listen 127.0.0.1:0 --port-file "$work/rsink.port" --cores "$1" --no-pin \
        --hostname sink.bench.test --report "$work/rsink.json" "${expect[@]}" 2>"$work/rsink.err" &
    rsink_pid=$!
    for _ in $(seq 1 200); do
        [[ -s $work/rsink.port ]] && break
        kill -0 "$rsink_pid" 2>/dev/null || { cat "$work/rsink.err" >&2; die "ringway-sink exited at start"; }
        sleep 0.02
    done
    [[ -s $work/rsink.port ]] || die "ringway-sink wrote no port file"
    rsink_port=$(cat "$work/rsink.port")
}
rsink_stop() {
    kill -INT "$rsink_pid"
    wait "$rsink_pid" || { cat "$work/rsink.err" >&2; die "ringway-sink exited with status $?"; }
    rsink_pid=""
    [[ -s $work/rsink.json ]] || die "ringway-sink wrote no report"
}

# ---- one run of one pairing: appends "pairing mode wall_rate own_rate" to results
out=$work/results
: >"$out"
run() {  # client(load|source) server(rsink|ssink) cores mode(reuse|single)
    local client=$1 server=$2 cores=$3 mode=$4 port t0 t1 ss0 own=- expect=""
    rm -f "$work/load.json" "$work/accepted.log"
    [[ $client == load ]] && expect=$work/accepted.log
    if [[ $server == rsink ]]; then
        rsink_start "$cores" "$expect"
        port=$rsink_port
    else
        port=$ss_port
        ss0=$(ss_count)
    fi
    if [[ $client == load ]]; then
        local per=0
        [[ $mode == single ]] && per=1
        t0=$(now)
        "$load" -s "127.0.0.1:$port" -c "$conns" --per-conn "$per" --mix 4k --rcpts 1 -n "$msgs" \
            --cores "$cores" -q --json-file "$work/load.json" --accepted-log "$work/accepted.log" \
            >/dev/null 2>"$work/client.err" &
    else
        local d=()
        [[ $mode == reuse ]] && d=(-d)
        t0=$(now)
        smtp-source -s "$conns" -m "$msgs" -l 4096 "${d[@]}" -f load@source.bench.test \
            -t sink@sink.bench.test "127.0.0.1:$port" >/dev/null 2>"$work/client.err" &
    fi
    client_pid=$!
    local rc=0
    wait "$client_pid" || rc=$?
    t1=$(now)
    client_pid=""
    [[ $rc -eq 0 ]] || { cat "$work/client.err" >&2; die "$client -> $server ($mode): client exited with status $rc"; }
    if [[ $client == load ]]; then
        python3 - "$work/load.json" "$msgs" <<'PY' || die "ringway-load did not get every message accepted"
import json, sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[2])
if d["accepted"] != n or d["failed"] or d["rejected"]:
    print(f"ringway-load: attempted={d['attempted']} accepted={d['accepted']} rejected={d['rejected']} "
          f"failed={d['failed']} errors={d['errors']}", file=sys.stderr)
    sys.exit(1)
PY
        own=$(jget "$work/load.json" msg_per_s)
    elif [[ -s $work/client.err ]]; then
        cat "$work/client.err" >&2
        die "smtp-source -> $server ($mode) printed errors"
    fi
    if [[ $server == rsink ]]; then
        rsink_stop
        python3 - "$work/rsink.json" "$msgs" "$client" <<'PY' || die "ringway-sink's report does not add up (see above)"
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2]); client = sys.argv[3]
bad = []
if r["received"] != n: bad.append(f"received {r['received']} != {n} sent")
if r["corrupt"]: bad.append(f"corrupt {r['corrupt']}")
if client == "load":
    if r["ok"] != r["received"]: bad.append(f"ok {r['ok']} != received {r['received']} (unmarked {r['unmarked']})")
    if r["missing"]: bad.append(f"missing {r['missing']} {r['missing_ids']}")
    if r["unexpected"]: bad.append(f"unexpected {r['unexpected']}")
    if r["duplicates"]: bad.append(f"duplicates {r['duplicates']} {r['duplicate_ids']}")
elif r["unmarked"] != r["received"]:
    bad.append(f"unmarked {r['unmarked']} != received {r['received']} for smtp-source's mail")
if bad:
    print("ringway-sink: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
        echo "$client $(jget "$work/rsink.json" bytes)" >>"$work/bytes"
    else
        local ss1=""
        for _ in $(seq 1 50); do  # smtp-sink's counter may trail the client's exit by a moment
            ss1=$(ss_count)
            (( ss1 - ss0 >= msgs )) && break
            sleep 0.02
        done
        (( ss1 - ss0 == msgs )) || die "$client -> smtp-sink ($mode): smtp-sink counted $((ss1 - ss0)) messages, $msgs sent"
    fi
    echo "$client-$server-c$cores $mode $(python3 -c "print(round($msgs/($t1-$t0)))") $own" >>"$out"
}

echo "load_ceiling: $runs alternating runs x $msgs messages per pairing and mode; work dir $work" >&2
for mode in reuse single; do
    for r in $(seq 1 "$runs"); do
        echo "  $mode run $r/$runs" >&2
        run load rsink 1 "$mode"
        run source ssink 1 "$mode"
        run load ssink 1 "$mode"
        run source rsink 1 "$mode"
        run load rsink 2 "$mode"
    done
done

echo "machine: $(nproc) CPUs, kernel $(uname -r); commit $commit; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "load: $conns connections, $msgs messages of 4 KiB (ringway-load --mix 4k, smtp-source -l 4096), 1 recipient;" \
     "$runs alternating runs per pairing"
echo "msg/s: ringway-load's own report (first connect to last reply); smtp-source: messages / wall time of the process"
python3 - "$out" "$work/bytes" "$msgs" "$runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
msgs, runs = int(sys.argv[3]), int(sys.argv[4])
by = {}
for l in open(sys.argv[2]):
    c, b = l.split()
    by.setdefault(c, []).append(int(b) / msgs)
print("message size as ringway-sink received it: "
      + ", ".join(f"{'ringway-load' if c == 'load' else 'smtp-source'} {statistics.median(v):.0f} bytes"
                  for c, v in sorted(by.items())))
names = {
    "load-rsink-c1": "ringway-load -> ringway-sink  (--cores 1 each)",
    "load-rsink-c2": "ringway-load -> ringway-sink  (--cores 2 each)",
    "source-ssink-c1": "smtp-source  -> smtp-sink",
    "load-ssink-c1": "ringway-load -> smtp-sink     (--cores 1)",
    "source-rsink-c1": "smtp-source  -> ringway-sink  (--cores 1)",
}
def med(key, mode, col):
    v = [float(r[col]) for r in rows if r[0] == key and r[1] == mode and r[col] != "-"]
    return (statistics.median(v), min(v), max(v)) if v else None
def rate(key, mode):  # ringway-load's own figure, else wall clock (smtp-source)
    return med(key, mode, 3) or med(key, mode, 2)
for mode in ("reuse", "single"):
    label = "connection reuse (ringway-load --per-conn 0, smtp-source -d)" if mode == "reuse" \
        else "one message per connection (ringway-load --per-conn 1, smtp-source without -d)"
    print(f"\n{label}:")
    print(f"  {'pairing':46} {'median msg/s':>12} {'min..max':>17}   {'wall-clock median':>17}")
    m = {}
    for key, name in names.items():
        s = rate(key, mode)
        m[key] = s[0]
        wall = med(key, mode, 2)
        print(f"  {name:46} {s[0]:12.0f} {f'{s[1]:.0f}..{s[2]:.0f}':>17}   {wall[0]:17.0f}")
    ref = m["source-ssink-c1"]
    print(f"  ratio ringway pairing / smtp pairing: {m['load-rsink-c1'] / ref:.2f}x with 1 core each, "
          f"{m['load-rsink-c2'] / ref:.2f}x with 2 cores each (target >= 2x)")
    # Which side bounds a pairing: a side that goes faster with another
    # partner is not the bound; the other one is (within 15 %).
    best_client = {"load": max(m["load-rsink-c1"], m["load-ssink-c1"]),
                   "source": max(m["source-ssink-c1"], m["source-rsink-c1"])}
    best_server = {"rsink": max(m["load-rsink-c1"], m["source-rsink-c1"]),
                   "ssink": max(m["source-ssink-c1"], m["load-ssink-c1"])}
    cname = {"load": "ringway-load", "source": "smtp-source"}
    sname = {"rsink": "ringway-sink", "ssink": "smtp-sink"}
    for key in ("load-rsink-c1", "source-ssink-c1", "load-ssink-c1", "source-rsink-c1"):
        c, s, _ = key.split("-")
        r = m[key]
        c_free = best_client[c] > 1.15 * r
        s_free = best_server[s] > 1.15 * r
        if c_free and not s_free:
            verdict = f"bound by the server ({sname[s]}): {cname[c]} goes {best_client[c] / r:.1f}x faster elsewhere"
        elif s_free and not c_free:
            verdict = f"bound by the client ({cname[c]}): {sname[s]} goes {best_server[s] / r:.1f}x faster elsewhere"
        elif not c_free and not s_free:
            verdict = "each side at its best seen here: bound by both / the shared CPUs"
        else:
            verdict = "both sides go faster with other partners: bound by their interplay"
        print(f"  {cname[c]} -> {sname[s]}: {verdict}")
PY
