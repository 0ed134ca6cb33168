#!/usr/bin/env bash
# End to end through the filtering stack: what content rules, sender groups
# and the external scanners (clamd, rspamd) cost per message against the
# same relay without them, in the same run. Each variant is one bench/e2e.sh
# run (ringway-load -> ringwayd -> ringway-sink, CPU per message from
# ringwayd's cgroup); the variants alternate, --runs times, and the medians,
# their spreads and the differences are printed, with the CPU per message
# of clamd and rspamd themselves: how much of the total is the scanners.
#
#   bench/scan_e2e.sh BUILD_DIR [--runs K] [--count N] [--mix M] [--connections C] [--check N]
#
# Variants (relayed mail, as ringway-load sends it), the first four each
# adding to the one before:
#   plain     no filtering
#   rules     the content rules of bench/rules_e2e.sh's rules-100
#             (bench/content_rules.py 100: 101 rules, 199 patterns)
#   groups    + sender groups: [screening] dnsbl_sites and, in this order,
#             a group of 100 networks (TRUSTED) the load is not in,
#             RELAYLIST (RELAYED) for 127.0.0.0/8, which holds the load,
#             and BLOCKLIST (BLOCKED) for a DNSBL score of 2 or more. The
#             load is placed by address before the walk reaches a group
#             that needs DNS, so no DNSBL or PTR lookup is made: what is
#             measured is the table walk. DNSBL lookups are NOT measured
#             here (the bench has no DNS server for them).
#   scanners  + [antivirus] clamd and [antispam] rspamd (Debian's, started
#             once for the whole run by bench/scan_daemons.py through
#             tests/integration/scanners.py: clamd with a two-signature
#             database, rspamd with its stock rules and one normal worker;
#             RELAYED scans with both), on_failure = "tempfail", so that a
#             failed scan shows as mail the load had refused (451) instead
#             of passing unscanned.
#   groups-paced  groups again, the load in open loop at the rate the
#             scanners run of the same round was accepted at (rspamd's one
#             worker sets that pace): ringwayd's CPU per message grows as the
#             rate falls (fewer events per wakeup), so the scanners' cost
#             inside ringwayd is scanners - groups-paced, and the rest of
#             scanners - groups is the slower pace itself. (Open loop is not
#             the scanners run's 50 connections waiting on rspamd: the same
#             rate, not the same concurrency.)
# Scanners' CPU: clamd's process and rspamd's process tree (main, workers,
# hs_helper, reaped children), /proc/PID/stat utime + stime read just
# before and just after each e2e.sh run (which includes ringwayd's start
# and stop, when the scanners idle: the same figure for the variants that
# do not scan shows that idle cost), per accepted message. rspamd's own DNS
# lookups (its stock rules ask about the sender's domain and the like) go
# to the system's resolver, and their cost is in rspamd's figure.
#
# Before the measured runs, one check run of the scanners variant (--check
# N messages, default 300; 0: none) writes ringwayd's mail log (off in the
# measured runs, as e2e.sh has it) and points ringwayd's [dns] at a server
# that counts queries and never answers: it must show a clamd and an rspamd
# scan line for every message received, none failed, every connection in
# RELAYLIST, and no DNS query; otherwise the script stops there.
#
# The script stops when ringwayd, ringway-load or ringway-sink changes on
# disk during the run (a build in progress): the variants must run the same
# binaries.
#
# Defaults: 3 runs, 10000 messages of 4 KiB, 50 connections, 1 recipient.
set -euo pipefail
[[ $# -ge 1 && $1 != -* ]] || { sed -n '/^#   bench/,/^#$/p' "$0" >&2; exit 2; }
build=$(realpath "$1")
shift
runs=3 count=10000 mix=4k conns=50 check=300
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) runs=$2 ;;
    --count) count=$2 ;;
    --mix) mix=$2 ;;
    --connections) conns=$2 ;;
    --check) check=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
# The binaries, as they are now: every variant must run the same ones.
binaries() { stat -c '%n %s %Y' "$build"/admin/ringwayd "$build"/bench/ringway-load "$build"/bench/ringway-sink 2>/dev/null || true; }
binaries0=$(binaries)
work=$(mktemp -d "$PWD/scan_e2e.XXXXXX")
scan_pid="" scan_in="" scan_out=""
cleanup() {
    if [[ -n $scan_pid ]]; then
        # stdin's end stops the scanners; a signal, should the helper not read it yet.
        [[ -n $scan_in ]] && exec {scan_in}>&-
        for _ in $(seq 1 100); do kill -0 "$scan_pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$scan_pid" 2>/dev/null || true
        wait "$scan_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- clamd and rspamd, for the whole run.
echo "scanners: starting clamd and rspamd (tests/integration/scanners.py)"
coproc SCAN { exec python3 "$here/scan_daemons.py"; }
scan_pid=$SCAN_PID scan_out=${SCAN[0]} scan_in=${SCAN[1]}
read -r -t 600 tag clamd_sock rspamd_port clamd_pid rspamd_pid dns_port <&"$scan_out" && [[ $tag == ready ]] ||
    { echo "the scanners did not start" >&2; exit 1; }
echo "scanners: clamd $clamd_sock (pid $clamd_pid), rspamd 127.0.0.1:$rspamd_port (main pid $rspamd_pid)"
scan_cpu() {  # -> "CLAMD_NS RSPAMD_NS"
    local t a b n
    echo cpu >&"$scan_in"
    read -r -t 30 t a b n <&"$scan_out" && [[ $t == cpu ]] || { echo "the scanners' helper did not answer" >&2; exit 1; }
    echo "$a $b"
}

variant_toml() {  # name
    local t=$work/$1.toml
    case $1 in
    plain) : >"$t" ;;
    rules) python3 "$here/content_rules.py" 100 >"$t" ;;
    groups)
        variant_toml rules >/dev/null
        cp "$work/rules.toml" "$t"
        python3 - >>"$t" <<'PY'
print('[screening]\n'
      '# For BLOCKLIST below; never asked here: the load is placed by RELAYLIST first.\n'
      'dnsbl_sites = ["bl.bench.test*2", "bl2.bench.test=127.0.0.[2..11]", '
      '"wl.bench.test=127.0.[0..255].[1..3]*-2"]\n')
nets = ", ".join(f'"10.{i // 256}.{i % 256}.0/24"' for i in range(100))
print(f'[[sender_group]]\nname = "partners"\npolicy = "TRUSTED"\nnetworks = [{nets}]\n')
print('[[sender_group]]\nname = "RELAYLIST"\npolicy = "RELAYED"\nnetworks = ["127.0.0.0/8"]\n')
print('[[sender_group]]\nname = "BLOCKLIST"\npolicy = "BLOCKED"\ndnsbl_min_score = 2\n')
PY
        ;;
    scanners)
        variant_toml groups >/dev/null
        cp "$work/groups.toml" "$t"
        printf '[antivirus]\nclamd = "%s"\non_failure = "tempfail"\n\n[antispam]\nrspamd = "127.0.0.1:%s"\non_failure = "tempfail"\n\n' \
            "$clamd_sock" "$rspamd_port" >>"$t"
        ;;
    esac
    echo "$t"
}

e2e() {  # the coprocess's pipes are not e2e.sh's
    "$here/e2e.sh" "$build" --runs 1 --mix "$mix" --connections "$conns" "$@" {scan_in}>&- {scan_out}<&-
}

# ---- the check: scans happen, every connection is placed without DNS.
if ((check > 0)); then
    echo "== check: $check messages, scanners variant, mail log on, ringwayd's DNS a counter that never answers"
    { cat "$(variant_toml scanners)"; printf '[dns]\nservers = ["127.0.0.1:%s"]\n' "$dns_port"; } >"$work/check.toml"
    e2e --count "$check" --ringway-toml "$work/check.toml" --mail-log "$work/check.mail.jsonl" \
        --results "$work/check.jsonl" | grep -E "^run|cpu|lost" || { echo "the check run failed" >&2; exit 1; }
    echo dns >&"$scan_in"
    read -r -t 30 -a dns <&"$scan_out" && [[ ${dns[0]} == dns ]] ||
        { echo "the scanners' helper did not answer" >&2; exit 1; }
    python3 - "$work/check.mail.jsonl" "$work/check.jsonl" "${dns[@]:1}" <<'PY' || exit 1
import collections, json, statistics, sys
log, res, dns_n, dns_names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
ev = [json.loads(l) for l in open(log)]
acc = json.loads(open(res).readline())["accepted"]
received = sum(e["event"] == "received" for e in ev)
scans = collections.Counter((e["scanner"], e["result"], e.get("action", "")) for e in ev if e["event"] == "scan")
groups = collections.Counter((e["group"], e["matched"]) for e in ev if e["event"] == "sender_group")
other = collections.Counter(e["event"] for e in ev if e["event"] in ("reject", "content", "screen"))
us = collections.defaultdict(list)
reused = collections.Counter()
for e in ev:
    if e["event"] == "scan":
        us[e["scanner"]].append(e["us"] / 1000)
        reused[e["scanner"]] += bool(e.get("reused"))
print(f"  mail log: {received} received (the load: {acc} accepted); "
      + "; ".join(f"{s} {r}{' (' + a + ')' if a else ''} {n}" for (s, r, a), n in sorted(scans.items())))
for s, xs in sorted(us.items()):
    xs.sort()
    print(f"  {s}: answer {statistics.median(xs):.1f} ms median, {xs[int(0.99 * (len(xs) - 1))]:.1f} ms p99 "
          f"(from taking the connection, as ringwayd waits); on a pooled connection: {reused[s]} of {len(xs)}")
print("  sender groups: " + "; ".join(f"{g} ({m}) {n} connections" for (g, m), n in sorted(groups.items()))
      + f"; DNS queries from ringwayd: {dns_n}" + (f" ({', '.join(dns_names)})" if dns_n else ""))
if other:
    print("  also: " + ", ".join(f"{k} {n}" for k, n in sorted(other.items())))
ok = {s: sum(n for (sc, r, _), n in scans.items() if sc == s and r in ("clean", "infected", "scanned"))
      for s in ("clamd", "rspamd")}
failed = sum(n for (_, r, _), n in scans.items() if r not in ("clean", "infected", "scanned"))
bad = []
if not received or received != acc:
    bad.append(f"{received} received against {acc} accepted")
for s, n in ok.items():
    if n < received:
        bad.append(f"{s} scanned {n} of {received} messages")
if failed:
    bad.append(f"{failed} scans failed or skipped")
if set(g for g, _ in groups) != {"RELAYLIST"}:
    bad.append("connections outside RELAYLIST")
if dns_n:
    bad.append(f"ringwayd asked {dns_n} DNS queries")
if bad:
    print("CHECK FAILED: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
print("  check passed: every message scanned by both, no DNS asked")
PY
fi

# ---- the measured runs.
variants=(plain rules groups scanners groups-paced)
for k in $(seq 1 "$runs"); do
    for v in "${variants[@]}"; do
        args=()
        if [[ $v == groups-paced ]]; then
            rate=$(python3 -c 'import json,sys;print(max(1, round([json.loads(l) for l in open(sys.argv[1])][-1]["accept_msg_per_s"])))' \
                "$work/scanners.jsonl")
            ((rate >= 10)) || { echo "the scanners run was accepted at $rate msg/s: no pace to follow" >&2; exit 1; }
            args=(--rate "$rate/s")
            echo "== run $k: $v (open loop at $rate msg/s, the scanners run's rate)"
        else
            echo "== run $k: $v"
        fi
        toml=$(variant_toml "${v%-paced}")
        c0=$(scan_cpu)
        e2e --count "$count" --ringway-toml "$toml" --results "$work/$v.jsonl" "${args[@]}" | grep -E "^run|cpu|lost" ||
            { echo "$v failed" >&2; exit 1; }
        c1=$(scan_cpu)
        echo "$c0 $c1" >>"$work/$v.scan"
        [[ $(binaries) == "$binaries0" ]] ||
            { echo "ringwayd, ringway-load or ringway-sink changed during the run (rebuilt?): start again" >&2; exit 1; }
        python3 - "$work/$v.jsonl" "$c0 $c1" <<'PY'
import json, sys
acc = [json.loads(l) for l in open(sys.argv[1])][-1]["accepted"]
a0, b0, a1, b1 = map(int, sys.argv[2].split())
print(f"{'':12}scanners' own cpu: clamd {(a1 - a0) / 1e6 / acc:.3f} ms/msg, rspamd {(b1 - b0) / 1e6 / acc:.3f} ms/msg"
      f" (their processes, over the whole e2e.sh run)" if acc else "")
PY
    done
done

python3 - "$work" "${variants[@]}" <<'PY'
import json, statistics, sys
work, variants = sys.argv[1], sys.argv[2:]
rows, med = {}, {}
for v in variants:
    rs = [json.loads(l) for l in open(f"{work}/{v}.jsonl")]
    for r, line in zip(rs, open(f"{work}/{v}.scan")):
        a0, b0, a1, b1 = map(int, line.split())
        acc = r["accepted"]
        r["clamd"] = (a1 - a0) / 1e6 / acc if acc else None
        r["rspamd"] = (b1 - b0) / 1e6 / acc if acc else None
        r["total"] = (r["cpu_ms_per_msg"] + r["clamd"] + r["rspamd"]
                      if None not in (r["cpu_ms_per_msg"], r["clamd"]) else None)
    rows[v] = rs


def stat(v, key):
    xs = sorted(r[key] for r in rows[v] if r[key] is not None)
    return (statistics.median(xs), xs[0], xs[-1]) if xs else (float("nan"),) * 3


def cell(v, key, fmt, width):
    m, lo, hi = stat(v, key)
    return f"{m:{fmt}} ({lo:{fmt}}-{hi:{fmt}})".rjust(width)


n = max(len(r) for r in rows.values())
print(f"\nsummary (medians of {n} run{'s' if n > 1 else ''}, min-max in brackets; ms of CPU per accepted message):")
print(f"  {'variant':12} {'accepted msg/s':>20} {'delivered msg/s':>20} {'ringwayd ms/msg':>22} "
      f"{'clamd ms/msg':>22} {'rspamd ms/msg':>22} {'all ms/msg':>10}")
for v in variants:
    bad = sum(r["missing"] + r["corrupt"] for r in rows[v]) + sum(not r["complete"] for r in rows[v])
    refused = sum(r["rejected"] + r["failed"] for r in rows[v])
    for key in ("cpu_ms_per_msg", "clamd", "rspamd", "total"):
        med[v, key] = stat(v, key)[0]
    print(f"  {v:12} {cell(v, 'accept_msg_per_s', '.0f', 20)} {cell(v, 'deliver_msg_per_s', '.0f', 20)} "
          f"{cell(v, 'cpu_ms_per_msg', '.3f', 22)} {cell(v, 'clamd', '.3f', 22)} {cell(v, 'rspamd', '.3f', 22)} "
          f"{med[v, 'total']:10.3f}"
          + ("  LOST/CORRUPT/UNDRAINED" if bad else "")
          + (f"  REFUSED {refused} (rejected or failed at the load; a failed scan is a 451)" if refused else ""))
print("  (clamd and rspamd in the variants that do not scan: their idle CPU over the same windows)")


def diff(a, b, key="cpu_ms_per_msg"):
    x, y = med[a, key], med[b, key]
    return f"{y - x:+.3f}  ({y / x:.2f}x of {a})"


print("\nringwayd's CPU per message against plain (difference of medians, ms):")
for v in variants[1:]:
    print(f"  {v:12} {diff('plain', v)}")
print("\nper stage (difference of medians, ms):")
for a, b, what in (("plain", "rules", "content rules, rules-100 (ringwayd)"),
                   ("rules", "groups", "sender groups, table walk, no DNS (ringwayd)"),
                   ("groups", "groups-paced", "the scanners' slower pace alone (ringwayd)"),
                   ("groups-paced", "scanners", "streaming to clamd and rspamd, same rate (ringwayd)")):
    print(f"  {what:52} {diff(a, b)}")
c, r, t = med["scanners", "clamd"], med["scanners", "rspamd"], med["scanners", "total"]
print(f"  {'clamd itself':52} {c:+.3f}")
print(f"  {'rspamd itself':52} {r:+.3f}")
print(f"\nthe scanners variant: {t:.3f} ms of CPU per message in all (ringwayd {med['scanners', 'cpu_ms_per_msg']:.3f},"
      f" clamd {c:.3f}, rspamd {r:.3f}); the external scanners are {100 * (c + r) / t:.0f} % of it; "
      f"{t / med['plain', 'cpu_ms_per_msg']:.1f}x plain relay's ringwayd CPU")
print("DNSBL lookups are not measured: the bench has no DNS server for them; the load is placed by network.")
PY
