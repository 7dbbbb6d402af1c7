#!/usr/bin/env bash
# The failover demo (./halb.sh demo, as root): builds nothing itself — ./halb.sh has built
# the binary. It brings the pair up in network namespaces (bridge LAN, lb1, lb2, a client with
# several addresses, three backends), puts load through the VIP with `halb drill`, kills the
# master with SIGKILL, prints the drill report and tears everything down (also on Ctrl-C).
#
#   scripts/demo.sh [HALB_BINARY] [--pair|--toy]
#
# Until halb runs the pair (VRRP, state-sync, data plane), the default mode says so and shows
# the same drill against toy relays and a failover the demo scripts itself (--toy).
# The single-node walkthrough (check, run, status, metrics, reload) is scripts/demo-node.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
halb=${1:-build/release/app/halb}
shift || true
if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
if [[ ! -x $halb ]]; then
  echo "demo.sh: $halb not found; build first (./halb.sh build)" >&2
  exit 1
fi
python=/usr/bin/python3
[[ -x $python ]] || python=python3
# Logs of the run stay under /tmp; the namespaces and processes do not.
export HALB_NETNS_LOGDIR=${HALB_NETNS_LOGDIR:-/tmp/halb-demo-logs}
exec "$python" tests/netns/demo.py "$halb" "$@"
