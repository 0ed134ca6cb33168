#!/usr/bin/env bash
# Spool benchmark on a file and on a loop device over the same kind of file,
# with the device's raw limits measured in the same run (bench/spool_bench.cc).
#   bench/spool_bench.sh [BUILD_DIR] [RUNS] [SECONDS]
set -euo pipefail
build=${1:-build/release}
runs=${2:-3}
secs=${3:-2}
bin=$build/bench/spool_bench
[[ -x $bin ]] || { echo "build first: $bin" >&2; exit 1; }
img=$(mktemp "$PWD/spool_bench.XXXXXX")
loop=""
trap '[[ -n $loop ]] && losetup -d "$loop"; rm -f "$img"' EXIT
fallocate -l 2G "$img"
echo "== file: $img"
"$bin" --path "$img" --runs "$runs" --seconds "$secs"
if loop=$(losetup -f --show "$img" 2>/dev/null); then
    echo "== loop device: $loop (over the same file)"
    "$bin" --path "$loop" --runs "$runs" --seconds "$secs" --recover-messages 0
else
    echo "== loop device: skipped (losetup failed; needs root)"
fi
