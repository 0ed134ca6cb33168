#!/usr/bin/env bash
# Installs the Debian 12 packages a step needs, only those missing.
#   scripts/deps.sh build   -- compilers and libraries
#   scripts/deps.sh test    -- build + the real peers the tests start
set -euo pipefail
what=${1:-build}
pkgs=(cmake make g++ pkg-config ccache git
      liburing-dev libssl-dev libjemalloc-dev libc-ares-dev libfmt-dev libcrypt-dev
      libtomlplusplus-dev libcli11-dev catch2 python3 openssl util-linux)
if [[ $what == test ]]; then
    pkgs+=(dnsmasq-base iproute2 procps)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
