#!/usr/bin/env bash
# End to end with content rules: what the rules cost per message against
# the same relay without them, in the same run. Each variant is one
# bench/e2e.sh run (ringway-load -> ringwayd -> ringway-sink, CPU per
# message from ringwayd's cgroup); the variants alternate, --runs times,
# and the medians and their differences are printed.
#
#   bench/rules_e2e.sh BUILD_DIR [--runs K] [--count N] [--mix M] [--connections C]
#
# Variants (relayed mail, as ringway-load sends it):
#   plain       no [[content_rule]]
#   rules-100   100 rules, 200 patterns
#   rules-1000  1,000 rules, 2,000 patterns
# Each generated rule tests the decoded body and the Subject
# ('body ~ /wordN\s+termN/ or subject ~ /subjN(x|y)/'), none of which the
# load's messages hold (they pass, as most mail does), plus one rule on
# attachment names, so that every message is parsed as MIME, its parts
# typed by libmagic and its text matched; the last rule adds a header to
# every message (add-header), so each message also takes the header edit.
#
# Defaults: 3 runs, 10000 messages of 4 KiB, 50 connections, 1 recipient.
set -euo pipefail
[[ $# -ge 1 && $1 != -* ]] || { sed -n '/^#   bench/,/^#$/p' "$0" >&2; exit 2; }
build=$(realpath "$1")
shift
runs=3 count=10000 mix=4k conns=50
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) runs=$2 ;;
    --count) count=$2 ;;
    --mix) mix=$2 ;;
    --connections) conns=$2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "$PWD/rules_e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT

variant_toml() {  # name
    local t=$work/$1.toml n=0
    case $1 in
    plain) n=0 ;;
    rules-100) n=100 ;;
    rules-1000) n=1000 ;;
    esac
    python3 "$here/content_rules.py" "$n" >"$t"
    echo "$t"
}

variants=(plain rules-100 rules-1000)
for k in $(seq 1 "$runs"); do
    for v in "${variants[@]}"; do
        echo "== run $k: $v"
        "$here/e2e.sh" "$build" --runs 1 --count "$count" --mix "$mix" --connections "$conns" \
            --ringway-toml "$(variant_toml "$v")" --results "$work/$v.jsonl" | grep -E "^run|cpu|lost" ||
            { echo "$v failed" >&2; exit 1; }
    done
done

python3 - "$work" "${variants[@]}" <<'PY'
import json, statistics, sys
work, variants = sys.argv[1], sys.argv[2:]
med = {}
print("\nsummary (medians):")
print(f"  {'variant':12} {'accepted msg/s':>14} {'delivered msg/s':>15} {'cpu ms/msg':>10} {'(runs)':>13}")
for v in variants:
    rows = [json.loads(l) for l in open(f"{work}/{v}.jsonl")]
    def m(key):
        xs = [r[key] for r in rows if r[key] is not None]
        return statistics.median(xs) if xs else float("nan")
    med[v] = m("cpu_ms_per_msg")
    bad = sum(r["missing"] + r["corrupt"] for r in rows) + sum(not r["complete"] for r in rows)
    cpus = sorted(r["cpu_ms_per_msg"] for r in rows if r["cpu_ms_per_msg"] is not None)
    spread = f"{cpus[0]:.3f}-{cpus[-1]:.3f}" if cpus else "n/a"
    print(f"  {v:12} {m('accept_msg_per_s'):14.0f} {m('deliver_msg_per_s'):15.0f} {med[v]:10.3f} {spread:>13}"
          + ("  LOST/CORRUPT/UNDRAINED" if bad else ""))
print("\ncost of the rules (difference of medians, ms of ringwayd CPU per message):")
for v in variants[1:]:
    print(f"  {v:12} {med[v] - med['plain']:+.3f}  ({med[v] / med['plain']:.2f}x of plain)")
PY
