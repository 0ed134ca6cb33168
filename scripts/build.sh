#!/usr/bin/env bash
# Configures and builds one mode into build/<mode>.
#   scripts/build.sh release|asan [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-release}
shift || true
jobs=${RINGWAY_JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$PWD/build/.ccache}
if [[ ! -f build/$mode/Makefile ]]; then
    cmake -S . -B "build/$mode" -DRINGWAY_MODE="$mode" >/dev/null
fi
if (($#)); then
    cmake --build "build/$mode" -j "$jobs" --target "$@"
else
    cmake --build "build/$mode" -j "$jobs"
fi
