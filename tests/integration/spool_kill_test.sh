#!/usr/bin/env bash
# Real-process crash test: a writer commits messages to a spool on a real
# file (and on a loop device, when we may create one) and is killed with
# SIGKILL at random moments; after each kill the spool is recovered and
# checked against everything the writer reported acknowledged.
#   spool_kill_test.sh TOOLS_DIR [ROUNDS] [file|loop]
set -euo pipefail
tools=$1
rounds=${2:-8}
backend=${3:-file}
work=$(mktemp -d "${TMPDIR:-/tmp}/rw_kill.XXXXXX")
loopdev=""
cleanup() {
    [[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

img=$work/spool.img
# On a real file system, not tmpfs: O_DIRECT and fdatasync must mean something.
img=$(mktemp "$PWD/rw_kill_img.XXXXXX")
trap 'cleanup; rm -f "$img"' EXIT
truncate -s 96M "$img"
path=$img
if [[ $backend == loop ]]; then
    loopdev=$(losetup -f --show "$img") || { echo "FAIL: cannot create a loop device (need root)"; exit 1; }
    path=$loopdev
fi
log=$work/acks.log
: >"$log"
"$tools/spool_writer" --path "$path" --format --seconds 0.2 >>"$log"
for round in $(seq 1 "$rounds"); do
    "$tools/spool_writer" --path "$path" --seconds 30 >>"$log" &
    pid=$!
    sleep "0.$(( (RANDOM % 8) + 2 ))"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    if ! "$tools/spool_check" --path "$path" --log "$log"; then
        echo "FAIL: round $round on $backend: the recovered spool lost or corrupted acknowledged mail"
        exit 1
    fi
done
acks=$(grep -c '^ACK' "$log" || true)
if (( acks < rounds * 10 )); then
    echo "FAIL: only $acks acknowledgements in $rounds rounds: the writer did not really run"
    exit 1
fi
echo "ok: $rounds kills on $backend, $acks acknowledged messages checked"
