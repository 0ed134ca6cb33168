#!/usr/bin/env bash
# Durable accept rate: Postfix's smtp-source drives ringwayd and, in the same
# run, Debian's Postfix configured here in a private directory so that it
# accepts and queues the same load (smtpd + cleanup writing and fsyncing a
# queue file; the queue manager is disabled so nothing is delivered, like
# ringwayd, whose delivery is not part of this measurement). Runs alternate;
# medians of msg/s are printed with their ratio.
#
#   bench/smtp_accept_bench.sh [BUILD_DIR] [RUNS] [MESSAGES]
set -euo pipefail
build=$(realpath "${1:-build/release}")
runs=${2:-3}
msgs=${3:-20000}
work=$(mktemp -d "$PWD/accept_bench.XXXXXX")
chmod 755 "$work"  # the postfix user must reach its queue
rw_pid=""
cleanup() {
    [[ -n $rw_pid ]] && kill "$rw_pid" 2>/dev/null && wait "$rw_pid" 2>/dev/null
    postfix -c "$work/postfix" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
command -v smtp-source >/dev/null || { echo "smtp-source missing: apt-get install postfix" >&2; exit 1; }
port_free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# ---- ringwayd
rw_port=$(port_free)
cat >"$work/ringway.toml" <<EOT
[runtime]
mail_log = ""
[spool]
path = "$work/spool.img"
size = "4G"
[[listener]]
name = "bench"
port = $rw_port
max_connections_per_ip = 10000
[smtp]
hostname = "mx.bench.test"
accepted_domains = ["local.test"]
relay_networks = ["127.0.0.0/8"]
# Accepting only, as Postfix with defer_transports: no route and a resolver
# on a closed loopback port, so mail stays queued and no query leaves.
[dns]
servers = ["127.0.0.1:9"]
tries = 1
[delivery]
first_retry_ms = 86400000
max_retry_ms = 86400000
EOT
"$build/admin/ringwayd" --config "$work/ringway.toml" >"$work/ringwayd.log" 2>&1 &
rw_pid=$!

# ---- postfix, private instance
pf_port=$(port_free)
pf=$work/postfix
mkdir -p "$pf" "$work/pfq" "$work/pfd"
chown postfix "$work/pfd"
cp /etc/postfix/master.cf "$pf/master.cf"
# smtpd on our port only, no chroot (Debian's chroot needs files copied in).
# The queue manager runs (cleanup notifies it of every new queue file) but
# defer_transports keeps it from delivering: accept and queue, nothing else.
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
mydestination =
relay_domains = local.test
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = $work/postfix.log
maillog_file_prefixes = $work
smtpd_client_connection_count_limit = 0
# No DNS on loopback: no reverse lookups of the client, no resolver waits.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
defer_transports = relay, smtp
default_process_limit = 200
EOT
postfix -c "$pf" check >/dev/null 2>&1 || true
postfix -c "$pf" start >/dev/null 2>&1 || { echo "postfix failed to start:"; tail "$work/postfix.log" 2>/dev/null; exit 1; }

# ---- the instrument's ceiling: smtp-source into Postfix's smtp-sink
sink_port=$(port_free)
smtp-sink -c -u postfix "127.0.0.1:$sink_port" 1000 >/dev/null 2>&1 &
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null; cleanup' EXIT

wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_port "$rw_port" || { cat "$work/ringwayd.log"; exit 1; }
wait_port "$pf_port" || { echo "postfix not listening"; exit 1; }

out=$work/results
: >"$out"
run() {  # name port reuse
    local flags=(-s 50 -m "$msgs" -l 4096 -f load@source.test -t sink@local.test)
    [[ $3 == reuse ]] && flags+=(-d)
    local t0 t1
    t0=$(date +%s.%N)
    smtp-source "${flags[@]}" "127.0.0.1:$2" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$1 $3 $(python3 -c "print(round($msgs/($t1-$t0)))")" >>"$out"
}
wait_port "$sink_port" || { echo "smtp-sink not listening"; exit 1; }
for reuse in reuse single; do
    for _ in $(seq 1 "$runs"); do
        run ringwayd "$rw_port" "$reuse"
        run postfix "$pf_port" "$reuse"
        run smtp-sink "$sink_port" "$reuse"
    done
done
queued=$(find "$work/pfq/incoming" "$work/pfq/active" "$work/pfq/deferred" -type f | wc -l)
echo "machine: $(nproc) CPUs, kernel $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
echo "load: smtp-source, 50 sessions, $msgs messages of 4 KiB, 1 recipient; $runs alternating runs each"
echo "postfix holds $queued queue files (incoming, active, deferred)"
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for mode in ("reuse", "single"):
    rw = [int(r[2]) for r in rows if r[0] == "ringwayd" and r[1] == mode]
    pf = [int(r[2]) for r in rows if r[0] == "postfix" and r[1] == mode]
    sk = [int(r[2]) for r in rows if r[0] == "smtp-sink" and r[1] == mode]
    label = "connection reuse (-d)" if mode == "reuse" else "one message per connection"
    print(f"{label}:")
    print(f"  ringwayd (durable)   median {statistics.median(rw):7.0f} msg/s  ({min(rw)}..{max(rw)})")
    print(f"  postfix  (durable)   median {statistics.median(pf):7.0f} msg/s  ({min(pf)}..{max(pf)})")
    print(f"  smtp-sink (no disk)  median {statistics.median(sk):7.0f} msg/s  ({min(sk)}..{max(sk)})  = the client's ceiling")
    print(f"  ringwayd / postfix = {statistics.median(rw)/statistics.median(pf):.1f}x;  "
          f"ringwayd / smtp-sink = {statistics.median(rw)/statistics.median(sk):.2f}")
PY
