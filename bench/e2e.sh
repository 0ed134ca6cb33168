#!/usr/bin/env bash
# End to end: ringway-load -> ringwayd -> ringway-sink, and with --postfix
# the same load through a private Postfix relaying to a second
# ringway-sink, in the same run, alternating. Measures the accept rate (the
# load generator's), the delivered rate (accepted messages / time from the
# load's start to the last delivery at the sink) and checks that every
# accepted (message, recipient) arrived once and intact (the sink's --expect
# on the load's accepted log).
#
#   bench/e2e.sh BUILD_DIR [--postfix] [--count N] [--connections C] [--mix M] [--rcpts R]
#                [--domains D] [--runs K] [--rate R] [--drain-timeout S] [--per-conn N]
#                [--cores N] [--load-cores N] [--sink-cores N] [--spool-size SIZE]
#                [--postfix-only] [--keep]
#                [--relay-networks TOML] [--accepted-domains TOML] [--ringway-toml FILE]
#                [--load-arg ARG]... [--results FILE] [--mail-log FILE]
#
# Defaults: 20000 messages, 50 connections, mix 4k, 1 recipient, 1 domain,
# 1 run, closed loop, 100 messages per connection, drain timeout 120 s,
# ringwayd on every CPU (unpinned), load and sinks on 1 reactor each,
# a fresh 2G spool file per run. --postfix-only skips ringwayd (to check the
# Postfix path alone); --keep keeps the work directory.
#
# Exit status: 0 when every accepted message arrived intact, 1 when
# anything was lost or corrupt or did not arrive within the drain timeout
# (or a component failed), 2 on bad usage.
#
# Time of the last delivery: ringway-sink rewrites its --stats file every
# 200 ms; a poller records each version's mtime and recipient count, and
# the last delivery lies between the last version short of the target and
# the first one that reaches it. The midpoint is used, its +- half-width
# printed.
#
# CPU: each system runs in its own cgroup (cgroup v1 cpuacct under
# /sys/fs/cgroup/cpuacct, else cgroup2), as do the sinks and the load
# generator; the counter (cpuacct.usage, or cpu.stat usage_usec) includes
# tasks that have exited, so for Postfix it covers master, smtpd, cleanup,
# qmgr, trivial-rewrite, smtp and every process forked and gone during the
# run. The CPU of a run is the counter's growth from just before the load
# starts to the last delivery (the poller's end), divided by the accepted
# messages: ms/msg. Kernel threads (jbd2, kworkers, ksoftirqd) are in no
# such cgroup and are not counted. Without a writable cgroup hierarchy the
# script prints "cpu n/a".
#
# ringwayd's clients may relay (relay_networks 127.0.0.0/8) unless
# --relay-networks says otherwise ('[]': mail is inbound, for the
# --accepted-domains); --ringway-toml appends a file to its configuration
# (an [authentication] or [dns] table); each --load-arg is passed to
# ringway-load (--dkim-key ...). --results copies the per-run JSON lines out.
# ringwayd's mail log is off (runtime.mail_log = "") unless --mail-log names
# a file for it (every run appends to it; writing it costs ringwayd CPU).
#
# The commit in the output is `git rev-parse --short HEAD`, or $RINGWAY_COMMIT
# when set (for a tree without git).
set -euo pipefail
usage() {
    echo "usage:" >&2
    sed -n '/^#   bench\/e2e.sh/,/^#$/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[[ $# -ge 1 && $1 != -* ]] || usage
build=$(realpath "$1")
shift
count=20000 conns=50 mix=4k rcpts=1 domains=1 runs=1 rate="" drain_timeout=120 per_conn=100
rw_cores=0 load_cores=1 sink_cores=1 spool_size=2G postfix=0 ringway=1 keep=0
relay_networks='["127.0.0.0/8"]' accepted_domains='[]' ringway_toml="" load_args=() results_out="" mail_log=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --postfix) postfix=1 ;;
    --postfix-only) postfix=1 ringway=0 ;;
    --keep) keep=1 ;;
    --relay-networks) relay_networks=$2; shift ;;
    --accepted-domains) accepted_domains=$2; shift ;;
    --ringway-toml) ringway_toml=$(realpath "$2"); shift ;;
    --load-arg) load_args+=("$2"); shift ;;
    --results) results_out=$(realpath -m "$2"); shift ;;
    --mail-log) mail_log=$(realpath -m "$2"); shift ;;
    --count | --connections | --mix | --rcpts | --domains | --runs | --rate | --drain-timeout | --per-conn | \
        --cores | --load-cores | --sink-cores | --spool-size)
        [[ $# -ge 2 ]] || usage
        case $1 in
        --count) count=$2 ;;
        --connections) conns=$2 ;;
        --mix) mix=$2 ;;
        --rcpts) rcpts=$2 ;;
        --domains) domains=$2 ;;
        --runs) runs=$2 ;;
        --rate) rate=$2 ;;
        --drain-timeout) drain_timeout=$2 ;;
        --per-conn) per_conn=$2 ;;
        --cores) rw_cores=$2 ;;
        --load-cores) load_cores=$2 ;;
        --sink-cores) sink_cores=$2 ;;
        --spool-size) spool_size=$2 ;;
        esac
        shift ;;
    *) usage ;;
    esac
    shift
done
[[ $runs =~ ^[1-9][0-9]*$ && $drain_timeout =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage

load=$build/bench/ringway-load
sink=$build/bench/ringway-sink
rwd=$build/admin/ringwayd
[[ -x $rwd ]] || rwd=$(find "$build" -maxdepth 3 -type f -name ringwayd -perm -u+x | head -1)
for b in "$load" "$sink"; do
    [[ -x $b ]] || { echo "$b missing: scripts/build.sh release ringway-load ringway-sink" >&2; exit 1; }
done
if ((ringway)) && [[ ! -x $rwd ]]; then
    echo "ringwayd missing under $build: scripts/build.sh release ringwayd" >&2
    exit 1
fi
if ((postfix)); then
    command -v postfix >/dev/null || { echo "postfix missing: apt-get install postfix" >&2; exit 1; }
fi
root=$(cd "$(dirname "$0")/.." && pwd)
commit=${RINGWAY_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')}

work=$(mktemp -d "$PWD/e2e.XXXXXX")
chmod 755 "$work"  # the postfix user must reach its queue
sink_pid="" rw_pid="" load_pid="" poll_pid="" pf_started=0
pf=$work/postfix
cleanup() {
    local p
    for p in $load_pid $poll_pid $rw_pid $sink_pid; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    if ((pf_started)); then
        local master
        master=$(cat "$work/pfq/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
        postfix -c "$pf" stop >/dev/null 2>&1 || true
        for _ in $(seq 1 100); do
            [[ -n $master ]] && kill -0 "$master" 2>/dev/null || break
            sleep 0.05
        done
    fi
    cg_remove
    if ((keep)); then echo "e2e: work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "e2e: $*" >&2; exit 1; }
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# Whether an SMTP server on the port greets (220): the kernel completes
# TCP connections into the backlog before the daemon accepts, which it does
# only once its configuration is built (content rules compiled).
greets() { (exec 3<>/dev/tcp/127.0.0.1/$1 && read -r -t 2 line <&3 && [[ $line == 220* ]]) 2>/dev/null; }
now() { date +%s.%N; }

# ---- CPU accounting: one cgroup per component under rwbench.$$ (see the top).
cg_dir="" cg_kind=""
cg_names="ringwayd postfix sink load"
cg_setup() {
    local base=/sys/fs/cgroup/cpuacct kind=v1 n
    if [[ ! -f $base/cpuacct.usage ]]; then
        base=/sys/fs/cgroup/unified kind=v2
        [[ -f $base/cgroup.procs ]] || base=/sys/fs/cgroup
        [[ $(stat -f -c %T "$base" 2>/dev/null) == cgroup2fs ]] || return 0
    fi
    mkdir "$base/rwbench.$$" 2>/dev/null || return 0
    cg_dir=$base/rwbench.$$ cg_kind=$kind
    for n in $cg_names; do
        mkdir "$cg_dir/$n" 2>/dev/null || { cg_remove; return 0; }
    done
    # Can a process actually be moved in (not just the directory made)?
    if ! (echo "$BASHPID" >"$cg_dir/load/cgroup.procs") 2>/dev/null || [[ -z $(cg_usage load) ]]; then
        cg_remove
    fi
}
cg_join() {  # name: move the calling (sub)shell into the cgroup; the exec'd program stays there
    [[ -n $cg_dir ]] && { echo "$BASHPID" >"$cg_dir/$1/cgroup.procs"; } 2>/dev/null || true
}
cg_usage() {  # name -> CPU time in ns, tasks that have exited included; empty when n/a
    [[ -n $cg_dir ]] || return 0
    if [[ $cg_kind == v1 ]]; then
        cat "$cg_dir/$1/cpuacct.usage" 2>/dev/null || true
    else
        # usec -> ns as text: mawk's printf %d stops at 2^31-1 (2.1 s)
        awk '$1 == "usage_usec" {print $2 "000"}' "$cg_dir/$1/cpu.stat" 2>/dev/null || true
    fi
}
cg_remove() {  # a cgroup still holding tasks (a straggler) cannot be removed: move them out first
    [[ -n $cg_dir && -d $cg_dir ]] || { cg_dir=""; return 0; }
    local n p parent
    parent=$(dirname "$cg_dir")
    for n in $cg_names; do
        [[ -d $cg_dir/$n ]] || continue
        for _ in 1 2 3 4 5; do
            rmdir "$cg_dir/$n" 2>/dev/null && break
            while read -r p; do echo "$p" >"$parent/cgroup.procs"; done <"$cg_dir/$n/cgroup.procs" 2>/dev/null || true
            sleep 0.1
        done
    done
    rmdir "$cg_dir" 2>/dev/null || echo "e2e: could not remove cgroup $cg_dir" >&2
    cg_dir=""
}

cg_setup
echo "machine: $(nproc) CPUs, kernel $(uname -r); commit $commit; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "load: ringway-load, $count messages, mix $mix, $rcpts recipient(s) over $domains domain(s)," \
     "$conns connections, $per_conn messages per connection, $([[ -n $rate ]] && echo "open loop at $rate" || echo "closed loop");" \
     "$runs run(s)$( ((ringway && postfix)) && echo ', ringwayd and Postfix alternating')"
echo "cpu: $([[ -n $cg_dir ]] && echo "cgroup $cg_kind $cg_dir (one per component; from the load's start to the last delivery, per accepted message)" || echo "n/a (no writable cgroup hierarchy)")"
echo "cores: $( ((ringway)) && echo "ringwayd $( ((rw_cores == 0)) && echo "on every CPU" || echo "$rw_cores") (unpinned), ")ringway-load $load_cores, ringway-sink $sink_cores (unpinned)$( ((postfix)) && echo ", Postfix: default_process_limit 200, 50 connections to the sink")"

# ---- ringway-sink: a fresh one per pipeline and run, on that pipeline's port.
sink_start() {  # dir port
    (cg_join sink; exec "$sink" --listen "127.0.0.1:$2" --cores "$sink_cores" --no-pin --hostname sink.bench.test \
        --expect "$1/accepted.log" --report "$1/sink.json" --stats "$1/stats.json") 2>"$1/sink.err" &
    sink_pid=$!
    wait_port "$2" || { cat "$1/sink.err" >&2; die "ringway-sink is not listening on $2"; }
}
sink_stop() {  # dir
    kill -INT "$sink_pid"
    local rc=0
    wait "$sink_pid" || rc=$?
    sink_pid=""
    ((rc == 0)) || { cat "$1/sink.err" >&2; die "ringway-sink exited with status $rc"; }
    [[ -s $1/sink.json ]] || die "ringway-sink wrote no report"
}

# ---- one pipeline run: load against PORT, wait for the sink to have it all.
results=$work/results.jsonl
: >"$results"
pipeline() {  # name dir port run
    local name=$1 d=$2 port=$3 k=$4 t0 t1 rc=0
    # The poller runs from before the load starts, so it sees every version
    # of the stats file; it stops once $d/target's count has arrived or
    # --drain-timeout seconds after the target appears.
    python3 - "$d/stats.json" "$d/target" "$d/timeline" "$drain_timeout" <<'PY' &
import json, os, sys, time
stats, target_file, timeline, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
last_mtime, last_r, target, deadline = None, 0, None, None
with open(timeline, "w") as tl:
    while True:
        try:
            with open(stats) as f:
                mtime = os.fstat(f.fileno()).st_mtime_ns
                if mtime != last_mtime:
                    s = json.load(f)
                    last_mtime, last_r = mtime, s["recipients"]
                    tl.write(f"{mtime / 1e9:.6f} {s['recipients']} {s['received']}\n")
                    tl.flush()
        except (FileNotFoundError, ValueError):
            pass
        if target is None and os.path.exists(target_file):
            target = int(open(target_file).read())
            deadline = time.time() + timeout
        if target is not None and (last_r >= target or time.time() > deadline):
            break
        time.sleep(0.02)
PY
    poll_pid=$!
    local lopts=(-s "127.0.0.1:$port" -c "$conns" --per-conn "$per_conn" --mix "$mix" --rcpts "$rcpts"
        --domains "$domains" -n "$count" --cores "$load_cores" -q
        --accepted-log "$d/accepted.log" --json-file "$d/load.json")
    [[ -n $rate ]] && lopts+=(--rate "$rate")
    lopts+=("${load_args[@]}")
    # CPU counters (ns) of the system, its sink and the load before the load starts.
    local cpu0
    cpu0="$(cg_usage "$name") $(cg_usage sink) $(cg_usage load)"
    t0=$(now)
    (cg_join load; exec "$load" "${lopts[@]}") >"$d/load.txt" 2>"$d/load.err" &
    load_pid=$!
    wait "$load_pid" || rc=$?
    t1=$(now)
    load_pid=""
    if ((rc != 0)) || [[ ! -s $d/load.json ]]; then
        cat "$d/load.err" >&2
        die "$name: ringway-load exited with status $rc"
    fi
    # Accepted recipients: the sum over the accepted log's lines.
    awk '{n += NF - 1} END {print n + 0}' "$d/accepted.log" >"$d/target.tmp"
    mv "$d/target.tmp" "$d/target"
    wait "$poll_pid" || true
    poll_pid=""
    # ... and once the last delivery has arrived (or the drain timed out).
    echo "$cpu0 $(cg_usage "$name") $(cg_usage sink) $(cg_usage load)" >"$d/cpu"
    sink_stop "$d"
    python3 - "$name" "$k" "$t0" "$t1" "$d" "$results" <<'PY'
import json, sys
name, k, t0, t1, d, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
load = json.load(open(f"{d}/load.json"))
sink = json.load(open(f"{d}/sink.json"))
target = int(open(f"{d}/target").read())
tl = [(float(a), int(b)) for a, b, _ in (l.split() for l in open(f"{d}/timeline"))]
acc = load["accepted"]
# Last delivery: between the last stats version short of the target and the first that has it.
first = next((i for i, (_, r) in enumerate(tl) if r >= target), None)
if target == 0:
    t_last, half, complete = t1, 0.0, True
elif first is None:
    t_last, half, complete = None, None, False
else:
    hi = tl[first][0]
    lo = tl[first - 1][0] if first > 0 else t0
    lo = max(lo, t0)
    t_last, half, complete = (lo + hi) / 2, (hi - lo) / 2, True
at_load_end = max([r for t, r in tl if t <= t1] or [0])
delivered_rcpts = tl[-1][1] if tl else 0
# CPU: "sys0 sink0 load0 sys1 sink1 load1" in ns (fewer fields when n/a).
cpu = open(f"{d}/cpu").read().split()
cpu_ms = {}
if len(cpu) == 6 and acc:
    for i, part in enumerate(("sys", "sink", "load")):
        cpu_ms[part] = (int(cpu[i + 3]) - int(cpu[i])) / 1e6 / acc
res = {
    "name": name, "run": k, "accepted": acc, "attempted": load["attempted"],
    "rejected": load["rejected"], "failed": load["failed"], "rcpt_accepted": target,
    "accept_msg_per_s": load["msg_per_s"], "accept_elapsed_s": load["elapsed_s"],
    "accept_p50_ms": load["latency_ms"]["p50"], "accept_p99_ms": load["latency_ms"]["p99"],
    "load_errors": load["errors"],
    "complete": complete, "delivered_rcpts": max(delivered_rcpts, sink["recipients"]),
    "backlog_at_load_end": target - at_load_end,
    "deliver_s": (t_last - t0) if complete else None, "deliver_pm_s": half,
    "deliver_msg_per_s": acc / (t_last - t0) if complete and t_last > t0 else None,
    "missing": sink["missing"], "duplicates": sink["duplicates"], "corrupt": sink["corrupt"],
    "unexpected": sink["unexpected"], "unmarked": sink["unmarked"], "sink_received": sink["received"],
    "missing_ids": sink["missing_ids"], "corrupt_ids": sink["corrupt_ids"],
    "e2e_p50_ms": sink["latency_ms"]["p50"], "e2e_p99_ms": sink["latency_ms"]["p99"],
    "e2e_max_ms": sink["latency_ms"]["max"],
    "cpu_ms_per_msg": cpu_ms.get("sys"), "sink_cpu_ms_per_msg": cpu_ms.get("sink"),
    "load_cpu_ms_per_msg": cpu_ms.get("load"),
    "sink_transactions": sink["transactions"], "sink_connections": sink["connections"],
}
open(out, "a").write(json.dumps(res) + "\n")
w = len(name) + 12
print(f"run {k} {name}: accepted {acc}/{load['attempted']} messages ({target} recipients) in "
      f"{load['elapsed_s']:.2f} s: {load['msg_per_s']:.0f} msg/s = {load['msg_per_s'] * 3600:,.0f} msg/h; "
      f"accept latency p50 {res['accept_p50_ms']:.2f} ms, p99 {res['accept_p99_ms']:.2f} ms"
      + (f"; rejected {load['rejected']}, failed {load['failed']} {load['errors']}"
         if load["rejected"] or load["failed"] else ""))
if complete:
    print(f"{'':{w}}delivered all {target} recipients {res['deliver_s']:.2f} s (+-{half:.2f}) after the load started: "
          f"{res['deliver_msg_per_s']:.0f} msg/s = {res['deliver_msg_per_s'] * 3600:,.0f} msg/h; "
          f"{res['backlog_at_load_end']} recipients still to deliver when the load ended")
else:
    print(f"{'':{w}}NOT DRAINED: {res['delivered_rcpts']} of {target} recipients arrived within the drain timeout")
print(f"{'':{w}}end-to-end latency (send -> sink): p50 {res['e2e_p50_ms']:.1f} ms, "
      f"p99 {res['e2e_p99_ms']:.1f} ms, max {res['e2e_max_ms']:.1f} ms")
print(f"{'':{w}}" + (f"cpu {cpu_ms['sys']:.3f} ms/msg ({name}; sink {cpu_ms['sink']:.3f}, "
                      f"load {cpu_ms['load']:.3f} ms/msg)" if cpu_ms else "cpu n/a"))
print(f"{'':{w}}sink: lost {sink['missing']}  duplicated {sink['duplicates']}  corrupt {sink['corrupt']}  "
      f"unexpected {sink['unexpected']}  unmarked {sink['unmarked']}  (received {sink['received']} messages, "
      f"{sink['recipients']} recipients in {sink['transactions']} transactions over {sink['connections']} connections)"
      + (f"; missing e.g. {sink['missing_ids'][:3]}" if sink["missing"] else "")
      + (f"; corrupt e.g. {sink['corrupt_ids'][:3]}" if sink["corrupt"] else ""))
PY
}

# ---- ringwayd: a private directory and a fresh spool file per run.
rw_sink_port=$(port_free)
ringway_config() {  # dir listen-port sink-port
    cat <<EOT
[runtime]
cores = $rw_cores
pin = false
mail_log = "$mail_log"
drain_timeout_ms = 2000

[spool]
path = "$1/spool.img"
size = "$spool_size"

[[listener]]
name = "bench"
address = "127.0.0.1"
port = $2
max_connections = 100000
max_connections_per_ip = 100000

[smtp]
hostname = "mx.ringway.bench.test"
relay_networks = $relay_networks
accepted_domains = $accepted_domains
# the load generator is never rate-limited, relaying or not
client_limit_exceptions = ["127.0.0.0/8"]
credentials_file = "$1/credentials"

[control]
socket = "$1/ringway.sock"

[delivery]
# The same per-destination connection limit as the Postfix side
# (smtp_destination_concurrency_limit below).
max_connections_per_destination = 50

# every recipient domain goes to the sink
[[route]]
domain = "*"
hosts = ["127.0.0.1:$3"]
EOT
    if [[ -n $ringway_toml ]]; then cat "$ringway_toml"; fi
}
run_ringway() {  # run
    local d=$work/ringwayd.$1 port rc=0
    mkdir -p "$d"
    port=$(port_free)
    ringway_config "$d" "$port" "$rw_sink_port" >"$d/ringway.toml"
    sink_start "$d" "$rw_sink_port"
    (cg_join ringwayd; cd "$d" && exec "$rwd" --config "$d/ringway.toml") >"$d/ringwayd.log" 2>&1 &
    rw_pid=$!
    for _ in $(seq 1 600); do
        greets "$port" && break
        if ! kill -0 "$rw_pid" 2>/dev/null; then
            wait "$rw_pid" || rc=$?
            rw_pid=""
            echo "e2e: ringwayd failed to start (exit status $rc); its output:" >&2
            sed 's/^/  /' "$d/ringwayd.log" >&2
            echo "e2e: configuration: $d/ringway.toml$( ((keep)) || echo " (deleted on exit; --keep keeps it)")" >&2
            exit 1
        fi
        sleep 0.05
    done
    [[ -n $rw_pid ]] && greets "$port" ||
        { cat "$d/ringwayd.log" >&2; die "ringwayd is not listening on $port after 30 s"; }
    pipeline ringwayd "$d" "$port" "$1"
    kill -TERM "$rw_pid"
    for _ in $(seq 1 300); do kill -0 "$rw_pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$rw_pid" 2>/dev/null && echo "e2e: ringwayd did not stop within 15 s of SIGTERM; killed" >&2
    wait "$rw_pid" 2>/dev/null || true
    rw_pid=""
}

# ---- Postfix: a private instance (configuration and queue under the work
# directory, as bench/smtp_accept_bench.sh sets it up), relaying everything
# to its own ringway-sink on a fixed port. Started once, stopped on exit.
pf_sink_port=$(port_free)
pf_port=""
postfix_start() {
    pf_port=$(port_free)
    mkdir -p "$pf" "$work/pfq" "$work/pfd"
    chown postfix "$work/pfd"
    cp /etc/postfix/master.cf "$pf/master.cf"
    # smtpd on our port only, no chroot (Debian's chroot needs files copied in), no pickup.
    sed -i -E -e 's/^([a-z0-9:.]+[[:space:]]+(inet|unix|unix-dgram|fifo|pass)[[:space:]]+[-ny][[:space:]]+[-ny][[:space:]]+)y([[:space:]])/\1n\3/' \
        -e 's/^smtp      inet/#smtp      inet/' -e 's/^pickup /#pickup /' "$pf/master.cf"
    echo "127.0.0.1:$pf_port inet n - n - - smtpd" >>"$pf/master.cf"
    cat >"$pf/main.cf" <<EOT
compatibility_level = 3.6
queue_directory = $work/pfq
data_directory = $work/pfd
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.pf.bench.test
# Relay everything from loopback to the sink; nothing is local.
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# No local delivery: no alias or local recipient tables to open (Debian's
# defaults name /etc/aliases.db and NIS).
alias_maps =
alias_database =
local_recipient_maps =
relayhost = [127.0.0.1]:$pf_sink_port
default_transport = smtp
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
smtpd_client_connection_count_limit = 0
# No DNS on loopback: no reverse lookups of the client, no resolver waits;
# the relayhost is a bracketed IP, so the SMTP client looks nothing up.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
default_process_limit = 200
# One destination (the relayhost): do not throttle it below the load's connections.
default_destination_concurrency_limit = 50
smtp_destination_concurrency_limit = 50
smtp_connection_cache_on_demand = yes
EOT
    postfix -c "$pf" check >/dev/null 2>&1 || true
    pf_started=1
    # master daemonises from here; it and everything it forks stay in the cgroup.
    (cg_join postfix; exec postfix -c "$pf" start) >/dev/null 2>&1 || { tail "$work/postfix.log" 2>/dev/null >&2; die "postfix failed to start"; }
    wait_port "$pf_port" || { tail "$work/postfix.log" 2>/dev/null >&2; die "postfix is not listening on $pf_port"; }
}
run_postfix() {  # run
    local d=$work/postfix.$1
    mkdir -p "$d"
    sink_start "$d" "$pf_sink_port"
    pipeline postfix "$d" "$pf_port" "$1"
    # Whatever did not arrive must not reach the next run's sink.
    if [[ $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["missing"])' "$d/sink.json") != 0 ]]; then
        postsuper -c "$pf" -d ALL >/dev/null 2>&1 || true
    fi
}

((postfix)) && postfix_start
for k in $(seq 1 "$runs"); do
    ((ringway)) && run_ringway "$k"
    ((postfix)) && run_postfix "$k"
done
[[ -n $results_out ]] && cat "$results" >>"$results_out"

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(name, key):
    v = [r[key] for r in rows if r["name"] == name and r[key] is not None]
    return statistics.median(v) if v else None
names = [n for n in ("ringwayd", "postfix") if any(r["name"] == n for r in rows)]
runs = max(r["run"] for r in rows)
print(f"\nsummary ({'median of ' + str(runs) + ' runs' if runs > 1 else '1 run'}):")
m = {}
for n in names:
    a, dl = med(n, "accept_msg_per_s"), med(n, "deliver_msg_per_s")
    m[n] = (a, dl)
    lost = sum(r["missing"] for r in rows if r["name"] == n)
    dup = sum(r["duplicates"] for r in rows if r["name"] == n)
    cor = sum(r["corrupt"] for r in rows if r["name"] == n)
    und = sum(not r["complete"] for r in rows if r["name"] == n)
    dl_s = f"{dl:8.0f} msg/s = {dl * 3600:13,.0f} msg/h" if dl is not None else "     n/a (not drained)"
    print(f"  {n:9} accepted {a:8.0f} msg/s = {a * 3600:13,.0f} msg/h   delivered {dl_s}   "
          f"e2e p50 {med(n, 'e2e_p50_ms'):.0f} ms p99 {med(n, 'e2e_p99_ms'):.0f} ms   "
          f"lost {lost}  duplicated {dup}  corrupt {cor}" + (f"  NOT DRAINED in {und} run(s)" if und else ""))
    c = med(n, "cpu_ms_per_msg")
    print(f"  {'':9} " + (f"cpu {c:.3f} ms/msg (sink {med(n, 'sink_cpu_ms_per_msg'):.3f}, "
                          f"load {med(n, 'load_cpu_ms_per_msg'):.3f} ms/msg)" if c is not None else "cpu n/a")
          + f"   sink: {med(n, 'sink_transactions') / max(1, med(n, 'sink_received')):.2f} transactions per message")
if len(names) == 2 and all(m[n][0] for n in names):
    ra = m["ringwayd"][0] / m["postfix"][0]
    rd = (m["ringwayd"][1] / m["postfix"][1]) if m["ringwayd"][1] and m["postfix"][1] else None
    cr, cp = med("ringwayd", "cpu_ms_per_msg"), med("postfix", "cpu_ms_per_msg")
    print(f"  ringwayd / postfix: accepted {ra:.1f}x, delivered " + (f"{rd:.1f}x" if rd else "n/a")
          + (f", cpu per message {cr / cp:.3f}x (Postfix uses {cp / cr:.1f}x the CPU per message)" if cr and cp else ""))
bad = any(r["missing"] or r["corrupt"] or not r["complete"] for r in rows)
if bad:
    print("FAILED: mail was lost, corrupted or not delivered within the drain timeout", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
