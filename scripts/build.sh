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
    extra=()
    # The fuzz mode builds the libFuzzer targets with clang.
    [[ $mode == fuzz ]] && extra=(-DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14)
    cmake -S . -B "build/$mode" -DRINGWAY_MODE="$mode" "${extra[@]}" >/dev/null
fi
if (($#)); then
    cmake --build "build/$mode" -j "$jobs" --target "$@"
else
    cmake --build "build/$mode" -j "$jobs"
fi
