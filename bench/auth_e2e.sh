#!/usr/bin/env bash
# End to end with sender authentication: what SPF, DKIM verification and
# DMARC cost per message on inbound mail, and DKIM signing on relayed mail,
# against the same relay without them, in the same run. Each variant is one
# bench/e2e.sh run (ringway-load -> ringwayd -> ringway-sink, CPU per
# message from ringwayd's cgroup); the variants alternate, --runs times,
# and the medians and the differences between them (each stage's cost)
# are printed.
#
#   bench/auth_e2e.sh BUILD_DIR [--runs K] [--count N] [--mix M] [--connections C]
#
# Inbound variants (the load's clients may not relay; every message is
# DKIM-signed by ringway-load with an RSA-2048 key of sender.bench.test, the
# From: and MAIL FROM domain, whose SPF, DKIM key and DMARC p=reject rua=
# records a local dnsmasq serves with a TTL of an hour, so ringwayd's
# resolver answers from its cache after the first message):
#   in-plain     [authentication] all off
#   in-spf       SPF of MAIL FROM and of the HELO name
#   in-spf-dkim  + DKIM verification
#   in-full      + DMARC (with the aggregate-report record) and ARC validation
# Relay variants (the clients may relay; the load does not sign):
#   relay-plain  no signing
#   relay-ed25519  DKIM-signed by ringwayd with an Ed25519 key
#   relay-rsa      DKIM-signed by ringwayd with an RSA-2048 key
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
work=$(mktemp -d "$PWD/auth_e2e.XXXXXX")
dns_pid=""
cleanup() {
    [[ -n $dns_pid ]] && kill "$dns_pid" 2>/dev/null && wait "$dns_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

domain=sender.bench.test
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/load.pem" 2>/dev/null
mkdir -p "$work/keys.ed25519" "$work/keys.rsa"
openssl genpkey -algorithm ED25519 -out "$work/keys.ed25519/gw._domainkey.$domain.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys.rsa/gw._domainkey.$domain.pem" 2>/dev/null
# The load's public key as a DKIM record, in 255-byte character-strings.
pub=$(openssl pkey -in "$work/load.pem" -pubout -outform DER 2>/dev/null | base64 -w0)
rec="v=DKIM1; k=rsa; p=$pub"
key_txt=""
for ((i = 0; i < ${#rec}; i += 250)); do key_txt+=",${rec:i:250}"; done

port=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
: >"$work/empty.conf"
/usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --port="$port" --listen-address=127.0.0.1 \
    --bind-interfaces --conf-file="$work/empty.conf" --local=/test/ --local-ttl=3600 --neg-ttl=3600 \
    --log-facility=- --ptr-record=1.0.0.127.in-addr.arpa,load.$domain --host-record=load.$domain,127.0.0.1 \
    "--txt-record=$domain,v=spf1 ip4:127.0.0.0/8 -all" \
    "--txt-record=load._domainkey.$domain$key_txt" \
    "--txt-record=_dmarc.$domain,v=DMARC1; p=reject; rua=mailto:dmarc@$domain" \
    >"$work/dnsmasq.log" 2>&1 &
dns_pid=$!
sleep 0.5
kill -0 "$dns_pid" || { cat "$work/dnsmasq.log" >&2; exit 1; }

variant_toml() {  # name
    local t=$work/$1.toml
    {
        echo "[dns]"
        echo "servers = [\"127.0.0.1:$port\"]"
        echo "[authentication]"
        case $1 in
        in-plain) echo "spf = false"; echo "spf_helo = false"; echo "dkim_verify = false"; echo "dmarc = false"
                  echo "arc_verify = false" ;;
        in-spf) echo "dkim_verify = false"; echo "dmarc = false"; echo "arc_verify = false" ;;
        in-spf-dkim) echo "dmarc = false"; echo "arc_verify = false" ;;
        in-full) ;;
        relay-plain) echo "dkim_sign = false" ;;
        relay-ed25519) echo "dkim_key_dir = \"$work/keys.ed25519\"" ;;
        relay-rsa) echo "dkim_key_dir = \"$work/keys.rsa\"" ;;
        esac
    } >"$t"
    echo "$t"
}

variants=(in-plain in-spf in-spf-dkim in-full relay-plain relay-ed25519 relay-rsa)
for k in $(seq 1 "$runs"); do
    for v in "${variants[@]}"; do
        args=(--runs 1 --count "$count" --mix "$mix" --connections "$conns" --ringway-toml "$(variant_toml "$v")"
              --results "$work/$v.jsonl" --load-arg --from --load-arg "load{c}@$domain" --load-arg --ehlo
              --load-arg "$domain")
        if [[ $v == in-* ]]; then
            args+=(--relay-networks '[]' --accepted-domains '["d1.localhost"]'
                   --load-arg --dkim-key --load-arg "$work/load.pem" --load-arg --dkim-selector --load-arg load)
        fi
        echo "== run $k: $v"
        "$here/e2e.sh" "$build" "${args[@]}" | grep -E "^run|cpu|lost" || { echo "$v failed" >&2; exit 1; }
    done
done

python3 - "$work" "${variants[@]}" <<'PY'
import json, statistics, sys
work, variants = sys.argv[1], sys.argv[2:]
med = {}
print("\nsummary (medians):")
print(f"  {'variant':14} {'accepted msg/s':>14} {'delivered msg/s':>15} {'cpu ms/msg':>10} {'(runs)':>13} "
      f"{'load ms/msg':>11}")
for v in variants:
    rows = [json.loads(l) for l in open(f"{work}/{v}.jsonl")]
    def m(key):
        xs = [r[key] for r in rows if r[key] is not None]
        return statistics.median(xs) if xs else float("nan")
    med[v] = m("cpu_ms_per_msg")
    bad = sum(r["missing"] + r["corrupt"] for r in rows) + sum(not r["complete"] for r in rows)
    cpus = sorted(r["cpu_ms_per_msg"] for r in rows if r["cpu_ms_per_msg"] is not None)
    spread = f"{cpus[0]:.3f}-{cpus[-1]:.3f}" if cpus else "n/a"
    print(f"  {v:14} {m('accept_msg_per_s'):14.0f} {m('deliver_msg_per_s'):15.0f} {med[v]:10.3f} {spread:>13} "
          f"{m('load_cpu_ms_per_msg'):11.3f}" + ("  LOST/CORRUPT/UNDRAINED" if bad else ""))
print("\nper stage (difference of medians, ms of ringwayd CPU per message):")
for a, b, what in (("in-plain", "in-spf", "SPF (MAIL FROM + HELO)"),
                   ("in-spf", "in-spf-dkim", "DKIM verification (RSA-2048)"),
                   ("in-spf-dkim", "in-full", "DMARC + ARC validation + report record"),
                   ("in-plain", "in-full", "all of inbound authentication"),
                   ("relay-plain", "relay-ed25519", "DKIM signing, Ed25519"),
                   ("relay-plain", "relay-rsa", "DKIM signing, RSA-2048")):
    print(f"  {what:40} {med[b] - med[a]:+.3f}  ({med[b] / med[a]:.2f}x of {a})")
PY
