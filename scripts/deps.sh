#!/usr/bin/env bash
# Installs the Debian 12 packages a step needs, only those missing.
#   scripts/deps.sh build   -- compilers and libraries
#   scripts/deps.sh test    -- build + the real peers the tests start
set -euo pipefail
what=${1:-build}
pkgs=(cmake make g++ pkg-config ccache git
      liburing-dev libssl-dev libjemalloc-dev libc-ares-dev libfmt-dev libcrypt-dev
      libtomlplusplus-dev libcli11-dev catch2 nlohmann-json3-dev libedit-dev libpsl-dev publicsuffix zlib1g-dev libarchive-dev libmagic-dev libhyperscan-dev libpcre2-dev python3 openssl
      util-linux
      clang-14 libclang-rt-14-dev)
if [[ $what == test ]]; then
    pkgs+=(dnsmasq-base iproute2 procps mount swaks libnet-ssleay-perl postfix python3-pexpect prometheus
           openssh-client systemd  # systemd-socket-activate: the appliance helper, one per connection
           # the scanners the filtering tests start: clamd (no signatures downloaded) and rspamd
           clamav-daemon rspamd
           # milters: pymilter on libmilter for the test milter (opendkim is below)
           python3-milter
           # sender authentication: a DNS server for test zones, the OpenSPF suite (python3-spf ships it)
           python3-dnslib python3-yaml python3-spf
           # DKIM interop: dkimpy signs and cross-checks (Ed25519 through PyNaCl)
           python3-dkim python3-nacl opendkim opendkim-tools
           # the appliance image: image/build's tools, and QEMU with its firmware for image/run
           mmdebstrap squashfs-tools dosfstools mtools fdisk grub-pc-bin grub-efi-amd64-bin grub2-common
           e2fsprogs qemu-system-x86 qemu-utils ovmf)
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
    # Postfix is installed for its smtp-source/smtp-sink tools and for the
    # benchmarks, which run it in a private configuration, and Prometheus
    # for the tests, which start their own: the system's services are left
    # unconfigured and not started.
    guard=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        guard=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ -n $guard ]]; then
        $sudo rm -f /usr/sbin/policy-rc.d
    fi
fi
