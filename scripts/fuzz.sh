#!/usr/bin/env bash
# A short, bounded libFuzzer campaign: builds the fuzz targets with clang
# (the fuzz mode) and runs each for SECONDS on a scratch copy of its seed
# corpus. A crash fails the run and leaves the input in build/fuzz/crashes.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
targets=(spool_recovery_fuzz:spool_recovery smtp_command_fuzz:smtp_command smtp_address_fuzz:smtp_address
         smtp_data_fuzz:smtp_data dns_wire_fuzz:dns_wire config_fuzz:config envelope_params_fuzz:envelope_params
         spf_fuzz:spf header_fuzz:header dkim_fuzz:dkim mime_fuzz:mime milter_fuzz:milter)
names=()
for t in "${targets[@]}"; do names+=("${t%%:*}"); done
scripts/build.sh fuzz "${names[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p build/fuzz/crashes
for t in "${targets[@]}"; do
    name=${t%%:*} corpus=${t##*:}
    cp -r "tests/data/fuzz/$corpus" "$work/$corpus"
    echo "=== fuzz $name for ${secs}s" >&2
    if ! "build/fuzz/tests/fuzz/$name" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=10 \
        -artifact_prefix="build/fuzz/crashes/$name-" "$work/$corpus" >"$work/$name.log" 2>&1; then
        tail -40 "$work/$name.log" >&2
        echo "FAIL: $name found a crash; input saved under build/fuzz/crashes/" >&2
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$work/$name.log" >&2 || true
done
