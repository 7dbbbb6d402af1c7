#!/usr/bin/env bash
# Installs everything halb needs to build, test, benchmark and demo on Debian 12.
# Idempotent: apt-get skips what is already there, and the package index is refreshed
# only when it is older than a day (or missing), so a second run costs seconds.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: run as root (it uses apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Build toolchain and libraries. libboost1.81-dev rather than libboost-dev (1.74):
# Asio's as_tuple completion token and awaitable operators arrived in 1.77/1.78.
build_pkgs=(
  g++ cmake ninja-build ccache pkg-config git
  libboost1.81-dev libuv1-dev libyaml-cpp-dev libnl-3-dev libnl-route-3-dev
  libssl-dev libsystemd-dev libgtest-dev libgmock-dev libbenchmark-dev libre2-dev
  clang libclang-rt-14-dev
)
# Tests, demo and benchmarks: namespaces, real peers and anchors to compare with.
runtime_pkgs=(
  iproute2 iputils-ping tcpdump procps psmisc curl openssl
  haproxy nginx-light libnginx-mod-stream wrk keepalived
  ansible-core ansible-lint openssh-server openssh-client sshpass python3
)

stamp=/var/lib/apt/periodic/halb-update-stamp
if [[ ! -f $stamp ]] || [[ -n $(find "$stamp" -mmin +1440 2>/dev/null) ]]; then
  apt-get update -q
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi

missing=()
for p in "${build_pkgs[@]}" "${runtime_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-deps.sh: installing ${missing[*]}"
  # Packaged services (nginx, haproxy, keepalived, ssh) must not start on install:
  # tests and benchmarks start their own instances on their own ports.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps.sh: all dependencies present"
